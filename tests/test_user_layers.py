"""Common tf_keras layers in a user's model (``reds train --base``): each is
supported or folded EXACTLY (the imported model computes what the user's model
computes) and exports bit-exact with TFLite Micro on every submodel.

- ReLU(6.), ReLU(max_value=6), activation="relu6" (conv, depthwise, Dense,
  Activation layers): the int8 clamp to quantised 6;
- Conv1D, MaxPooling1D, AveragePooling1D, GlobalAveragePooling1D, Flatten on
  ``(T, C)`` inputs: the same computation on ``(1, T, C)`` maps (one RESHAPE,
  CONV_2D with a one-row kernel);
- Rescaling / Normalization after the input: folded into the first layer;
- Dense + BatchNormalization (before or after an activation): folded; ReLU /
  Activation layers in dense models: fused into the Dense;
- a ``(28, 28)`` input before Flatten (the Keras Fashion-MNIST tutorial model);
- keras.applications' MobileNet: ZeroPadding2D equal to padding='same' folded
  into the next convolution, the 1x1 conv classifier (+ Reshape) as Flatten + Dense.

Each user model is saved (``.keras`` or ``.h5``) and loaded through
:func:`reds_tf.models.load_base_model`; the export cases use random weights
(no training) and 500 random inputs.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from nano_build import nano_compile

from reds_tf import ir
from reds_tf.codegen.plan import build_plan
from reds_tf.codegen.render import render_sources
from reds_tf.errors import RedsError
from reds_tf.models import load_base_model, submodel
from reds_tf.nested import build_nested
from reds_tf.permute import permute_model
from reds_tf.quant import numerics, slicer
from reds_tf.quant.convert import convert_int8
from reds_tf.quant.tflm import run_tflm
from reds_tf.sim import Runtime

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

L = keras.layers
N_INPUTS = 500
N_REF = 40
FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def _mobilenet_relu6() -> keras.Model:
    """MobileNet-style: Rescaling(1/255), ReLU6 in every form, Dense + BN + ReLU head."""
    return keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            L.Rescaling(1 / 255.0),  # offset 0: exact even before a 'same' conv
            L.Conv2D(8, 3, strides=2, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.ReLU(6.0),
            L.DepthwiseConv2D(3, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.ReLU(max_value=6),
            L.Conv2D(16, 1, use_bias=False),
            L.BatchNormalization(),
            L.Activation("relu6"),
            L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu6"),
            L.Conv2D(16, 1, activation=tf.nn.relu6),
            L.GlobalAveragePooling2D(),
            L.Dropout(0.1),
            L.Dense(12, use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.Dense(5, activation="softmax"),
        ]
    )


def _kws_conv1d() -> keras.Model:
    """A keyword model on (49, 10) MFCCs: Normalization, Conv1D, 1-D pooling, GAP."""
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(5).normal(3, 2, (200, 49, 10)).astype(np.float32))
    return keras.Sequential(
        [
            keras.Input((49, 10)),
            norm,
            L.Conv1D(12, 5, strides=2),  # 'valid': the offset folds exactly
            L.BatchNormalization(),
            L.Activation("relu"),
            L.MaxPooling1D(2),
            L.Conv1D(16, 3, padding="same", use_bias=False),
            L.BatchNormalization(),
            L.ReLU(6.0),
            L.AveragePooling1D(2, padding="same"),
            L.Conv1D(16, 1, activation="relu6"),
            L.GlobalAveragePooling1D(),
            L.Dense(6, activation="softmax"),
        ]
    )


def _sensor_conv1d() -> keras.Model:
    """A sensor model on (32, 6) windows: Rescaling with offset, Conv1D, Flatten, Dense."""
    return keras.Sequential(
        [
            keras.Input((32, 6)),
            L.Rescaling(0.5, offset=0.25),
            L.Conv1D(8, 3, activation="relu"),
            L.MaxPooling1D(2),
            L.Conv1D(8, 3, strides=2, padding="same", activation="relu"),
            L.Flatten(),
            L.Dense(16, activation="relu6"),
            L.Dense(4),
        ]
    )


def _fmnist_tutorial() -> keras.Model:
    """The Keras Fashion-MNIST tutorial model on (28, 28), with BatchNorm around
    Dense layers, separate activation layers and a Softmax layer."""
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            L.Rescaling(1 / 255.0, offset=-0.5),
            L.Flatten(),
            L.Dense(32, use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.Dropout(0.2),
            L.Dense(16),
            L.Activation("relu6"),
            L.BatchNormalization(),  # after the activation: folds into the next Dense
            L.Dense(10),
            L.Softmax(),
        ]
    )


def _keras_mobilenet() -> keras.Model:
    """keras.applications' MobileNet (ReLU6; ZeroPadding2D before every stride-2
    depthwise conv, equal to padding='same'; a 1x1 conv classifier + Reshape)."""
    return keras.applications.MobileNet(
        input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=3
    )


# name -> (builder, input shape, classes, file suffix, input sampler)
CASES = {
    "mobilenet_relu6": (_mobilenet_relu6, (12, 12, 3), 5, ".keras", "pixels"),
    "keras_mobilenet": (_keras_mobilenet, (32, 32, 3), 3, ".keras", "normal"),
    "kws_conv1d": (_kws_conv1d, (49, 10), 6, ".h5", "mfcc"),
    "sensor_conv1d": (_sensor_conv1d, (32, 6), 4, ".keras", "normal"),
    "fmnist_tutorial": (_fmnist_tutorial, (28, 28), 10, ".h5", "pixels"),
}


def _inputs(kind: str, shape, n: int, seed: int) -> np.ndarray:
    """Random inputs whose per-example level varies (else global pooling averages
    every example to nearly the same output)."""
    rng = np.random.default_rng(seed)
    level = rng.uniform(0, 1, (n, *[1] * (len(shape) - 1), shape[-1]))
    x = level + rng.normal(0, 0.3, (n, *shape))
    if kind == "pixels":
        return np.clip(255 * x, 0, 255).astype(np.float32)
    if kind == "mfcc":
        return (3 + 4 * x).astype(np.float32)
    return (2 * x - 1).astype(np.float32)


def _fit_bn(model: keras.Model, x: np.ndarray, seed: int) -> None:
    """Every BatchNorm gets the statistics of its input on ``x`` and random
    gamma / beta (what a trained model has: neither exploding nor collapsing)."""
    rng = np.random.default_rng(seed)
    for ly in model.layers:
        if isinstance(ly, L.BatchNormalization):
            h = keras.Model(model.inputs, ly.input)(x, training=False).numpy()
            axes = tuple(range(h.ndim - 1))
            c = h.shape[-1]
            ly.set_weights(
                [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.3, c), h.mean(axis=axes),
                 h.var(axis=axes) + 1e-3]
            )  # fmt: skip


def _user_and_loaded(name: str, tmp_path):
    make, shape, classes, suffix, sampler = CASES[name]
    keras.utils.set_random_seed(1)
    user = make()
    _fit_bn(user, _inputs(sampler, shape, 64, 2), 2)
    path = tmp_path / f"{name}{suffix}"
    user.save(path)
    return user, load_base_model(path, shape, classes), shape, sampler


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory):
    """``loaded(name)``: the user model and its import, built and saved once per module."""
    cache: dict[str, tuple] = {}

    def get(name: str) -> tuple:
        if name not in cache:
            cache[name] = _user_and_loaded(name, tmp_path_factory.mktemp(name))
        return cache[name]

    return get


def _probs(logits: np.ndarray) -> np.ndarray:
    return tf.nn.softmax(logits).numpy()


@pytest.mark.parametrize("name", list(CASES))
def test_user_model_converts_exactly(name, loaded):
    user, m, shape, sampler = loaded(name)
    x = _inputs(sampler, shape, 64, 3)
    want = user.predict(x, verbose=0)
    got = m.predict(x, verbose=0)
    if name != "sensor_conv1d":  # the others end in a softmax, which the import drops
        got = _probs(got)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert m.output_shape == user.output_shape
    folded = (L.Rescaling, L.Normalization, L.Conv1D, L.MaxPooling1D, L.Softmax, L.ZeroPadding2D)
    assert not any(isinstance(ly, folded) for ly in m.layers)


def test_conv1d_model_is_a_2d_model_on_one_row(loaded):
    """Conv1D -> Conv2D with a (1, k) kernel behind one Reshape of the input; the
    nested model, the permutation and the submodel slices work on it."""
    _, m, shape, sampler = loaded("kws_conv1d")
    kinds = [n.kind for n in ir.from_keras(m).nodes]
    assert kinds[0] == ir.RESHAPE and m.layers[1].target_shape == (1, 49, 10)
    convs = [ly for ly in m.layers if type(ly) is L.Conv2D]
    assert [tuple(c.kernel_size) for c in convs] == [(1, 5), (1, 3), (1, 1)]
    x = _inputs(sampler, shape, 16, 4)
    rng = np.random.default_rng(6)
    perms = {c.name: rng.permutation(c.filters) for c in convs}
    np.testing.assert_allclose(
        permute_model(m, perms).predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-5
    )
    small = {c.name: c.filters // 2 for c in convs}
    out_small, out_full = build_nested(m, [small, {}]).predict(x, verbose=0)
    np.testing.assert_allclose(out_full, m.predict(x, verbose=0), atol=1e-5)
    np.testing.assert_allclose(out_small, submodel(m, small).predict(x, verbose=0), atol=1e-5)


def _graph_with_submodels(m: keras.Model) -> ir.Graph:
    """The model's graph with 4 nested submodels (uneven fractions per layer)."""
    g = ir.from_keras(m)
    for f in FRACTIONS:
        chosen = {}
        for j, n in enumerate(g.nodes):
            if n.prunable:
                frac = min(1.0, f + 0.1 * (j % 3) * (f < 1.0))
                chosen[n.name] = max(1, int(np.ceil(frac * n.units)))
        widths = g.node_widths(chosen)
        g.submodels.append(ir.Submodel({n.name: widths[n.name] for n in g.width_nodes}))
    return g


