"""Convolutional REDS: MAC counts, exact permutation, nested slicing, BN statistics,
knapsack with the depthwise tie, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

from reds_tf.config import load_config
from reds_tf.costs import cost_layers_from_keras, full_widths, model_activation_elems, model_macs
from reds_tf.importance import fold_tied_scores
from reds_tf.knapsack import free_layers, solve_bruteforce, solve_nested
from reds_tf.models import build_model, dscnn, mobilenet_v1, submodel
from reds_tf.nested import (
    bn_layers,
    build_nested,
    estimate_bn_stats,
    predict_nested,
    use_per_submodel_stats,
)
from reds_tf.permute import permute_model

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

# REDS_METHOD.md section 4: true MACs (conv + FC) on the KWS input.
PAPER_MACS = {
    "kws_dnn_s": ((25, 10), 79_200),
    "kws_dnn_l": ((25, 10), 494_424),
    "kws_cnn_s": ((49, 10, 1), 2_498_304),
    "kws_cnn_l": ((49, 10, 1), 12_636_672),
    "kws_dscnn_s": ((49, 10, 1), 2_656_768),
    "kws_dscnn_l": ((49, 10, 1), 28_327_812),
}


def _direct_macs(model: keras.Model) -> int:
    """MACs counted straight from the Keras layers' shapes (independent of costs.py)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            _, h, w, c = layer.output_shape
            total += kh * kw * h * w * c
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw = layer.kernel_size
            _, h, w, c = layer.output_shape
            total += kh * kw * layer.input_shape[-1] * c * h * w
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input_shape[-1] * layer.units
    return total


