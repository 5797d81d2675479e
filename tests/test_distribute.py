"""``train.distribute`` (reds_tf/distribute.py): the config and TF_CONFIG checks;
`reds train` mirrored over 2 logical CPU devices reaches the one-device
accuracy; 2 MultiWorkerMirroredStrategy workers on localhost finish the run
and only the chief writes.

The training runs are subprocesses: logical devices and the multi-worker
strategy must be set up before TensorFlow initialises, which in the test
process it already has.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT_CONFIG, REPO
from train_checks import check_complete

from reds_tf.config import DistributeConfig, config_to_dict, load_config, parse_config
from reds_tf.errors import ConfigError
from reds_tf.train_records import stage_config


def _cfg(distribute: dict | None) -> dict:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["model"]["hidden"] = [32, 32]
    data["budgets"] = [0.5, 1.0]
    data["train"].update(epochs=2, limit=1000, learning_rate=0.003)
    if distribute is not None:
        data["train"]["distribute"] = distribute
    data["finetune"]["epochs"] = 1
    data["importance"] = {"batches": 4}
    return data


@pytest.mark.parametrize(
    "bad, needle",
    [
        ({"strategy": "horovod"}, "train.distribute.strategy must be one of"),
        ({"strategy": "none", "replicas": 2}, "train.distribute.replicas needs strategy"),
        ({"strategy": "mirrored", "replicas": 0}, "train.distribute.replicas must be a positive"),
        ({"strategy": "mirrored", "gpus": 2}, "train.distribute.gpus unknown key"),
    ],
)
def test_bad_distribute_names_the_key(bad, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_config(_cfg(bad), "c.yaml")


def test_distribute_changes_no_stage_record():
    """How training is spread is not what it computes: a run resumes on other
    hardware; the default stays out of the resolved config."""
    one = parse_config(_cfg(None))
    two = parse_config(_cfg({"strategy": "mirrored", "replicas": 2}))
    assert two.train.distribute == DistributeConfig("mirrored", 2)
    assert "distribute" not in config_to_dict(one)["train"]
    assert config_to_dict(two)["train"]["distribute"] == {"strategy": "mirrored", "replicas": 2}
    for stage in ("base", "finetune", "report"):
        assert stage_config(one, stage) == stage_config(two, stage)


@pytest.mark.parametrize(
    "tf_config, needle",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{not json", "must be JSON"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}', "index 3"),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "chief or worker"),
    ],
)
def test_tf_config_errors(tf_config, needle, monkeypatch):
    from reds_tf.distribute import cluster_from_env

    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match=needle):
        cluster_from_env("c.yaml")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDS_FAULT_AT", "TF_CONFIG")}
    return {**env, **extra}


def _reds_train(cfg: Path, out: Path, **env: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "reds_tf", "train", "--config", str(cfg), "--out", str(out)]
    return subprocess.Popen(
        cmd, cwd=REPO, env=_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(p: subprocess.Popen, timeout: float = 240) -> str:
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        pytest.fail(f"timed out:\n{out[-2000:]}\n{err[-2000:]}")
    assert p.returncode == 0, err[-3000:]
    return out


def _accuracies(run: Path) -> list[float]:
    doc = json.loads((run / "submodels.json").read_text())
    base = json.loads((run / "run.json").read_text())["base_accuracy"]
    return [base] + [s["accuracy"] for s in doc["submodels"]]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory) -> list[float]:
    """Accuracies (base, then each submodel) of the tiny config on one device."""
    from reds_tf.pipeline import run_training

    folder = tmp_path_factory.mktemp("one")
    cfg = folder / "one.yaml"
    cfg.write_text(yaml.safe_dump(_cfg(None)))
    run = run_training(cfg, out_dir=folder / "run", verbose=0, log=lambda _m: None)
    return _accuracies(run)


def _data():
    from reds_tf.data import load_dataset

    return load_dataset("fashion_mnist")


def test_mirrored_on_two_logical_cpus_matches_one_device(one_device, tmp_path):
    cfg = tmp_path / "mirrored.yaml"
    cfg.write_text(yaml.safe_dump(_cfg({"strategy": "mirrored", "replicas": 2})))
    run = tmp_path / "run"
    out = _finish(_reds_train(cfg, run))
    assert "distribute: mirrored, 2 replicas in sync" in out, out
    check_complete(run, load_config(cfg), _data())
    assert json.loads((run / "run.json").read_text())["distribute"]["replicas"] == 2
    # Same global batches and summed gradients: equal up to float rounding.
    assert _accuracies(run) == pytest.approx(one_device, abs=0.01)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_two_workers_on_localhost_only_the_chief_writes(one_device, tmp_path):
    cfg = tmp_path / "workers.yaml"
    cfg.write_text(yaml.safe_dump(_cfg({"strategy": "multi_worker", "replicas": 2})))
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    runs = [tmp_path / "chief", tmp_path / "worker"]  # as on machines sharing no disk
    temps = [tmp_path / "tmp0", tmp_path / "tmp1"]  # where the worker keeps its private copy
    procs = []
    for i in (0, 1):
        temps[i].mkdir()
        task = {"cluster": cluster, "task": {"type": "worker", "index": i}}
        procs.append(_reds_train(cfg, runs[i], TF_CONFIG=json.dumps(task), TMPDIR=str(temps[i])))
    try:
        logs = [_finish(p) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert "2 replicas in sync" in logs[0] and "worker 0 of 2 (chief)" in logs[0], logs[0]
    assert "2 replicas in sync" in logs[1] and "worker 1 of 2 done" in logs[1], logs[1]
    check_complete(runs[0], load_config(cfg), _data())
    assert not runs[1].exists() and list(temps[1].iterdir()) == []
    assert _accuracies(runs[0]) == pytest.approx(one_device, abs=0.01)
