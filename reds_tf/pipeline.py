"""``reds train``: every training stage in order, resumable, into ``runs/<name>/``.

Stages and the files each one writes (all written atomically):

======== ==================================== =====================
stage    does                                 writes
======== ==================================== =====================
base     train (or load ``--base``) the model ``config.yaml``, ``base.keras``
rank     first-order Taylor importance        ``importance.npz``
permute  sort units by importance             ``permuted.keras``
select   nested knapsack per budget           ``knapsack.json``
finetune joint fine-tuning (+ distillation)   ``model.keras`` (+ ``bn_stats.npz``)
evaluate accuracy, MACs, params per submodel  ``submodels.json``
scratch  (``--baseline scratch``) twins alone ``scratch.json``
report   table and plot                       ``report.md``, ``accuracy_vs_macs.png``
======== ==================================== =====================

Stage records (``stages.json``): a stage first commits its files, then its
record, written last and atomically: the hash of the resolved config keys
that stage and every earlier one depend on, the digest of the previous
stage's record and the sha256 of every file the stage wrote. On a re-run a
stage counts as done only when its record matches the current config, follows
the current record of the stage before, and its files still hash as recorded;
the first stage that is not done and every later one are redone. Before that
the stale records (that stage's and every later one's) are dropped, then
their files deleted, so an interrupted re-run can never leave new weights
under old records. ``report.md`` is recorded by presence only: ``reds
export`` adds its int8 section to it.

The run directory appears only once the first stage has finished (it is
built under a temp name and renamed), so a run that fails early - bad config,
infeasible budget or memory limit, missing data, an unwritable ``--out`` -
leaves nothing behind. A changed config redoes the first stage that depends
on a changed key (e.g. new ``finetune`` settings keep the base model, ranking
and knapsack); a changed base (dataset, model, train, seed) needs ``--force``.
``run.json`` keeps per-stage wall times.

Fault injection (tests only, :mod:`reds_tf.faults`): ``REDS_FAULT_AT`` set to
``train:<stage>:<where>`` kills the process with SIGKILL at that point, with
``<where>`` one of ``invalidated`` (stale records dropped, their files not yet
deleted), ``begin`` (the stage starts), ``epoch<N>`` (base, finetune: the
checkpoint after epoch N committed), ``tmp`` (an output written under its
temp name, not yet renamed; base, rank, permute, finetune), ``files`` (the
stage's files committed, its record not yet) and ``done`` (record written).

Checkpoints (:mod:`reds_tf.checkpoints`): base training and joint fine-tuning
save their state after every epoch, fine-tuning into
``<run>/checkpoint-finetune/``, base training beside the run directory (which
does not exist yet) into ``.<run>.checkpoint-base/``. A re-run goes on from
the last finished epoch when the checkpoint was made under the current config
(and, for fine-tuning, after the current record of the stage before);
otherwise it is deleted and the stage starts over. A stage's checkpoint is
deleted once its record is written; ``--force`` deletes the base checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

from reds_tf import data as datasets
from reds_tf import distribute, faults, ir, latency
from reds_tf.checkpoints import EpochCheckpoint
from reds_tf.config import (
    Config,
    check_data_options,
    config_to_yaml,
)
from reds_tf.costs import (
    cost_layers,
    cost_layers_from_keras,
    full_widths,
    model_macs,
    model_params,
)
from reds_tf.data.snapshot import content_sha256, snapshot_bytes
from reds_tf.errors import (
    ConfigError,
    InfeasibleBudgetError,
    OutputError,
    RunDirError,
)
from reds_tf.fsutil import atomic_dir, atomic_path, write_json_atomic, write_text_atomic
from reds_tf.importance import fold_tied_scores, taylor_scores
from reds_tf.knapsack import arena_bytes, min_widths, solve_nested
from reds_tf.models import (
    build_model,
    canonical_base,
    load_plain_model,
    read_base_model,
    submodel,
)
from reds_tf.nested import (
    bn_layers,
    bn_stats_arrays,
    build_nested,
    estimate_bn_stats,
    load_bn_stats,
    nested_accuracy,
    to_plain,
    use_per_submodel_stats,
)
from reds_tf.permute import permute_by_importance, sort_permutations
from reds_tf.report import write_report
from reds_tf.rundir import DATA_SNAPSHOT
from reds_tf.train_records import (
    BN_STATS_FILE,
    PRESENCE_ONLY,
    RECORDS_FILE,
    STAGE_FILES,
    STAGE_OUTPUTS,
    STAGES,
    CheckedInputs,
    Log,
    check_training_inputs,
    diff,
    digest,
    file_sha256,
    log_default,
    read_json,
    stage_config,
    write_records,
)
from reds_tf.training import accuracy, augmentation, finetune_joint, fit_classifier, set_seed

_BN_BATCHES = 200  # mini-batches behind each submodel's re-estimated BN statistics
STAGE_TITLES = {
    "base": "base training",
    "rank": "importance (first-order Taylor)",
    "permute": "permutation by importance",
    "select": "knapsack",
    "finetune": "joint fine-tuning",
    "evaluate": "evaluation",
    "scratch": "scratch baseline",
    "report": "report",
}


def _fault(point: str) -> None:
    """Test hook: killed here when ``REDS_FAULT_AT=train:<point>`` (see module doc)."""
    faults.fault_point(f"train:{point}")


@dataclass
class _Ctx:
    cfg: Config
    run: Path
    data: Any
    log: Log
    verbose: int | str
    base_model: Any  # a model file's path, a tf_keras model (Python API) or None
    meta: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    data_full: Any = None  # the whole source set (before train.limit): data.npz's source
    data_sha256: str = ""
    dist: Any = None  # distribute.Distribution: what training runs under

    @property
    def strategy(self) -> tf.distribute.Strategy | None:
        """The strategy to train under (None: one device, the default)."""
        return self.dist.strategy if self.dist is not None and self.dist.distributed else None

    @property
    def base_desc(self) -> str | None:
        """What the base model came from, for run.json and messages."""
        if self.base_model is None or isinstance(self.base_model, str):
            return self.base_model
        return f"<tf_keras model {getattr(self.base_model, 'name', '')}>"


def run_training(
    config_path: str | Path,
    *,
    out_dir: str | Path | None = None,
    epochs: int | None = None,
    finetune_epochs: int | None = None,
    limit: int | None = None,
    seed: int | None = None,
    base_model: str | Path | None = None,
    baseline: str | None = None,
    force: bool = False,
    log: Log | None = None,
    verbose: int | str | None = None,
    threads: int | None = None,
) -> Path:
    """Run all training stages for ``config_path``; returns the run directory.

    ``None`` overrides keep the config's values. ``verbose`` is the Keras
    verbosity (default: progress bars on a terminal, one line per epoch else).
    ``threads`` caps TensorFlow's CPU threads (set once the config is valid).
    """
    checked = check_training_inputs(
        config_path,
        out_dir=out_dir,
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        limit=limit,
        seed=seed,
        base_model=base_model,
        baseline=baseline,
        force=force,
        log=log,
        threads=threads,
    )
    return train_checked(checked, log=log, verbose=verbose)


def train_checked(
    checked: CheckedInputs, *, log: Log | None = None, verbose: int | str | None = None
) -> Path:
    """Run all training stages for inputs :func:`check_training_inputs` accepted
    (``reds train`` checks them before this module, and TensorFlow, is loaded)."""
    log = log or log_default
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    cfg, run, records, base_model = checked.cfg, checked.run, checked.records, checked.base_model
    threads, t_start = checked.threads, checked.t_start
    created = records is None and not run.exists()
    try:
        return _train(
            cfg,
            run,
            records,
            base_model,
            log,
            verbose,
            threads,
            t_start,
            checked.data,
            force=checked.force,
        )
    except (InfeasibleBudgetError, ConfigError):
        # Decided by the config alone (normally caught before training): leave
        # nothing behind that this invocation created.
        if created and run.is_dir():
            shutil.rmtree(run, ignore_errors=True)
        raise
    except OSError as e:
        raise OutputError(_os_message(e, run)) from e


def _train(
    cfg: Config,
    run: Path,
    records: dict[str, dict[str, Any]] | None,
    base_model: Any,
    log: Log,
    verbose: int | str,
    threads: int | None,
    t_start: float,
    arrays: Any = None,
    *,
    force: bool = False,
    dist: distribute.Distribution | None = None,
) -> Path:
    if dist is None:
        if threads is not None:
            # Small models scale poorly across cores: two 1-thread runs side by side
            # finish sooner than the same two runs one after the other on 2 threads.
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        # Before anything else runs in TensorFlow (logical CPUs, multi-worker setup).
        dist = distribute.setup(cfg.train.distribute, cfg.source)
        log(dist.describe())
        if not dist.chief:
            # Same stages on the same data as the chief, written into a private
            # copy of what the chief has: only the chief writes the run directory.
            scratch = distribute.worker_copy(run, [_checkpoint_path(run, "base")])
            try:
                _agree_on_run(dist, run, records)
                args = (records, base_model, log, verbose, None, t_start, arrays)
                _train(cfg, scratch / run.name, *args, force=force, dist=dist)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            log(f"{dist.task} done (only the chief writes the run directory)")
            return run
        _agree_on_run(dist, run, records)
    _remove_leftovers(run)
    # ``data:`` options go to the loader; submodels.json keeps them so export,
    # simulate and monitor reload the same data (or fall back on data.npz).
    full = arrays if arrays is not None else check_data_options(cfg, datasets.load_dataset)
    sha = content_sha256(full)
    base_rec = (records or {}).get("base") or {}
    if base_rec.get("data_sha256") not in (None, sha):
        raise RunDirError(
            f"{run} was trained on other data: {cfg.dataset} ({full.source}) changed since "
            "(its content hash differs); pass --force to start over, or --out to train "
            "into another directory"
        )
    if base_rec.get("input_shape"):
        full = datasets.fit_to_input(full, tuple(base_rec["input_shape"]))
    data = full.limited(cfg.train.limit, seed=cfg.seed)
    log(
        f"data: {cfg.dataset} from {data.source}: {len(data.x_train)} train, "
        f"{len(data.x_test)} test samples, input {data.input_shape}, {data.num_classes} classes"
    )
    ctx = _Ctx(cfg, run, data, log, verbose, base_model, records=dict(records or {}))
    ctx.data_full, ctx.data_sha256, ctx.dist = full, sha, dist
    resume = records is not None
    if force:
        _checkpoint(ctx, "base").remove()
    ctx.meta = read_json(run / "run.json") if resume else {"stages": {}}
    ctx.meta["distribute"] = {"strategy": dist.kind, "replicas": dist.replicas}
    if resume:
        log(f"resuming {run} (use --force to start over)")
    wanted = [s for s in STAGES if s != "scratch" or cfg.baseline == "scratch"]
    # Which stages are done: the first one that is not and everything after it runs.
    first, reason, prev = None, "", None
    for stage in wanted:
        reason = _stale_reason(ctx, stage, prev) if resume else "new run"
        if reason:
            first = stage
            break
        prev = ctx.records[stage]
    if first is not None and STAGES.index(first) <= STAGES.index("select"):
        _check_budgets(ctx, resume)  # before any training or deletion
    if resume and first is not None:
        log(f"redoing from stage '{first}' on: {reason}")
        _invalidate(ctx, first)
    for stage in CHECKPOINTED:
        if first is None or STAGES.index(stage) < STAGES.index(first):
            _checkpoint(ctx, stage).remove()  # done: killed before its checkpoint went
    redo = False
    for i, stage in enumerate(wanted, 1):
        title = STAGE_TITLES[stage]
        redo = redo or stage == first
        if not redo:
            log(f"stage {i}/{len(wanted)} {title}: already done, skipped")
            continue
        log(f"stage {i}/{len(wanted)} {title} ...")
        _fault(f"{stage}:begin")
        t0 = time.perf_counter()
        summary = _RUNNERS[stage](ctx)
        dt = time.perf_counter() - t0
        if stage != "base":  # the base stage records itself inside the new directory
            _fault(f"{stage}:files")
            _commit(ctx, stage, ctx.run)
            _fault(f"{stage}:done")
        if stage in CHECKPOINTED:
            _checkpoint(ctx, stage).remove()
        ctx.meta.setdefault("stages", {})[stage] = round(dt, 2)
        write_json_atomic(run / "run.json", ctx.meta)
        tail = f"; {summary}" if summary else ""
        log(f"stage {i}/{len(wanted)} {title}: done in {dt:.1f} s{tail}")
    # Keep the saved config in step with resume-free keys (e.g. a later --baseline).
    write_text_atomic(run / "config.yaml", config_to_yaml(cfg))
    log(f"finished in {time.perf_counter() - t_start:.1f} s: {run}")
    return run


def _agree_on_run(dist: distribute.Distribution, run: Path, records: Any) -> None:
    """Every worker must resume from the same stage records (the run directory
    on a filesystem they share) or all start anew; also a barrier: the chief
    changes nothing before every worker has copied what it needs."""
    if not distribute.agree(dist, digest(records or {})):
        raise RunDirError(
            f"the workers see different run directories at {run}: put --out on a filesystem "
            "every worker shares (or start all of them on a new --out)"
        )


# ---------------------------------------------------------------- stage records


def _previous(ctx: _Ctx, stage: str) -> dict[str, Any] | None:
    """Record of the stage run before ``stage`` in this configuration."""
    wanted = [s for s in STAGES if s != "scratch" or ctx.cfg.baseline == "scratch"]
    i = wanted.index(stage)
    return ctx.records.get(wanted[i - 1]) if i else None


def _stale_reason(ctx: _Ctx, stage: str, prev: dict[str, Any] | None) -> str:
    """Why ``stage`` is not done ("" when its record still holds)."""
    rec = ctx.records.get(stage)
    if rec is None:
        return f"stage '{stage}' has no record (never finished)"
    conf = stage_config(ctx.cfg, stage)
    if rec.get("config_hash") != digest(conf):
        diffs = diff(rec.get("config"), conf)
        what = "; ".join(m for _k, m in diffs) if diffs else "its config changed"
        return f"config changed since stage '{stage}' ran ({what})"
    if rec.get("after") != (None if prev is None else digest(prev)):
        return f"stage '{stage}' was recorded after a different earlier stage"
    files = rec.get("files")
    if not isinstance(files, dict) or STAGE_FILES[stage] not in files:
        return f"stage '{stage}' has a malformed record"
    for name, want in files.items():
        path = ctx.run / name
        if not path.is_file():
            return f"{name} is missing"
        if want != "present" and file_sha256(path) != want:
            return f"{name} differs from its record"
    return ""


def _commit(ctx: _Ctx, stage: str, root: Path) -> None:
    """Write ``stage``'s record (after its files) into ``root``/stages.json."""
    files = {}
    for name in STAGE_OUTPUTS[stage]:
        path = root / name
        if path.is_file():
            files[name] = "present" if name in PRESENCE_ONLY else file_sha256(path)
    conf = stage_config(ctx.cfg, stage)
    prev = _previous(ctx, stage)
    ctx.records[stage] = {
        "config_hash": digest(conf),
        "after": None if prev is None else digest(prev),
        "files": files,
        "config": conf,
    }
    if stage == "base":
        ctx.records[stage]["base_model"] = ctx.base_desc
        ctx.records[stage]["data_sha256"] = ctx.data_sha256
        ctx.records[stage]["input_shape"] = list(ctx.data.input_shape)
    write_records(root, ctx.records)


