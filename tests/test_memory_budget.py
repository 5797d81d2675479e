"""Memory budgets that mean something (issue 20, part 2): ``memory_budget_bytes``
as one bound or one per budget, checked against the exported runtime's arena
(reds_tf/memory.py) before any training; the knapsack bounds every submodel's
planned arena (linear terms, then an exact re-check); the export respects it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import DEFAULT_CONFIG
from pattern_data import write_pattern_npz

from reds_tf import ir, knapsack, memory, rundir
from reds_tf.config import config_to_dict, load_config, parse_config
from reds_tf.costs import cost_layers, full_widths, model_macs
from reds_tf.errors import ConfigError, InfeasibleBudgetError, RunDirError
from reds_tf.knapsack import (
    arena_bytes,
    free_layers,
    min_widths,
    solve_bruteforce,
    solve_nested,
    width_levels,
)

BASE = {"name": "t", "dataset": "fashion_mnist"}


def _plan(graph, widths) -> int:
    """The arena as the brief defines it: plan of the steps of the chosen widths."""
    chosen = {n.name: widths[n.name] for n in graph.nodes if n.kind in ir.CHOSEN_KINDS}
    return memory.plan(memory.steps_from_graph(graph, chosen)).arena_bytes


# ---------------------------------------------------------------- config


def test_config_one_number_or_one_per_budget():
    old = parse_config({**BASE, "budgets": [0.25, 0.5, 1.0], "memory_budget_bytes": 65536})
    assert old.memory_budget_bytes == 65536 and old.memory_bounds() == (65536,) * 3
    assert config_to_dict(old)["memory_budget_bytes"] == 65536
    none = parse_config(BASE)
    assert none.memory_bounds() == (None,) * 4 and "memory_budget_bytes" not in config_to_dict(none)
    cfg = parse_config(
        {**BASE, "budgets": [0.25, 0.5, 1.0], "memory_budget_bytes": [20000, None, 1e5]}
    )
    assert cfg.memory_bounds() == (20000, None, 100000)
    # The resolved config round-trips (a list, null for no bound).
    d = config_to_dict(cfg)
    assert d["memory_budget_bytes"] == [20000, None, 100000]
    assert parse_config(yaml.safe_load(yaml.safe_dump(d)), cfg.source) == cfg
    # budgets without 1: the full model is appended; a list may leave it out (no bound).
    short = parse_config({**BASE, "budgets": [0.25, 0.5], "memory_budget_bytes": [9000, 12000]})
    assert short.budgets == (0.25, 0.5, 1.0) and short.memory_bounds() == (9000, 12000, None)
    full = parse_config({**BASE, "budgets": [0.25, 0.5], "memory_budget_bytes": [1, 2, 3]})
    assert full.memory_bounds() == (1, 2, 3)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ([1000], "memory_budget_bytes must have one entry per budget (3 for budgets "
                 "[0.25, 0.5, 1.0]), got 1 entries"),
        ([1, 2, 3, 4], "got 4 entries"),
        ([0, None, 5], "memory_budget_bytes[0] must be a positive integer (bytes) or null"),
        ([1, 2.5, 5], "memory_budget_bytes[1] must be a positive integer (bytes) or null"),
        ([1, "x", 5], "memory_budget_bytes[1] must be a positive integer"),
        ([1, True, 5], "memory_budget_bytes[1] must be a positive integer"),
        ([1, [2], 5], "memory_budget_bytes[1] must be a positive integer"),
        ([1, 2, 1e12], "memory_budget_bytes[2] must be at most 4294967295"),
        ("lots", "memory_budget_bytes must be a positive integer (bytes) or a list"),
        ({"a": 1}, "memory_budget_bytes must be a positive integer (bytes) or a list"),
        (0, "memory_budget_bytes must be a positive integer"),
    ],
)  # fmt: skip
def test_config_errors_are_one_line(value, needle):
    with pytest.raises(ConfigError) as e:
        parse_config({**BASE, "budgets": [0.25, 0.5, 1.0], "memory_budget_bytes": value})
    assert needle in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- knapsack


def _graph(model_cfg: dict, input_shape=(16, 16, 1), classes=4) -> ir.Graph:
    from reds_tf.models import build_model

    cfg = parse_config({**BASE, "model": model_cfg})
    return ir.from_keras(build_model(cfg.model, input_shape, classes))


DSCNN = {
    "type": "dscnn",
    "first": {"filters": 16, "kernel": 3, "strides": 2},
    "blocks": [{"filters": 16}, {"filters": 24, "strides": 2}],
}


def _scores(rng, graph):
    return {
        lay.name: np.sort(rng.exponential(1.0, lay.units))[::-1]
        for lay in free_layers(cost_layers(graph))
    }


def test_memory_bound_changes_the_chosen_widths():
    """A bound just below the unbounded middle submodel's arena: other widths,
    and the planner's arena of the chosen widths respects the bound."""
    graph = _graph(DSCNN)
    scores = _scores(np.random.default_rng(0), graph)
    budgets = [0.3, 0.6, 1.0]
    free = [lay.name for lay in free_layers(cost_layers(graph))]
    plain = solve_nested(graph, scores, budgets, 4, log=None)
    assert plain.arena_bytes == [_plan(graph, w) for w in plain.widths]
    bound = plain.arena_bytes[1] - 1
    lines: list[str] = []
    for method in ("auto", "milp"):
        res = solve_nested(
            graph, scores, budgets, 4, log=lines.append, method=method,
            memory_bytes=[None, bound, None],
        )  # fmt: skip
        assert [res.widths[1][n] for n in free] != [plain.widths[1][n] for n in free]
        assert _plan(graph, res.widths[1]) <= bound
        assert res.arena_bytes == [_plan(graph, w) for w in res.widths]
        assert res.memory_bytes == [None, bound, None]
        # the smaller submodel is nested inside it, the full model unchanged
        assert all(res.widths[0][n] <= res.widths[1][n] for n in free)
        assert res.widths[2] == plain.widths[2]
        assert res.macs[1] <= 0.6 * res.macs[2]
        assert res.value[1] < plain.value[1]
    assert any("activation arenas" in ln and f"(<= {bound:,})" in ln for ln in lines)
    # One number bounds every submodel: the full model's arena is the least that works.
    full = plain.arena_bytes[-1]
    res = solve_nested(graph, scores, budgets, 4, log=None, memory_bytes=full)
    assert max(res.arena_bytes) <= full
    with pytest.raises(InfeasibleBudgetError, match=f"below its arena of {full:,} bytes"):
        solve_nested(graph, scores, budgets, 4, log=None, memory_bytes=full - 1)


