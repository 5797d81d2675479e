"""Nested width selection: one knapsack per MAC budget, solved bottom-up.

Chains (every bilinear cost couples neighbouring chosen widths: DNN, CNN,
DS-CNN, MobileNetV1) are solved exactly by dynamic programming over Pareto
fronts of (MACs, value) (:func:`_solve_chain`); other graphs, or
``method="milp"``, by the MILP below with PuLP/CBC.

Each prunable layer keeps a prefix of its units (units are sorted by
importance, so keeping ``w`` units is worth ``sum(scores[:w])``). For every
budget ``p`` we choose widths maximising the kept importance subject to
``MACs(widths) <= p * MACs(full)``, where MACs are TRUE costs: a layer costs
``macs_per_pair * w_in * w_out``, bilinear in the widths of two layers.

Formulation (exact):

- per chosen-width layer ``l`` and width level ``a`` (a multiple of
  ``block``, or the full width) a selector ``x[l, a] in [0, 1]`` with
  ``sum_a x[l, a] = 1``, made integral by binaries ``u[l, a] = sum_{a' >= a}
  x[l, a']`` ("width >= level a"). Branching on thresholds halves a layer's
  width range per branch, much better balanced than branching on one level.
- for every pair (producer ``p``, consumer ``c``) of chosen widths whose
  product appears in the cost, continuous ``z[a, b] >= 0`` with
  ``sum_a z[a, b] = x[c, b]`` and ``sum_b z[a, b] = x[p, a]``. With integral
  ``x`` the only solution is ``z[a, b] = x[p, a] * x[c, b]``, so
  ``sum_ab v_a v_b z[a, b]`` is exactly ``w_p * w_c``. These "transport"
  constraints describe the joint distribution of the two choices, a tighter
  relaxation than McCormick inequalities.
- MACs are monotone in every width, so levels and level pairs that exceed the
  budget even with all other layers at their narrowest are dropped before
  solving (exact, and it shrinks small-budget models several-fold).
- the budget row uses the exact integer MACs and ``floor(p * MACs(full))``.

A tied group (layers whose outputs an ``Add`` joins, see :mod:`reds_tf.costs`)
is one width variable: its representative's; its importance is the sum over the
group (:func:`reds_tf.importance.fold_tied_scores`). Residual networks are not
chains (a block's last layer couples back to the group), so they take the MILP.

Nesting is enforced by solving from the smallest budget up and removing every
level below the width a layer had in the previous submodel; that submodel is
also CBC's warm start, so a time limit still leaves a valid nested answer.
When the optimum leaves budget unused only because the next units are worth
nothing (dead units score 0), the widths are grown into it (value unchanged).
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pulp

from reds_tf import ir
from reds_tf.costs import (
    TIED_KINDS,
    CostLayer,
    as_cost_layers,
    full_widths,
    model_activation_elems,
    model_macs,
    resolve_widths,
    validate_layers,
)
from reds_tf.errors import ConfigError, InfeasibleBudgetError

# Largest number of width combinations solve_bruteforce will enumerate.
_BRUTEFORCE_LIMIT = 2_000_000


def width_levels(units: int, block: int) -> list[int]:
    """Allowed widths of a layer: ``block, 2*block, ...`` plus ``units`` if not a multiple.

    A layer narrower than one block has the single level ``units``.
    """
    _check_block(block)
    if units < 1:
        raise ValueError(f"units must be >= 1, got {units}")
    levels = list(range(block, units + 1, block))
    if not levels or levels[-1] != units:
        levels.append(units)
    return levels


def _check_block(block: int) -> None:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ConfigError(f"block must be a positive integer (e.g. 4), got {block!r}")


Layers = Sequence[CostLayer] | ir.Graph  # a graph goes through costs.cost_layers


def free_layers(layers: Layers) -> list[CostLayer]:
    """The layers whose width the knapsack chooses (prunable, neither depthwise nor
    tied to a group's representative: a tied group is one width variable)."""
    layers = as_cost_layers(layers)
    return [layer for layer in layers if layer.prunable and not layer.follows]


def min_widths(layers: Layers, block: int) -> dict[str, int]:
    """Every chosen width at its smallest level; all layers listed."""
    layers = as_cost_layers(layers)
    validate_layers(layers)
    return resolve_widths(
        layers, {layer.name: width_levels(layer.units, block)[0] for layer in free_layers(layers)}
    )


def min_macs_fraction(layers: Layers, block: int) -> float:
    """MACs of the smallest admissible submodel as a fraction of the full model's."""
    layers = as_cost_layers(layers)
    return model_macs(layers, min_widths(layers, block)) / model_macs(layers, full_widths(layers))


@dataclass
class KnapsackResult:
    """One entry per budget, smallest budget first.

    ``widths[k]`` names every layer; ``value[k]`` is the kept importance
    ``sum_l sum(scores[l][:w_l])``; ``status[k]`` is ``"optimal"``,
    ``"feasible (time limit)"`` or ``"full model"``; ``seconds[k]`` is the
    wall time spent on that budget (model building plus solver).
    """

    budgets: list[float] = field(default_factory=list)
    widths: list[dict[str, int]] = field(default_factory=list)
    macs: list[int] = field(default_factory=list)
    macs_fraction: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))

    @property
    def all_optimal(self) -> bool:
        return all(s in ("optimal", "full model") for s in self.status)


