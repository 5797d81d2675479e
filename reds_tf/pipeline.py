"""``reds train``: every training stage in order, resumable, into ``runs/<name>/``.

Stages and the file that marks each one finished (all written atomically):

======== ==================================== =====================
stage    does                                 writes
======== ==================================== =====================
base     train (or load ``--base``) the model ``config.yaml``, ``base.keras``
rank     first-order Taylor importance        ``importance.npz``
permute  sort units by importance             ``permuted.keras``
select   nested knapsack per MAC budget       ``knapsack.json``
finetune joint fine-tuning (+ distillation)   ``model.keras``
evaluate accuracy, MACs, params per submodel  ``submodels.json``
scratch  (``--baseline scratch``) twins alone ``scratch.json``
report   table and plot                       ``report.md``, ``accuracy_vs_macs.png``
======== ==================================== =====================

The run directory appears only once the first stage has finished (it is
built under a temp name and renamed), so a run that fails early - bad config,
infeasible budget, missing data - leaves nothing behind. Re-running resumes
after the last finished stage; once a stage runs, every later stage runs too.
If the config changed since, the first stage that depends on a changed key is
redone (e.g. new ``finetune`` settings keep the base model, ranking and
knapsack); a changed base (dataset, model, train, seed) needs ``--force``.
``run.json`` keeps per-stage wall times.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from reds_tf.config import (
    Config,
    check_data_options,
    config_to_dict,
    config_to_yaml,
    load_config,
    with_overrides,
)
from reds_tf.errors import InfeasibleBudgetError, RunDirError
from reds_tf.fsutil import atomic_dir, atomic_path, write_json_atomic, write_text_atomic

Log = Callable[[str], None]

STAGES = ("base", "rank", "permute", "select", "finetune", "evaluate", "scratch", "report")
STAGE_FILES = {
    "base": "base.keras",
    "rank": "importance.npz",
    "permute": "permuted.keras",
    "select": "knapsack.json",
    "finetune": "model.keras",
    "evaluate": "submodels.json",
    "scratch": "scratch.json",
    "report": "report.md",
}
BN_STATS_FILE = "bn_stats.npz"
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
# Top-level config key -> first stage whose result depends on it. On resume a
# changed key re-runs that stage and everything after it; None: no stage
# depends on it (``baseline`` only adds or drops the scratch stage).
_KEY_STAGE: dict[str, str | None] = {
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
    # Both BN variants are computed in "finetune"; the key only picks one.
    "finetune.bn_stats": "evaluate",
}


def _key_stage(key: str) -> str | None:
    """First stage depending on a (dotted) config key path."""
    if key in _KEY_STAGE:
        return _KEY_STAGE[key]
    return _KEY_STAGE.get(key.split(".")[0], "base")


def _log_default(msg: str) -> None:
    print(f"[reds] {msg}", flush=True)


@dataclass
class _Ctx:
    cfg: Config
    run: Path
    data: Any
    log: Log
    verbose: int | str
    base_model: str | None
    meta: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)


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
) -> Path:
    """Run all training stages for ``config_path``; returns the run directory.

    ``None`` overrides keep the config's values. ``verbose`` is the Keras
    verbosity (default: progress bars on a terminal, one line per epoch else).
    """
    log = log or _log_default
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    t_start = time.perf_counter()
    cfg = with_overrides(
        load_config(config_path),
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        limit=limit,
        seed=seed,
        baseline=baseline,
    )
    run = Path(out_dir) if out_dir is not None else Path("runs") / cfg.name
    if base_model is not None:
        base_model = str(base_model)

    resume, redo_from = _check_run_dir(run, cfg, force, base_model)

    # Everything that can fail because of user input is checked here, before
    # any training and before the run directory exists.
    from reds_tf.data import load_dataset

    # ``data:`` options go to the loader; submodels.json keeps them so export,
    # simulate and monitor reload the same data.
    data = check_data_options(cfg, load_dataset).limited(cfg.train.limit, seed=cfg.seed)
    log(
        f"data: {cfg.dataset} from {data.source}: {len(data.x_train)} train, "
        f"{len(data.x_test)} test samples, input {data.input_shape}, {data.num_classes} classes"
    )
    ctx = _Ctx(cfg, run, data, log, verbose, base_model)
    if not resume:
        _check_budgets(ctx)

    ctx.meta = _read_json(run / "run.json") if resume else {"stages": {}}
    if resume:
        log(f"resuming {run} (use --force to start over)")
    if redo_from is not None:
        log(f"config changed since the last run: redoing from stage '{redo_from}' on")
    wanted = [s for s in STAGES if s != "scratch" or cfg.baseline == "scratch"]
    redo = False
    for i, stage in enumerate(wanted, 1):
        done = (run / STAGE_FILES[stage]).exists()
        title = STAGE_TITLES[stage]
        redo = redo or stage == redo_from
        if done and not redo:
            log(f"stage {i}/{len(wanted)} {title}: already done, skipped")
            continue
        redo = True
        log(f"stage {i}/{len(wanted)} {title} ...")
        t0 = time.perf_counter()
        summary = _RUNNERS[stage](ctx)
        dt = time.perf_counter() - t0
        ctx.meta.setdefault("stages", {})[stage] = round(dt, 2)
        write_json_atomic(run / "run.json", ctx.meta)
        tail = f"; {summary}" if summary else ""
        log(f"stage {i}/{len(wanted)} {title}: done in {dt:.1f} s{tail}")
    # Keep the saved config in step with resume-free keys (e.g. a later --baseline).
    write_text_atomic(run / "config.yaml", config_to_yaml(cfg))
    log(f"finished in {time.perf_counter() - t_start:.1f} s: {run}")
    return run


# ---------------------------------------------------------------- checks


def _check_run_dir(
    run: Path, cfg: Config, force: bool, base_model: str | None
) -> tuple[bool, str | None]:
    """Whether ``run`` holds an earlier run to resume, and the first stage to
    redo because the config changed since (None: just continue)."""
    fresh = (False, None)
    if not run.exists():
        return fresh
    if not run.is_dir():
        raise RunDirError(f"{run} exists and is not a directory; choose another --out")
    if force:
        return fresh  # replaced atomically once the first stage has finished
    cfg_file = run / "config.yaml"
    if not cfg_file.exists() or not (run / STAGE_FILES["base"]).exists():
        if any(run.iterdir()):
            raise RunDirError(
                f"{run} exists but is not a reds run directory (no config.yaml/base.keras); "
                "choose another --out, or pass --force to replace it"
            )
        return fresh
    try:
        old = yaml.safe_load(cfg_file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise RunDirError(f"{cfg_file} is unreadable ({e}); pass --force to start over") from e
    if base_model is not None:
        raise RunDirError(
            f"{run} already has a base model; pass --force to start over from --base {base_model}"
        )
    diffs = _diff(old if isinstance(old, dict) else {}, config_to_dict(cfg))
    first: str | None = None
    for key, _msg in diffs:
        stage = _key_stage(key)
        if stage is not None and (first is None or STAGES.index(stage) < STAGES.index(first)):
            first = stage
    if first == "base":
        changed = "; ".join(m for k, m in diffs if _key_stage(k) == "base")
        raise RunDirError(
            f"{run} was trained with a different base config ({changed}); pass --force to "
            "start over, or --out to train into another directory"
        )
    return True, first


def _diff(old: Any, new: Any, path: str = "") -> list[tuple[str, str]]:
    """``(key path, "key was X, now Y")`` for every leaf that differs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += _diff(old.get(k), new.get(k), f"{path}.{k}" if path else str(k))
        return out
    return [] if old == new else [(path, f"{path} was {old!r}, now {new!r}")]


