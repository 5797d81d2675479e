"""`reds train` killed with SIGKILL (REDS_FAULT_AT, reds_tf/faults.py) at stage
boundaries and in the middle of stages, then re-run: the run directory is
consistent after every kill and complete, with nothing left over, at the end.

tests/test_train_records.py stops the pipeline at EVERY point in-process; here
the kills are real (no clean-up handler runs) at a chosen subset, to keep the
test near a minute and a half.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DEFAULT_CONFIG, REPO
from train_checks import check_complete, check_records, leftovers

from reds_tf.config import load_config, with_overrides

TINY = ["--epochs", "1", "--limit", "2000", "--seed", "0"]
# TensorFlow's own log lines; the CLI hides them unless --verbose.
NOISE = re.compile(r"^([IWE]\d{4} |WARNING: All log messages|.*oneDNN|.*cuInit)", re.M)


def _train(run: Path, finetune_epochs: int, fault: str | None = None):
    env = {
        k: v for k, v in os.environ.items() if k not in ("REDS_FAULT_AT", "TF_CPP_MIN_LOG_LEVEL")
    }
    if fault:
        env["REDS_FAULT_AT"] = fault
    cmd = [sys.executable, "-m", "reds_tf", "train", "--config", str(DEFAULT_CONFIG),
           "--out", str(run), "--finetune-epochs", str(finetune_epochs), *TINY]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert not NOISE.search(r.stderr), r.stderr[-2000:]
    if fault:
        assert r.returncode == -signal.SIGKILL, (fault, r.returncode, r.stderr[-2000:])
    else:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.slow
def test_sigkill_then_rerun_keeps_the_run_consistent(tmp_path):
    from reds_tf.data import load_dataset

    data = load_dataset("fashion_mnist")
    cfg1 = with_overrides(
        load_config(DEFAULT_CONFIG), epochs=1, finetune_epochs=1, limit=2000, seed=0
    )
    run = tmp_path / "run"

    # A new run killed again and again, each re-run getting one step further:
    # inside a stage (a temp file or the temp run folder not yet renamed), after
    # a stage's files but before its record, at and after stage boundaries.
    for fault in ["train:base:tmp", "train:rank:tmp", "train:permute:files",
                  "train:finetune:tmp", "train:evaluate:begin", "train:report:files"]:  # fmt: skip
        _train(run, 1, fault)
        records = check_records(run)
        stage = fault.split(":")[1]
        assert stage not in records, fault
    # base:tmp left a whole temp run folder beside --out, rank:tmp a temp file.
    _train(run, 1)
    check_complete(run, cfg1, data)

    # Issue 15, item 1: the same run with 2 fine-tuning epochs killed after
    # the stale records went (then after stage 6 began, "stage 6/7 evaluation
    # ..."), then the first command again: it must redo fine-tuning, not ship
    # the 2-epoch weights under the 1-epoch records.
    for fault in ["train:finetune:invalidated", "train:evaluate:begin"]:
        r = _train(run, 2, fault)
        check_records(run)
    assert "stage 6/7 evaluation ..." in r.stdout
    r = _train(run, 1)
    assert "redoing from stage 'finetune' on" in r.stdout
    check_complete(run, cfg1, data)
    assert leftovers(run) == []