@dataclass
class _Instance:
    """Pre-processed problem shared by the MILP and the brute force."""

    layers: list[CostLayer]
    free: list[str]  # names of chosen-width layers, layer order
    levels: dict[str, list[int]]
    cum: dict[str, np.ndarray]  # cum[l][a] = sum(scores[l][:levels[l][a]])
    const: int  # MACs independent of chosen widths
    lin: dict[str, np.ndarray]  # MACs linear in one chosen width, per level
    quad: dict[tuple[str, str], int]  # (producer root, consumer root) -> coef of w_p*w_c
    full_macs: int
    budgets: list[float]
    # Per layer: activation elements = const + sum coef * width(free layer).
    act: list[tuple[str, int, dict[str, int]]]
    max_act: int | None


def _prepare(
    layers: Layers,
    scores: Mapping[str, np.ndarray],
    budgets: Sequence[float],
    block: int,
    max_act: int | None,
) -> _Instance:
    layers = as_cost_layers(layers)
    by_name = validate_layers(layers)
    _check_block(block)
    free = [layer.name for layer in free_layers(layers)]
    levels = {name: width_levels(by_name[name].units, block) for name in free}

    cum: dict[str, np.ndarray] = {}
    for name in free:
        if name not in scores:
            raise ValueError(f"no importance scores for prunable layer {name!r}")
        s = np.asarray(scores[name], dtype=np.float64)
        if s.shape != (by_name[name].units,):
            raise ValueError(
                f"scores[{name!r}] has shape {s.shape}, expected ({by_name[name].units},)"
            )
        if not np.all(np.isfinite(s)):
            raise ValueError(f"scores[{name!r}] contains NaN or inf")
        if np.any(np.diff(s) > 1e-12 * max(1.0, float(np.abs(s).max()))):
            raise ValueError(
                f"scores[{name!r}] must be sorted descending (permute units before the knapsack)"
            )
        prefix = np.concatenate([[0.0], np.cumsum(s)])
        cum[name] = prefix[np.asarray(levels[name])]

    # Each layer's width is either fixed (an int) or equal to a chosen width (a name).
    source: dict[str, int | str] = {}
    for layer in layers:
        if layer.kind in TIED_KINDS:
            source[layer.name] = (
                layer.input_units if layer.producer is None else source[layer.producer]
            )
        elif layer.tied is not None:
            source[layer.name] = source[layer.tied]
        elif layer.name in levels:
            source[layer.name] = layer.name
        else:
            source[layer.name] = layer.units

    const = 0
    lin = {name: np.zeros(len(levels[name]), dtype=np.int64) for name in free}
    quad: dict[tuple[str, str], int] = {}
    for layer in layers:
        src_in = layer.input_units if layer.producer is None else source[layer.producer]
        src_out = source[layer.name]
        if layer.kind in TIED_KINDS:
            factors = [src_out]
        else:
            factors = [src_in, src_out]
        coef = layer.macs_per_pair
        names = []
        for f in factors:
            if isinstance(f, str):
                names.append(f)
            else:
                coef *= f
        if not names:
            const += coef
        elif len(names) == 1:
            lin[names[0]] += coef * np.asarray(levels[names[0]], dtype=np.int64)
        else:
            quad[(names[0], names[1])] = quad.get((names[0], names[1]), 0) + coef

    act: list[tuple[str, int, dict[str, int]]] = []
    for layer in layers:
        if layer.producer is None:
            terms = [(layer.input_elems_per_unit, layer.input_units)]
        else:
            terms = [(by_name[layer.producer].out_elems_per_unit, source[layer.producer])]
        terms.append((layer.out_elems_per_unit, source[layer.name]))
        a_const, a_lin = 0, {}
        for per, src in terms:
            if isinstance(src, str):
                a_lin[src] = a_lin.get(src, 0) + per
            else:
                a_const += per * src
        act.append((layer.name, a_const, a_lin))
    if max_act is not None and (isinstance(max_act, bool) or int(max_act) != max_act):
        raise ConfigError(f"the activation limit must be a whole number, got {max_act!r}")

    full_macs = model_macs(layers, full_widths(layers))

    if len(budgets) == 0:
        raise ConfigError("budgets is empty; give at least one fraction, e.g. [0.25, 0.5, 1.0]")
    clean: list[float] = []
    for b in budgets:
        try:
            fb = float(b)
        except (TypeError, ValueError):
            raise ConfigError(f"budget {b!r} is not a number") from None
        if not math.isfinite(fb) or fb <= 0:
            raise ConfigError(
                f"budget {b!r} must be a positive fraction of the full model's MACs (e.g. 0.25)"
            )
        clean.append(fb)
    return _Instance(
        layers, free, levels, cum, const, lin, quad, full_macs, sorted(clean), act, max_act
    )


