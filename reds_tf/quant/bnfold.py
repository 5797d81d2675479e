"""Per-submodel BatchNorm statistics folded into per-submodel requantisation.

With ``"bn_stats": "per_submodel"`` every submodel k has its own BN moving
mean/variance (``bn_stats.npz``). The full int8 model is converted with the
FULL submodel's statistics (the last one). For a conv/depthwise layer followed
by BN, the converter folds ``a = gamma / sqrt(var + eps)`` into the weights and
quantises them per output channel: ``q[c] = round(w[c] * a[c] / s[c])`` with
``s[c] = max|w[c] * a[c]| / 127``. Submodel k's folded weights are
``w[c] * a_k[c]``; with ``s_k[c] = s[c] * a_k[c] / a[c]`` the same ``q`` is its
exact quantisation (``a_k / a > 0``: gamma is shared and variances are
positive), so the int8 weights stay shared and only the per-channel weight
scales (hence the requantisation multipliers) and the int32 biases differ:
``bias_k[c] = round((beta[c] + (b[c] - mean_k[c]) * a_k[c]) / (s_in * s_k[c]))``
(``b``: the conv's own bias, usually absent).

Everything here works from the .tflite's own scales, so a submodel .tflite
carrying ``s_k`` and ``bias_k`` is self-consistent for TFLite Micro, and the
generated runtime derives its multipliers from the same numbers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tf_keras as keras

from reds_tf.errors import RedsError, RunDirError
from reds_tf.quant import slicer
from reds_tf.rundir import BN_MODES, BN_STATS  # noqa: F401 (re-exported)

BN_STATS_FILE = BN_STATS

# (mean, variance) per BN layer name, for one submodel; both (channels,) float.
BnStats = dict[str, tuple[np.ndarray, np.ndarray]]
# layer name -> (weight scales (K, O) float32, bias (K, O) int32), one row per submodel.
SubmodelQParams = dict[str, tuple[np.ndarray, np.ndarray]]


def bn_after(model, name: str):
    """The BatchNormalization layer that alone consumes layer ``name``'s output, or None."""
    layer = model.get_layer(name)
    nodes = list(getattr(layer, "_outbound_nodes", []))
    if len(nodes) != 1:
        return None
    nxt = nodes[0].outbound_layer
    return nxt if isinstance(nxt, keras.layers.BatchNormalization) else None


def bn_layer_names(model) -> list[str]:
    return [ly.name for ly in model.layers if isinstance(ly, keras.layers.BatchNormalization)]


def read_bn_stats(run_dir: str | os.PathLike, model, num_submodels: int) -> list[BnStats]:
    """Submodel k's statistics of every BN layer of ``model`` from ``bn_stats.npz``
    (keys ``"{k}/{bn}/mean"``, ``"{k}/{bn}/variance"``, full-length arrays).
    Returns a list of K dicts."""
    path = Path(run_dir) / BN_STATS_FILE
    if not path.is_file():
        raise RunDirError(
            f"{path} is missing but submodels.json says bn_stats: per_submodel; "
            "re-run `reds train` (or export with --bn-stats shared)"
        )
    try:
        with np.load(path) as z:
            arrays = {k: np.asarray(z[k], np.float64) for k in z.files}
    except Exception as e:  # zipfile/numpy raise assorted errors on a damaged file
        raise RunDirError(f"{path} cannot be read ({e}); re-run `reds train`") from e
    out: list[BnStats] = []
    for k in range(num_submodels):
        stats: BnStats = {}
        for name in bn_layer_names(model):
            c = int(model.get_layer(name).moving_mean.shape[0])
            pair = []
            for what in ("mean", "variance"):
                key = f"{k}/{name}/{what}"
                if key not in arrays:
                    raise RunDirError(f"{path} has no '{key}'; re-run `reds train`")
                v = arrays[key]
                if v.shape != (c,) or not np.all(np.isfinite(v)):
                    raise RunDirError(f"{path}: '{key}' is not {c} finite values")
                # Private BN scales are stored as effective variances, which
                # may dip below 0 but never reach -epsilon (see nested.py).
                eps = float(model.get_layer(name).epsilon)
                if what == "variance" and np.any(v <= -eps):
                    raise RunDirError(f"{path}: '{key}' has variances <= -epsilon")
                pair.append(v)
            stats[name] = (pair[0], pair[1])
        out.append(stats)
    return out


