"""``train.distribute`` (reds_tf/distribute.py): the config and TF_CONFIG checks;
training mirrored over 2 logical CPU devices reaches the one-device accuracy;
2 MultiWorkerMirroredStrategy workers on localhost finish a `reds train` and
only the chief writes.

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

import numpy as np
import pytest
import yaml
from conftest import DEFAULT_CONFIG, REPO
from pattern_data import write_pattern_npz
from train_checks import check_complete

from reds_tf.config import DistributeConfig, config_to_dict, load_config, parse_config
from reds_tf.errors import ConfigError
from reds_tf.train_records import stage_config


def _cfg(distribute: dict | None, npz: Path | None = None) -> dict:
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["model"]["hidden"] = [32, 32]
    data["budgets"] = [0.5, 1.0]
    data["train"].update(epochs=2, learning_rate=0.003)
    if distribute is not None:
        data["train"]["distribute"] = distribute
    data["finetune"]["epochs"] = 1
    data["importance"] = {"batches": 4}
    if npz is not None:
        data.update(dataset="npz", data={"path": str(npz)})
    return data


def _npz(path: Path) -> Path:
    """A small learnable set: 3 classes of 8x8 patterns under noise."""
    return write_pattern_npz(path, n_train=768, n_test=300)


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


# One process, 2 logical CPUs: each training function once on one device and
# once mirrored, from the same initial weights and data.
MIRRORED_SCRIPT = """
import contextlib, json, sys
from reds_tf import distribute
from reds_tf.config import DistributeConfig, ModelConfig
dist = distribute.setup(DistributeConfig("mirrored", 2))
print(dist.describe(), file=sys.stderr)
from reds_tf.data import load_dataset
from reds_tf.importance import taylor_scores
from reds_tf.models import build_model
from reds_tf.nested import build_nested, nested_accuracy
from reds_tf.training import accuracy, finetune_joint, fit_classifier, set_seed
d = load_dataset("npz", path=sys.argv[1])
out = {}
for name, strategy in (("one", None), ("mirrored", dist.strategy)):
    scope = strategy.scope if strategy else contextlib.nullcontext
    set_seed(0)
    with scope():
        m = build_model(ModelConfig(hidden=(32, 32)), d.input_shape, d.num_classes)
    fit_classifier(m, d.x_train, d.y_train, epochs=2, batch_size=64, lr=3e-3,
                   schedule="cosine", seed=0, verbose=0, strategy=strategy)
    base = accuracy(m, d.x_test, d.y_test)
    imp = taylor_scores(m, d.x_train, d.y_train, ["fc1", "fc2"], batches=3, batch_size=65,
                        strategy=strategy)
    with scope():
        widths = [{"fc1": 16, "fc2": 16, "logits": 3}, {"fc1": 32, "fc2": 32, "logits": 3}]
        n = build_nested(m, widths)
    finetune_joint(n, d.x_train, d.y_train, [0.5, 1.0], epochs=1, batch_size=64, lr=1e-3,
                   schedule="cosine", distill=True, temperature=2.0, alpha=0.7, seed=0,
                   verbose=0, strategy=strategy)
    out[name] = {"acc": [base, *nested_accuracy(n, d.x_test, d.y_test)],
                 "imp": [imp[k].tolist() for k in ("fc1", "fc2")]}
print(json.dumps(out))
"""


def test_mirrored_on_two_logical_cpus_matches_one_device(tmp_path):
    """Base training, importance (each batch split over the replicas, the
    gradients summed) and joint fine-tuning mirrored over 2 logical CPU devices
    reach the one-device accuracies (the same global batches: equal up to
    float rounding)."""
    npz = _npz(tmp_path / "d.npz")
    r = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT, str(npz)],
        cwd=REPO,
        env=_env(TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "distribute: mirrored, 2 replicas in sync" in r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    one, mirrored = got["one"], got["mirrored"]
    assert min(one["acc"]) > 0.8, one
    assert mirrored["acc"] == pytest.approx(one["acc"], abs=0.01)
    for a, b in zip(one["imp"], mirrored["imp"], strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-6 * max(a))


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


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def test_two_workers_on_localhost_only_the_chief_writes(tmp_path):
    """`reds train` as 2 MultiWorkerMirroredStrategy workers (TF_CONFIG with two
    free localhost ports, each its own --out as on machines sharing no disk):
    both finish, the chief's run is complete, the worker wrote nothing."""
    npz = _npz(tmp_path / "d.npz")
    cfg = tmp_path / "workers.yaml"
    cfg.write_text(yaml.safe_dump(_cfg({"strategy": "multi_worker", "replicas": 2}, npz)))
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    runs = [tmp_path / "chief", tmp_path / "worker"]
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
    from reds_tf.data import load_dataset

    check_complete(runs[0], load_config(cfg), load_dataset("npz", path=str(npz)))
    assert json.loads((runs[0] / "run.json").read_text())["distribute"]["replicas"] == 2
    assert min(_accuracies(runs[0])) > 0.5  # 3 classes: chance is 1/3
    assert not runs[1].exists() and list(temps[1].iterdir()) == []


def _accuracies(run: Path) -> list[float]:
    doc = json.loads((run / "submodels.json").read_text())
    base = json.loads((run / "run.json").read_text())["base_accuracy"]
    return [base] + [s["accuracy"] for s in doc["submodels"]]
