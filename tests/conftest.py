"""Shared pytest fixtures.

``trained_run``: the default config (configs/fmnist_dnn.yaml) trained briefly
(1 base epoch, 1 fine-tune epoch, 3000 training samples, seed 0) into a temp
run directory, once per session. Later stages' tests build on it so that
``make test`` trains only once.

``exported_run``: a copy of ``trained_run`` after ``reds export``.

``exported_dscnn_run``: DS-CNN-S (random weights, realistic BatchNorm
statistics, hand-picked nested widths: tests/test_export_conv.py) exported once
per session, for the tests that need some DS-CNN-S export (QEMU firmware,
bench) rather than a particular one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "configs" / "fmnist_dnn.yaml"

# Brief training for tests: fast and deterministic (fixed seed, fixed subset).
TINY = {"epochs": 1, "finetune_epochs": 1, "limit": 3000, "seed": 0}


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run directory of the default config trained briefly (see module doc)."""
    from reds_tf.pipeline import run_training

    out = tmp_path_factory.mktemp("trained") / "fmnist_dnn"
    return run_training(DEFAULT_CONFIG, out_dir=out, verbose=0, log=lambda _msg: None, **TINY)


@pytest.fixture(scope="session")
def exported_run(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of ``trained_run`` after ``reds export`` (int8 accuracy on 2000 test
    samples); a copy so that tests of the trained run see it unchanged."""
    import shutil

    from reds_tf.export import run_export

    out = tmp_path_factory.mktemp("exported") / trained_run.name
    shutil.copytree(trained_run, out)
    run_export(out, limit=2000, log=lambda _msg: None)
    return out


@pytest.fixture(scope="session")
def exported_dscnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An exported DS-CNN-S run (Fashion-MNIST geometry: 3x3 stride-2 first conv,
    4 depthwise-separable blocks of 64), int8 accuracy on 100 test samples."""
    from test_export_conv import make_dscnn_run

    from reds_tf.export import run_export

    run = tmp_path_factory.mktemp("dscnn_s") / "fmnist_dscnn_s"
    make_dscnn_run(run, blocks=4, filters=64)
    run_export(run, limit=100, log=lambda _msg: None)
    return run