def with_bn_stats(model, stats: BnStats):
    """A plain copy of ``model`` whose BN layers use ``stats`` (same weights otherwise)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name, (mean, var) in stats.items():
        ly = copy.get_layer(name)
        ly.moving_mean.assign(np.asarray(mean, np.float32))
        ly.moving_variance.assign(np.asarray(var, np.float32))
    return copy


def _bn_scale(bn, var: np.ndarray) -> np.ndarray:
    gamma = bn.gamma.numpy().astype(np.float64) if bn.gamma is not None else 1.0
    return gamma / np.sqrt(np.asarray(var, np.float64) + float(bn.epsilon))


def _bn_shift(bn, mean: np.ndarray, a: np.ndarray, conv_bias: np.ndarray | None) -> np.ndarray:
    beta = bn.beta.numpy().astype(np.float64) if bn.beta is not None else 0.0
    b = 0.0 if conv_bias is None else conv_bias.astype(np.float64)
    return beta + (b - np.asarray(mean, np.float64)) * a


def per_submodel_qparams(
    full_tflite: bytes,
    model,
    sub: dict[str, Any],
    stats: Sequence[BnStats],
) -> SubmodelQParams:
    """One row of weight scales and int32 biases per submodel for every
    conv/depthwise layer of ``sub['layers']`` followed by BN.

    ``full_tflite`` must be the int8 conversion of ``model`` with BN statistics
    ``stats[-1]`` (the full submodel's). Row K-1 is the .tflite's own scales and
    bias; row k < K-1 rescales channel c < o_k by ``a_k[c] / a[c]`` and
    re-quantises the folded bias with ``s_in * s_k[c]``; channels past submodel
    k's width keep the full row (never read). Shapes: (K, O) each.
    """
    tfl = slicer.read_model(full_tflite)
    sg = tfl.subgraphs[0]
    ops = slicer.width_ops(tfl)
    specs = sub["layers"]
    subs = sub["submodels"]
    K = len(subs)
    if len(stats) != K:
        raise RedsError(f"{len(stats)} sets of BN statistics for {K} submodels")
    if len(ops) != len(specs):
        raise RedsError(f"the .tflite has {len(ops)} width-carrying layers, expected {len(specs)}")
    folded: set[str] = set()
    out: SubmodelQParams = {}
    for t, spec in zip(ops, specs, strict=True):
        name = str(spec["name"])
        bn = bn_after(model, name)
        if bn is None:
            continue
        if spec.get("type") not in ("conv", "depthwise"):
            raise RedsError(
                f"layer {name} ({spec.get('type')}) is followed by BatchNorm {bn.name}: "
                "per-submodel statistics are supported after conv/depthwise layers only; "
                "export with --bn-stats shared"
            )
        folded.add(bn.name)
        layer = model.get_layer(name)
        lw = layer.get_weights()
        conv_bias = lw[1] if len(lw) > 1 else None
        wt = sg.tensors[t.weights]
        s_full = np.asarray(wt.quantization.scale, np.float32)
        units = int(spec["units"])
        if len(s_full) != units:
            raise RedsError(
                f"layer {name}: per-submodel BN needs per-channel weight scales "
                f"({units}), the .tflite has {len(s_full)}"
            )
        if t.bias < 0:
            raise RedsError(f"layer {name}: the .tflite has no bias tensor to hold the folded BN")
        b_full = slicer.tensor_data(tfl, sg.tensors[t.bias]).astype(np.int64)
        s_in = float(sg.tensors[t.input].quantization.scale[0])
        mean_f, var_f = stats[-1][bn.name]
        a_full = _bn_scale(bn, var_f)
        scales = np.tile(s_full, (K, 1))
        biases = np.tile(b_full, (K, 1))
        for k in range(K - 1):
            mean_k, var_k = stats[k][bn.name]
            if np.array_equal(mean_k, mean_f) and np.array_equal(var_k, var_f):
                continue  # the full model's own statistics: keep its exact row
            o = int(subs[k]["widths"][name])
            a_all = _bn_scale(bn, var_k)
            a_k = a_all[:o]
            ratio = np.ones(o)
            nz = a_full[:o] != 0  # gamma == 0: all-zero weights, any scale serves
            ratio[nz] = a_k[nz] / a_full[:o][nz]
            s_k = (s_full[:o].astype(np.float64) * ratio).astype(np.float32)
            if not np.all(s_k > 0):
                raise RedsError(f"layer {name}: submodel {k} gives non-positive weight scales")
            shift_k = _bn_shift(bn, mean_k, a_all, conv_bias)[:o]
            bq = np.round(shift_k / (s_in * s_k.astype(np.float64)))
            if np.any(np.abs(bq) > 2**31 - 1):
                raise RedsError(f"layer {name}: submodel {k}'s folded bias overflows int32")
            scales[k, :o] = s_k
            biases[k, :o] = bq.astype(np.int64)
        out[name] = (scales.astype(np.float32), biases.astype(np.int32))
    unfolded = sorted(set(stats[0]) - folded)
    if unfolded:
        raise RedsError(
            f"BatchNorm layer(s) {unfolded} do not directly follow a conv/depthwise layer of "
            "submodels.json; per-submodel statistics cannot be folded "
            "(export with --bn-stats shared)"
        )
    return out


def submodel_rows(qparams: SubmodelQParams, sub: dict[str, Any], k: int) -> dict[int, tuple]:
    """Submodel k's (scales (O,), bias (O,)) by width-layer index (for
    :func:`reds_tf.quant.slicer.slice_model`)."""
    index = {str(ly["name"]): j for j, ly in enumerate(sub["layers"])}
    return {index[n]: (s[k], b[k]) for n, (s, b) in qparams.items()}