def _invalidate(ctx: _Ctx, first: str) -> None:
    """Drop the records of ``first`` and every later stage (atomically), then
    delete their files: the stages run again under the current config."""
    later = STAGES[STAGES.index(first) :]
    ctx.records = {s: r for s, r in ctx.records.items() if s not in later}
    write_records(ctx.run, ctx.records)
    _fault(f"{first}:invalidated")
    for stage in later:
        for name in STAGE_OUTPUTS[stage]:
            (ctx.run / name).unlink(missing_ok=True)
        if stage in CHECKPOINTED:
            ckpt = _checkpoint(ctx, stage)
            # The first stage redone keeps a checkpoint made under this config.
            meta = ckpt.read_meta() if stage == first else None
            if meta is None or meta.get("identity") != ckpt.identity:
                ckpt.remove()
    write_text_atomic(ctx.run / "config.yaml", config_to_yaml(ctx.cfg))
    if (ctx.run / "export").is_dir() and STAGES.index(first) <= STAGES.index("evaluate"):
        ctx.log(
            f"note: {ctx.run / 'export'} holds the previous weights; "
            f"run `reds export {ctx.run}` again once training has finished"
        )


def _leftover_patterns(run: Path) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Temp names of an interrupted write: inside the run dir (fsutil's
    ``.<name>.XXXXXXXX.tmp`` and ``.<stem>.tmp<suffix>``) and beside it (the
    base stage's ``.<run>.XXXXXXXX.tmp`` folder, ``.<run>.old``)."""
    names = {n for outs in STAGE_OUTPUTS.values() for n in outs}
    names |= {"config.yaml", "run.json", RECORDS_FILE}
    alts = []
    for n in sorted(names):
        p = Path(n)
        alts.append(rf"\.{re.escape(n)}\.[a-z0-9_]{{8}}\.tmp")
        alts.append(rf"\.{re.escape(p.stem)}\.tmp{re.escape(p.suffix)}")
    # A checkpoint folder's temp name (atomic_dir) and the old one it replaces.
    temp = r"\.(?:[a-z0-9_]{8}\.tmp|old)"
    ft = re.escape(_checkpoint_path(run, "finetune").name)
    alts.append(rf"\.{ft}{temp}")
    inside = re.compile("^(?:" + "|".join(alts) + ")$")
    base = re.escape(_checkpoint_path(run, "base").name)
    beside = re.compile(rf"^(?:\.{re.escape(run.name)}|\.{base}){temp}$")
    return inside, beside


CHECKPOINTED = ("base", "finetune")  # stages that save a checkpoint after every epoch


def _checkpoint_path(run: Path, stage: str) -> Path:
    """Base training's checkpoint lives beside the run directory (which appears
    only when that stage is done), fine-tuning's inside it."""
    if stage == "base":
        return run.parent / f".{run.name}.checkpoint-base"
    return run / f"checkpoint-{stage}"


def _checkpoint(ctx: _Ctx, stage: str) -> EpochCheckpoint:
    """``stage``'s checkpoint, valid under the current config (and, after the
    base stage, the current record of the stage before)."""
    identity: dict[str, Any] = {
        "stage": stage,
        "config_hash": digest(stage_config(ctx.cfg, stage)),
    }
    if stage == "base":
        identity["data_sha256"] = ctx.data_sha256
    else:
        prev = _previous(ctx, stage)
        identity["after"] = None if prev is None else digest(prev)
    path = _checkpoint_path(ctx.run, stage)
    return EpochCheckpoint(path, identity, log=ctx.log, fault=f"train:{stage}")


def _remove_leftovers(run: Path) -> None:
    """Delete what an interrupted ``reds train`` into ``run`` left behind."""
    inside, beside = _leftover_patterns(run)
    for folder, pattern in ((run, inside), (run.parent, beside)):
        try:
            entries = list(folder.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            continue
        for p in entries:
            if pattern.match(p.name):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)


# ---------------------------------------------------------------- checks


def _os_message(e: OSError, run: Path) -> str:
    path = e.filename if e.filename is not None else run
    return f"{path}: {e.strerror or e} (while training into {run})"


def _base_or_fresh_model(ctx: _Ctx):
    if ctx.base_model is not None:
        if isinstance(ctx.base_model, str):
            model, source = read_base_model(ctx.base_model), f"--base {ctx.base_model}"
        else:
            model, source = ctx.base_model, "model"
        shape = getattr(model, "input_shape", None)
        if isinstance(shape, tuple) and all(isinstance(v, int) for v in shape[1:]):
            # A (28, 28) model on (28, 28, 1) images: same elements, other shape.
            ctx.data = datasets.fit_to_input(ctx.data, shape[1:])
            ctx.data_full = datasets.fit_to_input(ctx.data_full, shape[1:])
        d = ctx.data
        return canonical_base(model, d.input_shape, d.num_classes, source=source)
    d = ctx.data
    set_seed(ctx.cfg.seed)  # the initial weights must not depend on earlier RNG use
    with _scope(ctx):  # trained under the strategy: its variables must be made there
        return build_model(ctx.cfg.model, d.input_shape, d.num_classes)


def _scope(ctx: _Ctx) -> contextlib.AbstractContextManager:
    return ctx.strategy.scope() if ctx.strategy is not None else contextlib.nullcontext()


def _off_strategy(model: keras.Model) -> keras.Model:
    """A one-device copy of a model trained under a strategy: evaluation and
    saving then run as without one (predict under a multi-worker strategy
    would split the test set over the workers)."""
    plain = keras.models.clone_model(model)
    plain.set_weights(model.get_weights())
    return plain


def _check_budgets(ctx: _Ctx, resume: bool) -> None:
    """Fail fast (before training, before a resumed run deletes anything) on
    budgets or a memory limit no submodel can meet: both follow from the
    architecture alone."""
    if resume:
        model = _load_model(ctx, STAGE_FILES["base"])
    else:
        model = _base_or_fresh_model(ctx)
        ctx.cache["initial_model"] = model
    layers = cost_layers_from_keras(model)
    block = ctx.cfg.block
    full = model_macs(layers, full_widths(layers))
    smallest = model_macs(layers, min_widths(layers, block))
    b0 = ctx.cfg.budgets[0]
    if smallest > math.floor(b0 * full):
        frac = smallest / full
        raise InfeasibleBudgetError(
            f"{ctx.cfg.source}: budgets: {b0:g} is below the smallest achievable submodel "
            f"({smallest:,} of {full:,} MACs = {frac:.4f} with every prunable layer at one "
            f"block of {block} units); raise the smallest budget to at least "
            f"{math.ceil(frac * 1e4) / 1e4:.4f} or lower `block`"
        )
    if ctx.cfg.memory_budget_bytes is not None:
        _check_memory(ctx.cfg, ir.from_keras(model), min_widths(layers, block))


def _check_memory(cfg: Config, graph: ir.Graph, smallest: dict[str, int]) -> None:
    """Each submodel's arena bound against what the architecture needs, in the
    exported runtime's exact bytes (:func:`reds_tf.memory.plan`): the full model
    (always the last submodel) against the last bound, the smallest achievable
    submodel (every prunable layer at one block) against every bound."""
    limit = cfg.memory_budget_bytes
    bounds = cfg.memory_bounds()
    one = not isinstance(limit, tuple)
    full = arena_bytes(graph, {})
    low = arena_bytes(graph, smallest)
    src, key = cfg.source, "memory_budget_bytes"
    last = bounds[-1]
    if last is not None and full > last:
        if one:
            raise InfeasibleBudgetError(
                f"{src}: {key}: {last:,} bytes is below the full model's activation arena "
                f"({full:,} bytes; the full model is always the last submodel); raise it to at "
                f"least {full:,}, or give a list with one bound per budget whose last entry is "
                f">= {full:,} (e.g. [{max(last, low):,}, ..., {full:,}] for budgets "
                f"{list(cfg.budgets)}), or use a smaller model"
            )
        raise InfeasibleBudgetError(
            f"{src}: {key}[{len(bounds) - 1}]: {last:,} bytes (the full model, budget 1) is "
            f"below the full model's activation arena ({full:,} bytes); raise it to at least "
            f"{full:,} (or null: no bound), or use a smaller model"
        )
    for k, b in enumerate(bounds):
        if b is not None and low > b:
            where = key if one else f"{key}[{k}]"
            raise InfeasibleBudgetError(
                f"{src}: {where}: {b:,} bytes (budget {cfg.budgets[k]:g}) is below the smallest "
                f"achievable submodel's activation arena ({low:,} bytes with every prunable "
                f"layer at one block of {cfg.block} units); raise it to at least {low:,}, or "
                "lower `block` or use a smaller model"
            )


# ---------------------------------------------------------------- helpers


def _load_model(ctx: _Ctx, fname: str):
    path = ctx.run / fname
    try:
        return load_plain_model(path)
    except Exception as e:  # corrupt/foreign file: tell the user how to recover
        raise RunDirError(f"cannot load {path} ({e}); pass --force to start over") from e


def _save_model(model, path: Path, stage: str) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)
        _fault(f"{stage}:tmp")


