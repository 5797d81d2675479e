"""Nested knapsack: optimal vs brute force, nested, within budget, fast on the default model."""

from __future__ import annotations

import itertools
import resource
import tempfile
import threading

import numpy as np
import pytest

from reds_tf.costs import (
    CostLayer,
    full_widths,
    model_activation_elems,
    model_macs,
    resolve_widths,
)
from reds_tf.errors import ConfigError, InfeasibleBudgetError
from reds_tf.knapsack import (
    CostTerm,
    free_layers,
    min_macs_fraction,
    min_widths,
    solve_bruteforce,
    solve_nested,
    width_levels,
)


def _sorted_scores(rng, layers, *, decay=None):
    """Random positive per-unit scores, sorted descending, for every chosen-width layer."""
    out = {}
    for layer in free_layers(layers):
        s = rng.exponential(1.0, layer.units)
        if decay is not None:
            s *= np.exp(-np.arange(layer.units) / decay)
        out[layer.name] = np.sort(s)[::-1] * 10 ** rng.uniform(-4, 1)
    return out


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (the CBC runs)."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _default_layers():
    return [
        CostLayer("fc1", "dense", 256, 1, None, 784),
        CostLayer("fc2", "dense", 256, 1, "fc1", 256),
        CostLayer("logits", "dense", 10, 1, "fc2", 256, prunable=False),
    ]


def _random_instance(rng):
    """2-3 prunable layers with few levels; sometimes a non-chain topology or a depthwise layer."""
    n = int(rng.integers(2, 4))
    block = int(rng.integers(2, 5))
    layers = []
    prev = None
    for i in range(n):
        units = int(rng.integers(block, 6 * block + 1))  # 1..6 levels, maybe a ragged last one
        kind = str(rng.choice(["dense", "conv"]))
        mpp = 1 if kind == "dense" else int(rng.integers(2, 20))
        in_units = int(rng.integers(3, 40))
        # Occasionally consume the model input again (two layers sharing a producer).
        producer = prev if (prev is None or rng.random() > 0.2) else None
        layers.append(CostLayer(f"l{i}", kind, units, mpp, producer, in_units))
        prev = f"l{i}"
        if kind == "conv" and rng.random() < 0.4:
            layers.append(
                CostLayer(f"dw{i}", "depthwise", units, int(rng.integers(1, 30)), prev, 0)
            )
            prev = f"dw{i}"
    layers.append(CostLayer("out", "dense", int(rng.integers(2, 11)), 1, prev, 0, prunable=False))
    lo = min_macs_fraction(layers, block)
    budgets = sorted(rng.uniform(lo, 1.0, size=int(rng.integers(2, 5))).tolist()) + [1.0]
    return layers, block, budgets


def _assert_valid(layers, block, res):
    full = model_macs(layers, full_widths(layers))
    assert res.budgets == sorted(res.budgets)
    for k, b in enumerate(res.budgets):
        w = res.widths[k]
        assert set(w) == {layer.name for layer in layers}
        assert res.macs[k] == model_macs(layers, w)
        assert res.macs_fraction[k] == pytest.approx(res.macs[k] / full)
        if b < 1.0:
            assert res.macs[k] <= b * full
        else:
            assert w == full_widths(layers)
        for layer in free_layers(layers):
            assert w[layer.name] in width_levels(layer.units, block)
            if k > 0:
                assert w[layer.name] >= res.widths[k - 1][layer.name], "nesting violated"


@pytest.mark.parametrize("seed", range(12))
def test_matches_bruteforce_on_small_instances(seed):
    rng = np.random.default_rng(seed)
    layers, block, budgets = _random_instance(rng)
    scores = _sorted_scores(rng, layers)
    milp = solve_nested(layers, scores, budgets, block, log=None)
    brute = solve_bruteforce(layers, scores, budgets, block)
    _assert_valid(layers, block, milp)
    _assert_valid(layers, block, brute)
    assert milp.budgets == brute.budgets
    assert all(s == "optimal" for s in milp.status[:-1]) and milp.status[-1] == "full model"
    # Ties could give different widths; the optimal values must agree.
    np.testing.assert_allclose(milp.value, brute.value, rtol=1e-9, atol=0)