@pytest.mark.parametrize("name", list(CASES))
def test_user_model_exports_bit_exact_with_tflm(name, loaded, tmp_path):
    """Every submodel: the generated runtime == TFLite Micro on 500 inputs, the
    NumPy reference == TFLite Micro on 40."""
    _, m, shape, sampler = loaded(name)
    g = _graph_with_submodels(m)
    full = convert_int8(m, _inputs(sampler, shape, 50, 7))  # calibration: few suffice
    plan = build_plan(full, g)  # also checks the plan's MACs against the graph's
    src = tmp_path / "src"
    src.mkdir()
    for fname, text in render_sources(plan).items():
        (src / fname).write_text(text)
    rt = Runtime(src, tuple(plan.input_shape))
    xq = numerics.quantize(_inputs(sampler, shape, N_INPUTS, 8), plan.input_scale,
                           plan.input_zero_point)  # fmt: skip
    for k in range(len(g.submodels)):
        want = run_tflm(slicer.slice_model(full, g.width_list(k)), xq).outputs
        np.testing.assert_array_equal(rt.predict(xq, k), want, err_msg=f"submodel {k}")
        np.testing.assert_array_equal(plan.reference(xq[:N_REF], k), want[:N_REF])
    assert len({tuple(r) for r in want.tolist()}) > N_INPUTS // 10  # not vacuous
    kinds = [ly.kind for ly in plan.layers]
    if "conv1d" in name:
        assert kinds[0] == "reshape" and plan.layers[1].kernel[0] == 1
    if name == "kws_conv1d" and shutil.which("arm-none-eabi-g++"):
        nano_compile([src / "reds_model.cpp"], [src], tmp_path / "obj")  # the Nano's flags
    assert "relu6" in {ly.activation for ly in plan.layers}  # clamped to quantised 6