def _scores(ctx: _Ctx) -> dict[str, np.ndarray]:
    with np.load(ctx.run / STAGE_FILES["rank"]) as z:
        return {k: z[k] for k in z.files}


def _knapsack(ctx: _Ctx) -> dict[str, Any]:
    return read_json(ctx.run / STAGE_FILES["select"])


# ---------------------------------------------------------------- stages


def _stage_base(ctx: _Ctx) -> str:
    cfg, d = ctx.cfg, ctx.data
    model = ctx.cache.pop("initial_model", None) or _base_or_fresh_model(ctx)
    if ctx.base_model is None:
        t = cfg.train
        fit_classifier(
            model,
            d.x_train,
            d.y_train,
            epochs=t.epochs,
            batch_size=t.batch_size,
            lr=t.learning_rate,
            schedule=t.schedule,
            seed=cfg.seed,
            verbose=ctx.verbose,
            augment=t.augment,
            optimizer=t.optimizer,
            weight_decay=t.weight_decay,
            checkpoint=_checkpoint(ctx, "base"),
            strategy=ctx.strategy,
        )
        if ctx.strategy is not None:
            model = _off_strategy(model)
    acc = accuracy(model, d.x_test, d.y_test)
    ctx.meta["base_model"] = ctx.base_desc
    ctx.meta["base_accuracy"] = acc
    # The run directory comes into existence here, whole, with its first record.
    with atomic_dir(ctx.run, replace=True) as tmp:
        (tmp / "config.yaml").write_text(config_to_yaml(cfg), encoding="utf-8")
        model.save(tmp / STAGE_FILES["base"])
        (tmp / DATA_SNAPSHOT).write_bytes(snapshot_bytes(ctx.data_full, ctx.data_sha256))
        (tmp / "run.json").write_text(json.dumps(ctx.meta, indent=2) + "\n", encoding="utf-8")
        _fault("base:files")
        ctx.records = {}
        _commit(ctx, "base", tmp)
        _fault("base:tmp")
    _fault("base:done")
    trained = f"{cfg.train.epochs} epoch(s)"
    src = f"loaded {ctx.base_desc}" if ctx.base_model is not None else trained
    return f"{src}, test accuracy {acc:.4f}"