def _base_or_fresh_model(ctx: _Ctx):
    from reds_tf.models import build_model, load_base_model
    from reds_tf.train import set_seed

    d = ctx.data
    if ctx.base_model is not None:
        return load_base_model(ctx.base_model, d.input_shape, d.num_classes)
    set_seed(ctx.cfg.seed)  # the initial weights must not depend on earlier RNG use
    return build_model(ctx.cfg.model, d.input_shape, d.num_classes)


def _check_budgets(ctx: _Ctx) -> None:
    """Fail fast (before training) on budgets no submodel can meet."""
    from reds_tf.costs import cost_layers_from_keras, full_widths, model_macs
    from reds_tf.knapsack import min_widths

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


# ---------------------------------------------------------------- helpers


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"stages": {}}
    except (OSError, json.JSONDecodeError) as e:
        raise RunDirError(f"{path} is unreadable ({e}); pass --force to start over") from e


def _load_model(ctx: _Ctx, fname: str):
    from reds_tf.models import load_plain_model

    path = ctx.run / fname
    try:
        return load_plain_model(path)
    except Exception as e:  # corrupt/foreign file: tell the user how to recover
        raise RunDirError(f"cannot load {path} ({e}); pass --force to start over") from e


def _save_model(model, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


def _scores(ctx: _Ctx) -> dict[str, np.ndarray]:
    with np.load(ctx.run / STAGE_FILES["rank"]) as z:
        return {k: z[k] for k in z.files}


def _knapsack(ctx: _Ctx) -> dict[str, Any]:
    return _read_json(ctx.run / STAGE_FILES["select"])


# ---------------------------------------------------------------- stages


def _stage_base(ctx: _Ctx) -> str:
    from reds_tf.train import accuracy, fit_classifier

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
        )
    acc = accuracy(model, d.x_test, d.y_test)
    ctx.meta["base_model"] = ctx.base_model
    ctx.meta["base_accuracy"] = acc
    # The run directory comes into existence here, whole.
    with atomic_dir(ctx.run, replace=True) as tmp:
        (tmp / "config.yaml").write_text(config_to_yaml(cfg), encoding="utf-8")
        model.save(tmp / STAGE_FILES["base"])
        (tmp / "run.json").write_text(json.dumps(ctx.meta, indent=2) + "\n", encoding="utf-8")
    src = f"loaded {ctx.base_model}" if ctx.base_model else f"{cfg.train.epochs} epoch(s)"
    return f"{src}, test accuracy {acc:.4f}"


