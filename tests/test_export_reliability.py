"""Bad inputs and faults of ``reds export``, ``simulate``, ``bench`` and
``firmware`` end in one line (exit 2), never in a traceback, wrong numbers or
stray files: the cases of tests/reliability_export.py, real read-only mounts
and a full disk, stale temp folders of killed exports, the sources hash."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import reliability_export

from reds_tf import rundir
from reds_tf.cli import main as cli_main
from reds_tf.errors import OutputError, RedsError, RunDirError

HEAVY = shutil.ignore_patterns("base.keras", "permuted.keras", "firmware", ".bench")


def _copy_run(exported_run: Path, dest: Path) -> Path:
    shutil.copytree(exported_run, dest, ignore=HEAVY)
    return dest


def _fill(argv: list[str], tmp: Path, run: Path) -> list[str]:
    return [a.replace("{tmp}", str(tmp)).replace("{run}", str(run)) for a in argv]


CASE_IDS = [f"{c['area']}: {c['input']}" for c in reliability_export.CASES]


@pytest.mark.parametrize("case", reliability_export.CASES, ids=CASE_IDS)
def test_case_table(case, exported_run, tmp_path, capsys):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run = _copy_run(exported_run, tmp_path / "run")
    if case.get("setup"):
        getattr(reliability_export, case["setup"])(tmp, run)
    capsys.readouterr()
    status = cli_main(_fill(case["argv"], tmp, run))
    out, err = capsys.readouterr()
    assert status == case["exit"], err
    assert case["message"] in err, err
    assert "Traceback" not in err
    if case["exit"] == 2:
        assert len(err.strip().splitlines()) == 1, err
        assert err.startswith(f"reds {case['argv'][0]}: error: ")


def test_every_setup_exists_and_every_case_is_complete():
    keys = {"area", "input", "argv", "exit", "message"}
    for c in reliability_export.CASES:
        assert keys <= set(c) <= keys | {"setup"}, c
        assert c["area"] in ("export", "simulate", "bench", "firmware")
        assert c.get("setup") is None or callable(getattr(reliability_export, c["setup"]))


# -- simulate --output creates no folders ---------------------------------------------


def test_simulate_output_in_a_missing_folder_creates_nothing(exported_run, tmp_path, capsys):
    x = np.zeros((2, *rundir.load_manifest(exported_run)["input_shape"]), np.int8)
    np.save(tmp_path / "in.npy", x)
    target = tmp_path / "missing" / "dir" / "o.npy"
    argv = ["simulate", str(exported_run), "--submodel", "0", "--inputs", str(tmp_path / "in.npy")]
    assert cli_main([*argv, "--output", str(target)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()
    assert cli_main([*argv, "--output", str(tmp_path / "o.npy")]) == 0
    assert np.load(tmp_path / "o.npy").shape == (2, 10)


# -- the sources hash and --trust ------------------------------------------------------


def test_export_records_the_sources_hash(exported_run):
    m = rundir.load_manifest(exported_run)
    assert m["sources_sha256"] == rundir.sources_sha256(exported_run / "export" / "src")
    assert rundir.verify_sources(exported_run, m) == exported_run / "export" / "src"


def test_changed_sources_are_refused_unless_trusted(exported_run, tmp_path, capsys):
    from reds_tf.sim import load_runtime

    run = _copy_run(exported_run, tmp_path / "run")
    src = run / "export" / "src"
    with open(src / "reds_model.cpp", "a") as f:
        f.write("\n/* edited by someone else */\n")
    with pytest.raises(RunDirError, match="is not what `reds export` generated"):
        load_runtime(run)
    rt = load_runtime(run, trust=True)  # compiles the edited sources
    assert rt.num_submodels == len(rundir.load_manifest(run)["submodels"])
    assert cli_main(["simulate", str(run), "--submodel", "0", "--limit", "20", "--trust"]) == 0
    # renaming, adding or linking a file changes the hash too
    h0 = rundir.sources_sha256(src)
    (src / "reds_model.cpp").rename(src / "other.cpp")
    h1 = rundir.sources_sha256(src)
    (src / "x.h").symlink_to("/etc/hostname")
    h2 = rundir.sources_sha256(src)
    assert len({h0, h1, h2}) == 3
    capsys.readouterr()


def test_an_export_older_than_the_training_is_refused(exported_run, tmp_path, capsys):
    """Training re-ran after the export (model.keras, submodels.json or
    bn_stats.npz changed): simulate, bench, firmware and monitor --demo refuse
    the stale export in one line, --trust included; a run shared without its
    model.keras still works."""
    from reds_tf.monitor import _run_manifest

    run = _copy_run(exported_run, tmp_path / "run")
    m = rundir.load_manifest(run)
    assert m["trained_sha256"] == rundir.trained_sha256(run)
    rundir.verify_sources(run, m)
    with open(run / "model.keras", "ab") as f:
        f.write(b"\0")  # any change of the trained files
    for argv in (
        ["simulate", str(run), "--submodel", "0", "--limit", "5"],
        ["simulate", str(run), "--submodel", "0", "--limit", "5", "--trust"],
        ["bench", str(run)],
        ["firmware", str(run), "--board", "native"],
    ):
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "earlier training of this run" in err and "reds export" in err, err
        assert len(err.splitlines()) == 1
    with pytest.raises(RunDirError, match="earlier training"):
        _run_manifest(run)
    (run / "model.keras").unlink()  # an export shared without the training
    assert rundir.verify_sources(run, rundir.load_manifest(run)) == run / "export" / "src"


def test_bench_and_firmware_check_the_sources_before_building(exported_run, tmp_path):
    from reds_tf import bench, firmware

    run = _copy_run(exported_run, tmp_path / "run")
    (run / "export" / "src" / "library.json").write_text('{"build": {"extraScript": "x.py"}}')
    with pytest.raises(RunDirError, match="not what `reds export` generated"):
        bench.run_bench(run, markdown=None)
    with pytest.raises(RunDirError, match="not what `reds export` generated"):
        firmware.build_firmware(run, "native")
    assert not (run / "firmware").exists() and not (run / ".bench").exists()


# -- output locations: real read-only mounts and a full disk ---------------------------


def _can_mount(tmp_path: Path) -> bool:
    if sys.platform != "linux" or shutil.which("unshare") is None:
        return False
    d = tmp_path / "probe"
    d.mkdir()
    probe = f'mount --bind "{d}" "{d}" && mount -o remount,bind,ro "{d}"'
    r = subprocess.run(["unshare", "-m", "sh", "-c", probe], capture_output=True)
    d.rmdir()
    return r.returncode == 0


REDS = [sys.executable, "-m", "reds_tf"]


def test_read_only_locations_are_one_line_before_any_work(exported_run, tmp_path):
    if not _can_mount(tmp_path):
        pytest.skip("needs unshare and mount (root in a Linux mount namespace)")
    run = _copy_run(exported_run, tmp_path / "run")
    out = tmp_path / "ro_out"
    out.mkdir()
    x = np.zeros((3, *rundir.load_manifest(run)["input_shape"]), np.int8)
    np.save(tmp_path / "in.npy", x)
    ro = (
        'for d in "$RO1" "$RO2"; do mount --bind "$d" "$d" && '
        'mount -o remount,bind,ro "$d" || exit 99; done; exec "$@"'
    )
    env_cmds = {
        "export": [*REDS, "export", str(run), "--limit", "10"],
        "bench": [*REDS, "bench", str(run)],
        "firmware": [*REDS, "firmware", str(run), "--board", "native"],
        "simulate": [*REDS, "simulate", str(run), "--submodel", "0", "--inputs",
                     str(tmp_path / "in.npy"), "--output", str(out / "o.npy")],
        "bench --out": [*REDS, "bench", str(run), "--out", str(out / "b.json")],
    }  # fmt: skip
    before = sorted(p.name for p in run.iterdir())
    for what, cmd in env_cmds.items():
        r = subprocess.run(
            ["unshare", "-m", "sh", "-c", ro, "sh", *cmd],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "RO1": str(run), "RO2": str(out)},
        )
        assert r.returncode == 2, (what, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1, (what, r.stderr)
        assert "Read-only file system" in r.stderr, (what, r.stderr)
        assert "Traceback" not in r.stderr
    assert sorted(p.name for p in run.iterdir()) == before


def test_full_disk_while_writing_is_one_line_and_leaves_nothing(exported_run, tmp_path):
    if not _can_mount(tmp_path):
        pytest.skip("needs unshare and mount (root in a Linux mount namespace)")
    full = tmp_path / "full"
    full.mkdir()
    x = np.zeros((2000, *rundir.load_manifest(exported_run)["input_shape"]), np.int8)
    np.save(tmp_path / "in.npy", x)  # 20 KB of outputs into a 4 KB file system
    script = (
        'mount -t tmpfs -o size=4k tmpfs "$FULL" || exit 99; "$@"; rc=$?; '
        'echo "left: $(ls -A "$FULL")" >&2; exit $rc'
    )
    cmd = [*REDS, "simulate", str(exported_run), "--submodel", "0", "--inputs",
           str(tmp_path / "in.npy"), "--output", str(full / "o.npy")]  # fmt: skip
    r = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", *cmd],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FULL": str(full)},
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2, r.stderr
    assert lines[-1].strip() == "left:", r.stderr  # no temp file left on the full disk
    assert len(lines) == 2, r.stderr
    assert lines[0].startswith("reds simulate: error: cannot write ")
    assert "No space left on device" in lines[0] and "Traceback" not in r.stderr


def test_disk_full_in_the_middle_of_an_export(exported_run, tmp_path, monkeypatch, capsys):
    """ENOSPC while writing the manifest (after every .tflite and the sources):
    one line naming the file, no partial export, the previous export kept."""
    run = _copy_run(exported_run, tmp_path / "run")
    before = (run / "export" / "manifest.json").read_text()

    def no_space(path, obj):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("reds_tf.export.write_json_atomic", no_space)
    status = cli_main(["export", str(run), "--limit", "20"])
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.strip().splitlines()[-1].startswith("reds export: error: cannot write ")
    assert "manifest.json: No space left on device" in err and "Traceback" not in err
    assert (run / "export" / "manifest.json").read_text() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".export")]


def test_output_errors_name_the_path():
    with pytest.raises(OutputError, match=r"^cannot write /x/y: No space left on device$"):
        with rundir.output_errors("/x"):
            raise OSError(errno.ENOSPC, "No space left on device", "/x/y")
    with pytest.raises(OutputError, match=r"^cannot access /x: Permission denied$"):
        with rundir.output_errors("/x"):
            raise PermissionError(errno.EACCES, "Permission denied")


# -- stale temp folders of killed exports ------------------------------------------------


def test_export_removes_what_killed_exports_left(exported_run, tmp_path, monkeypatch):
    from reds_tf import export

    run = _copy_run(exported_run, tmp_path / "run")
    (run / ".export.k3j_x1.tmp" / "src").mkdir(parents=True)
    (run / ".export.k3j_x1.tmp" / "model.tflite").write_bytes(b"half")
    shutil.copytree(run / "export", run / ".export.old")
    (run / ".report.md.a8f.tmp").write_text("half a report")
    os.utime(run / ".report.md.a8f.tmp", (1, 1))
    (run / ".export.keep").write_text("not ours: no .tmp suffix")
    logs: list[str] = []
    monkeypatch.setattr(export, "_export_locked", lambda *a: run / "export")
    export.run_export(run, log=logs.append)
    names = {p.name for p in run.iterdir()}
    assert not {".export.k3j_x1.tmp", ".export.old", ".report.md.a8f.tmp"} & names
    assert ".export.keep" in names and "export" in names
    assert any("left in" in line and "interrupted export" in line for line in logs)


def test_killed_between_the_two_renames_restores_the_previous_export(exported_run, tmp_path):
    """fsutil.atomic_dir moves export/ to .export.old, then the new folder in;
    killed in between, the next export puts the old one back (when whole)."""
    from reds_tf.export import clean_stale

    run = _copy_run(exported_run, tmp_path / "run")
    manifest = (run / "export" / "manifest.json").read_text()
    os.replace(run / "export", run / ".export.old")
    clean_stale(run, started=0.0, log=lambda _m: None)
    assert (run / "export" / "manifest.json").read_text() == manifest
    assert not (run / ".export.old").exists()
    # a damaged old export is removed, not restored
    os.replace(run / "export", run / ".export.old")
    (run / ".export.old" / "src" / "reds_model.cpp").write_text("half")
    clean_stale(run, started=0.0, log=lambda _m: None)
    assert not (run / "export").exists() and not (run / ".export.old").exists()


def test_a_second_export_of_the_same_run_is_refused(exported_run, tmp_path):
    from reds_tf.export import run_export, run_lock

    run = _copy_run(exported_run, tmp_path / "run")
    (run / ".export.live.tmp").mkdir()  # the running export's folder: must survive
    with run_lock(run):
        with pytest.raises(RedsError, match="another reds command .* is writing"):
            run_export(run, limit=10, log=lambda _m: None)
    assert (run / ".export.live.tmp").is_dir()


# -- schemas (reds_tf/rundir.py) ----------------------------------------------------------


def test_submodels_schema_names_file_key_and_fix(trained_run, tmp_path):
    sub = json.loads((trained_run / "submodels.json").read_text())
    rundir.check_submodels(sub, record=True)
    bad = json.loads(json.dumps(sub))
    bad["submodels"][2]["widths"]["fc2"] = "64"
    with pytest.raises(RunDirError) as e:
        rundir.check_submodels(bad, tmp_path / "submodels.json")
    msg = str(e.value)
    assert msg == (
        f"{tmp_path / 'submodels.json'}: 'submodels[2].widths.fc2' must be an integer in "
        "1..256, got '64'; re-run `reds train`"
    )
    for change, key in [
        (lambda d: d.__setitem__("num_classes", True), "'num_classes'"),
        (lambda d: d["layers"].append(dict(d["layers"][0])), "repeats an earlier"),
        (lambda d: d["submodels"][0].__setitem__("index", 3), "'submodels[0].index'"),
        (lambda d: d["submodels"][0].__setitem__("accuracy", 7), "'submodels[0].accuracy'"),
        (lambda d: d.__setitem__("input_shape", [28, -1]), "'input_shape[1]'"),
        (lambda d: d.__setitem__("bn_stats", "both"), "'bn_stats'"),
    ]:
        bad = json.loads(json.dumps(sub))
        change(bad)
        with pytest.raises(RunDirError, match=key.replace("[", r"\[").replace("]", r"\]")):
            rundir.check_submodels(bad)
    bad = json.loads(json.dumps(sub))
    del bad["submodels"][0]["accuracy"]
    rundir.check_submodels(bad)  # export needs no accuracy
    with pytest.raises(RunDirError, match=r"'submodels\[0\].accuracy' is missing"):
        rundir.check_submodels(bad, record=True)  # the report does


def test_is_dense_is_decided_in_one_place(trained_run):
    from reds_tf import bench, export

    sub = rundir.load_submodels(trained_run)
    assert rundir.is_dense(sub) and rundir.model_kind(sub) == "dense"
    assert export.is_dense_only is rundir.is_dense
    assert bench.model_kind(trained_run) == "dense"
    conv = json.loads(json.dumps(sub))
    conv["layers"][0]["type"] = "conv"
    assert rundir.model_kind(conv) == "conv" and not rundir.is_dense(conv)


def test_inputs_header_is_checked_before_reading(tmp_path):
    from numpy.lib import format as npy

    path = tmp_path / "big.npy"
    with open(path, "wb") as f:
        npy.write_array_header_1_0(
            f, {"descr": "|i1", "fortran_order": False, "shape": (10**12, 28, 28, 1)}
        )
    with pytest.raises(RedsError, match=r"declares 1,000,000,000,000 inputs"):
        rundir.load_inputs(path, (28, 28, 1))
    small = tmp_path / "s.npy"
    np.save(small, np.zeros((5, 4), np.int8))
    assert rundir.load_inputs(small, (4,)).shape == (5, 4)
    with pytest.raises(RedsError, match="limit"):
        rundir.load_inputs(small, (4,), max_bytes=19)