def test_matches_bruteforce_on_the_default_model():
    layers = _default_layers()
    rng = np.random.default_rng(7)
    scores = _sorted_scores(rng, layers, decay=60.0)
    budgets = [0.1, 0.25, 0.5, 0.75, 1.0]
    milp = solve_nested(layers, scores, budgets, 4, log=None)
    brute = solve_bruteforce(layers, scores, budgets, 4)
    np.testing.assert_allclose(milp.value, brute.value, rtol=1e-9, atol=0)


def test_bruteforce_respects_nesting_rule():
    # Greedy-nested optimum differs from the independent optimum: layer a is worth
    # much more per MAC at the small budget, layer b at the larger one.
    layers = [
        CostLayer("a", "dense", 4, 1, None, 10),
        CostLayer("b", "dense", 4, 1, "a", 4),
        CostLayer("o", "dense", 1, 1, "b", 4, prunable=False),
    ]
    scores = {"a": np.array([10.0, 5.0, 0.1, 0.1]), "b": np.array([1.0, 1.0, 1.0, 1.0])}
    res = solve_bruteforce(layers, scores, [0.3, 0.6], 1)
    milp = solve_nested(layers, scores, [0.3, 0.6], 1, log=None)
    _assert_valid(layers, 1, res)
    np.testing.assert_allclose(milp.value, res.value, rtol=1e-12)


def test_default_model_speed_and_budget_use():
    """Every submodel in [budget - 2 %, budget], all budgets proven optimal."""
    layers = _default_layers()
    lines: list[str] = []
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        scores = _sorted_scores(rng, layers, decay=float(rng.uniform(40, 150)))
        cpu0 = _cpu_seconds()
        res = solve_nested(layers, scores, [0.5, 1.0, 0.25, 0.75], 4, log=lines.append)
        cpu = _cpu_seconds() - cpu0
        _assert_valid(layers, 4, res)
        assert res.budgets == [0.25, 0.5, 0.75, 1.0]
        # Speed is measured in BENCHMARKS.md, not asserted here (shared, noisy machines);
        # the CPU time is only reported when something else fails.
        del cpu
        assert res.all_optimal
        for b, f in zip(res.budgets[:-1], res.macs_fraction[:-1], strict=True):
            assert b - 0.02 <= f <= b, (b, f)
        assert res.macs_fraction[-1] == 1.0
    assert len(lines) == 12
    assert "budget 0.25: optimal in" in lines[0] and "MACs" in lines[0]
    assert "full model" in lines[3]


def test_infeasible_budget_names_minimum_and_fix():
    layers = _default_layers()
    lo = min_macs_fraction(layers, 4)
    assert lo == pytest.approx((784 * 4 + 4 * 4 + 4 * 10) / (784 * 256 + 256 * 256 + 2560))
    scores = _sorted_scores(np.random.default_rng(0), layers)
    with pytest.raises(InfeasibleBudgetError) as e:
        solve_nested(layers, scores, [0.5, 0.01, 1.0], 4, log=None)
    msg = str(e.value)
    assert "budget 0.01" in msg and f"{lo:.4f}" in msg and "block" in msg and "budgets" in msg
    with pytest.raises(InfeasibleBudgetError):
        solve_bruteforce(layers, scores, [0.01], 4)
    # Exactly at the minimum is feasible and gives the minimum widths.
    res = solve_nested(layers, scores, [lo], 4, log=None)
    assert res.widths[0] == {"fc1": 4, "fc2": 4, "logits": 10}