def _check_feasible(inst: _Instance, block: int) -> None:
    smallest = inst.budgets[0]
    if inst.max_act is not None:
        low = {n: 0 for n in inst.free}
        need = _act_at(inst, low)
        if need > inst.max_act:
            raise InfeasibleBudgetError(
                f"activation limit {inst.max_act:,} elements is infeasible: even with every "
                f"prunable layer at one block of {block} units some layer needs {need:,} "
                "input+output elements. Raise the limit or lower `block`."
            )
        top = {n: len(inst.levels[n]) - 1 for n in inst.free}
        if inst.budgets[-1] >= 1.0 and _act_at(inst, top) > inst.max_act:
            raise ConfigError(
                f"the full model (budget {inst.budgets[-1]:g}) needs {_act_at(inst, top):,} "
                f"activation elements, above the limit of {inst.max_act:,}; raise the limit or "
                "use only budgets below 1"
            )
    min_macs = model_macs(inst.layers, min_widths(inst.layers, block))
    if min_macs > math.floor(smallest * inst.full_macs):
        frac = min_macs / inst.full_macs
        raise InfeasibleBudgetError(
            f"budget {smallest:g} is infeasible: the smallest possible submodel (every prunable "
            f"layer at {block} units, one block) costs {min_macs:,} of {inst.full_macs:,} MACs, "
            f"a fraction of {frac:.4f}. Raise the smallest entry of `budgets` to at least "
            f"{math.ceil(frac * 1e4) / 1e4:.4f}, or lower `block` so layers can be narrower."
        )


def _value(inst: _Instance, widths: Mapping[str, int]) -> float:
    return float(sum(inst.cum[n][inst.levels[n].index(widths[n])] for n in inst.free))


