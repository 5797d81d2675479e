"""Stage records (stages.json): a resumed `reds train` never ships weights its
records do not describe; every interruption point leaves a consistent run."""

from __future__ import annotations

import errno
import functools
import re
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT_CONFIG, TINY
from train_checks import check_complete, check_records, full_accuracy_matches, leftovers

from reds_tf import faults, pipeline
from reds_tf.config import load_config, with_overrides
from reds_tf.errors import InfeasibleBudgetError, OutputError
from reds_tf.pipeline import run_training


class _Killed(BaseException):
    """Stands in for SIGKILL in-process (tests/test_train_faults.py kills for real)."""


def _fashion():
    from reds_tf.data import load_dataset

    return load_dataset("fashion_mnist")


def _quiet_train(cfg, out, **kw):
    return run_training(cfg, out_dir=out, verbose=0, log=lambda _m: None, **kw)


def test_interrupted_rerun_with_changed_config_is_redone(trained_run: Path, tmp_path, monkeypatch):
    """Issue 15, item 1: train with 1 fine-tuning epoch, re-run with 2 and stop it
    once stage 6 (evaluation) starts, re-run the first command: the run must
    not report "already done" over the 2-epoch weights."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    data = _fashion()
    full_accuracy_matches(run, data)

    def interrupted(_ctx):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setitem(pipeline._RUNNERS, "evaluate", interrupted)
        with pytest.raises(KeyboardInterrupt):
            _quiet_train(DEFAULT_CONFIG, run, **{**TINY, "finetune_epochs": 2})
    lines: list[str] = []
    run_training(DEFAULT_CONFIG, out_dir=run, verbose=0, log=lines.append, **TINY)
    assert any("redoing from stage 'finetune' on" in ln for ln in lines), lines
    check_complete(run, with_overrides(load_config(DEFAULT_CONFIG), **TINY), data)
    assert "finetune:\n  epochs: 1\n" in (run / "config.yaml").read_text().replace("    ", "  ")


def _tiny_config(tmp_path: Path) -> Path:
    """fmnist_dnn at 32-32 units: every stage takes a fraction of a second."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["model"]["hidden"] = [32, 32]
    data["train"].update(epochs=1, limit=600)
    data["finetune"]["epochs"] = 1
    data["importance"] = {"batches": 4}
    p = tmp_path / "tiny.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.fixture
def fast_data(monkeypatch):
    """Load Fashion-MNIST once for the many in-process runs below."""
    import reds_tf.data

    monkeypatch.setattr(reds_tf.data, "load_dataset", functools.cache(reds_tf.data.load_dataset))
    return reds_tf.data.load_dataset("fashion_mnist")


def _kill_at(monkeypatch, point: str) -> None:
    real = faults.fault_point

    def fault_point(name: str) -> None:
        if name == point:
            raise _Killed(name)
        real(name)

    monkeypatch.setattr(faults, "fault_point", fault_point)


POINTS = [
    f"train:{stage}:{where}"
    for stage in ("base", "rank", "permute", "select", "finetune", "evaluate", "report")
    for where in ("begin", "tmp", "files", "done")
    if where != "tmp" or stage in ("base", "rank", "permute", "finetune")
]


def test_killed_at_every_point_then_resumed(tmp_path, monkeypatch, fast_data):
    """Stopped at every stage boundary and inside every stage (in-process: the
    exception skips everything after the point), the run directory's records
    always match its files; each re-run goes on from the stopped stage."""
    cfg_path = _tiny_config(tmp_path)
    cfg = load_config(cfg_path)
    run = tmp_path / "run"
    for point in POINTS:
        with monkeypatch.context() as m:
            _kill_at(m, point)
            with pytest.raises(_Killed):
                _quiet_train(cfg_path, run)
        records = check_records(run)
        stage, where = point.split(":")[1:]
        done = [s for s in pipeline.STAGES if s in records]
        # A stage is recorded exactly when the kill came after its record.
        assert (stage in done) == (where == "done"), (point, done)
    _quiet_train(cfg_path, run)
    check_complete(run, cfg, fast_data)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """(config, run directory) of the tiny config trained once."""
    folder = tmp_path_factory.mktemp("tiny")
    cfg_path = _tiny_config(folder)
    return cfg_path, _quiet_train(cfg_path, folder / "run")