def test_bounds_follow_the_order_of_budgets():
    graph = _graph(DSCNN)
    scores = _scores(np.random.default_rng(1), graph)
    low = arena_bytes(graph, min_widths(cost_layers(graph), 4))
    a = solve_nested(graph, scores, [0.3, 0.6, 1.0], 4, log=None, memory_bytes=[low, None, None])
    b = solve_nested(graph, scores, [0.6, 1.0, 0.3], 4, log=None, memory_bytes=[None, None, low])
    assert a.widths == b.widths and a.arena_bytes[0] <= low
    with pytest.raises(ConfigError, match="memory_bytes has 2 entries for 3 budgets"):
        solve_nested(graph, scores, [0.3, 0.6, 1.0], 4, log=None, memory_bytes=[low, None])
    with pytest.raises(InfeasibleBudgetError, match=f"smallest submodel's arena of {low:,}"):
        solve_nested(
            graph, scores, [0.3, 0.6, 1.0], 4, log=None, memory_bytes=[low - 1, None, None]
        )
    with pytest.raises(ValueError, match="needs the graph"):
        solve_nested(cost_layers(graph), scores, [0.3, 1.0], 4, log=None, memory_bytes=10**6)
    # The cost model plus graph= works as the graph alone does.
    c = solve_nested(
        cost_layers(graph), scores, [0.3, 0.6, 1.0], 4, log=None, graph=graph,
        memory_bytes=[low, None, None],
    )  # fmt: skip
    assert c.widths == a.widths and c.arena_bytes == a.arena_bytes