def _record(
    res: KnapsackResult,
    inst: _Instance,
    budget: float,
    chosen: Mapping[str, int],
    status: str,
    seconds: float,
    log: Callable[[str], None] | None,
) -> dict[str, int]:
    widths = resolve_widths(inst.layers, chosen)
    macs = model_macs(inst.layers, widths)
    if budget < 1.0 and macs > budget * inst.full_macs:
        # The MILP constraint is on exact integer MACs; this would be a modelling bug.
        raise RuntimeError(f"knapsack solution for budget {budget:g} exceeds it: {macs:,} MACs")
    res.budgets.append(budget)
    res.widths.append(widths)
    res.macs.append(macs)
    res.macs_fraction.append(macs / inst.full_macs)
    res.value.append(_value(inst, widths))
    res.status.append(status)
    res.seconds.append(seconds)
    if log is not None:
        ws = ", ".join(f"{n}={widths[n]}" for n in inst.free)
        log(
            f"knapsack budget {budget:g}: {status} in {seconds:.2f} s, "
            f"MACs {macs:,}/{inst.full_macs:,} = {macs / inst.full_macs:.4f}, widths {ws}"
        )
    return widths


def solve_nested(
    layers: Layers,
    scores: Mapping[str, np.ndarray],
    budgets: Sequence[float],
    block: int,
    *,
    time_limit: float = 60.0,
    log: Callable[[str], None] | None = print,
    max_activation_elems: int | None = None,
    method: str = "auto",
) -> KnapsackResult:
    """Choose nested per-layer widths for each MAC budget with a MILP (PuLP + CBC).

    Args:
        layers: the cost model (:func:`reds_tf.costs.cost_layers`), or the graph.
        scores: for every prunable (non-depthwise) layer a 1-D array of shape
            ``(units,)`` of per-unit importance, ALREADY sorted descending.
        budgets: fractions of the full model's true MACs; sorted ascending
            here; values >= 1 give the full model.
        block: widths are multiples of ``block`` (at least one block), or the
            layer's full width.
        time_limit: CBC time limit per budget in seconds; hitting it is
            reported in ``status`` and ``log`` (the best solution found is
            kept; if CBC found none, the previous submodel's widths grown
            greedily within the budget).
        log: called with one line per budget (status, time, MACs fraction);
            None for silence.
        max_activation_elems: optional memory bound: in every submodel, each
            layer's input plus output activation elements (see
            :func:`reds_tf.costs.model_activation_elems`) stay at or below it.
            Multiply by the bytes per element yourself (1 for int8).
        method: "auto" solves chains (every bilinear term couples neighbouring
            chosen widths: DNN, CNN, DS-CNN, MobileNetV1) exactly by dynamic
            programming over Pareto fronts and anything else with the MILP;
            "milp" always uses the MILP.

    Returns:
        A :class:`KnapsackResult`, smallest budget first. Widths are nested:
        every layer's width never decreases from one submodel to the next.

    Raises:
        InfeasibleBudgetError: the smallest budget is below
            :func:`min_macs_fraction`.
    """
    if method not in ("auto", "milp"):
        raise ConfigError(f"knapsack method must be 'auto' or 'milp', got {method!r}")
    if not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise ConfigError(
            f"knapsack time_limit must be a positive number of seconds, got {time_limit!r}"
        )
    inst = _prepare(layers, scores, budgets, block, max_activation_elems)
    _check_feasible(inst, block)
    res = KnapsackResult()
    prev = {n: inst.levels[n][0] for n in inst.free}
    # A private folder for CBC's temp files: concurrent runs cannot collide and
    # files are removed even when the solver fails.
    with tempfile.TemporaryDirectory(prefix="reds-cbc-") as tmp:
        for budget in inst.budgets:
            t0 = time.perf_counter()
            if budget >= 1.0:
                chosen = {n: inst.levels[n][-1] for n in inst.free}
                status = "full model"
            else:
                cap = math.floor(budget * inst.full_macs)
                chosen = _solve_chain(inst, cap, prev) if method == "auto" else None
                if chosen is not None:
                    status = "optimal"
                else:
                    chosen, status = _solve_one(inst, budget, prev, time_limit, tmp)
                chosen = _fill(inst, chosen, cap)
            prev = _record(res, inst, budget, chosen, status, time.perf_counter() - t0, log)
    return res


