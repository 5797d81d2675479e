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

Memory (``memory_bytes``, :func:`_with_memory`): each submodel's activation
arena as the export plans it (:mod:`reds_tf.memory`) stays within its own
bound. The planner's linear terms (bytes; per chain step a neighbour pair of
widths, so chains keep the DP) are constraints of both solvers, and every
solution is planned exactly afterwards: a submodel the greedy placement puts
above its bound has its bound tightened by the excess and all are solved again.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import pulp

from reds_tf import ir, memory
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
    wall time spent on that budget (model building plus solver). ``cost[k]``
    is the submodel's cost in the unit the budgets constrain (``cost_name``:
    ``"MACs"``, or e.g. ``"cycles"`` with a :class:`SubmodelCost`) and
    ``cost_fraction[k]`` its fraction of ``full_cost``, the full model's.
    """

    budgets: list[float] = field(default_factory=list)
    widths: list[dict[str, int]] = field(default_factory=list)
    macs: list[int] = field(default_factory=list)
    macs_fraction: list[float] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    status: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    cost_name: str = "MACs"
    cost: list[int] = field(default_factory=list)
    cost_fraction: list[float] = field(default_factory=list)
    full_cost: int = 0
    # With the graph (a graph as ``layers``, or ``graph=``): each submodel's
    # activation arena in bytes as the exported runtime plans it (reds_tf/memory.py).
    arena_bytes: list[int] = field(default_factory=list)
    # The arena bound of each submodel (``memory_bytes``; None: no bound).
    memory_bytes: list[int | None] = field(default_factory=list)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds))

    @property
    def all_optimal(self) -> bool:
        return all(s in ("optimal", "full model") for s in self.status)


@dataclass(frozen=True)
class CostTerm:
    """One additive part of a submodel's cost: ``fn(w_in, w_out)`` (or ``fn(w)``
    with one width) of the widths of the named cost-model layers (an int is a
    fixed width)."""

    widths: tuple[str | int, ...]
    fn: Callable[..., float]


class SubmodelCost(Protocol):
    """What the knapsack needs of a cost other than MACs (e.g. the latency model,
    :class:`reds_tf.latency.LatencyCost`): its unit and, for the next submodel
    given the widths of the submodels before it (smallest first, every layer
    named), its terms."""

    name: str

    def terms(self, history: Sequence[Mapping[str, int]]) -> list[CostTerm]: ...


@dataclass
class _Instance:
    """Pre-processed problem shared by the MILP and the brute force."""

    layers: list[CostLayer]
    free: list[str]  # names of chosen-width layers, layer order
    levels: dict[str, list[int]]
    cum: dict[str, np.ndarray]  # cum[l][a] = sum(scores[l][:levels[l][a]])
    source: dict[str, int | str]  # layer -> its width: fixed, or a chosen layer's
    full_macs: int
    budgets: list[float]
    # Per layer: activation elements = const + sum coef * width(free layer).
    act: list[tuple[str, int, dict[str, int]]]
    max_act: int | None  # the bound of the submodel being solved
    # Per submodel (budget order): the bound on ``act`` (None: none), for memory
    # bounds in bytes; None when one ``max_act`` holds for every submodel.
    act_bounds: list[int | None] | None = None
    act_unit: str = "elements"
    # The cost the budgets constrain, for the submodel being solved (set_costs):
    const: int = 0  # independent of chosen widths
    lin: dict[str, np.ndarray] = field(default_factory=dict)  # per level of one chosen width
    # (earlier, later chosen layer) -> cost per (level, level): the coupled terms
    pair: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    full_cost: int = 0  # the budgets' reference
    cost_name: str = "MACs"
    # Fraction of the reference kept free below each budget <1: room for an
    # estimated cost's error (latency), so the real one stays within budget.
    margin: float = 0.0
    monotone: bool = True  # cost never decreases when a width grows


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
    inst = _Instance(layers, free, levels, cum, source, full_macs, sorted(clean), act, max_act)
    _set_mac_costs(inst)
    return inst


def _set_mac_costs(inst: _Instance) -> None:
    """The cost tables of MACs: ``macs_per_pair * w_in * w_out`` per layer."""
    inst.const, inst.cost_name, inst.monotone = 0, "MACs", True
    inst.lin = {n: np.zeros(len(inst.levels[n]), dtype=np.int64) for n in inst.free}
    inst.pair = {}
    for layer in inst.layers:
        src_in = layer.input_units if layer.producer is None else inst.source[layer.producer]
        src_out = inst.source[layer.name]
        factors = [src_out] if layer.kind in TIED_KINDS else [src_in, src_out]
        coef = layer.macs_per_pair
        names = []
        for f in factors:
            if isinstance(f, str):
                names.append(f)
            else:
                coef *= f
        if not names:
            inst.const += coef
        elif len(names) == 1:
            inst.lin[names[0]] += coef * np.asarray(inst.levels[names[0]], dtype=np.int64)
        else:
            vp, vc = (np.asarray(inst.levels[n], dtype=np.int64) for n in names)
            key = (names[0], names[1])
            inst.pair[key] = inst.pair.get(key, 0) + coef * np.outer(vp, vc)
    inst.full_cost = inst.full_macs


def _set_costs(inst: _Instance, cost: SubmodelCost, history: Sequence[Mapping[str, int]]) -> None:
    """The cost tables of ``cost`` for the submodel after ``history``, rounded to
    whole units (the budget row stays exact in integers)."""
    pos = {n: i for i, n in enumerate(inst.free)}
    const = 0.0
    lin = {n: np.zeros(len(inst.levels[n])) for n in inst.free}
    pair: dict[tuple[str, str], np.ndarray] = {}
    for term in cost.terms(history):
        srcs = [inst.source[w] if isinstance(w, str) else int(w) for w in term.widths]
        names = sorted({s for s in srcs if isinstance(s, str)}, key=pos.__getitem__)
        if not names:
            const += term.fn(*srcs)
        elif len(names) == 1:
            n = names[0]
            vals = [term.fn(*(v if s == n else s for s in srcs)) for v in inst.levels[n]]
            lin[n] += np.asarray(vals)
        else:
            p, c = names
            tab = np.zeros((len(inst.levels[p]), len(inst.levels[c])))
            for a, va in enumerate(inst.levels[p]):
                for b, vb in enumerate(inst.levels[c]):
                    tab[a, b] = term.fn(*({p: va, c: vb}.get(s, s) for s in srcs))  # type: ignore[arg-type]
            pair[(p, c)] = pair.get((p, c), 0) + tab
    inst.const = int(round(const))
    inst.lin = {n: np.rint(v).astype(np.int64) for n, v in lin.items()}
    inst.pair = {k: np.rint(v).astype(np.int64) for k, v in pair.items()}
    inst.cost_name = cost.name
    inst.monotone = all(np.all(np.diff(v) >= 0) for v in inst.lin.values()) and all(
        np.all(np.diff(t, axis=0) >= 0) and np.all(np.diff(t, axis=1) >= 0)
        for t in inst.pair.values()
    )


def _check_feasible(inst: _Instance, block: int) -> None:
    smallest = inst.budgets[0]
    if inst.act_bounds is not None:
        low = {n: 0 for n in inst.free}
        need = _act_at(inst, low)
        for budget, bound in zip(inst.budgets, inst.act_bounds, strict=True):
            if bound is not None and budget < 1.0 and need > bound:
                raise InfeasibleBudgetError(
                    f"memory bound {bound:,} bytes of the submodel for budget {budget:g} is "
                    f"infeasible: with every prunable layer at one block of {block} units the "
                    f"linear arena bound is {need:,} bytes. Raise that bound or lower `block`."
                )
    elif inst.max_act is not None:
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
    min_cost = _min_cost(inst)
    if min_cost > math.floor(smallest * inst.full_cost):
        frac = min_cost / inst.full_cost
        raise InfeasibleBudgetError(
            f"budget {smallest:g} is infeasible: the smallest possible submodel (every prunable "
            f"layer at {block} units, one block) costs {min_cost:,} of {inst.full_cost:,} "
            f"{inst.cost_name}, a fraction of {frac:.4f}. Raise the smallest entry of `budgets` "
            f"to at least {math.ceil(frac * 1e4) / 1e4:.4f}, or lower `block` so layers can be "
            "narrower."
        )


def _min_cost(inst: _Instance) -> int:
    """The cost of the cheapest submodel: every width at its lowest level when
    the cost is monotone, else a lower bound (each term at its own minimum)."""
    if inst.monotone:
        return _cost_at(inst, {n: 0 for n in inst.free})
    low = inst.const + sum(int(v.min()) for v in inst.lin.values())
    return low + sum(int(t.min()) for t in inst.pair.values())


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
    cost = _cost_at(inst, {n: inst.levels[n].index(widths[n]) for n in inst.free})
    if budget < 1.0 and cost > budget * inst.full_cost:
        # The constraint is on exact integer costs; this would be a modelling bug.
        raise RuntimeError(
            f"knapsack solution for budget {budget:g} exceeds it: {cost:,} {inst.cost_name}"
        )
    res.budgets.append(budget)
    res.widths.append(widths)
    res.macs.append(macs)
    res.macs_fraction.append(macs / inst.full_macs)
    res.value.append(_value(inst, widths))
    res.status.append(status)
    res.seconds.append(seconds)
    res.cost_name = inst.cost_name
    res.cost.append(cost)
    res.cost_fraction.append(cost / inst.full_cost)
    res.full_cost = inst.full_cost
    if log is not None:
        ws = ", ".join(f"{n}={widths[n]}" for n in inst.free)
        extra = ""
        if inst.cost_name != "MACs":
            extra = f", {inst.cost_name} {cost:,}/{inst.full_cost:,} = {cost / inst.full_cost:.4f}"
        log(
            f"knapsack budget {budget:g}: {status} in {seconds:.2f} s, "
            f"MACs {macs:,}/{inst.full_macs:,} = {macs / inst.full_macs:.4f}{extra}, widths {ws}"
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
    cost: SubmodelCost | None = None,
    memory_bytes: int | Sequence[int | None] | None = None,
    graph: ir.Graph | None = None,
    cost_margin: float = 0.0,
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
        cost: what the budgets constrain instead of MACs, e.g. the estimated
            cycles of :class:`reds_tf.latency.LatencyCost`: its terms are
            rebuilt for every submodel from the ones before it and the budgets
            are fractions of the full model's cost after all of them (see
            :func:`_nested`); None for MACs.
        memory_bytes: optional bound on each submodel's activation arena in
            bytes, as the exported runtime plans it (:func:`reds_tf.memory.plan`):
            one integer for every submodel, or one entry per budget (in the
            order of ``budgets``; None: no bound). Needs the graph (as
            ``layers`` or ``graph``). See :func:`_with_memory`.
        graph: the network graph (:func:`reds_tf.ir.from_keras`) when ``layers``
            is the cost model; with a graph every submodel's planned
            ``arena_bytes`` is recorded.
        cost_margin: with a ``cost``, each submodel below the full model is
            held to (budget - cost_margin) of the reference: room for the
            estimate's error, so that the measured cost stays within budget.

    Returns:
        A :class:`KnapsackResult`, smallest budget first. Widths are nested:
        every layer's width never decreases from one submodel to the next.

    Raises:
        InfeasibleBudgetError: the smallest budget is below
            :func:`min_macs_fraction`, or a memory bound cannot be met.
    """
    if method not in ("auto", "milp"):
        raise ConfigError(f"knapsack method must be 'auto' or 'milp', got {method!r}")
    if not (isinstance(time_limit, (int, float)) and time_limit > 0):
        raise ConfigError(
            f"knapsack time_limit must be a positive number of seconds, got {time_limit!r}"
        )
    if not (0.0 <= cost_margin < 0.5):
        raise ConfigError(f"knapsack cost margin must be in [0, 0.5), got {cost_margin!r}")
    inst = _prepare(layers, scores, budgets, block, max_activation_elems)
    inst.margin = cost_margin if cost is not None else 0.0
    # A private folder for CBC's temp files: concurrent runs cannot collide and
    # files are removed even when the solver fails.
    with tempfile.TemporaryDirectory(prefix="reds-cbc-") as tmp:

        def solve(
            budget: float, cap: int, prev: Mapping[str, int], history: Sequence[Mapping[str, int]]
        ) -> tuple[dict[str, int], str]:
            chosen = _solve_chain(inst, cap, prev) if method == "auto" else None
            if chosen is not None:
                return chosen, "optimal"
            return _solve_one(inst, budget, prev, time_limit, tmp)

        return _with_memory(inst, block, cost, solve, log, memory_bytes, graph or layers, budgets)