def _stage_rank(ctx: _Ctx) -> str:
    model = _load_model(ctx, STAGE_FILES["base"])
    layers = cost_layers_from_keras(model)
    names = [c.name for c in layers if c.prunable or c.kind == "depthwise"]
    imp = ctx.cfg.importance
    set_seed(ctx.cfg.seed)
    raw = taylor_scores(
        model,
        ctx.data.x_train,
        ctx.data.y_train,
        names,
        batches=imp.batches,
        batch_size=imp.batch_size,
        seed=ctx.cfg.seed,
        strategy=ctx.strategy,  # gradients summed over the replicas
    )
    # A depthwise channel lives and dies with the producer unit feeding it.
    scores = fold_tied_scores(raw, layers)
    names = list(scores)
    with atomic_path(ctx.run / STAGE_FILES["rank"]) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **scores)
        _fault("rank:tmp")
    n = min(imp.batches, math.ceil(len(ctx.data.x_train) / imp.batch_size))
    return f"{len(names)} layers scored over {n} mini-batches"


def _stage_permute(ctx: _Ctx) -> str:
    model = _load_model(ctx, STAGE_FILES["base"])
    permuted, _, _ = permute_by_importance(model, _scores(ctx))
    # Guard the "exactly function-preserving" claim on real data every run.
    x = ctx.data.x_test[:256]
    diff = float(np.max(np.abs(model.predict(x, verbose=0) - permuted.predict(x, verbose=0))))
    if diff > 1e-4:
        raise RuntimeError(f"permutation changed the model's outputs (max abs diff {diff:g})")
    _save_model(permuted, ctx.run / STAGE_FILES["permute"], "permute")
    return f"max abs output change {diff:.2e}"