def _stage_rank(ctx: _Ctx) -> str:
    from reds_tf.costs import cost_layers_from_keras
    from reds_tf.importance import fold_tied_scores, taylor_scores
    from reds_tf.train import set_seed

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
    )
    # A depthwise channel lives and dies with the producer unit feeding it.
    scores = fold_tied_scores(raw, layers)
    names = list(scores)
    with atomic_path(ctx.run / STAGE_FILES["rank"]) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **scores)
    n = min(imp.batches, math.ceil(len(ctx.data.x_train) / imp.batch_size))
    return f"{len(names)} layers scored over {n} mini-batches"


def _stage_permute(ctx: _Ctx) -> str:
    from reds_tf.permute import permute_by_importance

    model = _load_model(ctx, STAGE_FILES["base"])
    permuted, _, _ = permute_by_importance(model, _scores(ctx))
    # Guard the "exactly function-preserving" claim on real data every run.
    x = ctx.data.x_test[:256]
    diff = float(np.max(np.abs(model.predict(x, verbose=0) - permuted.predict(x, verbose=0))))
    if diff > 1e-4:
        raise RuntimeError(f"permutation changed the model's outputs (max abs diff {diff:g})")
    _save_model(permuted, ctx.run / STAGE_FILES["permute"])
    return f"max abs output change {diff:.2e}"


def _stage_select(ctx: _Ctx) -> str:
    from reds_tf.costs import cost_layers_from_keras
    from reds_tf.knapsack import solve_nested
    from reds_tf.permute import sort_permutations

    model = _load_model(ctx, STAGE_FILES["permute"])
    layers = cost_layers_from_keras(model)
    raw = _scores(ctx)
    perms = sort_permutations(raw)
    scores = {n: raw[n][p] for n, p in perms.items()}
    res = solve_nested(
        layers,
        scores,
        list(ctx.cfg.budgets),
        ctx.cfg.block,
        time_limit=ctx.cfg.knapsack.time_limit,
        method=ctx.cfg.knapsack.method,
        log=ctx.log,
        max_activation_elems=ctx.cfg.memory_budget_bytes,  # int8: one byte per element
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
    }
    write_json_atomic(ctx.run / STAGE_FILES["select"], out)
    return f"{len(res.budgets)} submodels, solver total {res.total_seconds:.2f} s"


def _param_fractions(layers, widths: list[dict[str, int]]) -> list[float]:
    from reds_tf.costs import full_widths, model_params

    full = model_params(layers, full_widths(layers))
    return [model_params(layers, w) / full for w in widths]