# Rounds of re-solving when a submodel's exact arena (the greedy placement)
# exceeds its bound although the linear terms met it.
_MEMORY_ROUNDS = 6


def _memory_bounds(inst: _Instance, memory_bytes, budgets_given: Sequence[float]) -> list:
    """``memory_bytes`` as one bound per budget in the instance's (sorted) order."""
    if memory_bytes is None or isinstance(memory_bytes, (int, np.integer)):
        bounds = [memory_bytes] * len(budgets_given)
    else:
        bounds = list(memory_bytes)
        if len(bounds) != len(budgets_given):
            raise ConfigError(
                f"memory_bytes has {len(bounds)} entries for {len(budgets_given)} budgets; "
                "give one per budget (or one number for every submodel)"
            )
    for b in bounds:
        if b is not None and (isinstance(b, bool) or int(b) != b or b < 1):
            raise ConfigError(f"a memory bound must be a positive whole number of bytes, got {b!r}")
    order = sorted(range(len(bounds)), key=lambda i: float(budgets_given[i]))
    return [None if bounds[i] is None else int(bounds[i]) for i in order]


def _memory_terms(inst: _Instance, graph: ir.Graph) -> list[tuple[str, int, dict[str, int]]]:
    """The planner's linear arena terms (:func:`reds_tf.memory.linear_terms`,
    bytes) over the instance's chosen widths."""
    out = []
    for t in memory.linear_terms(graph):
        const, lin = t.const, {}
        for name, per in t.coef.items():
            src = inst.source.get(name, name)
            if isinstance(src, str):
                if src not in inst.levels:
                    raise ValueError(f"memory term of {t.step!r} names {name!r}, no chosen width")
                lin[src] = lin.get(src, 0) + per
            else:
                const += per * int(src)
        out.append((t.step, const, lin))
    return out


