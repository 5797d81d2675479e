"""`reds train` killed with SIGKILL (REDS_FAULT_AT, reds_tf/faults.py) at stage
boundaries and in the middle of stages, then re-run: the run directory is
consistent after every kill and complete, with nothing left over, at the end.

tests/test_train_records.py stops the pipeline at EVERY point in-process; here
the kills are real (no clean-up handler runs) at a chosen subset, to keep the
test near a minute and a half. The trained model is the default config at
32-32 units (as in test_train_records.py): what is checked is the run
directory's consistency, which does not depend on the model's size, and every
stage then takes a fraction of a second next to the process start-up.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT_CONFIG, REPO
from conftest import TINY as FIXTURE
from train_checks import check_complete, check_records, leftovers

from reds_tf.config import load_config, with_overrides

TINY = ["--epochs", "1", "--limit", "600", "--seed", "0"]
NEW_RUN_FAULTS = ["train:base:tmp", "train:rank:tmp", "train:permute:files",
                  "train:finetune:tmp", "train:evaluate:begin", "train:report:files"]  # fmt: skip
# trained_run's settings (conftest.TINY but the fine-tuning epochs): its stages are done.
FIXTURE_ARGS = ["--epochs", str(FIXTURE["epochs"]), "--limit", str(FIXTURE["limit"]),
                "--seed", str(FIXTURE["seed"])]  # fmt: skip
# TensorFlow's own log lines; the CLI hides them unless --verbose.
NOISE = re.compile(r"^([IWE]\d{4} |WARNING: All log messages|.*oneDNN|.*cuInit)", re.M)


def _small_config(folder: Path) -> Path:
    """The default config at 32-32 units, importance over 4 mini-batches."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["model"]["hidden"] = [32, 32]
    data["importance"] = {"batches": 4}
    path = folder / "small.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _train(
    config: Path,
    run: Path,
    finetune_epochs: int,
    fault: str | None = None,
    args: tuple[str, ...] | list[str] = tuple(TINY),
):
    env = {
        k: v for k, v in os.environ.items() if k not in ("REDS_FAULT_AT", "TF_CPP_MIN_LOG_LEVEL")
    }
    if fault:
        env["REDS_FAULT_AT"] = fault
    cmd = [sys.executable, "-m", "reds_tf", "train", "--config", str(config),
           "--out", str(run), "--finetune-epochs", str(finetune_epochs), *args]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert not NOISE.search(r.stderr), r.stderr[-2000:]
    if fault:
        assert r.returncode == -signal.SIGKILL, (fault, r.returncode, r.stderr[-2000:])
    else:
        assert r.returncode == 0, r.stderr[-2000:]
    return r


def _changed_config_killed_then_first_again(run: Path) -> str:
    """Issue 15, item 1: a finished run (1 fine-tuning epoch) re-run with 2
    fine-tuning epochs, killed after the stale records went (then after stage
    6 began, "stage 6/7 evaluation ..."), then the first command again: it
    must redo fine-tuning, not ship the 2-epoch weights under the 1-epoch
    records. Subprocesses and record checks only (run in a worker thread);
    returns the last command's output."""
    for fault in ["train:finetune:invalidated", "train:evaluate:begin"]:
        r = _train(DEFAULT_CONFIG, run, 2, fault, FIXTURE_ARGS)
        check_records(run)
    assert "stage 6/7 evaluation ..." in r.stdout
    return _train(DEFAULT_CONFIG, run, 1, args=FIXTURE_ARGS).stdout


@pytest.mark.slow
def test_sigkill_then_rerun_keeps_the_run_consistent(trained_run, tmp_path):
    """Two runs killed concurrently (each `reds train` process spends most of
    its time starting Python and TensorFlow on one core): a new run, and a
    copy of the finished ``trained_run`` (tests/conftest.py) for issue 15."""
    from reds_tf.data import load_dataset

    data = load_dataset("fashion_mnist")
    config = _small_config(tmp_path)
    cfg1 = with_overrides(load_config(config), epochs=1, finetune_epochs=1, limit=600, seed=0)
    run = tmp_path / "new" / "run"
    run.parent.mkdir()
    finished = tmp_path / "finished" / "run"
    shutil.copytree(trained_run, finished)

    with ThreadPoolExecutor(1) as pool:
        issue15 = pool.submit(_changed_config_killed_then_first_again, finished)

        # A new run killed again and again, each re-run getting one step further:
        # inside a stage (a temp file or the temp run folder not yet renamed), after
        # a stage's files but before its record, at and after stage boundaries.
        for fault in NEW_RUN_FAULTS:
            _train(config, run, 1, fault)
            records = check_records(run)
            stage = fault.split(":")[1]
            assert stage not in records, fault
        # base:tmp left a whole temp run folder beside --out, rank:tmp a temp file.
        _train(config, run, 1)
        check_complete(run, cfg1, data)
        assert leftovers(run) == []

        stdout = issue15.result()  # re-raises the worker's assertion errors
    assert "redoing from stage 'finetune' on" in stdout
    check_complete(finished, with_overrides(load_config(DEFAULT_CONFIG), **FIXTURE), data)
    assert leftovers(finished) == []
