"""The wheel works outside the repository: ``pip wheel .`` ships the
templates, kernel sources, firmware tree and QEMU plugin source; installed into
a fresh venv, run from a folder outside the checkout, its ``reds`` trains,
exports, simulates, builds the native and qemu firmware and benches a tiny run.

The fresh venv gets the wheel alone (``--no-deps``); its third-party
dependencies come from this test's own environment through a path entry (a
``.pth`` line adds the folder to sys.path without running the ``.pth`` files in
it, so the checkout's editable install of reds_tf stays out of sight)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = """\
name: wheel_dnn
dataset: fashion_mnist
seed: 0
model: {type: dnn, hidden: [32, 32]}
budgets: [0.5, 1.0]
block: 4
train: {epochs: 1, batch_size: 128, learning_rate: 0.001}
importance: {batches: 10}
finetune: {epochs: 1, learning_rate: 0.001}
"""
TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm", "gcc", "g++")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.mark.slow
@pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS),
    reason="needs gcc, g++, gcc-arm-none-eabi and qemu-system-arm (make setup installs them)",
)
def test_wheel_installs_and_runs_the_pipeline_outside_the_repository(tmp_path: Path) -> None:
    # Build from a copy: an in-tree build would leave build/ in the checkout,
    # whose stale files a later wheel would pick up.
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", ".pio", ".pio-core", "*.egg-info", "__pycache__",
        ".pytest_cache", ".ruff_cache"))  # fmt: skip
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(src)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = dist.glob("reds_tf-*.whl")

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    bin_dir = env_dir / "bin"
    py = bin_dir / "python"
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    (site / "dev_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q",
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip

    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "REDS_CACHE_DIR": str(tmp_path / "cache"), "PATH":
           f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    env.pop("PYTHONPATH", None)
    where = _run([str(py), "-c", "import reds_tf; print(reds_tf.__file__)"], work, env)
    assert Path(where.strip()).is_relative_to(env_dir), where  # the wheel, not the checkout

    reds = str(bin_dir / "reds")
    (work / "c.yaml").write_text(CONFIG)
    _run([reds, "train", "--config", "c.yaml", "--out", "run", "--limit", "2000"], work, env)
    _run([reds, "export", "run", "--limit", "300"], work, env)
    out = _run([reds, "simulate", "run", "--submodel", "0", "--limit", "50"], work, env)
    assert "int8 test accuracy" in out
    for board in ("native", "qemu"):
        _run([reds, "firmware", "run", "--board", board], work, env)
    assert (work / "run" / "firmware" / ".pio" / "build" / "qemu" / "program.elf").is_file()
    out = _run([reds, "bench", "run"], work, env)
    assert "outputs identical" in out
    assert (work / "run" / "bench.json").is_file()
    # nothing was written into the installed package or the checkout's firmware folder
    assert not (site / "reds_tf" / "_assets" / "firmware" / ".pio-core").exists()