def arena_bytes(graph: ir.Graph, widths: Mapping[str, int]) -> int:
    """The exact activation arena (bytes) of the submodel with these widths
    (every prunable width-carrying node named; others at full width), as the
    export plans it."""
    chosen = {
        n.name: int(widths[n.name])
        for n in graph.nodes
        if n.kind in ir.CHOSEN_KINDS and n.tied is None and n.name in widths
    }
    return memory.plan(memory.steps_from_graph(graph, chosen)).arena_bytes


def _suffix_min(bounds: Sequence[int | None]) -> list[int | None]:
    """Submodel k's widths are at most every later submodel's, so it meets the
    smallest bound of itself and every later one (the linear terms grow with
    every width): what its own solve must respect."""
    out: list[int | None] = []
    cur: int | None = None
    for b in reversed(bounds):
        if b is not None:
            cur = b if cur is None else min(cur, b)
        out.append(cur)
    return out[::-1]


def _with_memory(
    inst: _Instance,
    block: int,
    cost: SubmodelCost | None,
    solve: Callable[..., tuple[dict[str, int], str]],
    log: Callable[[str], None] | None,
    memory_bytes,
    graph,
    budgets_given: Sequence[float],
) -> KnapsackResult:
    """:func:`_nested` under per-submodel arena bounds.

    Submodel k's arena, as :func:`reds_tf.memory.plan` places it, must not exceed
    its bound. The solvers bound the planner's linear terms
    (:func:`reds_tf.memory.linear_terms`: their maximum is the bytes some layer
    needs at once; bytes, one per int8 element) by the smallest bound of
    submodel k and every later one (nesting: a later submodel is no narrower),
    plus the terms' alignment excess at the smallest widths.
    The greedy placement usually reaches that maximum exactly but not always,
    so every submodel is then planned exactly; one above its bound has its
    linear bound tightened by the excess and all submodels are solved again
    (at most :data:`_MEMORY_ROUNDS` rounds). ``budgets_given``: the budgets in
    the caller's order (that of a list of bounds)."""
    has_graph = isinstance(graph, ir.Graph)
    if memory_bytes is not None and inst.max_act is not None:
        raise ConfigError("give either max_activation_elems or memory_bytes, not both")
    bounds = _memory_bounds(inst, memory_bytes, budgets_given)
    if memory_bytes is not None and not has_graph:
        raise ValueError("memory_bytes needs the graph: pass it as layers or graph=")
    bounded = any(b is not None for b in bounds)
    if not bounded:
        res = _nested(inst, block, cost, solve, log)
        if has_graph:
            res.arena_bytes = [arena_bytes(graph, w) for w in res.widths]
            res.memory_bytes = list(bounds)
        return res
    inst.act = _memory_terms(inst, graph)
    inst.act_unit = "bytes"
    low = {n: inst.levels[n][0] for n in inst.free}
    low_arena = arena_bytes(graph, low)
    full_arena = arena_bytes(graph, {n: inst.levels[n][-1] for n in inst.free})
    for k, (budget, bound) in enumerate(zip(inst.budgets, bounds, strict=True)):
        if bound is None:
            continue
        if budget >= 1.0 and full_arena > bound:
            raise InfeasibleBudgetError(
                f"memory bound {bound:,} bytes of the full model (budget {budget:g}) is "
                f"below its arena of {full_arena:,} bytes; raise it to at least {full_arena:,}"
            )
        if low_arena > bound:
            raise InfeasibleBudgetError(
                f"memory bound {bound:,} bytes of submodel {k} (budget {budget:g}) is below "
                f"the smallest submodel's arena of {low_arena:,} bytes (every prunable layer "
                f"at one block of {block} units); raise it to at least {low_arena:,} or "
                "lower `block`"
            )
    # The terms count up to 3 bytes of alignment per buffer that widths in whole
    # blocks rarely need: start from the bound plus the terms' excess over the
    # exact arena at the smallest widths (the exact re-check below is the rule).
    slack = max(0, _act_at(inst, {n: 0 for n in inst.free}) - low_arena)
    tight = [None if b is None else b + slack for b in bounds]
    over: list[int] = []
    rounds = 0
    while rounds < _MEMORY_ROUNDS:
        rounds += 1
        inst.act_bounds = _suffix_min(tight)
        lines: list[str] = []
        try:
            res = _nested(inst, block, cost, solve, lines.append)
        except InfeasibleBudgetError:
            if not over:
                raise  # the bounds as given, not a tightened one
            break  # tightened below what the terms allow: the placement cannot meet it
        arenas = [arena_bytes(graph, w) for w in res.widths]
        over = [
            k
            for k, (a, b) in enumerate(zip(arenas, bounds, strict=True))
            if b is not None and a > b
        ]
        if not over:
            res.arena_bytes, res.memory_bytes = arenas, list(bounds)
            if log is not None:
                for line in lines:
                    log(line)
                shown = ", ".join(
                    f"{a:,}" + ("" if b is None else f" (<= {b:,})")
                    for a, b in zip(arenas, bounds, strict=True)
                )
                log(f"knapsack: activation arenas {shown} bytes")
            return res
        for k in over:
            tight[k] = int(tight[k]) - (arenas[k] - int(bounds[k]))
    k = over[0]
    raise InfeasibleBudgetError(
        f"memory bound {bounds[k]:,} bytes of submodel {k} (budget {inst.budgets[k]:g}) not "
        f"met: after {rounds} rounds its planned arena is still {arenas[k]:,} bytes (the "
        "placement needs more than the linear terms allow for); raise the bound"
    )