def test_bad_inputs():
    layers = _default_layers()
    scores = _sorted_scores(np.random.default_rng(0), layers)
    with pytest.raises(ConfigError, match="block"):
        solve_nested(layers, scores, [0.5], 0, log=None)
    with pytest.raises(ConfigError, match="budget"):
        solve_nested(layers, scores, [0.5, -0.1], 4, log=None)
    with pytest.raises(ConfigError, match="time_limit"):
        solve_nested(layers, scores, [0.5], 4, log=None, time_limit=0)
    with pytest.raises(ConfigError, match="empty"):
        solve_nested(layers, scores, [], 4, log=None)
    with pytest.raises(ValueError, match="sorted descending"):
        solve_nested(layers, {**scores, "fc1": scores["fc1"][::-1]}, [0.5], 4, log=None)
    with pytest.raises(ValueError, match="shape"):
        solve_nested(layers, {**scores, "fc2": scores["fc2"][:10]}, [0.5], 4, log=None)
    with pytest.raises(ValueError, match="fc2"):
        solve_nested(layers, {"fc1": scores["fc1"]}, [0.5], 4, log=None)


def test_width_levels():
    assert width_levels(16, 4) == [4, 8, 12, 16]
    assert width_levels(10, 4) == [4, 8, 10]
    assert width_levels(3, 4) == [3]
    assert width_levels(5, 1) == [1, 2, 3, 4, 5]
    with pytest.raises(ConfigError):
        width_levels(8, 0)


def test_time_limit_is_reported_not_hidden():
    # Four 256-wide layers: takes seconds to prove optimal, more than the 0.2 s allowed.
    layers = [CostLayer("h0", "dense", 256, 1, None, 784)]
    layers += [CostLayer(f"h{i}", "dense", 256, 1, f"h{i - 1}", 256) for i in range(1, 4)]
    layers.append(CostLayer("out", "dense", 10, 1, "h3", 256, prunable=False))
    scores = _sorted_scores(np.random.default_rng(0), layers, decay=80.0)
    lines: list[str] = []
    res = solve_nested(layers, scores, [0.25], 4, time_limit=0.2, log=lines.append, method="milp")
    _assert_valid(layers, 4, res)
    assert "time limit" in res.status[0] and not res.all_optimal
    assert "time limit" in lines[0] and "optimal" in lines[0]


def test_no_solver_solution_falls_back_to_previous_widths(monkeypatch):
    # CBC can stop before reading the warm start; simulate it deterministically.
    import pulp

    def no_solution(self, solver=None, **kwargs):
        self.status, self.sol_status = pulp.LpStatusNotSolved, pulp.LpSolutionNoSolutionFound
        return self.status

    layers = _default_layers()
    scores = _sorted_scores(np.random.default_rng(5), layers, decay=60.0)
    good = solve_nested(layers, scores, [0.25], 4, log=None, method="milp")
    monkeypatch.setattr(pulp.LpProblem, "solve", no_solution)
    lines: list[str] = []
    res = solve_nested(layers, scores, [0.25, 0.5, 1.0], 4, log=lines.append, method="milp")
    _assert_valid(layers, 4, res)
    assert res.status[0].startswith("no CBC solution") and "not optimal" in lines[0]
    assert res.status[2] == "full model" and not res.all_optimal
    assert res.value[0] <= good.value[0]
    # Grown greedily from the minimum: no layer can grow one more level.
    full = model_macs(layers, full_widths(layers))
    for name in ("fc1", "fc2"):
        w = res.widths[0]
        if w[name] < 256:
            assert model_macs(layers, {**w, name: w[name] + 4}) > 0.25 * full


