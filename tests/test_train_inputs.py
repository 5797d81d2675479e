"""`reds train` on bad input: one line, exit 2, before TensorFlow loads
(the cases of tests/reliability_train.py, which RELIABILITY.md lists)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import reliability_train
from conftest import DEFAULT_CONFIG, REPO

from reds_tf.cli import main


def _argv(case: dict, tmp: Path) -> list[str]:
    return [a.format(tmp=tmp, repo=REPO) for a in case["argv"]]


def _prepare(case: dict, tmp: Path) -> None:
    if case.get("setup"):
        getattr(reliability_train, case["setup"])(tmp)


@pytest.mark.parametrize(
    "case", reliability_train.CASES, ids=[c["input"][:40] for c in reliability_train.CASES]
)
def test_case(case, tmp_path, capsys):
    _prepare(case, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main(_argv(case, tmp_path)) == case["exit"]
    err = capsys.readouterr().err
    assert case["message"] in err
    assert err.startswith("reds train: error: ") and err.count("\n") == 1, err
    # Nothing created, nothing left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_cases_do_not_load_tensorflow(tmp_path):
    """Every case in one fresh interpreter: all fail fast and none of them
    imports TensorFlow (config errors must not wait 6-60 s for it)."""
    code = f"""
import sys, time, tempfile, pathlib, contextlib, io
sys.path.insert(0, {str(REPO / "tests")!r})
import reliability_train
from reds_tf.cli import main
for case in reliability_train.CASES:
    tmp = pathlib.Path(tempfile.mkdtemp(dir={str(tmp_path)!r}))
    if case.get("setup"):
        getattr(reliability_train, case["setup"])(tmp)
    argv = [a.format(tmp=tmp, repo={str(REPO)!r}) for a in case["argv"]]
    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        rc = main(argv)
    assert rc == case["exit"], (case, rc)
    assert time.perf_counter() - t0 < 2, case
print("tensorflow" in sys.modules, "tf_keras" in sys.modules)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["False", "False"]


def test_broken_config_fails_fast_from_the_shell(tmp_path):
    """`reds train` with a bad config and --threads (which used to import
    TensorFlow first) exits 2 in a few seconds with one line."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndataset: fashion_mnist\ntrain: {epochs: abc}\n")
    cmd = [sys.executable, "-m", "reds_tf", "train", "--config", str(bad), "--threads", "2"]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    elapsed = time.perf_counter() - t0
    assert r.returncode == 2
    assert r.stderr == (
        f"reds train: error: {bad}: train.epochs must be a positive integer, got 'abc'\n"
    )
    assert elapsed < 5, elapsed
    assert not (tmp_path / "runs").exists()


def test_tensorflow_noise_hidden_unless_verbose(trained_run, tmp_path):
    """A resumed run with --threads loads TensorFlow: quiet by default, its log
    lines shown with --verbose."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    base = [sys.executable, "-m", "reds_tf"]
    tiny = ["--epochs", "1", "--finetune-epochs", "1", "--limit", "3000", "--seed", "0"]
    args = ["train", "--config", str(DEFAULT_CONFIG), "--out", str(run), "--threads", "1", *tiny]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    quiet = subprocess.run([*base, *args], cwd=REPO, env=env, capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    assert quiet.stderr == ""
    assert quiet.stdout.count("already done, skipped") == 7
    loud = subprocess.run([*base, "--verbose", *args], cwd=REPO, env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "absl::InitializeLog" in loud.stderr or "I0000" in loud.stderr, loud.stderr


def test_threads_bound_in_process():
    from reds_tf.errors import ConfigError
    from reds_tf.pipeline import run_training

    for bad in (0, -1, 10**9):
        with pytest.raises(ConfigError, match="--threads must be an integer from 1 to 1024"):
            run_training(DEFAULT_CONFIG, threads=bad)