# Rounds of the fixed point between the submodels and the full model's cost
# (a history-dependent cost): the full model's cost depends on the submodels
# before it, which depend on the budgets it sets.
_MAX_ROUNDS = 6


def _nested(
    inst: _Instance,
    block: int,
    cost: SubmodelCost | None,
    solve: Callable[..., tuple[dict[str, int], str]],
    log: Callable[[str], None] | None,
) -> KnapsackResult:
    """Every budget bottom-up, each submodel no narrower than the one before.

    With MACs the budgets are fractions of the full model's MACs. With a
    ``cost``, the cost tables are rebuilt for every submodel from the widths
    of the ones before it, and the reference is the full model's cost after
    all of them: solved again with the reference the previous round's
    submodels give until they no longer change (at most :data:`_MAX_ROUNDS`
    rounds; without convergence the best round whose submodels keep their
    budgets of their own full model's cost, else the last)."""
    reference: list[dict[str, int]] | None = None
    rounds: list[tuple[bool, KnapsackResult, list[str]]] = []
    converged = cost is None
    for _ in range(_MAX_ROUNDS if cost is not None else 1):
        lines: list[str] = []
        if cost is not None:
            inst.full_cost = _full_cost_after(inst, cost, reference or [])
            _set_costs(inst, cost, [])
        _check_feasible(inst, block)
        res = KnapsackResult()
        prev = {n: inst.levels[n][0] for n in inst.free}
        history: list[dict[str, int]] = []
        for k, budget in enumerate(inst.budgets):
            t0 = time.perf_counter()
            if inst.act_bounds is not None:
                inst.max_act = inst.act_bounds[k]
            if cost is not None:
                _set_costs(inst, cost, history)
            if budget >= 1.0:
                chosen = {n: inst.levels[n][-1] for n in inst.free}
                status = "full model"
            else:
                cap = math.floor((budget - inst.margin) * inst.full_cost)
                need = _cost_at(inst, {n: inst.levels[n].index(prev[n]) for n in inst.free})
                if need > cap:
                    # Only a cost that depends on the submodels before (the strips of the
                    # nested layout) can price the previous submodel's widths out.
                    raise InfeasibleBudgetError(
                        f"budget {budget:g} is infeasible: after the smaller submodels even "
                        f"their widths cost {need:,} {inst.cost_name}, above {cap:,}; set the "
                        "budgets further apart"
                    )
                chosen, status = solve(budget, cap, prev, history)
                chosen = _fill(inst, chosen, cap)
            prev = _record(
                res, inst, budget, chosen, status, time.perf_counter() - t0, lines.append
            )
            history.append(prev)
        if cost is None:
            rounds.append((True, res, lines))
            break
        subs = [w for b, w in zip(res.budgets, res.widths, strict=True) if b < 1.0]
        # The full model's own cost after these submodels: what the budgets mean.
        full = _full_cost_after(inst, cost, subs)
        res.full_cost = full
        res.cost_fraction = [c / full for c in res.cost]
        ok = all(
            c <= (b - inst.margin) * full
            for b, c in zip(res.budgets, res.cost, strict=True)
            if b < 1.0
        )
        rounds.append((ok, res, lines))
        if subs == reference:
            converged = True
            break
        reference = subs
    valid = [r for r in rounds if r[0]]
    _, res, lines = (
        rounds[-1] if converged or not valid else max(valid, key=lambda r: sum(r[1].value))
    )
    if log is not None:
        for line in lines:
            log(line)
        if cost is not None:
            state = ""
            if not converged:
                which = "the best round within budget" if valid else "the last round"
                state = f", not converged ({which})"
            fracs = ", ".join(f"{f:.4f}" for f in res.cost_fraction)
            log(
                f"knapsack on {inst.cost_name}: {len(rounds)} round(s){state}; of the full "
                f"model's {res.full_cost:,} {inst.cost_name} after these submodels: {fracs}"
            )
    return res