def _random_case(rng):
    """A small CNN, DS-CNN or ResNet (few width levels) with random scores, budgets
    and per-submodel bounds between the smallest and the full model's arena."""
    block = int(rng.integers(2, 5))
    f = [int(rng.integers(1, 4)) * block + int(rng.integers(0, 2)) for _ in range(3)]
    kind = rng.random()
    if kind < 0.25:  # joins: the lifetime plan, the MILP
        model = {
            "type": "resnet",
            "first": {"filters": f[0]},
            "blocks": [{"filters": f[0]}, {"filters": f[1], "strides": 2}],
        }
    elif kind < 0.6:
        model = {
            "type": "dscnn",
            "first": {"filters": f[0], "kernel": 3, "strides": int(rng.integers(1, 3))},
            "blocks": [{"filters": f[1], "strides": int(rng.integers(1, 3))}, {"filters": f[2]}],
        }
    else:
        model = {
            "type": "cnn",
            "hidden": [f[2]],
            "conv": [{"filters": f[0], "kernel": 3}, {"filters": f[1], "kernel": 3, "strides": 2}],
        }
    side = int(rng.choice([8, 10, 12]))
    graph = _graph(model, (side, side, int(rng.integers(1, 4))), int(rng.integers(2, 6)))
    layers = cost_layers(graph)
    scores = _scores(rng, graph)
    lo = knapsack.min_macs_fraction(layers, block)
    budgets = sorted(rng.uniform(lo, 1.0, size=int(rng.integers(2, 4))).tolist()) + [1.0]
    low = arena_bytes(graph, min_widths(layers, block))
    full = arena_bytes(graph, full_widths(layers))
    bounds = [
        None if rng.random() < 0.2 else int(low + rng.uniform(0, 1) * (full - low)) for _ in budgets
    ]
    bounds[-1] = None if rng.random() < 0.5 else full
    return graph, block, budgets, scores, bounds


@pytest.mark.parametrize("seed", range(12))
def test_memory_terms_match_bruteforce(seed):
    rng = np.random.default_rng(500 + seed)
    graph, block, budgets, scores, bounds = _random_case(rng)
    layers = cost_layers(graph)
    brute = solve_bruteforce(graph, scores, budgets, block, memory_bytes=bounds)
    for method in ("auto", "milp"):
        res = solve_nested(
            graph, scores, budgets, block, log=None, method=method, memory_bytes=bounds
        )
        np.testing.assert_allclose(res.value, brute.value, rtol=1e-9, atol=0)
        full = model_macs(layers, full_widths(layers))
        for k, (b, w) in enumerate(zip(budgets, res.widths, strict=True)):
            assert _plan(graph, w) == res.arena_bytes[k]
            if bounds[k] is not None:
                assert res.arena_bytes[k] <= bounds[k]
            if b < 1.0:
                assert res.macs[k] <= b * full
            for lay in free_layers(layers):
                assert w[lay.name] in width_levels(lay.units, block)
                if k:
                    assert w[lay.name] >= res.widths[k - 1][lay.name], "nesting violated"
    for k, w in enumerate(brute.widths):
        assert bounds[k] is None or _plan(graph, w) <= bounds[k]


def test_exact_recheck_tightens_and_resolves(monkeypatch):
    """When the placement needs more than the linear terms (simulated: 40 bytes
    more for widths above the smallest), the submodel's bound is tightened by the
    excess and the knapsack solved again, within the bound; errors when it
    cannot be met."""
    graph = _graph(DSCNN)
    scores = _scores(np.random.default_rng(0), graph)
    budgets = [0.3, 0.6, 1.0]
    plain = solve_nested(graph, scores, budgets, 4, log=None)
    real = knapsack.arena_bytes
    low = real(graph, min_widths(cost_layers(graph), 4))
    calls: list[int] = []

    def padded(g, widths):
        a = real(g, widths)
        calls.append(a)
        return a if a == low else a + 40

    monkeypatch.setattr(knapsack, "arena_bytes", padded)
    bound = plain.arena_bytes[1]  # met by the linear terms, not by the "placement"
    res = solve_nested(graph, scores, budgets, 4, log=None, memory_bytes=[None, bound, None])
    assert res.arena_bytes[1] <= bound and padded(graph, res.widths[1]) == res.arena_bytes[1]
    assert len(calls) > 2 * len(budgets)  # more than one round
    # A placement always far above the terms (after the two checks of the smallest
    # and the full model): no round meets the bound.
    calls.clear()
    monkeypatch.setattr(
        knapsack,
        "arena_bytes",
        lambda g, w: real(g, w) + (1000 if len(calls.append(0) or calls) > 2 else 0),
    )
    with pytest.raises(
        InfeasibleBudgetError, match=r"not met: after \d rounds its planned arena is still"
    ):
        solve_nested(graph, scores, budgets, 4, log=None, memory_bytes=[None, bound, None])


# ---------------------------------------------------------------- pipeline