def _stage_select(ctx: _Ctx) -> str:
    model = _load_model(ctx, STAGE_FILES["permute"])
    graph = ir.from_keras(model)
    raw = _scores(ctx)
    perms = sort_permutations(raw)
    scores = {n: raw[n][p] for n, p in perms.items()}
    cost = None
    if ctx.cfg.knapsack.cost == "latency":
        # Budgets are fractions of the full model's estimated Cortex-M4 cycles.
        model_cycles = latency.model_for_graph(graph, ctx.cfg.block, log=ctx.log)
        cost = latency.LatencyCost(model_cycles)
    memory_bytes = ctx.cfg.memory_bounds() if ctx.cfg.memory_budget_bytes is not None else None
    res = solve_nested(
        graph,
        scores,
        list(ctx.cfg.budgets),
        ctx.cfg.block,
        time_limit=ctx.cfg.knapsack.time_limit,
        method=ctx.cfg.knapsack.method,
        log=ctx.log,
        memory_bytes=memory_bytes,  # each submodel's planned arena (reds_tf/memory.py)
        cost=cost,
        cost_margin=ctx.cfg.knapsack.latency_margin,
    )
    out = {
        "budgets": res.budgets,
        "widths": res.widths,
        "macs": res.macs,
        "macs_fraction": res.macs_fraction,
        "value": res.value,
        "status": res.status,
        "seconds": res.seconds,
        "total_seconds": res.total_seconds,
        "cost": ctx.cfg.knapsack.cost,
        "cost_fraction": res.cost_fraction,
        # Each submodel's activation arena as the export plans it (bytes).
        "arena_bytes": res.arena_bytes,
    }
    if memory_bytes is not None:
        out["memory_budget_bytes"] = res.memory_bytes
    if cost is not None:
        out["predicted_cycles"] = res.cost
    write_json_atomic(ctx.run / STAGE_FILES["select"], out)
    on = "" if cost is None else f" on estimated cycles (full model {res.full_cost:,})"
    return f"{len(res.budgets)} submodels{on}, solver total {res.total_seconds:.2f} s"