def _randomise(model: keras.Model, seed: int) -> None:
    """Trained-like random weights, non-trivial BN statistics (so mistakes show)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        ws = layer.get_weights()
        if not ws:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            c = ws[0].shape
            new = [
                rng.uniform(0.5, 1.5, c),
                rng.normal(0, 0.2, c),
                rng.normal(0, 0.2, c),
                rng.uniform(0.5, 1.5, c),
            ]
        else:
            new = [
                rng.normal(size=w.shape) / (np.sqrt(np.prod(w.shape[:-1])) if w.ndim > 1 else 4)
                for w in ws
            ]
        layer.set_weights([v.astype(np.float32) for v in new])


def _small_models() -> dict[str, keras.Model]:
    return {
        "cnn_s": build_model(load_config(CONFIGS / "kws_cnn_s.yaml").model, (49, 10, 1), 12),
        "dscnn_s": build_model(load_config(CONFIGS / "kws_dscnn_s.yaml").model, (49, 10, 1), 12),
        "mobilenet": mobilenet_v1((32, 32, 3), 2, alpha=0.25),
    }


@pytest.mark.parametrize("name", sorted(PAPER_MACS))
def test_true_macs_match_paper_and_direct_count(name):
    shape, paper = PAPER_MACS[name]
    cfg = load_config(CONFIGS / f"{name}.yaml")
    model = build_model(cfg.model, shape, 12)
    layers = cost_layers_from_keras(model)
    assert model_macs(layers, full_widths(layers)) == paper == _direct_macs(model)


@pytest.mark.parametrize("name", ["cifar10_dscnn", "fmnist_dscnn", "vww_mobilenet"])
def test_macs_equal_direct_count_on_other_inputs(name):
    shape = {"cifar10_dscnn": (32, 32, 3), "fmnist_dscnn": (28, 28, 1)}.get(name, (96, 96, 3))
    model = build_model(load_config(CONFIGS / f"{name}.yaml").model, shape, 10)
    layers = cost_layers_from_keras(model)
    assert model_macs(layers, full_widths(layers)) == _direct_macs(model)
    # Depthwise layers are tied to their producer and never chosen on their own.
    for c in layers:
        if c.kind == "depthwise":
            assert not c.prunable and c.producer is not None


@pytest.mark.parametrize("seed", [0, 1])
def test_submodel_macs_equal_direct_count(seed):
    """Prefix submodel MACs: the cost model equals a count on the sliced Keras model."""
    rng = np.random.default_rng(seed)
    for model in _small_models().values():
        layers = cost_layers_from_keras(model)
        w = {c.name: int(rng.integers(1, c.units + 1)) for c in free_layers(layers)}
        assert model_macs(layers, w) == _direct_macs(submodel(model, w))


@pytest.mark.parametrize("name", ["cnn_s", "dscnn_s", "mobilenet"])
def test_permutation_preserves_outputs(name):
    model = _small_models()[name]
    _randomise(model, 7)
    rng = np.random.default_rng(1)
    layers = cost_layers_from_keras(model)
    perms = {c.name: rng.permutation(c.units) for c in layers if c.prunable}
    permuted = permute_model(model, perms)
    x = rng.uniform(size=(16, *model.input_shape[1:])).astype(np.float32)
    diff = np.abs(model.predict(x, verbose=0) - permuted.predict(x, verbose=0)).max()
    assert diff <= 1e-5
    # The units really moved (DS block: pw1's order reaches dw2 and pw2's inputs).
    if name == "dscnn_s":
        p = perms["pw1"]
        np.testing.assert_array_equal(
            permuted.get_layer("dw2").depthwise_kernel.numpy(),
            model.get_layer("dw2").depthwise_kernel.numpy()[:, :, p],
        )
        np.testing.assert_array_equal(
            permuted.get_layer("pw2").kernel.numpy(),
            model.get_layer("pw2").kernel.numpy()[:, :, p][..., perms["pw2"]],
        )


@pytest.mark.parametrize("name", ["cnn_s", "dscnn_s"])
def test_nested_branches_equal_sliced_submodels(name):
    model = _small_models()[name]
    _randomise(model, 3)
    layers = cost_layers_from_keras(model)
    rng = np.random.default_rng(2)
    widths = [{c.name: max(1, c.units // d) for c in free_layers(layers)} for d in (4, 2)] + [{}]
    x = rng.normal(size=(8, 49, 10, 1)).astype(np.float32)
    outs = predict_nested(build_nested(model, widths), x)
    for w, o in zip(widths, outs, strict=True):
        np.testing.assert_allclose(o, submodel(model, w).predict(x, verbose=0), atol=1e-4)


def test_nested_training_step_equals_sliced_submodel_in_training_mode():
    """Training mode (batch statistics, fused BN kernel): each branch's outputs
    and gradients equal those of its sliced plain submodel."""
    model = _small_models()["dscnn_s"]
    _randomise(model, 5)
    layers = cost_layers_from_keras(model)
    widths = [{c.name: max(1, c.units // 2) for c in free_layers(layers)}, {}]
    nested = build_nested(model, widths)
    x = tf.constant(np.random.default_rng(4).normal(size=(16, 49, 10, 1)).astype(np.float32))
    for k, w in enumerate(widths):
        sub = submodel(model, w)
        with tf.GradientTape() as t1:
            ref = sub(x, training=True)
            loss_ref = tf.reduce_sum(ref**2)
        with tf.GradientTape() as t2:
            out = nested(x, training=True)[k]
            loss = tf.reduce_sum(out**2)
        np.testing.assert_allclose(out.numpy(), ref.numpy(), atol=1e-4)
        g_ref = t1.gradient(loss_ref, sub.get_layer("pw1").kernel).numpy()
        g = t2.gradient(loss, nested.get_layer("pw1").kernel).numpy()
        i, o = g_ref.shape[2:]
        np.testing.assert_allclose(g[:, :, :i, :o], g_ref, rtol=1e-3, atol=1e-4)
        assert not np.any(g[:, :, i:, :]) and not np.any(g[:, :, :, o:])


def test_per_submodel_bn_statistics_are_population_moments():
    model = dscnn((12, 10, 1), {"filters": 8, "kernel": [3, 3], "strides": [2, 2]},
                  [{"filters": 8, "strides": [1, 1]}], 3)  # fmt: skip
    _randomise(model, 0)
    widths = [{"conv1": 4, "pw1": 4}, {}]
    nested = build_nested(model, widths)
    x = np.random.default_rng(0).normal(size=(256, 12, 10, 1)).astype(np.float32)
    assert estimate_bn_stats(nested, x, batches=4, batch_size=64) == 4
    bn = nested.get_layer("conv1_bn")
    conv_out = tf.nn.conv2d(x, model.get_layer("conv1").kernel, 2, "SAME").numpy()
    flat = conv_out.reshape(-1, 8)
    for k, c in enumerate([4, 8]):
        np.testing.assert_allclose(bn.sub_mean.numpy()[k, :c], flat[:, :c].mean(0), atol=1e-5)
        np.testing.assert_allclose(bn.sub_variance.numpy()[k, :c], flat[:, :c].var(0), rtol=1e-3)
    # Switching statistics changes the small submodel's outputs, not the weights.
    shared = predict_nested(nested, x[:8])
    use_per_submodel_stats(nested, True)
    own = predict_nested(nested, x[:8])
    assert not np.allclose(shared[0], own[0])
    assert len(bn_layers(nested)) == 3  # conv1_bn, dw1_bn, pw1_bn

    # With a transform (the training augmentation) the statistics describe the
    # transformed inputs: doubling x doubles the conv outputs' mean.
    estimate_bn_stats(nested, x, batches=4, batch_size=64, transform=lambda xb: 2.0 * xb)
    np.testing.assert_allclose(bn.sub_mean.numpy()[1], 2.0 * flat.mean(0), atol=2e-5)
    np.testing.assert_allclose(bn.sub_variance.numpy()[1], 4.0 * flat.var(0), rtol=1e-3)


def _tiny_dscnn_layers():
    blocks = [{"filters": 8, "strides": [1, 1]}, {"filters": 6, "strides": [2, 2]}]
    model = dscnn((8, 8, 1), {"filters": 8, "kernel": [3, 3], "strides": [2, 2]}, blocks, 3)
    return cost_layers_from_keras(model)


@pytest.mark.parametrize("method", ["auto", "milp"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knapsack_equals_bruteforce_on_small_conv_net(seed, method):
    layers = _tiny_dscnn_layers()
    rng = np.random.default_rng(seed)
    raw = {
        c.name: rng.exponential(size=c.units) for c in layers if c.prunable or c.kind == "depthwise"
    }
    scores = {n: np.sort(s)[::-1] for n, s in fold_tied_scores(raw, layers).items()}
    budgets = [0.3, 0.6, 1.0]
    ilp = solve_nested(layers, scores, budgets, block=2, method=method, log=None)
    bf = solve_bruteforce(layers, scores, budgets, block=2)
    np.testing.assert_allclose(ilp.value, bf.value, rtol=1e-9)
    full = model_macs(layers, full_widths(layers))
    for k, w in enumerate(ilp.widths):
        assert w["dw1"] == w["conv1"] and w["dw2"] == w["pw1"]  # depthwise tie
        assert model_macs(layers, w) <= math.floor(budgets[k] * full)
    # With an activation limit both agree too and every submodel fits it.
    cap = max(model_activation_elems(layers, ilp.widths[1]).values())
    lim = solve_nested(
        layers, scores, [0.3, 0.6], block=2, max_activation_elems=cap, method=method, log=None
    )
    bfl = solve_bruteforce(layers, scores, [0.3, 0.6], block=2, max_activation_elems=cap)
    np.testing.assert_allclose(lim.value, bfl.value, rtol=1e-9)
    assert all(max(model_activation_elems(layers, w).values()) <= cap for w in lim.widths)


def test_chain_dynamic_programming_equals_milp_on_ds_cnn_s():
    """Full-size DS-CNN-S (CIFAR-10 input): the exact chain DP and the MILP agree."""
    model = build_model(load_config(CONFIGS / "cifar10_dscnn.yaml").model, (32, 32, 3), 10)
    layers = cost_layers_from_keras(model)
    rng = np.random.default_rng(5)
    scores = {c.name: np.sort(rng.exponential(size=c.units))[::-1] for c in free_layers(layers)}
    budgets = [0.25, 0.5, 0.75, 1.0]
    dp = solve_nested(layers, scores, budgets, 4, log=None)
    milp = solve_nested(layers, scores, budgets, 4, log=None, method="milp")
    assert milp.all_optimal and dp.all_optimal
    np.testing.assert_allclose(dp.value, milp.value, rtol=1e-7)


def test_fold_tied_scores_adds_depthwise_to_producer():
    layers = _tiny_dscnn_layers()
    raw = {c.name: np.full(c.units, 1.0) for c in layers if c.prunable or c.kind == "depthwise"}
    folded = fold_tied_scores(raw, layers)
    assert set(folded) == {c.name for c in layers if c.prunable}
    assert np.all(folded["conv1"] == 2.0) and np.all(folded["pw2"] == 1.0)


def test_tiny_dscnn_end_to_end(tmp_path):
    from reds_tf.pipeline import run_training

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "name: tiny_dscnn\ndataset: fashion_mnist\n"
        "model: {type: dscnn, first: {filters: 8, kernel: 3, strides: 2},"
        " blocks: [{filters: 8, strides: 2}, {filters: 8}]}\n"
        "budgets: [0.5, 1.0]\nblock: 4\n"
        "train: {epochs: 1, limit: 512, batch_size: 64, augment: {flip: true, shift: 2}}\n"
        "importance: {batches: 2, batch_size: 64}\n"
        "finetune: {epochs: 1, batch_size: 64, bn_stats: per_submodel}\n",
        encoding="utf-8",
    )
    run = run_training(cfg, out_dir=tmp_path / "run", log=lambda m: None, verbose=0)
    doc = json.loads((run / "submodels.json").read_text())
    assert doc["bn_stats"] == "per_submodel"
    names = [e["name"] for e in doc["layers"]]
    assert names == ["conv1", "dw1", "pw1", "dw2", "pw2", "logits"]
    dw2 = doc["layers"][3]
    assert dw2 == {
        "name": "dw2", "type": "depthwise", "units": 8, "prunable": False, "producer": "pw1",
        "kernel": [3, 3], "strides": [1, 1], "padding": "same", "output_hw": [7, 7],
    }  # fmt: skip
    for s in doc["submodels"]:
        assert s["widths"]["dw2"] == s["widths"]["pw1"]
        assert s["accuracy"] == s["accuracy_per_submodel_bn"]
    with np.load(run / "bn_stats.npz") as z:
        assert z["0/pw1_bn/mean"].shape == (8,) and "1/dw2_bn/variance" in z.files
    assert "per-submodel BN" in (run / "report.md").read_text()


def test_private_bn_affine_round_trips_through_effective_statistics():
    """Private per-submodel BN scale/shift are stored as effective statistics of
    the shared gamma/beta: a plain nested model loading them (what evaluation
    and the int8 export see) computes the same logits, and loading them back
    into a private-affine model restores the real statistics."""
    from reds_tf.nested import bn_stats_arrays, load_bn_stats
    from reds_tf.quant.bnfold import with_bn_stats

    model = _small_models()["dscnn_s"]
    _randomise(model, 7)
    layers = cost_layers_from_keras(model)
    widths = [{c.name: max(1, c.units // d) for c in free_layers(layers)} for d in (4, 2)] + [{}]
    x = np.random.default_rng(1).normal(size=(64, 49, 10, 1)).astype(np.float32)
    private = build_nested(model, widths, private_bn_affine=True)
    rng = np.random.default_rng(3)
    for bn in bn_layers(private):
        assert bn.sub_log_gamma.shape == (2, bn.channels)  # none for the full model
        bn.sub_log_gamma.assign(rng.normal(scale=0.5, size=bn.sub_log_gamma.shape))
        bn.sub_dbeta.assign(rng.normal(scale=0.5, size=bn.sub_dbeta.shape))
    estimate_bn_stats(private, x, batches=2, batch_size=32)
    use_per_submodel_stats(private, True)
    want = predict_nested(private, x[:8])
    arrays = bn_stats_arrays(private)

    plain = build_nested(model, widths)
    load_bn_stats(plain, arrays)
    use_per_submodel_stats(plain, True)
    got = predict_nested(plain, x[:8])
    for k in range(3):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)
    # The deltas matter: without them the small submodels differ.
    assert not np.allclose(
        predict_nested(build_nested(model, widths), x[:8])[0], want[0], atol=1e-2
    )
    # A plain Keras BN layer with the effective statistics (the export path).
    stats = {
        bn.name: (arrays[f"1/{bn.name}/mean"], arrays[f"1/{bn.name}/variance"])
        for bn in bn_layers(private)
    }
    sliced = submodel(with_bn_stats(model, stats), widths[1])
    np.testing.assert_allclose(sliced.predict(x[:8], verbose=0), want[1], rtol=1e-4, atol=1e-4)

    again = build_nested(model, widths, private_bn_affine=True)
    for src, dst in zip(bn_layers(private), bn_layers(again), strict=True):
        dst.sub_log_gamma.assign(src.sub_log_gamma)
        dst.sub_dbeta.assign(src.sub_dbeta)
    load_bn_stats(again, arrays)
    for src, dst in zip(bn_layers(private), bn_layers(again), strict=True):
        np.testing.assert_allclose(dst.sub_mean.numpy(), src.sub_mean.numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(
            dst.sub_variance.numpy(), src.sub_variance.numpy(), rtol=1e-4, atol=1e-4
        )


def test_private_bn_affine_is_trained_and_starts_as_shared():
    model = _small_models()["dscnn_s"]
    _randomise(model, 8)
    layers = cost_layers_from_keras(model)
    widths = [{c.name: max(1, c.units // 2) for c in free_layers(layers)}, {}]
    x = tf.constant(np.random.default_rng(4).normal(size=(16, 49, 10, 1)).astype(np.float32))
    shared, private = (
        build_nested(model, widths),
        build_nested(model, widths, private_bn_affine=True),
    )
    for a, b in zip(
        predict_nested(shared, x.numpy()), predict_nested(private, x.numpy()), strict=True
    ):
        np.testing.assert_allclose(a, b, atol=1e-5)  # zero deltas: identical function
    bn = private.get_layer("pw1_bn")
    with tf.GradientTape() as tape:
        outs = private(x, training=True)
        loss = tf.reduce_sum(outs[0] ** 2) + tf.reduce_sum(outs[1] ** 2)
    g_log_gamma, g_full = tape.gradient(loss, [bn.sub_log_gamma, bn.gamma])
    c = widths[0]["pw1"]
    assert np.any(g_log_gamma.numpy()[0, :c]) and not np.any(g_log_gamma.numpy()[0, c:])
    assert np.any(g_full.numpy())
