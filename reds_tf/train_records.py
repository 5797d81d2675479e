"""``reds train``'s stage table, stage records and the checks made before
TensorFlow loads (:func:`check_training_inputs`): TensorFlow-free, so that
``reds train`` reports a bad config or run directory in well under a second.
:mod:`reds_tf.pipeline` runs the stages.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from reds_tf import rundir
from reds_tf.config import Config, config_to_dict, load_config, with_overrides
from reds_tf.data import ARRAYS
from reds_tf.errors import ConfigError, OutputError, RunDirError
from reds_tf.fsutil import write_json_atomic

Log = Callable[[str], None]

STAGES = ("base", "rank", "permute", "select", "finetune", "evaluate", "scratch", "report")
# The file whose presence a stage is known by (the main output).
STAGE_FILES = {
    "base": rundir.BASE_MODEL,
    "rank": rundir.IMPORTANCE,
    "permute": rundir.PERMUTED_MODEL,
    "select": rundir.KNAPSACK,
    "finetune": rundir.MODEL,
    "evaluate": rundir.SUBMODELS,
    "scratch": rundir.SCRATCH,
    "report": rundir.REPORT,
}
BN_STATS_FILE = rundir.BN_STATS
# Every file a stage may write: its record hashes those that exist afterwards,
# and redoing the stage deletes them first.
STAGE_OUTPUTS = {
    **{s: (f,) for s, f in STAGE_FILES.items()},
    "base": (rundir.BASE_MODEL, rundir.DATA_SNAPSHOT),
    "finetune": (rundir.MODEL, BN_STATS_FILE),
    "report": (rundir.REPORT, rundir.PLOT),
}
# ``reds export`` adds its int8 section to report.md: recorded by presence only.
PRESENCE_ONLY = frozenset({rundir.REPORT})
RECORDS_FILE = "stages.json"
_RECORDS_VERSION = 1


# Top-level config key -> first stage whose result depends on it. A stage's
# record hashes every key of its own and earlier stages; None: no stage
# depends on it (``baseline`` only adds or drops the scratch stage).
KEY_STAGE: dict[str, str | None] = {
    "dataset": "base",
    "seed": "base",
    "model": "base",
    "train": "base",
    "importance": "rank",
    "budgets": "select",
    "block": "select",
    "knapsack": "select",
    "finetune": "finetune",
    "name": "evaluate",
    "baseline": None,
    "memory_budget_bytes": "select",
    "data": "base",
    # How training is spread over devices: the same result, so nothing is redone.
    "train.distribute": None,
    # Inputs read from disk or held in memory: the same values.
    "data.stream": None,
    # Both BN variants are computed in "finetune"; the key only picks one.
    "finetune.bn_stats": "evaluate",
}


def key_stage(key: str) -> str | None:
    """First stage depending on a (dotted) config key path."""
    if key in KEY_STAGE:
        return KEY_STAGE[key]
    return KEY_STAGE.get(key.split(".")[0], "base")


def log_default(msg: str) -> None:
    print(f"[reds] {msg}", flush=True)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def stage_config(cfg: Config, stage: str) -> dict[str, Any]:
    """The part of the resolved config that ``stage`` and all earlier stages
    depend on (what its record hashes)."""
    upto = STAGES.index(stage)

    def walk(node: dict[str, Any], path: str) -> dict[str, Any]:
        out = {}
        for k, v in node.items():
            p = f"{path}.{k}" if path else str(k)
            if isinstance(v, dict) and any(key.startswith(p + ".") for key in KEY_STAGE):
                if sub := walk(v, p):
                    out[k] = sub
                continue
            s = key_stage(p)
            if s is not None and STAGES.index(s) <= upto:
                out[k] = v
        return out

    return walk(config_to_dict(cfg), "")


def write_records(root: Path, records: dict[str, dict[str, Any]]) -> None:
    ordered = {s: records[s] for s in STAGES if s in records}
    write_json_atomic(root / RECORDS_FILE, {"version": _RECORDS_VERSION, "stages": ordered})


def read_records(run: Path) -> dict[str, dict[str, Any]] | None:
    """The stage records of ``run`` (None: no stages.json, an older run dir)."""
    path = run / RECORDS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path} is unreadable ({e}); pass --force to start over") from e
    stages = doc.get("stages") if isinstance(doc, dict) else None
    if (
        doc.get("version") != _RECORDS_VERSION
        or not isinstance(stages, dict)
        or any(k not in STAGES or not isinstance(v, dict) for k, v in stages.items())
    ):
        raise RunDirError(f"{path} is not a reds stage record; pass --force to start over")
    return stages


def _describe_base(base_model: Any) -> str:
    return f"--base {base_model}" if isinstance(base_model, str) else "the given model"


def check_run_dir(
    run: Path, cfg: Config, force: bool, base_model: Any, log: Log
) -> dict[str, dict[str, Any]] | None:
    """The stage records of an earlier run in ``run`` to resume (None: a new
    run). Refuses a foreign directory and a changed base without --force."""
    if not run.exists():
        return None
    if not run.is_dir():
        raise RunDirError(f"{run} exists and is not a directory; choose another --out")
    if force:
        return None  # replaced atomically once the first stage has finished
    cfg_file = run / "config.yaml"
    if not cfg_file.exists() or not (run / STAGE_FILES["base"]).exists():
        if any(run.iterdir()):
            raise RunDirError(
                f"{run} exists but is not a reds run directory (no config.yaml/base.keras); "
                "choose another --out, or pass --force to replace it"
            )
        return None
    if base_model is not None:
        raise RunDirError(
            f"{run} already has a base model; pass --force to start over from "
            f"{_describe_base(base_model)}"
        )
    records = read_records(run)
    base_now = stage_config(cfg, "base")
    if records is None:
        # A run dir from before stage records: its base.keras and config.yaml
        # were always written together (a changed base needed --force), so the
        # base model is kept when config.yaml's base keys match; the rest is redone.
        try:
            old = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise RunDirError(f"{cfg_file} is unreadable ({e}); pass --force to start over") from e
        old_base = diff(old if isinstance(old, dict) else {}, config_to_dict(cfg))
        changed = [m for k, m in old_base if key_stage(k) == "base"]
        if changed:
            raise RunDirError(
                f"{run} was trained with a different base config ({'; '.join(changed)}); "
                "pass --force to start over, or --out to train into another directory"
            )
        meta = read_json(run / "run.json")
        log(f"{run} has no stage records (older reds_tf): keeping base.keras, redoing the rest")
        records = {
            "base": {
                "config_hash": digest(base_now),
                "after": None,
                "files": {"base.keras": file_sha256(run / STAGE_FILES["base"])},
                "config": base_now,
                "base_model": meta.get("base_model"),
            }
        }
        return records  # written with the first record of this run
    rec = records.get("base")
    if rec is None:
        raise RunDirError(f"{run} has no record of its base model; pass --force to start over")
    if rec.get("config_hash") != digest(base_now):
        changed = "; ".join(m for _k, m in diff(rec.get("config"), base_now)) or "changed"
        raise RunDirError(
            f"{run} was trained with a different base config ({changed}); pass --force to "
            "start over, or --out to train into another directory"
        )
    files = rec.get("files")
    base_file = run / STAGE_FILES["base"]
    if not isinstance(files, dict) or files.get(base_file.name) != file_sha256(base_file):
        raise RunDirError(
            f"{base_file} differs from its record in {RECORDS_FILE} (modified or corrupt); "
            "pass --force to start over"
        )
    return records


def check_writable(run: Path, force: bool) -> None:
    """Fail before any work when the run directory cannot be written: probe
    with a temp file where the first write goes (the run dir when it exists,
    else the nearest existing folder above it, where it will be created)."""
    target = run if run.exists() and not force else run.parent
    while not target.exists() and target != target.parent:
        target = target.parent
    if not target.is_dir():
        raise OutputError(f"cannot create {run}: {target} is not a directory; choose another --out")
    try:
        fd, probe = tempfile.mkstemp(prefix=".reds-write-check.", dir=target)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(
            f"cannot write to {target} ({e.strerror or e}); choose another --out"
        ) from None


def diff(old: Any, new: Any, path: str = "") -> list[tuple[str, str]]:
    """``(key path, "key was X, now Y")`` for every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += diff(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if old == new else [(path, f"{path} was {old!r}, now {new!r}")]


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"stages": {}}
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path} is unreadable ({e}); pass --force to start over") from e