def _param_fractions(layers, widths: list[dict[str, int]]) -> list[float]:
    full = model_params(layers, full_widths(layers))
    return [model_params(layers, w) / full for w in widths]


def _stage_finetune(ctx: _Ctx) -> str:
    widths = _knapsack(ctx)["widths"]
    f = ctx.cfg.finetune
    private = f.bn_affine == "per_submodel"
    with _scope(ctx):  # trained under the strategy: its variables must be made there
        full = _load_model(ctx, STAGE_FILES["permute"])
        nested = build_nested(full, widths, private_bn_affine=private)
        # A second copy: the nested model may share variables with ``full``.
        teacher = _load_model(ctx, STAGE_FILES["permute"]) if f.teacher == "base" else None
    layers = cost_layers_from_keras(full)
    finetune_joint(
        nested,
        ctx.data.x_train,
        ctx.data.y_train,
        _param_fractions(layers, widths),
        epochs=f.epochs,
        batch_size=f.batch_size,
        lr=f.learning_rate,
        schedule=f.schedule,
        distill=f.distill,
        temperature=f.temperature,
        alpha=f.alpha,
        seed=ctx.cfg.seed,
        verbose=ctx.verbose,
        augment=ctx.cfg.train.augment,
        optimizer=f.optimizer,
        weight_decay=f.weight_decay,
        teacher=teacher,
        checkpoint=_checkpoint(ctx, "finetune"),
        strategy=ctx.strategy,
    )
    if ctx.strategy is not None:
        # BN statistics, evaluation and saving on a one-device copy (see _off_strategy).
        trained = nested.get_weights()
        full = _load_model(ctx, STAGE_FILES["permute"])
        nested = build_nested(full, widths, private_bn_affine=private)
        nested.set_weights(trained)
    extra = ""
    if bn_layers(nested):
        # Per-submodel BN statistics, always estimated so that evaluation can
        # compare them with the shared ones (both files are in the stage's record).
        set_seed(ctx.cfg.seed)
        aug = ctx.cfg.train.augment
        nb = estimate_bn_stats(
            nested,
            ctx.data.x_train,
            batches=_BN_BATCHES,
            batch_size=f.batch_size,
            seed=ctx.cfg.seed,
            # Same input distribution as training (see estimate_bn_stats).
            transform=augmentation(aug.flip, aug.shift) if aug.active else None,
        )
        with atomic_path(ctx.run / BN_STATS_FILE) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **bn_stats_arrays(nested))
        extra = f"; per-submodel BN statistics from {nb} batches"
    _save_model(to_plain(nested, full), ctx.run / STAGE_FILES["finetune"], "finetune")
    distill = "off" if not f.distill else "from the base model" if teacher else "on"
    return f"{f.epochs} epoch(s), distillation {distill}{extra}"