def _solve_one(
    inst: _Instance,
    budget: float,
    prev: Mapping[str, int],
    time_limit: float,
    tmp_dir: str,
) -> tuple[dict[str, int], str]:
    prob = pulp.LpProblem("reds_knapsack", pulp.LpMaximize)
    cap = math.floor(budget * inst.full_macs)
    # Allowed level indices per layer: nesting removes levels below the previous width.
    allowed = {n: [a for a, v in enumerate(inst.levels[n]) if v >= prev[n]] for n in inst.free}
    # MACs never decrease when a width grows, so a level (or a pair of levels) that
    # exceeds the budget with every other layer at its narrowest allowed width can
    # never be chosen: drop it. This is exact and shrinks the model a lot at small budgets.
    low = {n: allowed[n][0] for n in inst.free}
    allowed = {n: [a for a in allowed[n] if _fits(inst, {**low, n: a}, cap)] for n in inst.free}
    x = {
        n: {a: _var(prob, f"x_{i}_{a}", 0, 1, pulp.LpContinuous) for a in allowed[n]}
        for i, n in enumerate(inst.free)
    }
    # Branch on thresholds "width >= level a" rather than on single levels: each
    # branch then halves a layer's width range, which closes the gap much faster.
    for i, n in enumerate(inst.free):
        for a in allowed[n][1:]:
            u = _var(prob, f"u_{i}_{a}", 0, 1, pulp.LpBinary)
            prob += u == pulp.lpSum(x[n][b] for b in allowed[n] if b >= a)
    # Normalise the objective to about 1 so CBC's tolerances mean the same for any score scale.
    total = sum(float(inst.cum[n][-1]) for n in inst.free)
    scale = 1e6 / total if total > 0 else 1.0
    prob += pulp.lpSum(
        scale * float(inst.cum[n][a]) * x[n][a] for n in inst.free for a in allowed[n]
    )
    for n in inst.free:
        prob += pulp.lpSum(x[n].values()) == 1

    cost_terms = []
    z_all = []
    for n in inst.free:
        cost_terms += [(x[n][a], int(inst.lin[n][a])) for a in allowed[n] if inst.lin[n][a]]
    for k, ((p, c), coef) in enumerate(inst.quad.items()):
        vp, vc = inst.levels[p], inst.levels[c]
        z = {
            (a, b): _var(prob, f"z_{k}_{a}_{b}", 0, None, pulp.LpContinuous)
            for a in allowed[p]
            for b in allowed[c]
            if _fits(inst, {**low, p: a, c: b}, cap)
        }
        rows: dict[int, list] = {a: [] for a in allowed[p]}
        cols: dict[int, list] = {b: [] for b in allowed[c]}
        for (a, b), var in z.items():
            rows[a].append(var)
            cols[b].append(var)
        for b in allowed[c]:
            prob += pulp.lpSum(cols[b]) == x[c][b]
        for a in allowed[p]:
            prob += pulp.lpSum(rows[a]) == x[p][a]
        cost_terms += [(z[a, b], coef * vp[a] * vc[b]) for (a, b) in z]
        z_all.append((p, c, z))
    # Integer MACs at any integral point, so flooring the right-hand side is exact.
    prob += pulp.LpAffineExpression(cost_terms) <= cap - inst.const
    if inst.max_act is not None:
        for _name, a_const, a_lin in inst.act:
            if a_lin:
                prob += (
                    pulp.lpSum(
                        per * inst.levels[n][a] * x[n][a]
                        for n, per in a_lin.items()
                        for a in allowed[n]
                    )
                    <= inst.max_act - a_const
                )

    # Warm start from the previous submodel (feasible: its MACs fit a smaller budget), so a
    # time limit always leaves a valid, nested answer.
    start = {n: inst.levels[n].index(prev[n]) for n in inst.free}
    for n in inst.free:
        for a, var in x[n].items():
            var.setInitialValue(1 if a == start[n] else 0)
    for p, c, z in z_all:
        for (a, b), var in z.items():
            var.setInitialValue(1 if (a == start[p] and b == start[c]) else 0)
    with warnings.catch_warnings():
        # PuLP 3.3 announces that the bundled CBC moves to an extra in 4.0; we pin 3.x.
        warnings.simplefilter("ignore", DeprecationWarning)
        solver = pulp.PULP_CBC_CMD(
            msg=False,
            timeLimit=time_limit,
            gapRel=1e-7,
            gapAbs=0.0,
            warmStart=True,
            # CBC's preprocessing finds little here and costs time: measured 1.5-2x
            # faster on 4-layer instances (same optima), no change on the default model.
            options=["preprocess off"],
        )
    solver.tmpDir = tmp_dir
    prob.solve(solver)
    if prob.sol_status == pulp.LpSolutionOptimal:
        status = "optimal"
    elif prob.sol_status == pulp.LpSolutionIntegerFeasible:
        status = f"feasible (time limit {time_limit:g} s, not proven optimal)"
    else:
        # The warm start is feasible by construction, so CBC ending without a
        # solution means it ran out of time before even reading it (seen under
        # load with sub-second limits). Fall back to it, and say so.
        status = (
            f"no CBC solution within the time limit {time_limit:g} s "
            f"(status {pulp.LpStatus[prob.status]!r}): previous widths grown greedily, "
            "not optimal"
        )
        return {n: inst.levels[n][start[n]] for n in inst.free}, status
    chosen = {}
    for n in inst.free:
        a = max(allowed[n], key=lambda a, n=n: x[n][a].value() or 0.0)
        chosen[n] = inst.levels[n][a]
    return chosen, status