def _refusal(tmp_path, layers, shape=(12, 12, 3), classes=5) -> str:
    keras.Sequential([keras.Input(shape), *layers]).save(tmp_path / "user.keras")
    with pytest.raises(RedsError) as e:
        load_base_model(tmp_path / "user.keras", shape, classes)
    return str(e.value)


def test_offset_before_a_padding_conv_is_refused(tmp_path):
    msg = _refusal(
        tmp_path,
        [L.Rescaling(1 / 127.5, offset=-1, name="scale"), L.Conv2D(4, 3, padding="same",
         name="c1"), L.Flatten(), L.Dense(5)],
    )  # fmt: skip
    assert (
        "layer 'scale' has a nonzero offset, which does not fold exactly into 'c1' "
        "(padding='same' pads with zeros at the borders)" in msg
    )
    assert msg.count("'scale'") == 1


def test_each_problem_is_said_once(tmp_path):
    layers = []
    for i in range(9):
        layers += [L.Conv2D(4, 1, name=f"c{i}"), L.LeakyReLU(name=f"leaky{i}")]
    msg = _refusal(tmp_path, [*layers, L.Rescaling(2.0, name="late"), L.Flatten(), L.Dense(5)])
    assert msg.count("(LeakyReLU) are not supported") == 1
    assert "layers 'leaky0', 'leaky1', 'leaky2', 'leaky3', 'leaky4', 'leaky5' and 3 more" in msg
    assert "layer 'late' (Rescaling) folds only into the first Conv/Dense layer" in msg