def _stage_evaluate(ctx: _Ctx) -> str:
    cfg, d = ctx.cfg, ctx.data
    model = _load_model(ctx, STAGE_FILES["finetune"])
    ks = _knapsack(ctx)
    widths = ks["widths"]
    graph = ir.from_keras(model)
    layers = cost_layers(graph)
    nested = build_nested(model, widths)
    acc_shared = nested_accuracy(nested, d.x_test, d.y_test)
    acc_sub = None
    if bn_layers(nested):
        with np.load(ctx.run / BN_STATS_FILE) as z:
            load_bn_stats(nested, {k: z[k] for k in z.files})
        use_per_submodel_stats(nested, True)
        acc_sub = nested_accuracy(nested, d.x_test, d.y_test)
    mode = cfg.finetune.bn_stats if acc_sub is not None else "shared"
    acc = acc_sub if mode == "per_submodel" else acc_shared
    before = nested_accuracy(
        build_nested(_load_model(ctx, STAGE_FILES["permute"]), widths), d.x_test, d.y_test
    )
    subs = []
    for k in range(len(widths)):
        extra = {
            "accuracy_before_finetune": before[k],
            "knapsack_status": ks["status"][k],
            "knapsack_seconds": ks["seconds"][k],
        }
        if acc_sub is not None:
            extra.update(accuracy_shared_bn=acc_shared[k], accuracy_per_submodel_bn=acc_sub[k])
        if "predicted_cycles" in ks:
            extra["predicted_cycles"] = int(ks["predicted_cycles"][k])
        if "arena_bytes" in ks:  # knapsack.json of runs before the planner lack it
            extra["arena_bytes"] = int(ks["arena_bytes"][k])
        if (ks.get("memory_budget_bytes") or [None] * (k + 1))[k] is not None:
            extra["memory_budget_bytes"] = int(ks["memory_budget_bytes"][k])
        subs.append(
            ir.Submodel(
                widths={c.name: int(widths[k][c.name]) for c in layers},
                budget=ks["budgets"][k],
                macs=int(ks["macs"][k]),
                macs_fraction=float(ks["macs_fraction"][k]),
                params=int(model_params(layers, widths[k])),
                accuracy=acc[k],
                extra=extra,
            )
        )
    graph = dataclasses.replace(
        graph,
        name=cfg.name,
        dataset=cfg.dataset,
        data_options=dict(cfg.data),
        input_shape=tuple(d.input_shape),
        num_classes=int(d.num_classes),
        block=cfg.block,
        bn_stats=mode,
        submodels=subs,
    )
    write_json_atomic(ctx.run / STAGE_FILES["evaluate"], graph.to_doc())
    msg = "test accuracy " + ", ".join(
        f"{b:g}: {a:.4f}" for b, a in zip(ks["budgets"], acc_shared, strict=True)
    )
    if acc_sub is not None:
        msg += " (shared BN); per-submodel BN " + ", ".join(f"{a:.4f}" for a in acc_sub)
    return msg