@dataclass(frozen=True)
class CheckedInputs:
    """What :func:`check_training_inputs` accepted: the run to train."""

    cfg: Config
    run: Path
    records: dict[str, dict[str, Any]] | None  # None: a new run
    # A model file's path, or (Python API) a tf_keras model object.
    base_model: Any
    threads: int | None
    t_start: float
    # Python API: the data set given as arrays (``cfg.dataset`` is then "arrays").
    data: Any = None
    force: bool = False  # --force: start over (also from no checkpoint)


def check_training_inputs(
    config_path: str | Path | Config,
    *,
    out_dir: str | Path | None = None,
    epochs: int | None = None,
    finetune_epochs: int | None = None,
    limit: int | None = None,
    seed: int | None = None,
    base_model: Any = None,
    baseline: str | None = None,
    force: bool = False,
    log: Log | None = None,
    threads: int | None = None,
    data: Any = None,
) -> CheckedInputs:
    """Everything of ``reds train`` that can fail because of user input, checked
    before TensorFlow is loaded, any training and before the run directory
    exists (arguments as :func:`reds_tf.pipeline.run_training`; ``config_path``
    may also be a parsed :class:`Config`)."""
    t_start = time.perf_counter()
    cfg = with_overrides(
        config_path if isinstance(config_path, Config) else load_config(config_path),
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        limit=limit,
        seed=seed,
        baseline=baseline,
    )
    if threads is not None and not (isinstance(threads, int) and 1 <= threads <= 1024):
        raise ConfigError(f"--threads must be an integer from 1 to 1024, got {threads!r}")
    run = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name
    if isinstance(base_model, (str, os.PathLike)):
        base_model = str(base_model)
    records = check_run_dir(run, cfg, force, base_model, log or log_default)
    check_writable(run, force)
    if data is None and cfg.dataset == ARRAYS:
        raise ConfigError(
            f"{cfg.source}: dataset: '{ARRAYS}' means arrays given to reds_tf.train(data=...); "
            "from the command line save them with numpy.savez and use `dataset: npz`"
        )
    if data is not None and cfg.dataset != ARRAYS:
        raise ConfigError(
            f"{cfg.source}: dataset: {cfg.dataset!r} and data=(arrays) both given; "
            f"leave `dataset` out (or set it to '{ARRAYS}') to train on the arrays"
        )
    return CheckedInputs(cfg, run, records, base_model, threads, t_start, data, force)
