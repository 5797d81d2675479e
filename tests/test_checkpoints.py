"""Checkpoints inside long stages (reds_tf/checkpoints.py): base training and
joint fine-tuning killed after an epoch go on from that epoch on the next
`reds train`, with the result of an uninterrupted run; a checkpoint made under
another config is not used; none is left once the stage is done."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import DEFAULT_CONFIG, REPO
from pattern_data import write_pattern_npz
from train_checks import check_complete, check_records, leftovers

from reds_tf import checkpoints, faults
from reds_tf.config import load_config
from reds_tf.models import load_plain_model
from reds_tf.pipeline import run_training


class _Killed(BaseException):
    """Stands in for SIGKILL in-process (the first test kills for real)."""


@pytest.fixture
def tiny(tmp_path) -> Path:
    """fmnist_dnn's recipe at 32-32 units on a small npz set (3 classes of 8x8
    patterns): 2 base and 3 fine-tuning epochs."""
    write_pattern_npz(tmp_path / "d.npz")
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data.update(dataset="npz", data={"path": str(tmp_path / "d.npz")})
    data["model"]["hidden"] = [32, 32]
    data["budgets"] = [0.5, 1.0]
    data["train"].update(epochs=2)
    data["finetune"]["epochs"] = 3
    data["importance"] = {"batches": 4}
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.fixture
def saves(monkeypatch) -> list[tuple[str, int]]:
    """(checkpoint folder, epoch) of every checkpoint saved from now on."""
    out: list[tuple[str, int]] = []
    real = checkpoints.EpochCheckpoint.save

    def save(self, objects, epoch):
        out.append((self.path.name, epoch))
        real(self, objects, epoch)

    monkeypatch.setattr(checkpoints.EpochCheckpoint, "save", save)
    return out


def _train(cfg: Path, run: Path, lines: list[str] | None = None, **kw) -> Path:
    log = lines.append if lines is not None else lambda _m: None
    return run_training(cfg, out_dir=run, verbose=0, log=log, **kw)


def _kill_at(monkeypatch, point: str) -> None:
    real = faults.fault_point

    def fault_point(name: str) -> None:
        if name == point:
            raise _Killed(name)
        real(name)

    monkeypatch.setattr(faults, "fault_point", fault_point)


def _data(cfg: Path):
    from reds_tf.data import load_dataset

    return load_dataset("npz", **load_config(cfg).data)


def _weights(path: Path) -> list[np.ndarray]:
    return load_plain_model(path).get_weights()


def test_finetune_killed_resumes_from_its_last_epoch(tiny, saves, tmp_path):
    """SIGKILL right after fine-tuning's epoch-2 checkpoint; the re-run trains
    epoch 3 only, and its weights equal those of the stage run uninterrupted
    from the same earlier stages (optimizer state, learning-rate schedule and
    batch order all went on where they stopped)."""
    run = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != faults.ENV}
    env[faults.ENV] = "train:finetune:epoch2"
    cmd = [sys.executable, "-m", "reds_tf", "train", "--config", str(tiny), "--out", str(run)]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert list(check_records(run)) == ["base", "rank", "permute", "select"]
    ckpt = run / "checkpoint-finetune"
    assert json.loads((ckpt / checkpoints.META).read_text())["epoch"] == 2

    # The reference: the same run directory with the checkpoint gone.
    ref = tmp_path / "ref"
    shutil.copytree(run, ref)
    shutil.rmtree(ref / ckpt.name)

    lines: list[str] = []
    _train(tiny, run, lines)
    assert "resuming from checkpoint-finetune after epoch 2 of 3" in "\n".join(lines)
    assert saves == [("checkpoint-finetune", 3)]
    check_complete(run, load_config(tiny), _data(tiny))
    assert not ckpt.exists() and leftovers(run) == []

    saves.clear()
    _train(tiny, ref)
    assert saves == [("checkpoint-finetune", e) for e in (1, 2, 3)]
    for a, b in zip(_weights(run / "model.keras"), _weights(ref / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_base_killed_resumes_and_a_changed_config_starts_over(tiny, saves, tmp_path, monkeypatch):
    """Base training stopped after epoch 1 (of 2) goes on from its checkpoint
    beside the run directory; a fine-tuning checkpoint made under another
    learning rate is deleted, not used."""
    run = tmp_path / "run"
    beside = tmp_path / ".run.checkpoint-base"
    with monkeypatch.context() as m:
        _kill_at(m, "train:base:epoch1")
        with pytest.raises(_Killed):
            _train(tiny, run)
    assert not run.exists() and (beside / checkpoints.META).is_file()
    with monkeypatch.context() as m:
        _kill_at(m, "train:finetune:epoch2")
        with pytest.raises(_Killed):
            _train(tiny, run)
    ft = "checkpoint-finetune"
    assert saves == [(beside.name, 1), (beside.name, 2), (ft, 1), (ft, 2)]
    assert not beside.exists()

    doc = yaml.safe_load(tiny.read_text())
    doc["finetune"]["learning_rate"] = 0.002
    tiny.write_text(yaml.safe_dump(doc))
    saves.clear()
    lines: list[str] = []
    _train(tiny, run, lines)
    assert saves == [("checkpoint-finetune", e) for e in (1, 2, 3)]
    assert not any("resuming from checkpoint" in ln for ln in lines), lines
    check_complete(run, load_config(tiny), _data(tiny))
    assert leftovers(run) == [] and not (run / "checkpoint-finetune").exists()