def _chain_order(inst: _Instance) -> list[str] | None:
    """The chosen-width layers in order if every bilinear cost and activation term
    couples only neighbours in that order (a chain, e.g. CNN, DS-CNN, MobileNetV1);
    None otherwise."""
    order = list(inst.free)
    pos = {n: i for i, n in enumerate(order)}
    for p, c in inst.quad:
        if pos[c] != pos[p] + 1:
            return None
    for _name, _c, lin in inst.act:
        idx = sorted(pos[n] for n in lin)
        if len(idx) > 2 or (len(idx) == 2 and idx[1] != idx[0] + 1):
            return None
    return order


def _solve_chain(inst: _Instance, cap: int, prev: Mapping[str, int]) -> dict[str, int] | None:
    """Exact nested knapsack on a chain by dynamic programming over Pareto fronts.

    State after layer i: its level, with the Pareto front of (MACs so far, value
    so far) over the choices of layers 0..i (more MACs only with more value).
    A transition adds the layer's linear MACs, the bilinear MACs with its
    neighbour and its kept importance; entries that cannot meet ``cap`` even
    with every later layer at its narrowest allowed level are dropped.
    Returns the widths of the highest value (ties: fewest MACs), None if the
    instance is not a chain (the MILP handles it).
    """
    order = _chain_order(inst)
    if order is None or not order:
        return None
    n_l = len(order)
    vals = [np.asarray(inst.levels[n], dtype=np.int64) for n in order]
    allowed = [np.asarray([a for a, v in enumerate(inst.levels[n]) if v >= prev[n]]) for n in order]
    quad = [inst.quad.get((order[i - 1], order[i]), 0) if i else 0 for i in range(n_l)]
    # Activation limits: per layer (single level) and per neighbour pair.
    single = [np.zeros(len(v), bool) for v in vals]
    pair: list[np.ndarray | None] = [None] * n_l
    if inst.max_act is not None:
        for _name, c, lin in inst.act:
            names = sorted(lin, key=order.index)
            room = inst.max_act - c
            if len(names) == 1:
                i = order.index(names[0])
                single[i] |= lin[names[0]] * vals[i] > room
            elif len(names) == 2:
                i, j = order.index(names[0]), order.index(names[1])
                bad = (lin[names[0]] * vals[i][:, None] + lin[names[1]] * vals[j][None, :]) > room
                pair[j] = bad if pair[j] is None else (pair[j] | bad)
    allowed = [a[~single[i][a]] for i, a in enumerate(allowed)]
    if any(len(a) == 0 for a in allowed):
        return None
    low = [int(vals[i][a[0]]) for i, a in enumerate(allowed)]
    # tail[i]: least MACs of layers i.. (linear terms and couplings among them).
    lin_low = [int(inst.lin[order[i]][allowed[i][0]]) for i in range(n_l)]
    tail = [0] * (n_l + 1)
    for i in range(n_l - 1, -1, -1):
        tail[i] = lin_low[i] + (quad[i + 1] * low[i] * low[i + 1] if i + 1 < n_l else 0)
        tail[i] += tail[i + 1]
    budget = cap - inst.const

    def bound_after(i: int, level_vals: np.ndarray) -> np.ndarray:
        """Least MACs still to come after layer i at the given widths."""
        if i + 1 >= n_l:
            return np.zeros_like(level_vals)
        return quad[i + 1] * level_vals * low[i + 1] + tail[i + 1]

    # fronts[i][a] = (macs, value, back_level, back_index) arrays for layer i level a.
    fronts: list[dict[int, tuple]] = [dict() for _ in range(n_l)]
    cum0 = inst.cum[order[0]]
    for a in allowed[0]:
        m = int(inst.lin[order[0]][a])
        if m + int(bound_after(0, np.array([vals[0][a]]))[0]) <= budget:
            fronts[0][int(a)] = (
                np.array([m], np.int64),
                np.array([float(cum0[a])]),
                np.array([-1]),
                np.array([-1]),
            )
    for i in range(1, n_l):
        cum = inst.cum[order[i]]
        lin = inst.lin[order[i]]
        for b in allowed[i]:
            vb = int(vals[i][b])
            after = int(bound_after(i, np.array([vb]))[0])
            parts_m, parts_v, parts_a, parts_k = [], [], [], []
            for a, (m, v, _, _) in fronts[i - 1].items():
                if pair[i] is not None and pair[i][a, b]:
                    continue
                mm = m + quad[i] * int(vals[i - 1][a]) * vb + int(lin[b])
                ok = mm + after <= budget
                if not ok.any():
                    continue
                idx = np.nonzero(ok)[0]
                parts_m.append(mm[idx])
                parts_v.append(v[idx] + float(cum[b]))
                parts_a.append(np.full(len(idx), a))
                parts_k.append(idx)
            if not parts_m:
                continue
            m = np.concatenate(parts_m)
            v = np.concatenate(parts_v)
            ba = np.concatenate(parts_a)
            bk = np.concatenate(parts_k)
            # Pareto filter: by MACs ascending (value descending on ties), keep
            # an entry only if it beats the value of every cheaper one.
            o = np.lexsort((-v, m))
            m, v, ba, bk = m[o], v[o], ba[o], bk[o]
            best_before = np.maximum.accumulate(np.concatenate([[-np.inf], v[:-1]]))
            keep = v > best_before
            fronts[i][int(b)] = (m[keep], v[keep], ba[keep], bk[keep])
    last = fronts[n_l - 1]
    if not last:
        return None  # nothing fits (should not happen: feasibility was checked)
    best = None
    for a, (m, v, _, _) in last.items():
        j = int(np.argmax(v))  # fronts are MAC-sorted: the first maximum is the cheapest
        key = (float(v[j]), -int(m[j]))
        if best is None or key > best[0]:
            best = (key, a, j)
    _, a, j = best
    chosen: dict[str, int] = {}
    for i in range(n_l - 1, -1, -1):
        chosen[order[i]] = int(vals[i][a])
        _, _, ba, bk = fronts[i][a]
        a, j = int(ba[j]), int(bk[j])
    return chosen


