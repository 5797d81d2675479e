"""Shared pytest fixtures.

``trained_run``: the default config (configs/fmnist_dnn.yaml) trained briefly
(1 base epoch, 1 fine-tune epoch, 3000 training samples, seed 0) into a temp
run directory, once per session. Later stages' tests build on it so that
``make test`` trains only once.

``exported_run``: a copy of ``trained_run`` after ``reds export``.
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
