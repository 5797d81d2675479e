"""TensorFlow Lite Micro's activation arena (``reds_tf.tflm_arena``): the
report parser, and the real number on the default model's exported submodels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reds_tf.errors import RedsError
from reds_tf.tflm_arena import (
    MARKER,
    activation_tensor_bytes,
    parse_report,
    tflm_allocations,
    tflm_arena_bytes,
)

REPORT = """\
{marker} 0
[RecordingMicroAllocator] Arena allocation total 7392 bytes
[RecordingMicroAllocator] Arena allocation head 1568 bytes
[RecordingMicroAllocator] Arena allocation tail 5824 bytes
[RecordingMicroAllocator] 'TfLiteEvalTensor data' used 288 bytes with alignment overhead
{marker} 1
[RecordingMicroAllocator] Arena allocation total 100 bytes
[RecordingMicroAllocator] Arena allocation head 60 bytes
[RecordingMicroAllocator] Arena allocation tail 40 bytes
"""


def test_parse_report() -> None:
    got = parse_report(REPORT.format(marker=MARKER), 2)
    assert got == [
        {"total": 7392, "head": 1568, "tail": 5824},
        {"total": 100, "head": 60, "tail": 40},
    ]
    with pytest.raises(RedsError, match="not found for every model"):
        parse_report(REPORT.format(marker=MARKER), 3)
    cut = REPORT.format(marker=MARKER).replace("head 60", "hat 60")
    with pytest.raises(RedsError, match="not found"):
        parse_report(cut, 2)


def test_garbage_model_is_a_reds_error() -> None:
    with pytest.raises(RedsError, match="TFLite Micro"):
        tflm_arena_bytes(b"not a flatbuffer at all" * 8)


def test_default_model_submodels(exported_run: Path) -> None:
    export = exported_run / "export"
    manifest = json.loads((export / "manifest.json").read_text())
    models = [(export / sm["tflite"]).read_bytes() for sm in manifest["submodels"]]
    reports = tflm_allocations(models)
    assert len(reports) == len(models)
    heads = []
    for model, rep in zip(models, reports, strict=True):
        head = tflm_arena_bytes(model)
        assert head > 0
        assert head == rep["head"] == tflm_arena_bytes(model)  # stable across processes
        assert rep["total"] == rep["head"] + rep["tail"] and rep["tail"] > 0
        tensors = activation_tensor_bytes(model)
        # the input (784 B for Fashion-MNIST) is an activation tensor of the model
        assert max(tensors) >= 784
        assert head >= max(tensors)
        heads.append(head)
    # the widest submodel needs at least as much as the narrowest
    assert heads[-1] >= heads[0]