@pytest.mark.parametrize("point", ["train:finetune:invalidated", "train:report:files"])
def test_interrupted_config_change_then_first_config_again(
    point, tiny_run, tmp_path, monkeypatch, fast_data
):
    """The issue's sequence at more points (test_interrupted_rerun_... above
    stops at evaluation): a finished run (1 fine-tuning epoch), the same with 2
    epochs stopped at ``point``, the first command again."""
    cfg_path, finished = tiny_run
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    with monkeypatch.context() as m:
        _kill_at(m, point)
        with pytest.raises(_Killed):
            _quiet_train(cfg_path, run, finetune_epochs=2)
    check_records(run)
    lines: list[str] = []
    run_training(cfg_path, out_dir=run, verbose=0, log=lines.append)
    assert sum("already done" in ln for ln in lines) == 4  # base .. select kept
    check_complete(run, load_config(cfg_path), fast_data)


def test_export_edits_to_report_md_keep_the_run_done(trained_run: Path, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    with open(run / "report.md", "a") as f:
        f.write("\n## int8 export\n\nadded by reds export\n")
    lines: list[str] = []
    run_training(DEFAULT_CONFIG, out_dir=run, verbose=0, log=lines.append, **TINY)
    assert sum("already done, skipped" in ln for ln in lines) == 7, lines
    assert "added by reds export" in (run / "report.md").read_text()


def test_a_changed_file_is_redone_with_everything_after(trained_run: Path, tmp_path, fast_data):
    """model.keras replaced behind the pipeline's back (here by the permuted,
    not fine-tuned, model): fine-tuning and every later stage run again."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.copyfile(run / "permuted.keras", run / "model.keras")
    (run / "accuracy_vs_macs.png").unlink()
    (run / "export").mkdir()  # an export of the replaced weights: now stale
    lines: list[str] = []
    run_training(DEFAULT_CONFIG, out_dir=run, verbose=0, log=lines.append, **TINY)
    assert any("redoing from stage 'finetune' on: model.keras differs" in ln for ln in lines)
    assert any("export holds the previous weights; run `reds export" in ln for ln in lines)
    assert sum("already done, skipped" in ln for ln in lines) == 4
    check_complete(run, with_overrides(load_config(DEFAULT_CONFIG), **TINY), fast_data)


def test_run_dir_without_records_keeps_only_its_base(trained_run: Path, tmp_path, fast_data):
    """A run directory written before stage records: base.keras is kept (it was
    always written together with config.yaml), the rest is redone."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "stages.json").unlink()
    base = (run / "base.keras").stat().st_mtime_ns
    lines: list[str] = []
    run_training(DEFAULT_CONFIG, out_dir=run, verbose=0, log=lines.append, **TINY)
    assert any("no stage records (older reds_tf): keeping base.keras" in ln for ln in lines)
    assert sum("already done, skipped" in ln for ln in lines) == 1
    assert (run / "base.keras").stat().st_mtime_ns == base
    check_complete(run, with_overrides(load_config(DEFAULT_CONFIG), **TINY), fast_data)


def test_leftovers_of_a_kill_are_removed(trained_run: Path, tmp_path):
    """What fsutil's temp names look like after kill -9 mid-write: gone after
    the next run, while files that are not ours stay."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    junk = [
        run / ".model.tmp.keras",
        run / ".stages.json.abcd_123.tmp",
        run / ".run.json.zz9zz9zz.tmp",
        tmp_path / ".run.k2j4h5g6.tmp",
        tmp_path / ".run.old",
    ]
    for p in junk[:3]:
        p.write_bytes(b"partial")
    for p in junk[3:]:
        p.mkdir()
        (p / "base.keras").write_bytes(b"partial")
    mine = [run / ".model.keep", tmp_path / ".other.abcdefgh.tmp"]
    for p in mine:
        p.write_bytes(b"not reds'")
    _quiet_train(DEFAULT_CONFIG, run, **TINY)
    assert not [p for p in junk if p.exists()]
    assert all(p.exists() for p in mine)
    for p in mine:
        p.unlink()
    assert leftovers(run) == []


def test_memory_budget_checked_before_training(tmp_path):
    """Issue 15, item 4: an infeasible memory_budget_bytes fails before any
    training and leaves no run directory."""
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    out = tmp_path / "run"
    # The exported runtime's arenas (reds_tf/memory.py): 1,592 bytes with fc1 and
    # fc2 at 4 units (fc1's scratch dominates), 2,852 bytes for the full model.
    for limit, needle in [
        (
            [100, None, None, None],
            "memory_budget_bytes[0]: 100 bytes (budget 0.25) is below the smallest "
            "achievable submodel's activation arena (1,592 bytes",
        ),
        (
            2000,
            "memory_budget_bytes: 2,000 bytes is below the full model's activation arena "
            "(2,852 bytes",
        ),
    ]:
        cfg = tmp_path / "mem.yaml"
        cfg.write_text(yaml.safe_dump({**data, "memory_budget_bytes": limit}))
        lines: list[str] = []
        with pytest.raises(InfeasibleBudgetError, match=re.escape(needle)):
            run_training(cfg, out_dir=out, verbose=0, log=lines.append, **TINY)
        assert not any("stage 1/7 base training ..." in ln for ln in lines)
        assert not out.exists() and leftovers(out) == []


def test_memory_budget_on_resume_deletes_nothing(trained_run: Path, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    before = sorted(p.name for p in run.iterdir())
    data = yaml.safe_load(DEFAULT_CONFIG.read_text())
    cfg = tmp_path / "mem.yaml"
    cfg.write_text(yaml.safe_dump({**data, "memory_budget_bytes": 100}))
    with pytest.raises(InfeasibleBudgetError, match="memory_budget_bytes: 100 bytes is below"):
        _quiet_train(cfg, run, **TINY)
    assert sorted(p.name for p in run.iterdir()) == before
    check_records(run)


def test_write_errors_are_one_line_naming_the_path(trained_run: Path, tmp_path, monkeypatch):
    """Issue 15, item 2: an OSError while a stage writes (a full disk here)
    is an OutputError naming the file, and the records stay consistent."""
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    real = pipeline.write_json_atomic

    def full_disk(path, obj):
        if Path(path).name == "knapsack.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, obj)

    monkeypatch.setattr(pipeline, "write_json_atomic", full_disk)
    cfg = tmp_path / "budgets.yaml"
    cfg.write_text(yaml.safe_dump({**yaml.safe_load(DEFAULT_CONFIG.read_text()),
                                   "budgets": [0.3, 0.6, 1.0]}))  # fmt: skip
    with pytest.raises(OutputError) as e:
        _quiet_train(cfg, run, **TINY)
    msg = str(e.value)
    assert msg == f"{run / 'knapsack.json'}: No space left on device (while training into {run})"
    records = check_records(run)
    assert list(records) == ["base", "rank", "permute"]


def test_unwritable_out_fails_before_any_work(tmp_path):
    lines: list[str] = []
    (tmp_path / "file").write_text("x")
    for out, needle in [
        (Path("/sys/reds_run"), "cannot write to /sys (Permission denied)"),
        (tmp_path / "file" / "run", "is not a directory"),
    ]:
        with pytest.raises(OutputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
            run_training(DEFAULT_CONFIG, out_dir=out, verbose=0, log=lines.append, **TINY)
    assert lines == []  # not even the data was loaded