def _full_cost_after(
    inst: _Instance, cost: SubmodelCost, history: Sequence[Mapping[str, int]]
) -> int:
    """The full model's cost as the submodel after ``history``."""
    _set_costs(inst, cost, history)
    return _cost_at(inst, {n: len(inst.levels[n]) - 1 for n in inst.free})


def _solve_one(
    inst: _Instance,
    budget: float,
    prev: Mapping[str, int],
    time_limit: float,
    tmp_dir: str,
) -> tuple[dict[str, int], str]:
    prob = pulp.LpProblem("reds_knapsack", pulp.LpMaximize)
    cap = math.floor(budget * inst.full_cost)
    # Allowed level indices per layer: nesting removes levels below the previous width.
    allowed = {n: [a for a, v in enumerate(inst.levels[n]) if v >= prev[n]] for n in inst.free}
    # MACs never decrease when a width grows, so a level (or a pair of levels) that
    # exceeds the budget with every other layer at its narrowest allowed width can
    # never be chosen: drop it. This is exact and shrinks the model a lot at small budgets.
    # A cost that may decrease (a kernel taking a faster path) keeps every level.
    low = {n: allowed[n][0] for n in inst.free}
    if inst.monotone:
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
    for k, ((p, c), tab) in enumerate(inst.pair.items()):
        z = {
            (a, b): _var(prob, f"z_{k}_{a}_{b}", 0, None, pulp.LpContinuous)
            for a in allowed[p]
            for b in allowed[c]
            if not inst.monotone or _fits(inst, {**low, p: a, c: b}, cap)
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
        cost_terms += [(z[a, b], int(tab[a, b])) for (a, b) in z]
        z_all.append((p, c, z))
    # Integer costs at any integral point, so flooring the right-hand side is exact.
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
    for p, c in inst.pair:
        if pos[c] != pos[p] + 1:
            return None
    for _name, _c, lin in inst.act:
        idx = sorted(pos[n] for n in lin)
        if len(idx) > 2 or (len(idx) == 2 and idx[1] != idx[0] + 1):
            return None
    return order


def _solve_chain(inst: _Instance, cap: int, prev: Mapping[str, int]) -> dict[str, int] | None:
    """Exact nested knapsack on a chain by dynamic programming over Pareto fronts.

    State after layer i: its level, with the Pareto front of (cost so far, value
    so far) over the choices of layers 0..i (more cost only with more value).
    A transition adds the layer's own cost, the cost coupled with its
    neighbour and its kept importance; entries that cannot meet ``cap`` even
    with the cheapest allowed choice of every later layer are dropped.
    Returns the widths of the highest value (ties: least cost), None if the
    instance is not a chain (the MILP handles it).
    """
    order = _chain_order(inst)
    if order is None or not order:
        return None
    n_l = len(order)
    vals = [np.asarray(inst.levels[n], dtype=np.int64) for n in order]
    allowed = [np.asarray([a for a, v in enumerate(inst.levels[n]) if v >= prev[n]]) for n in order]
    pairm = [inst.pair.get((order[i - 1], order[i])) if i else None for i in range(n_l)]
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
    # after[i][a]: least cost still to come after layer i at level a (the later
    # layers' own and coupled costs, each at its cheapest allowed level), exact
    # by a backward pass, so the pruning holds for any cost, monotone or not.
    lins = [np.asarray(inst.lin[n], dtype=np.int64) for n in order]
    after = [np.zeros(len(v), np.int64) for v in vals]
    best_from = lins[n_l - 1].copy()
    for i in range(n_l - 2, -1, -1):
        nxt = allowed[i + 1]
        cand = np.broadcast_to(best_from[nxt], (len(vals[i]), len(nxt)))
        if pairm[i + 1] is not None:
            cand = pairm[i + 1][:, nxt] + cand
        after[i] = cand.min(axis=1)
        best_from = lins[i] + after[i]
    budget = cap - inst.const

    # fronts[i][a] = (cost, value, back_level, back_index) arrays for layer i level a.
    fronts: list[dict[int, tuple]] = [dict() for _ in range(n_l)]
    cum0 = inst.cum[order[0]]
    for a in allowed[0]:
        m = int(lins[0][a])
        if m + int(after[0][a]) <= budget:
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
            rest = int(after[i][b])
            parts_m, parts_v, parts_a, parts_k = [], [], [], []
            for a, (m, v, _, _) in fronts[i - 1].items():
                if pair[i] is not None and pair[i][a, b]:
                    continue
                coupled = int(pairm[i][a, b]) if pairm[i] is not None else 0
                mm = m + coupled + int(lin[b])
                ok = mm + rest <= budget
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
            # Pareto filter: by cost ascending (value descending on ties), keep
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
        j = int(np.argmax(v))  # fronts are cost-sorted: the first maximum is the cheapest
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


def _cost_at(inst: _Instance, level_index: Mapping[str, int]) -> int:
    """The cost when every chosen-width layer ``n`` sits at level ``level_index[n]``."""
    total = inst.const + sum(int(inst.lin[n][a]) for n, a in level_index.items())
    return total + sum(int(t[level_index[p], level_index[c]]) for (p, c), t in inst.pair.items())


def _act_at(inst: _Instance, level_index: Mapping[str, int]) -> int:
    """Largest activation term at the given levels: per-layer input+output
    elements, or with memory bounds the arena's linear bound in bytes."""
    return max(
        (
            c + sum(per * inst.levels[n][level_index[n]] for n, per in lin.items())
            for _name, c, lin in inst.act
        ),
        default=0,
    )


def _fits(inst: _Instance, level_index: Mapping[str, int], cap: int) -> bool:
    if _cost_at(inst, level_index) > cap:
        return False
    return inst.max_act is None or _act_at(inst, level_index) <= inst.max_act


def _fill(inst: _Instance, widths: Mapping[str, int], cap: int) -> dict[str, int]:
    """Grow widths one level at a time while the budget allows and no value is lost.

    Scores are usually >= 0, so an optimum may leave budget unused only on units
    worth nothing (dead units score exactly 0); spending it on them keeps the
    value optimal and gives fine-tuning that capacity. Each step takes the move
    with the largest gain, then the cheapest.
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
            key = (gain, -_cost_at(inst, trial))
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
    cost: SubmodelCost | None = None,
    memory_bytes: int | Sequence[int | None] | None = None,
    graph: ir.Graph | None = None,
    cost_margin: float = 0.0,
) -> KnapsackResult:
    """Exhaustive search with the same nesting rule as :func:`solve_nested`; small instances only.

    Each budget takes the highest-value admissible widths (ties: lower cost,
    then the first in enumeration order); the next budget starts from them.
    Costs are evaluated directly (MACs from the cost model, a ``cost``'s terms
    at the widths, :func:`reds_tf.memory.linear_terms` at the widths), not
    from the solvers' tables; memory bounds go through the same exact re-check
    as :func:`solve_nested`.
    """
    if not (0.0 <= cost_margin < 0.5):
        raise ConfigError(f"knapsack cost margin must be in [0, 0.5), got {cost_margin!r}")
    inst = _prepare(layers, scores, budgets, block, max_activation_elems)
    inst.margin = cost_margin if cost is not None else 0.0
    the_graph = graph or layers
    mem_terms = (
        memory.linear_terms(the_graph)
        if memory_bytes is not None and isinstance(the_graph, ir.Graph)
        else []
    )
    n_comb = math.prod(len(inst.levels[n]) for n in inst.free)
    if n_comb > _BRUTEFORCE_LIMIT:
        raise ValueError(f"{n_comb} width combinations is too many for brute force")

    def solve(
        budget: float, cap: int, prev: Mapping[str, int], history: Sequence[Mapping[str, int]]
    ) -> tuple[dict[str, int], str]:
        terms = cost.terms(history) if cost is not None else None
        best: tuple[float, float] | None = None
        best_w: dict[str, int] = {}
        choices = [[v for v in inst.levels[n] if v >= prev[n]] for n in inst.free]
        for combo in itertools.product(*choices):
            w = dict(zip(inst.free, combo, strict=True))
            c = model_macs(inst.layers, w) if terms is None else _direct_cost(inst, terms, w)
            if c > cap:
                continue
            if max_activation_elems is not None and (
                max(model_activation_elems(inst.layers, w).values()) > max_activation_elems
            ):
                continue
            if mem_terms and inst.max_act is not None:
                full_w = resolve_widths(inst.layers, w)
                if max(t.value(full_w) for t in mem_terms) > inst.max_act:
                    continue
            key = (_value(inst, w), -c)
            if best is None or key > best:
                best, best_w = key, w
        assert best is not None  # prev fits (checked by _nested)
        return best_w, "optimal"

    return _with_memory(inst, block, cost, solve, None, memory_bytes, the_graph, budgets)


def _direct_cost(inst: _Instance, terms: Sequence[CostTerm], chosen: Mapping[str, int]) -> int:
    """A cost's terms summed at the given chosen widths (rounded as the tables are)."""
    widths = resolve_widths(inst.layers, chosen)
    total = 0
    for t in terms:
        v = t.fn(*(widths[w] if isinstance(w, str) else int(w) for w in t.widths))
        total += int(np.rint(v))
    return total
