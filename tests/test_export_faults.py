"""Fault injection: ``reds export`` killed with SIGKILL (``REDS_FAULT_AT``,
reds_tf/faults.py) at its stage boundaries and in the middle of a stage, then
run again: the run directory stays consistent (no export, or a whole one whose
manifest accuracies equal re-running the exported submodels in the simulator)
and nothing is left over once an export has finished. The kills before any
export and those with an export in place run on two copies of the trained run
at the same time."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from reds_tf import rundir

LIMIT = 200  # test images behind the manifest's accuracies


def _export(run: Path, fault: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REDS_FAULT_AT"}
    if fault is not None:
        env["REDS_FAULT_AT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "reds_tf", "export", str(run), "--limit", str(LIMIT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _killed(r: subprocess.CompletedProcess) -> None:
    assert r.returncode == -signal.SIGKILL, (r.returncode, r.stderr[-2000:])


def _temps(run: Path) -> list[str]:
    return sorted(
        p.name
        for p in run.iterdir()
        if p.name.startswith((".export.", rundir.PROBE_PREFIX)) or p.name.endswith(".tmp")
    )


def _check_consistent(run: Path) -> dict:
    """The export is whole: a valid manifest, every file it names, sources that
    hash to it, and int8 accuracies equal to re-running every submodel.

    The re-run is what ``reds simulate --submodel k --limit N`` computes
    (reds_tf/sim.py, run_simulate) with the test set and the compiled runtime
    loaded once for all submodels instead of once per submodel (each load reads
    and decodes the whole Fashion-MNIST set); ``run_simulate`` itself still
    re-runs the full submodel."""
    from reds_tf.sim import load_runtime, run_simulate

    m = rundir.load_manifest(run)
    rundir.verify_sources(run, m)
    export = run / "export"
    assert (export / "model.tflite").is_file()
    assert m["eval_samples"] == LIMIT
    xq, labels = rundir.quantized_test_set(run, m, m["eval_samples"])
    assert len(xq) == len(labels) == LIMIT
    rt = load_runtime(run)
    assert rt.num_submodels == len(m["submodels"])
    for k, s in enumerate(m["submodels"]):
        assert (export / s["tflite"]).is_file()
        acc = float(np.mean(np.argmax(rt.predict(xq, k), axis=1) == labels))
        assert acc == pytest.approx(s["int8_accuracy"], abs=1e-12), k
    last = len(m["submodels"]) - 1
    acc = run_simulate(run, submodel=last, limit=m["eval_samples"])
    assert acc == pytest.approx(m["submodels"][last]["int8_accuracy"], abs=1e-12)
    return m


def _killed_before_any_export_then_rerun(run: Path) -> None:
    """No export yet: killed before, at and after the conversion, and in the
    middle of writing the submodels: never an export/ folder; then a whole
    export. Subprocesses and file checks only (run in a worker thread)."""
    _killed(_export(run, "export:start"))
    _killed(_export(run, "export:converted"))
    assert not (run / "export").exists() and _temps(run) == []
    _killed(_export(run, "export:submodel"))  # mid-stage: one .tflite written
    assert not (run / "export").exists()
    first = _temps(run)
    assert len(first) == 1 and first[0].startswith(".export."), first
    _killed(_export(run, "export:manifest"))  # all written, not yet renamed
    second = _temps(run)
    assert not (run / "export").exists()
    assert len(second) == 1 and second != first  # the first one was cleaned up

    r = _export(run, None)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "interrupted export" in r.stdout
    assert _temps(run) == []


@pytest.mark.slow
def test_export_killed_at_every_stage_then_rerun(trained_run, tmp_path, capsys):
    """Two copies of the trained run, killed concurrently (each export process
    spends most of its time starting Python and TensorFlow on one core): one
    with no export yet, one with a whole export in place."""
    from reds_tf.export import run_export

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    prev = tmp_path / "prev" / trained_run.name
    shutil.copytree(trained_run, prev)
    t0 = time.monotonic()

    with ThreadPoolExecutor(1) as pool:
        no_export = pool.submit(_killed_before_any_export_then_rerun, run)

        # With an export in place: killed mid-way, the previous export is kept whole.
        run_export(prev, limit=LIMIT, log=lambda _m: None)
        m0 = _check_consistent(prev)
        before = (prev / "export" / "manifest.json").read_bytes()
        _killed(_export(prev, "export:sources"))
        assert (prev / "export" / "manifest.json").read_bytes() == before
        assert _check_consistent(prev) == m0
        # Killed after the new export is in place, before report.md is updated.
        _killed(_export(prev, "export:report"))
        m2 = _check_consistent(prev)
        assert [s["int8_accuracy"] for s in m2["submodels"]] == [
            s["int8_accuracy"] for s in m0["submodels"]
        ]

        r = _export(prev, None)
        assert r.returncode == 0, r.stderr[-3000:]
        assert _temps(prev) == []
        m3 = _check_consistent(prev)
        report = (prev / "report.md").read_text()
        assert report.count("## int8 export") == 1
        assert f"{100 * m3['submodels'][-1]['int8_accuracy']:.2f}" in report

        no_export.result()  # re-raises the worker's assertion errors
    # The export after the kills is whole and measures what the other one did.
    m1 = _check_consistent(run)
    assert [s["int8_accuracy"] for s in m1["submodels"]] == [
        s["int8_accuracy"] for s in m0["submodels"]
    ]
    assert (run / "report.md").read_text().count("## int8 export") == 1
    capsys.readouterr()
    print(f"fault injection: {time.monotonic() - t0:.1f} s")