def _stage_finetune(ctx: _Ctx) -> str:
    from reds_tf.costs import cost_layers_from_keras
    from reds_tf.nested import bn_layers, bn_stats_arrays, build_nested, estimate_bn_stats, to_plain
    from reds_tf.train import augmentation, finetune_joint, set_seed

    full = _load_model(ctx, STAGE_FILES["permute"])
    widths = _knapsack(ctx)["widths"]
    layers = cost_layers_from_keras(full)
    f = ctx.cfg.finetune
    nested = build_nested(full, widths, private_bn_affine=f.bn_affine == "per_submodel")
    # A second copy: the nested model may share variables with ``full``.
    teacher = _load_model(ctx, STAGE_FILES["permute"]) if f.teacher == "base" else None
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
    )
    extra = ""
    if bn_layers(nested):
        # Per-submodel BN statistics, always estimated so that evaluation can
        # compare them with the shared ones; written before model.keras (the
        # stage's done marker).
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
    _save_model(to_plain(nested, full), ctx.run / STAGE_FILES["finetune"])
    distill = "off" if not f.distill else "from the base model" if teacher else "on"
    return f"{f.epochs} epoch(s), distillation {distill}{extra}"


def _layer_entries(model, layers) -> list[dict[str, Any]]:
    """``submodels.json`` ``layers``: width-carrying layers with their geometry."""
    out = []
    for c in layers:
        e: dict[str, Any] = {
            "name": c.name,
            "type": c.kind,
            "units": c.units,
            "prunable": c.prunable,
            "producer": c.producer,
        }
        if c.kind in ("conv", "depthwise"):
            layer = model.get_layer(c.name)
            e["kernel"] = [int(v) for v in layer.kernel_size]
            e["strides"] = [int(v) for v in layer.strides]
            e["padding"] = str(layer.padding)
            e["output_hw"] = [int(layer.output_shape[1]), int(layer.output_shape[2])]
        out.append(e)
    return out


def _stage_evaluate(ctx: _Ctx) -> str:
    from reds_tf.costs import cost_layers_from_keras, model_params
    from reds_tf.nested import (
        bn_layers,
        build_nested,
        load_bn_stats,
        nested_accuracy,
        use_per_submodel_stats,
    )

    cfg, d = ctx.cfg, ctx.data
    model = _load_model(ctx, STAGE_FILES["finetune"])
    ks = _knapsack(ctx)
    widths = ks["widths"]
    layers = cost_layers_from_keras(model)
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
    doc = {
        "name": cfg.name,
        "dataset": cfg.dataset,
        "data_options": dict(cfg.data),
        "input_shape": list(d.input_shape),
        "num_classes": int(d.num_classes),
        "block": cfg.block,
        "bn_stats": mode,
        "layers": _layer_entries(model, layers),
        "submodels": [
            {
                "index": k,
                "budget": ks["budgets"][k],
                "widths": {c.name: int(widths[k][c.name]) for c in layers},
                "macs": int(ks["macs"][k]),
                "macs_fraction": float(ks["macs_fraction"][k]),
                "params": int(model_params(layers, widths[k])),
                "accuracy": acc[k],
                "accuracy_before_finetune": before[k],
                "knapsack_status": ks["status"][k],
                "knapsack_seconds": ks["seconds"][k],
            }
            for k in range(len(widths))
        ],
    }
    if acc_sub is not None:
        for k, s in enumerate(doc["submodels"]):
            s["accuracy_shared_bn"] = acc_shared[k]
            s["accuracy_per_submodel_bn"] = acc_sub[k]
    write_json_atomic(ctx.run / STAGE_FILES["evaluate"], doc)
    msg = "test accuracy " + ", ".join(
        f"{b:g}: {a:.4f}" for b, a in zip(ks["budgets"], acc_shared, strict=True)
    )
    if acc_sub is not None:
        msg += " (shared BN); per-submodel BN " + ", ".join(f"{a:.4f}" for a in acc_sub)
    return msg


def _stage_scratch(ctx: _Ctx) -> str:
    import tf_keras as keras

    from reds_tf.models import submodel
    from reds_tf.train import accuracy, fit_classifier, set_seed

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
    from reds_tf.report import write_report

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