def _macs_at(inst: _Instance, level_index: Mapping[str, int]) -> int:
    """MACs when every chosen-width layer ``n`` sits at level ``level_index[n]``."""
    w = {n: inst.levels[n][a] for n, a in level_index.items()}
    total = inst.const + sum(int(inst.lin[n][a]) for n, a in level_index.items())
    return total + sum(coef * w[p] * w[c] for (p, c), coef in inst.quad.items())


def _act_at(inst: _Instance, level_index: Mapping[str, int]) -> int:
    """Largest per-layer input+output activation elements at the given levels."""
    return max(
        c + sum(per * inst.levels[n][level_index[n]] for n, per in lin.items())
        for _name, c, lin in inst.act
    )


def _fits(inst: _Instance, level_index: Mapping[str, int], cap: int) -> bool:
    if _macs_at(inst, level_index) > cap:
        return False
    return inst.max_act is None or _act_at(inst, level_index) <= inst.max_act


def _fill(inst: _Instance, widths: Mapping[str, int], cap: int) -> dict[str, int]:
    """Grow widths one level at a time while the budget allows and no value is lost.

    Scores are usually >= 0, so an optimum may leave budget unused only on units
    worth nothing (dead units score exactly 0); spending it on them keeps the
    value optimal and gives fine-tuning that capacity. Each step takes the move
    with the largest gain, then the cheapest in MACs.
    """
    idx = {n: inst.levels[n].index(widths[n]) for n in inst.free}
    while True:
        best = None
        for n in inst.free:
            a = idx[n]
            if a + 1 >= len(inst.levels[n]):
                continue
            gain = float(inst.cum[n][a + 1] - inst.cum[n][a])
            trial = {**idx, n: a + 1}
            if gain < 0 or not _fits(inst, trial, cap):
                continue
            key = (gain, -_macs_at(inst, trial))
            if best is None or key > best[0]:
                best = (key, n)
        if best is None:
            return {n: inst.levels[n][a] for n, a in idx.items()}
        idx[best[1]] += 1