def _user_fmnist_conv1d() -> keras.Model:
    """A user's Conv1D model reading (28, 28) images row by row (28 channels),
    with Rescaling, every ReLU6 form and Dense + BatchNorm."""
    return keras.Sequential(
        [
            keras.Input((28, 28)),
            L.Rescaling(2.0, offset=-1.0),  # before a 'valid' conv: folds exactly
            L.Conv1D(16, 3, use_bias=False),
            L.BatchNormalization(),
            L.ReLU(6.0),
            L.MaxPooling1D(2),
            L.Conv1D(16, 3, padding="same", activation="relu6"),
            L.GlobalAveragePooling1D(),
            L.Dense(16, use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.Dense(10, activation="softmax"),
        ]
    )


def test_reds_train_base_to_bit_exact_export(tmp_path):
    """`reds train --base` on a user Conv1D model with the new layer kinds (one
    short epoch per stage; the (28, 28, 1) images are read as (28, 28)), then
    `reds export`, whose runtime check compares the generated C++ with TFLite
    Micro on 500 test inputs of every submodel."""
    from reds_tf.export import run_export
    from reds_tf.pipeline import run_training

    keras.utils.set_random_seed(0)
    _user_fmnist_conv1d().save(tmp_path / "user.keras")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(
        "name: user_cnn\ndataset: fashion_mnist\nmodel: {type: dnn, hidden: [8]}\n"
        "budgets: [0.5, 1.0]\nblock: 4\n"
        "train: {epochs: 1, limit: 1000, batch_size: 64}\n"
        "importance: {batches: 2, batch_size: 64}\n"
        "finetune: {epochs: 1, batch_size: 64}\n",
        encoding="utf-8",
    )
    run = run_training(
        cfg, out_dir=tmp_path / "run", base_model=tmp_path / "user.keras", log=lambda m: None,
        verbose=0,
    )  # fmt: skip
    doc = json.loads((run / "submodels.json").read_text())
    assert doc["input_shape"] == [28, 28]
    assert [ly["kernel"] for ly in doc["layers"][:2]] == [[1, 3], [1, 3]]
    assert doc["submodels"][0]["widths"] != doc["submodels"][-1]["widths"]
    export = run_export(run, limit=N_INPUTS, log=lambda m: None)
    manifest = (export / "manifest.json").read_text()
    assert f"bit-exact with TFLite Micro on {N_INPUTS} test inputs per submodel" in manifest