def _stage_scratch(ctx: _Ctx) -> str:
    cfg, d = ctx.cfg, ctx.data
    full = _load_model(ctx, STAGE_FILES["finetune"])
    ks = _knapsack(ctx)
    # Same total epoch budget as the REDS submodel saw (base + joint fine-tuning).
    epochs = cfg.train.epochs + cfg.finetune.epochs
    out = {"epochs": epochs, "accuracy": [], "seconds": []}
    for k, w in enumerate(ks["widths"]):
        shown = {n: v for n, v in w.items() if n != "logits"}
        ctx.log(f"scratch twin {k} (budget {ks['budgets'][k]:g}): widths {shown}")
        t0 = time.perf_counter()
        arch = submodel(full, w).get_config()
        set_seed(cfg.seed)  # same initial RNG state as the base model, also after a resume
        model = keras.Model.from_config(arch)  # same architecture, fresh weights
        fit_classifier(
            model,
            d.x_train,
            d.y_train,
            epochs=epochs,
            batch_size=cfg.train.batch_size,
            lr=cfg.train.learning_rate,
            schedule=cfg.train.schedule,
            seed=cfg.seed,
            verbose=ctx.verbose,
            augment=cfg.train.augment,
            optimizer=cfg.train.optimizer,
            weight_decay=cfg.train.weight_decay,
        )
        out["accuracy"].append(accuracy(model, d.x_test, d.y_test))
        out["seconds"].append(round(time.perf_counter() - t0, 2))
    write_json_atomic(ctx.run / STAGE_FILES["scratch"], out)
    return "scratch accuracy " + ", ".join(f"{a:.4f}" for a in out["accuracy"])


def _stage_report(ctx: _Ctx) -> str:
    write_report(ctx.run, include_scratch=ctx.cfg.baseline == "scratch")
    return "report.md, accuracy_vs_macs.png"


_RUNNERS: dict[str, Callable[[_Ctx], str]] = {
    "base": _stage_base,
    "rank": _stage_rank,
    "permute": _stage_permute,
    "select": _stage_select,
    "finetune": _stage_finetune,
    "evaluate": _stage_evaluate,
    "scratch": _stage_scratch,
    "report": _stage_report,
}