def test_concurrent_solves_do_not_collide(monkeypatch, tmp_path):
    # Both solves share one temp root: CBC files must stay apart and be cleaned up.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    layers = _default_layers()
    results = {}

    def run(seed):
        scores = _sorted_scores(np.random.default_rng(seed), layers, decay=50.0)
        results[seed] = (
            solve_nested(layers, scores, [0.25, 0.5], 4, log=None),
            solve_bruteforce(layers, scores, [0.25, 0.5], 4),
        )

    threads = [threading.Thread(target=run, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for milp, brute in results.values():
        np.testing.assert_allclose(milp.value, brute.value, rtol=1e-9)
    assert len(results) == 2
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seed", range(6))
def test_activation_limit_matches_bruteforce(seed):
    rng = np.random.default_rng(1000 + seed)
    layers, block, budgets = _random_instance(rng)
    budgets = [b for b in budgets if b < 1.0]
    scores = _sorted_scores(rng, layers)
    lo = max(model_activation_elems(layers, min_widths(layers, block)).values())
    hi = max(model_activation_elems(layers, full_widths(layers)).values())
    limit = int(lo + rng.uniform(0.1, 0.6) * (hi - lo))
    milp = solve_nested(layers, scores, budgets, block, log=None, max_activation_elems=limit)
    brute = solve_bruteforce(layers, scores, budgets, block, max_activation_elems=limit)
    _assert_valid(layers, block, milp)
    for w in milp.widths:
        assert max(model_activation_elems(layers, w).values()) <= limit
    np.testing.assert_allclose(milp.value, brute.value, rtol=1e-9, atol=0)


def test_activation_limit_errors():
    layers = _default_layers()
    scores = _sorted_scores(np.random.default_rng(0), layers)
    # fc1 reads the 784-element input and writes at least 4: 788 is the floor.
    with pytest.raises(InfeasibleBudgetError, match="activation limit 787"):
        solve_nested(layers, scores, [0.5], 4, log=None, max_activation_elems=787)
    with pytest.raises(ConfigError, match="full model"):
        solve_nested(layers, scores, [0.5, 1.0], 4, log=None, max_activation_elems=900)
    res = solve_nested(layers, scores, [0.25, 0.5], 4, log=None, max_activation_elems=900)
    assert all(w["fc1"] <= 900 - 784 for w in res.widths)


def test_dead_units_do_not_waste_budget():
    # Real Taylor scores contain exact zeros (dead ReLUs). Ties in value must still be
    # broken towards using the budget: afterwards no layer can grow one level.
    layers = _default_layers()
    rng = np.random.default_rng(3)
    scores = _sorted_scores(rng, layers, decay=80.0)
    scores = {n: np.where(np.arange(256) < 150, s, 0.0) for n, s in scores.items()}
    budgets = [0.25, 0.5, 0.75, 1.0]
    milp = solve_nested(layers, scores, budgets, 4, log=None)
    brute = solve_bruteforce(layers, scores, budgets, 4)
    np.testing.assert_allclose(milp.value, brute.value, rtol=1e-9)
    full = model_macs(layers, full_widths(layers))
    for res in (milp, brute):
        _assert_valid(layers, 4, res)
        for b, w in zip(res.budgets[:-1], res.widths[:-1], strict=True):
            assert model_macs(layers, w) >= (b - 0.02) * full
            for name in ("fc1", "fc2"):
                if w[name] < 256:
                    assert model_macs(layers, {**w, name: w[name] + 4}) > b * full


def _residual_instance(rng):
    """A small residual network's cost model: a stem g, an identity block (a, then
    b joined with g by an Add: b is tied to g), a projection block (c, then d
    joined with the 1x1 projection p of g: d tied to p) and the classifier."""
    block = int(rng.integers(1, 4))

    def units() -> int:
        return int(rng.integers(block, 4 * block + 1))

    def mpp() -> int:
        return int(rng.integers(1, 12))

    ug, ua, up, uc = units(), units(), units(), units()
    layers = [
        CostLayer("g", "conv", ug, mpp(), None, 3),
        CostLayer("a", "conv", ua, mpp(), "g", 0),
        CostLayer("b", "conv", ug, mpp(), "a", 0, tied="g"),
        CostLayer("c", "conv", uc, mpp(), "g", 0),
        CostLayer("p", "conv", up, mpp(), "g", 0),
        CostLayer("d", "conv", up, mpp(), "c", 0, tied="p"),
        CostLayer("out", "dense", int(rng.integers(2, 6)), 1, "p", 0, prunable=False),
    ]
    lo = min_macs_fraction(layers, block)
    budgets = sorted(rng.uniform(lo, 1.0, size=int(rng.integers(2, 4))).tolist()) + [1.0]
    return layers, block, budgets


@pytest.mark.parametrize("seed", range(8))
def test_tied_groups_match_bruteforce(seed):
    """A tied group (outputs joined by an Add) is ONE width variable: the MILP
    equals brute force, and every member has its representative's width."""
    rng = np.random.default_rng(500 + seed)
    layers, block, budgets = _residual_instance(rng)
    assert [c.name for c in free_layers(layers)] == ["g", "a", "c", "p"]
    scores = _sorted_scores(rng, layers)
    milp = solve_nested(layers, scores, budgets, block, log=None)
    brute = solve_bruteforce(layers, scores, budgets, block)
    for res in (milp, brute):
        _assert_valid(layers, block, res)
        for w in res.widths:
            assert w["b"] == w["g"] and w["d"] == w["p"]
    np.testing.assert_allclose(milp.value, brute.value, rtol=1e-9, atol=0)


def test_tied_layer_rules():
    from reds_tf.costs import resolve_widths, validate_layers
    from reds_tf.importance import fold_tied_scores

    g = CostLayer("g", "conv", 8, 9, None, 3)
    with pytest.raises(ValueError, match="tied to 'g'"):
        validate_layers([g, CostLayer("b", "conv", 6, 9, "g", 0, tied="g")])
    with pytest.raises(ValueError, match="tied to 'x'"):
        validate_layers([g, CostLayer("b", "conv", 8, 9, "g", 0, tied="x")])
    layers = [g, CostLayer("b", "conv", 8, 9, "g", 0, tied="g"),
              CostLayer("o", "dense", 3, 1, "g", 0, prunable=False)]  # fmt: skip
    assert resolve_widths(layers, {"g": 4}) == {"g": 4, "b": 4, "o": 3}
    with pytest.raises(ValueError, match="width of 'g' \\(joined by an Add\\)"):
        resolve_widths(layers, {"g": 4, "b": 5})
    # Importance: the group's units are one unit each, worth the sum of the members'.
    folded = fold_tied_scores({"g": np.arange(8.0), "b": np.ones(8)}, layers)
    assert list(folded) == ["g"]
    np.testing.assert_array_equal(folded["g"], np.arange(8.0) + 1)


# --- a cost other than MACs (the latency model's interface) ---------------------------


class _SyntheticLatency:
    """A latency-like cost (reds_tf.knapsack.SubmodelCost): per layer a fixed part,
    parts in each width, a coupled part, bumps where a kernel would take a
    slower path (not monotone) and a part that grows with the submodels before
    (the strips of the nested layout)."""

    name = "cycles"

    def __init__(self, layers, rng):
        self.layers = layers
        self.coef = {ly.name: rng.uniform(1, 50, 5) for ly in layers}

    def terms(self, history):
        out = []
        for ly in self.layers:
            a, b, c, d, e = self.coef[ly.name]
            # how often this layer's width grew from one earlier submodel to the next
            grew = sum(h1[ly.name] > h0[ly.name] for h0, h1 in itertools.pairwise(history))
            if ly.kind == "depthwise":

                def fn1(w, a=a, b=b, e=e, g=grew):
                    return 50 * a + b * w + e * (w % 3 == 1) + g * w

                out.append(CostTerm((ly.name,), fn1))
            else:
                src = ly.producer if ly.producer is not None else ly.input_units
                m = ly.macs_per_pair

                def fn(i, o, a=a, b=b, c=c, d=d, e=e, m=m, g=grew):
                    return (
                        100 * a
                        + b * i
                        + c * o
                        + d * m * i * o / 4
                        + e * ((i + o) % 3 == 0)
                        + g * d * o
                    )

                out.append(CostTerm((src, ly.name), fn))
        return out

    def total(self, layers, widths, history=()):
        w = resolve_widths(layers, widths)
        return sum(
            t.fn(*(w[s] if isinstance(s, str) else s for s in t.widths))
            for t in self.terms(list(history))
        )


def _cost_budgets(rng, layers, block, cost):
    lo = cost.total(layers, min_widths(layers, block)) / cost.total(layers, full_widths(layers))
    n = int(rng.integers(2, 4))  # evenly spread, so no budget is within a hair of the last
    return [lo + (1 - lo) * (k + rng.uniform(0.3, 0.7)) / (n + 1) for k in range(1, n + 1)]


def _assert_cost_valid(layers, block, res, cost):
    assert res.cost_name == "cycles"
    history = []
    for k, b in enumerate(res.budgets):
        w = res.widths[k]
        assert res.cost[k] == pytest.approx(cost.total(layers, w, history), abs=len(layers) + 1)
        assert res.cost[k] <= b * res.full_cost or b >= 1.0
        assert res.cost_fraction[k] == pytest.approx(res.cost[k] / res.full_cost)
        for layer in free_layers(layers):
            assert w[layer.name] in width_levels(layer.units, block)
            if k > 0:
                assert w[layer.name] >= res.widths[k - 1][layer.name], "nesting violated"
        history.append(w)
    # the reference is the full model's cost after every submodel
    subs = [w for b, w in zip(res.budgets, res.widths, strict=True) if b < 1.0]
    full = cost.total(layers, full_widths(layers), subs)
    assert res.full_cost == pytest.approx(full, abs=len(layers) + 1)


@pytest.mark.parametrize("seed", range(10))
def test_latency_like_cost_matches_bruteforce(seed):
    """With a history-dependent, non-monotone cost the dynamic programme (chains),
    the MILP and brute force find the same optimal values, nested and within
    budget; residual networks (tied groups) take the MILP."""
    rng = np.random.default_rng(900 + seed)
    make = _residual_instance if seed % 3 == 2 else _random_instance
    layers, block, _ = make(rng)
    cost = _SyntheticLatency(layers, rng)
    budgets = _cost_budgets(rng, layers, block, cost) + [1.0]
    scores = _sorted_scores(rng, layers)
    brute = solve_bruteforce(layers, scores, budgets, block, cost=cost)
    for method in ("auto", "milp"):
        res = solve_nested(layers, scores, budgets, block, log=None, method=method, cost=cost)
        _assert_cost_valid(layers, block, res, cost)
        np.testing.assert_allclose(res.value, brute.value, rtol=1e-9, atol=0)
    _assert_cost_valid(layers, block, brute, cost)


def test_latency_cost_of_the_latency_model_matches_bruteforce():
    """The latency model's knapsack cost (reds_tf.latency.LatencyCost) on a small
    DS-CNN, its grids made up (no QEMU): optimal against brute force, and the
    recorded cost of every submodel is the model's prediction for it."""
    from reds_tf import latency

    S, L = latency.LayerShape, latency.RuntimeLayer
    layers = [
        CostLayer("c1", "conv", 12, 36, None, 3),
        CostLayer("dw", "depthwise", 12, 36, "c1", 0),
        CostLayer("pw", "conv", 12, 16, "dw", 0),
        CostLayer("fc", "dense", 10, 1, "pw", 0, prunable=False),
    ]
    rt = [
        L("c1", S("conv", (8, 8), (4, 4), (3, 3), (2, 2)), 3, "c1", 3, 12),
        L("dw", S("depthwise", (4, 4), (4, 4), (3, 3)), "c1", "c1", 12, 12),
        L("pw", S("pointwise", (4, 4), (4, 4)), "dw", "pw", 12, 12),
        L("gap", S("avgpool", (4, 4), (1, 1), (4, 4)), "pw", "pw", 12, 12),
        L("fc", S("fully_connected"), "pw", "fc", 12, 10),
    ]
    g = [4, 8, 12]

    def grid(ins, outs, f):
        return latency.Grid(ins, outs, np.array([[f(i, o) for o in outs] for i in ins], float))

    models = [
        latency.LayerModel(rt[0], 4, grid([3], g, lambda i, o: 900 + 130 * o)),
        latency.LayerModel(rt[1], 4, grid(g, g, lambda i, o: 200 + 60 * i)),
        latency.LayerModel(
            rt[2],
            4,
            grid(g, g, lambda i, o: 300 + 9 * i + 20 * o + 7 * i * o),
            grid(g, g, lambda i, o: 320 + 9 * i + 20 * o + 7 * i * o),
            per_strip=40.0,
            per_segment=25.0,
        ),
        latency.LayerModel(rt[3], 4, grid(g, g, lambda i, o: 50 + 12 * i)),
        latency.LayerModel(rt[4], 4, grid(g, [10], lambda i, o: 80 + 25 * i)),
    ]
    model = latency.LatencyModel(models)
    cost = latency.LatencyCost(model)
    scores = _sorted_scores(np.random.default_rng(3), layers)
    budgets = [0.55, 0.75, 1.0]
    res = solve_nested(layers, scores, budgets, 4, log=None, cost=cost)
    brute = solve_bruteforce(layers, scores, budgets, 4, cost=cost)
    np.testing.assert_allclose(res.value, brute.value, rtol=1e-9, atol=0)
    assert res.cost_name == "cycles" and all(s != "feasible" for s in res.status)
    pred = model.predict(res.widths)
    np.testing.assert_allclose(res.cost, pred, atol=len(rt))
    assert res.full_cost == pytest.approx(pred[-1], abs=len(rt))
    for k, b in enumerate(budgets[:-1]):
        assert res.cost[k] <= b * res.full_cost


@pytest.mark.parametrize("seed", range(4))
def test_latency_margin_keeps_room_below_every_budget(seed):
    """cost_margin (knapsack.latency_margin): every submodel below the full model
    is held to (budget - margin) of the full model's cost; the solvers still
    agree with brute force under it, and MACs budgets ignore it (exact)."""
    rng = np.random.default_rng(950 + seed)
    layers, block, _ = _random_instance(rng)
    cost = _SyntheticLatency(layers, rng)
    budgets = _cost_budgets(rng, layers, block, cost) + [1.0]
    scores = _sorted_scores(rng, layers)
    lo = cost.total(layers, min_widths(layers, block)) / cost.total(layers, full_widths(layers))
    margin = min(0.03, (budgets[0] - lo) / 2)
    res = solve_nested(layers, scores, budgets, block, log=None, cost=cost, cost_margin=margin)
    brute = solve_bruteforce(layers, scores, budgets, block, cost=cost, cost_margin=margin)
    np.testing.assert_allclose(res.value, brute.value, rtol=1e-9, atol=0)
    for c, b in zip(res.cost, res.budgets, strict=True):
        assert b >= 1.0 or c <= (b - margin) * res.full_cost
    plain = solve_nested(layers, scores, budgets, block, log=None, cost=cost)
    assert sum(res.value) <= sum(plain.value)
    macs = solve_nested(layers, scores, [0.95, 1.0], block, log=None, cost_margin=margin)
    assert macs.macs == solve_nested(layers, scores, [0.95, 1.0], block, log=None).macs
    with pytest.raises(ConfigError, match="margin"):
        solve_nested(layers, scores, budgets, block, log=None, cost=cost, cost_margin=0.7)