def _var(prob: pulp.LpProblem, name: str, low, up, cat: str) -> pulp.LpVariable:
    # PuLP >= 3.3 wants variables created through the problem; older versions lack it.
    add = getattr(prob, "add_variable", None)
    if add is not None:
        return add(name, low, up, cat)
    return pulp.LpVariable(name, low, up, cat)


def solve_bruteforce(
    layers: Layers,
    scores: Mapping[str, np.ndarray],
    budgets: Sequence[float],
    block: int,
    *,
    max_activation_elems: int | None = None,
) -> KnapsackResult:
    """Exhaustive search with the same nesting rule as :func:`solve_nested`; small instances only.

    Each budget takes the highest-value admissible widths (ties: fewer MACs,
    then the first in enumeration order); the next budget starts from them.
    """
    inst = _prepare(layers, scores, budgets, block, max_activation_elems)
    _check_feasible(inst, block)
    n_comb = math.prod(len(inst.levels[n]) for n in inst.free)
    if n_comb > _BRUTEFORCE_LIMIT:
        raise ValueError(f"{n_comb} width combinations is too many for brute force")
    res = KnapsackResult()
    prev = {n: inst.levels[n][0] for n in inst.free}
    for budget in inst.budgets:
        t0 = time.perf_counter()
        if budget >= 1.0:
            full = {n: inst.levels[n][-1] for n in inst.free}
            prev = _record(res, inst, budget, full, "full model", time.perf_counter() - t0, None)
            continue
        cap = budget * inst.full_macs
        best: tuple[float, int] | None = None
        best_w: dict[str, int] = {}
        choices = [[v for v in inst.levels[n] if v >= prev[n]] for n in inst.free]
        for combo in itertools.product(*choices):
            w = dict(zip(inst.free, combo, strict=True))
            macs = model_macs(inst.layers, w)
            if macs > cap:
                continue
            if max_activation_elems is not None and (
                max(model_activation_elems(inst.layers, w).values()) > max_activation_elems
            ):
                continue
            key = (_value(inst, w), -macs)
            if best is None or key > best:
                best, best_w = key, w
        assert best is not None  # prev is always admissible (budgets ascending)
        best_w = _fill(inst, best_w, math.floor(cap))
        prev = _record(res, inst, budget, best_w, "optimal", time.perf_counter() - t0, None)
    return res