def _tiny_config(tmp_path: Path, **extra) -> Path:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data.update(dataset="npz", data={"path": str(write_pattern_npz(tmp_path / "d.npz"))})
    data["model"]["hidden"] = [32, 32]
    data["budgets"] = [0.5, 1.0]
    data["train"].update(epochs=1)
    data["finetune"]["epochs"] = 1
    data["importance"] = {"batches": 4}
    data.update(extra)
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _tiny_graph() -> ir.Graph:
    return _graph({"type": "dnn", "hidden": [32, 32]}, (8, 8, 1), 3)


@pytest.mark.parametrize(
    ("bounds", "needle"),
    [
        # fc1 writes 32 outputs beside its 260-byte scratch (4 per output, 2 per input):
        # 292 bytes for the full model, 152 with 4 units
        (250, "memory_budget_bytes: 250 bytes is below the full model's activation arena "
              "(292 bytes; the full model is always the last submodel); raise it to at least "
              "292, or give a list with one bound per budget whose last entry is >= 292"),
        ([1000, 291], "memory_budget_bytes[1]: 291 bytes (the full model, budget 1) is below "
                      "the full model's activation arena (292 bytes); raise it to at least 292"),
        ([150, None], "memory_budget_bytes[0]: 150 bytes (budget 0.5) is below the smallest "
                      "achievable submodel's activation arena (152 bytes with every prunable "
                      "layer at one block of 4 units); raise it to at least 152, or lower "
                      "`block`"),
    ],
)  # fmt: skip
def test_infeasible_memory_fails_before_training(tmp_path, capsys, monkeypatch, bounds, needle):
    from reds_tf import pipeline
    from reds_tf.cli import main

    graph = _tiny_graph()
    assert arena_bytes(graph, {}) == 292
    assert arena_bytes(graph, min_widths(cost_layers(graph), 4)) == 152

    def no_training(*_a, **_k):
        raise AssertionError("training started")

    monkeypatch.setattr(pipeline, "fit_classifier", no_training)
    cfg = _tiny_config(tmp_path, memory_budget_bytes=bounds)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("reds train: error: ")
    assert needle in lines[0], lines[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "tiny.yaml"]


def test_end_to_end_bounded_submodel_exports_within_its_bound(tmp_path):
    """Train + export a tiny DNN with a bound on the half-MAC submodel that the
    MAC budget alone would exceed: knapsack.json, submodels.json and the
    export's manifest agree on each submodel's arena, within its bound."""
    from reds_tf.export import run_export
    from reds_tf.models import load_plain_model
    from reds_tf.permute import sort_permutations
    from reds_tf.pipeline import run_training

    bound = 200  # fc1 <= 12 units: 5 * 12 + 132 bytes (outputs + scratch)
    cfg = _tiny_config(tmp_path, memory_budget_bytes=[bound, None])
    run = run_training(cfg, out_dir=tmp_path / "run", verbose=0, log=lambda _m: None)
    ks = json.loads((run / "knapsack.json").read_text())
    assert ks["memory_budget_bytes"] == [bound, None]
    assert ks["arena_bytes"][0] <= bound
    # Without the bound the same scores choose other widths for submodel 0.
    model = load_plain_model(run / "permuted.keras")
    graph = ir.from_keras(model)
    with np.load(run / "importance.npz") as z:
        raw = {k: z[k] for k in z.files}
    scores = {n: raw[n][p] for n, p in sort_permutations(raw).items()}
    free = ["fc1", "fc2"]
    plain = solve_nested(graph, scores, [0.5, 1.0], 4, log=None)
    assert plain.arena_bytes[0] > bound
    assert [plain.widths[0][n] for n in free] != [ks["widths"][0][n] for n in free]
    subs = json.loads((run / "submodels.json").read_text())["submodels"]
    assert [s["arena_bytes"] for s in subs] == ks["arena_bytes"]
    assert subs[0]["memory_budget_bytes"] == bound and "memory_budget_bytes" not in subs[1]
    assert load_config(run / "config.yaml").memory_bounds() == (bound, None)
    doc = json.loads((run / "submodels.json").read_text())
    rundir.check_submodels(doc, record=True)
    doc["submodels"][0]["arena_bytes"] = -1
    with pytest.raises(RunDirError, match=r"submodels\[0\]\.arena_bytes"):
        rundir.check_submodels(doc)
    export = run_export(run, limit=200, log=lambda _m: None)
    manifest = json.loads((export / "manifest.json").read_text())
    arenas = [s["arena_bytes"] for s in manifest["submodels"]]
    assert arenas == ks["arena_bytes"]
    assert arenas[0] <= bound
