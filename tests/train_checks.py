"""Consistency checks of a `reds train` run directory, shared by the stage
record and fault-injection tests. Written against the file formats, not the
pipeline's own helpers, so a bug there cannot hide itself."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

STAGES = ("base", "rank", "permute", "select", "finetune", "evaluate", "scratch", "report")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def leftovers(run: Path) -> list[str]:
    """Temp files in the run dir and temp folders beside it."""
    inside = [p.name for p in run.iterdir() if p.name.startswith(".")] if run.is_dir() else []
    beside = [p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}.")]
    return sorted(inside + beside)


def check_records(run: Path) -> dict:
    """Every record's files hash as recorded and the records form an unbroken
    chain from the base stage (what may be true at ANY moment, even right
    after a kill). Returns the records."""
    if not run.exists():
        return {}
    doc = json.loads((run / "stages.json").read_text())
    records = doc["stages"]
    assert doc["version"] == 1
    names = list(records)
    assert names == [s for s in STAGES if s in records], names  # in stage order
    expected = [s for s in STAGES if s != "scratch" or "scratch" in records]
    assert names == expected[: len(names)], f"records with a gap: {names}"
    prev = None
    for stage, rec in records.items():
        assert rec["after"] == (None if prev is None else digest(prev)), stage
        assert rec["config_hash"] == digest(rec["config"]), stage
        for name, want in rec["files"].items():
            assert (run / name).is_file(), f"{stage}: {name} recorded but missing"
            if want != "present":
                assert sha256(run / name) == want, f"{stage}: {name} differs from its record"
        prev = rec
    return records


def full_accuracy_matches(run: Path, data) -> None:
    """The full model's accuracy in submodels.json is that of model.keras, and
    the smallest submodel's that of model.keras sliced to its widths."""
    from reds_tf.models import load_plain_model, submodel
    from reds_tf.training import accuracy

    doc = json.loads((run / "submodels.json").read_text())
    model = load_plain_model(run / "model.keras")
    full = accuracy(model, data.x_test, data.y_test)
    assert full == pytest.approx(doc["submodels"][-1]["accuracy"], abs=1e-4)
    s0 = doc["submodels"][0]
    acc0 = accuracy(submodel(model, s0["widths"]), data.x_test, data.y_test)
    assert acc0 == pytest.approx(s0["accuracy"], abs=1e-4)


def check_complete(run: Path, cfg, data) -> None:
    """A finished run: every wanted stage recorded for ``cfg`` (a Config),
    model.keras matches submodels.json, nothing temporary left."""
    from reds_tf.train_records import stage_config

    records = check_records(run)
    wanted = [s for s in STAGES if s != "scratch" or cfg.baseline == "scratch"]
    assert list(records) == wanted
    for stage, rec in records.items():
        assert rec["config"] == stage_config(cfg, stage), stage
    full_accuracy_matches(run, data)
    assert leftovers(run) == []
