"""YAML config -> typed, validated dataclasses.

Every error names the file and the key path (``train.epochs``) and says what is
expected, so a typo never silently falls back to a default: unknown keys are
errors too. :func:`config_to_dict` gives the resolved config (defaults and CLI
overrides applied) that the run directory keeps as ``config.yaml``.

Numbers: ``1e-3`` and ``1e6`` are numbers (YAML 1.1 would read them as
strings), a whole float such as ``1e6`` is accepted where an integer is
expected, and every integer has an upper bound (:data:`LIMITS`), so an
absurd value is a message naming the key rather than a failure deep inside
training. Validation never imports TensorFlow.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reds_tf.errors import ConfigError, DataError

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# ``model.type`` names of the builders in reds_tf.models (kept here so that a
# config is validated without importing TensorFlow; a test checks they agree).
MODEL_TYPE_NAMES = ("cnn", "dnn", "dscnn", "mobilenet_v1", "resnet")

# Upper bounds of the integer keys: far above any real use, low enough that
# arithmetic on them (MAC counts, array sizes, RNG seeds) cannot overflow.
LIMITS = {
    "seed": 2**32 - 1,  # NumPy's seed range
    "units": 65536,  # model.hidden entries, conv filters
    "kernel": 1024,  # conv kernel and stride sizes, augment.shift
    "blocks": 1024,  # dscnn, resnet: number of blocks
    "block": 65536,
    "epochs": 100_000,
    "batch_size": 1_000_000,
    "batches": 10_000_000,  # importance.batches
    "limit": 2**31 - 1,  # train.limit (samples)
    "memory_budget_bytes": 2**32 - 1,  # uint32 on the device
    "data": 2**31 - 1,  # integers among the data: options (absolute value)
    "replicas": 4096,  # train.distribute.replicas
}


# ``data:`` options that name files or folders (made absolute when parsed).
PATH_OPTIONS = ("path", "data_dir")


class _Loader(yaml.SafeLoader):
    """Safe YAML with YAML 1.2 floats: ``1e-9``, ``1E12`` and ``-2e+3`` are
    floats (YAML 1.1 needs a dot: ``1.0e-9``)."""


_Loader.yaml_implicit_resolvers = {
    k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    """Parse config YAML (safe, YAML 1.2 floats; see :class:`_Loader`)."""
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no Python objects


def _show(v: Any) -> str:
    """``repr`` of a bad value, shortened to keep the message one short line."""
    try:
        text = repr(v)
    except ValueError:  # an int too long to print
        return "a number too large to print"
    return text if len(text) <= 60 else text[:45] + f"... ({len(text)} characters)"


def _whole(v: Any) -> Any:
    """An integral finite float (``1e6``) as an int; anything else unchanged."""
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v


@dataclass(frozen=True)
class ConvSpec:
    """One standard convolution (cnn layers, the dscnn first layer) or a DS block
    (``filters`` = pointwise width, ``strides`` = depthwise stride; kernel unused)."""

    filters: int
    kernel: tuple[int, int] = (3, 3)
    strides: tuple[int, int] = (1, 1)
    padding: str = "valid"

    def as_dict(self) -> dict[str, Any]:
        return {
            "filters": self.filters,
            "kernel": list(self.kernel),
            "strides": list(self.strides),
            "padding": self.padding,
        }


@dataclass(frozen=True)
class ModelConfig:
    """Architecture. ``type`` selects a builder in :mod:`reds_tf.models`."""

    type: str = "dnn"
    hidden: tuple[int, ...] = (256, 256)  # dnn/cnn: widths of the hidden Dense layers
    dropout: float = 0.0  # dnn: dropout after every hidden layer (training only)
    conv: tuple[ConvSpec, ...] = ()  # cnn: the convolution stack
    first: ConvSpec | None = None  # dscnn, resnet: the first (standard) convolution
    # dscnn: depthwise-separable blocks; resnet: residual blocks (filters, strides)
    blocks: tuple[ConvSpec, ...] = ()
    alpha: float = 0.25  # mobilenet_v1: width multiplier


@dataclass(frozen=True)
class AugmentConfig:
    """Cheap on-the-fly image augmentation for base training and fine-tuning."""

    flip: bool = False  # random horizontal flips
    shift: int = 0  # random translations of up to this many pixels (zero padded)

    @property
    def active(self) -> bool:
        return self.flip or self.shift > 0


@dataclass(frozen=True)
class DistributeConfig:
    """How training is spread over devices (tf.distribute); batch sizes stay global.

    ``none``: one device. ``mirrored``: ``replicas`` local GPUs (default all),
    or without GPUs the CPU split into ``replicas`` logical devices.
    ``multi_worker``: one process per machine, the cluster in ``TF_CONFIG``;
    ``replicas`` (optional) is the total in sync, checked against it.
    """

    strategy: str = "none"
    replicas: int | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Base training of the full model."""

    epochs: int = 20
    batch_size: int = 128
    learning_rate: float = 1e-3
    schedule: str = "cosine"  # "cosine" (decay to 0 over the run) or "constant"
    optimizer: str = "adam"  # "adam" or "sgd" (Nesterov momentum 0.9)
    weight_decay: float = 0.0  # decoupled: each step shrinks weights by lr * weight_decay
    limit: int | None = None  # at most this many training samples (quick runs)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # How, not what: no stage's record depends on it (a run resumes on other hardware).
    distribute: DistributeConfig = field(default_factory=DistributeConfig)


@dataclass(frozen=True)
class ImportanceConfig:
    """First-order Taylor scores: gradients summed over this many mini-batches."""

    batches: int = 100
    batch_size: int = 128


@dataclass(frozen=True)
class KnapsackConfig:
    time_limit: float = 60.0  # seconds per budget for CBC
    # "auto": exact dynamic programming for chains of chosen widths, PuLP/CBC otherwise;
    # "milp": always PuLP/CBC (same optimum, slower on deep conv chains).
    method: str = "auto"
    # What the budgets constrain: "macs" (fractions of the full model's MACs) or
    # "latency" (of its estimated Cortex-M4 cycles, reds_tf.latency: needs the Arm
    # toolchain and QEMU at training time).
    cost: str = "macs"
    # With cost "latency": the fraction of the full model's estimated latency
    # kept free below each budget, for the latency model's error (within 2 % of
    # the measured cycles on DS-CNN-S CIFAR-10), so a submodel's measured
    # latency stays within its budget.
    latency_margin: float = 0.01


@dataclass(frozen=True)
class FinetuneConfig:
    """Joint fine-tuning of all submodels (one optimiser step updates all)."""

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 5e-4
    schedule: str = "cosine"
    optimizer: str = "adam"
    weight_decay: float = 0.0
    distill: bool = True  # smaller submodels also learn from the full model's outputs
    temperature: float = 1.0  # softening of both distributions in the distillation term
    alpha: float = 0.5  # weight of the distillation term (1 - alpha for the labels)
    # Distillation target: "inplace" (the full submodel teaches the smaller ones,
    # the paper) or "base" (the frozen permuted base model teaches all of them).
    teacher: str = "inplace"
    # BatchNorm statistics the export uses: "shared" (one set, the paper) or
    # "per_submodel" (re-estimated for each submodel after fine-tuning).
    bn_stats: str = "shared"
    # BatchNorm scale/shift: "shared" (one set, the paper) or "per_submodel"
    # (every smaller submodel learns its own; needs bn_stats: per_submodel).
    bn_affine: str = "shared"


@dataclass(frozen=True)
class Config:
    name: str
    dataset: str
    seed: int = 0
    # Loader keywords for ``load_dataset(dataset, **data)`` (e.g. ``augment: 2``,
    # the synthetic set's ``variants_per_voice``); the loader checks names/values.
    data: dict[str, Any] = field(default_factory=dict)
    model: ModelConfig = field(default_factory=ModelConfig)
    budgets: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    block: int = 4
    train: TrainConfig = field(default_factory=TrainConfig)
    importance: ImportanceConfig = field(default_factory=ImportanceConfig)
    knapsack: KnapsackConfig = field(default_factory=KnapsackConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    baseline: str = "none"  # "scratch": also train each submodel architecture alone
    # Optional bound on each submodel's activation arena (bytes, the exported
    # runtime's, reds_tf/memory.py): one integer for every submodel, or a list
    # with one entry (an integer or None: no bound) per budget, in the same
    # order. Resolved per submodel by :meth:`memory_bounds`.
    memory_budget_bytes: int | tuple[int | None, ...] | None = None
    source: str = field(default="", compare=False)  # file the config came from

    def memory_bounds(self) -> tuple[int | None, ...]:
        """The arena bound of each submodel (one per entry of ``budgets``, the
        full model last); None: no bound."""
        m = self.memory_budget_bytes
        if m is None or isinstance(m, int):
            return (m,) * len(self.budgets)
        return tuple(m)


_SCHEDULES = ("cosine", "constant")
_OPTIMIZERS = ("adam", "sgd")
_BASELINES = ("none", "scratch")
_BN_STATS = ("shared", "per_submodel")
_TEACHERS = ("inplace", "base")
_PADDINGS = ("valid", "same")
_STRATEGIES = ("none", "mirrored", "multi_worker")


class _Reader:
    """Pops typed values out of one YAML mapping, naming the key path on errors."""

    def __init__(self, src: str, path: str, data: Any):
        self.src = src
        self.path = path
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self.fail(self.path or "the top level", "must be a mapping", data)
        self.data = dict(data)

    def key(self, k: str) -> str:
        return f"{self.path}.{k}" if self.path else k

    def fail(self, key: str, what: str, got: Any = dataclasses.MISSING) -> None:
        msg = f"{self.src}: {key} {what}"
        if got is not dataclasses.MISSING:
            msg += f", got {_show(got)}"
        raise ConfigError(msg)

    def has(self, k: str) -> bool:
        return k in self.data

    def raw(self, k: str, default: Any) -> Any:
        return self.data.pop(k, default)

    def int(
        self,
        k: str,
        default: int | None,
        *,
        maximum: int,
        minimum: int = 1,
        optional: bool = False,
    ) -> Any:
        if k not in self.data and default is None and not optional:
            self.fail(self.key(k), "is required (an integer)")
        v = self.data.pop(k, default)
        if v is None and optional:
            return None
        v = _whole(v)
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
            self.fail(self.key(k), f"must be {kind}", v)
        if v > maximum:
            self.fail(self.key(k), f"must be at most {maximum}", v)
        return v

    def float(self, k: str, default: float, *, lo: float, hi: float, lo_open: bool) -> float:
        v = self.data.pop(k, default)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
        if not ok:
            rng = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
            self.fail(self.key(k), f"must be a number in {rng}", v)
        return float(v)

    def bool(self, k: str, default: bool) -> bool:
        v = self.data.pop(k, default)
        if not isinstance(v, bool):
            self.fail(self.key(k), "must be true or false", v)
        return v

    def str(self, k: str, default: str | None, choices: tuple[str, ...] = ()) -> str:
        if k not in self.data and default is None:
            self.fail(self.key(k), "is required")
        v = self.data.pop(k, default)
        if not isinstance(v, str) or not v:
            self.fail(self.key(k), "must be a non-empty string", v)
        if choices and v not in choices:
            self.fail(self.key(k), f"must be one of {', '.join(choices)}", v)
        return v

    def sub(self, k: str) -> _Reader:
        return _Reader(self.src, self.key(k), self.data.pop(k, None))

    def done(self) -> None:
        """Reject what is left over: an unknown key is almost always a typo."""
        if self.data:
            names = ", ".join(self.key(str(k)) for k in self.data)
            self.fail(names, "unknown key(s) (check the spelling; see configs/fmnist_dnn.yaml)")


def _pair(r: _Reader, k: str, default: tuple[int, int]) -> tuple[int, int]:
    v = _whole(r.raw(k, list(default)))
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if isinstance(v, (list, tuple)):
        v = [_whole(e) for e in v]
    if (
        not isinstance(v, (list, tuple))
        or len(v) != 2
        or any(isinstance(e, bool) or not isinstance(e, int) or e < 1 for e in v)
    ):
        r.fail(r.key(k), "must be a positive integer or a list of two", v)
    if max(v) > LIMITS["kernel"]:
        r.fail(r.key(k), f"entries must be at most {LIMITS['kernel']}", v)
    return (int(v[0]), int(v[1]))


def _conv_spec(r: _Reader, padding: str) -> ConvSpec:
    spec = ConvSpec(
        filters=r.int("filters", None, maximum=LIMITS["units"]),
        kernel=_pair(r, "kernel", (3, 3)),
        strides=_pair(r, "strides", (1, 1)),
        padding=r.str("padding", padding, _PADDINGS),
    )
    r.done()
    return spec


def _conv_list(r: _Reader, k: str, padding: str) -> tuple[ConvSpec, ...]:
    v = r.raw(k, [])
    if not isinstance(v, list):
        r.fail(r.key(k), "must be a list of mappings (filters, kernel, strides)", v)
    return tuple(
        _conv_spec(_Reader(r.src, f"{r.key(k)}[{i}]", e), padding) for i, e in enumerate(v)
    )


def _model(r: _Reader) -> ModelConfig:
    d = ModelConfig()
    mtype = r.str("type", d.type)
    known = set(MODEL_TYPE_NAMES)
    models = sys.modules.get("reds_tf.models")  # builders registered at run time count too
    if models is not None:
        known |= set(models.MODEL_TYPES)
    if mtype not in known:
        r.fail(r.key("type"), f"must be one of {', '.join(sorted(known))}", mtype)
    hidden = r.raw("hidden", list(d.hidden) if mtype in ("dnn", "cnn") else [])
    if isinstance(hidden, list):
        hidden = [_whole(h) for h in hidden]
    if mtype in ("dnn", "cnn") and (
        not isinstance(hidden, list)
        or not hidden
        or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden)
    ):
        r.fail(r.key("hidden"), "must be a non-empty list of positive integers", hidden)
    if mtype in ("dnn", "cnn") and max(hidden) > LIMITS["units"]:
        r.fail(r.key("hidden"), f"entries must be at most {LIMITS['units']}", hidden)
    if mtype not in ("dnn", "cnn") and hidden:
        r.fail(r.key("hidden"), f"is not used by model.type {mtype}", hidden)
    if mtype not in ("dscnn", "resnet"):
        for k in ("first", "blocks"):
            if r.raw(k, None) not in (None, [], ()):
                r.fail(r.key(k), f"is only used by model.type dscnn and resnet, not {mtype}")
    dropout = r.float("dropout", d.dropout, lo=0.0, hi=0.9, lo_open=False)
    conv = _conv_list(r, "conv", "valid")
    if mtype == "cnn" and not conv:
        r.fail(r.key("conv"), "is required for model.type cnn (a list of convolutions)")
    first = None
    blocks: tuple[ConvSpec, ...] = ()
    if mtype in ("dscnn", "resnet"):
        if not r.has("first"):
            r.fail(r.key("first"), f"is required for model.type {mtype} (filters, kernel, strides)")
        first = _conv_spec(r.sub("first"), "same")
        b = _whole(r.raw("blocks", None))
        if isinstance(b, int) and not isinstance(b, bool) and b > LIMITS["blocks"]:
            r.fail(r.key("blocks"), f"must be at most {LIMITS['blocks']}", b)
        if isinstance(b, int) and not isinstance(b, bool) and b >= 1:
            # N blocks at the first layer's width, stride 1 (Hello Edge DS-CNN-S).
            blocks = tuple(ConvSpec(filters=first.filters, padding="same") for _ in range(b))
        elif isinstance(b, list) and b:
            blocks = _conv_list(_Reader(r.src, r.path, {"blocks": b}), "blocks", "same")
        else:
            r.fail(r.key("blocks"), "must be a positive integer or a list of {filters, strides}", b)
    alpha = r.float("alpha", d.alpha, lo=0.0, hi=4.0, lo_open=True)
    r.done()
    return ModelConfig(
        type=mtype,
        hidden=tuple(hidden),
        dropout=dropout,
        conv=conv,
        first=first,
        blocks=blocks,
        alpha=alpha,
    )


def _augment(r: _Reader) -> AugmentConfig:
    d = AugmentConfig()
    a = AugmentConfig(
        flip=r.bool("flip", d.flip),
        shift=r.int("shift", d.shift, minimum=0, maximum=LIMITS["kernel"]),
    )
    r.done()
    return a


def _distribute(r: _Reader) -> DistributeConfig:
    d = DistributeConfig()
    strategy = r.str("strategy", d.strategy, _STRATEGIES)
    replicas = r.int("replicas", None, optional=True, maximum=LIMITS["replicas"])
    if strategy == "none" and replicas not in (None, 1):
        r.fail(r.key("replicas"), "needs strategy: mirrored or multi_worker", replicas)
    r.done()
    return DistributeConfig(strategy=strategy, replicas=replicas)


def _budgets(r: _Reader) -> tuple[float, ...]:
    v = r.raw("budgets", list(Config.budgets))
    key = r.key("budgets")
    if not isinstance(v, list) or not v:
        r.fail(key, "must be a non-empty list of MAC fractions in (0, 1]", v)
    for b in v:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0 < b <= 1:
            r.fail(key, "entries must be MAC fractions in (0, 1]", b)
    if any(b >= a for a, b in zip(v[1:], v, strict=False)):
        r.fail(key, "must be strictly increasing", v)
    budgets = tuple(float(b) for b in v)
    # The full model is always the last submodel.
    if budgets[-1] != 1.0:
        budgets += (1.0,)
    return budgets


def _memory_budget(
    r: _Reader, budgets: tuple[float, ...], given: Any
) -> int | tuple[int | None, ...] | None:
    """``memory_budget_bytes``: one integer (every submodel), or a list with one
    entry per budget (an integer, or null for no bound). When ``budgets`` did
    not end at 1 (the full model is appended), a list may also leave the full
    model out: its bound is then null. Resolved to one entry per submodel."""
    key = r.key("memory_budget_bytes")
    top = LIMITS["memory_budget_bytes"]
    v = r.data.get("memory_budget_bytes")
    if not isinstance(v, list):
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            r.fail(key, "must be a positive integer (bytes) or a list with one per budget", v)
        return r.int("memory_budget_bytes", None, optional=True, maximum=top)
    r.data.pop("memory_budget_bytes")
    n_given = len(given) if isinstance(given, list) else len(budgets)
    if len(v) not in (n_given, len(budgets)):
        want = f"{len(budgets)}" if n_given == len(budgets) else f"{n_given} or {len(budgets)}"
        r.fail(
            key,
            f"must have one entry per budget ({want} for budgets "
            f"{[float(b) for b in budgets]}), got {len(v)} entries",
        )
    out: list[int | None] = []
    for i, e in enumerate(v):
        e = _whole(e)
        if e is None:
            out.append(None)
            continue
        if isinstance(e, bool) or not isinstance(e, int) or e < 1:
            r.fail(f"{key}[{i}]", "must be a positive integer (bytes) or null (no bound)", e)
        if e > top:
            r.fail(f"{key}[{i}]", f"must be at most {top}", e)
        out.append(e)
    out += [None] * (len(budgets) - len(out))  # the appended full model: no bound
    return tuple(out)


def _scalar_or_list(v: Any) -> bool:
    if v is None or isinstance(v, (bool, int, float, str)):
        return not (isinstance(v, float) and not math.isfinite(v))
    return isinstance(v, list) and all(_scalar_or_list(e) for e in v)


def _small_ints(v: Any) -> bool:
    if isinstance(v, list):
        return all(_small_ints(e) for e in v)
    return not isinstance(v, int) or isinstance(v, bool) or abs(v) <= LIMITS["data"]


def _data_options(r: _Reader) -> dict[str, Any]:
    """The optional ``data:`` mapping: loader keywords with plain YAML values.
    Whether the loader knows a name is checked when the data set is loaded
    (:func:`check_data_options`), so the registry is not imported here."""
    v = r.raw("data", None)
    key = r.key("data")
    if v is None:
        return {}
    if not isinstance(v, dict):
        r.fail(key, "must be a mapping of data set options (e.g. {augment: 2})", v)
    for k, e in v.items():
        if not isinstance(k, str) or not k.isidentifier():
            r.fail(key, "keys must be option names (identifiers)", k)
        if not _scalar_or_list(e):
            r.fail(f"{key}.{k}", "must be a number, string, true/false, null or a list", e)
        if not _small_ints(e):
            r.fail(f"{key}.{k}", f"integers must be at most {LIMITS['data']} in size", e)
    out = dict(v)
    for k in PATH_OPTIONS:
        if isinstance(out.get(k), str) and out[k].strip():
            # Relative to the current directory, recorded absolute: export,
            # simulate and monitor find the data from anywhere.
            out[k] = os.path.abspath(os.path.expanduser(out[k]))
    return out


def check_data_options(cfg: Config, load: Any) -> Any:
    """Call ``load(cfg.dataset, **cfg.data)``; a data set error caused by the
    ``data:`` options becomes a ConfigError naming ``data.<key>`` and the file."""
    try:
        return load(cfg.dataset, **cfg.data)
    except DataError as e:
        if not cfg.data:
            raise
        msg = str(e)
        # Name the option(s) the message is about (not those in its list of
        # known names); all of them when it names none.
        head = msg.split("; known:")[0]
        named = [k for k in cfg.data if re.search(rf"\b{re.escape(k)}\b", head)]
        named = named or list(cfg.data)
        keys = ", ".join(f"data.{k}" for k in named)
        raise ConfigError(f"{cfg.source}: {keys}: {msg}") from None
    except TypeError as e:
        if not cfg.data:
            raise
        raise ConfigError(
            f"{cfg.source}: data: option value of the wrong type for {cfg.dataset}: {e}"
        ) from None


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate a parsed YAML mapping into a :class:`Config`."""
    r = _Reader(source, "", data)
    name = r.str("name", None)
    if not _NAME_RE.match(name):
        r.fail("name", "must use only letters, digits, '_', '-', '.' (it names the run dir)", name)
    dataset = r.str("dataset", None)
    seed = r.int("seed", 0, minimum=0, maximum=LIMITS["seed"])
    data_options = _data_options(r)
    model = _model(r.sub("model"))
    given = r.data.get("budgets")
    budgets = _budgets(r)
    block = r.int("block", Config.block, maximum=LIMITS["block"])

    t, d = r.sub("train"), TrainConfig()
    train = TrainConfig(
        epochs=t.int("epochs", d.epochs, maximum=LIMITS["epochs"]),
        batch_size=t.int("batch_size", d.batch_size, maximum=LIMITS["batch_size"]),
        learning_rate=t.float("learning_rate", d.learning_rate, lo=0, hi=1, lo_open=True),
        schedule=t.str("schedule", d.schedule, _SCHEDULES),
        optimizer=t.str("optimizer", d.optimizer, _OPTIMIZERS),
        weight_decay=t.float("weight_decay", d.weight_decay, lo=0, hi=1, lo_open=False),
        limit=t.int("limit", None, optional=True, maximum=LIMITS["limit"]),
        augment=_augment(t.sub("augment")),
        distribute=_distribute(t.sub("distribute")),
    )
    t.done()

    i, di = r.sub("importance"), ImportanceConfig()
    importance = ImportanceConfig(
        batches=i.int("batches", di.batches, maximum=LIMITS["batches"]),
        batch_size=i.int("batch_size", di.batch_size, maximum=LIMITS["batch_size"]),
    )
    i.done()

    k, dk = r.sub("knapsack"), KnapsackConfig()
    knapsack = KnapsackConfig(
        time_limit=k.float("time_limit", dk.time_limit, lo=0, hi=86400, lo_open=True),
        method=k.str("method", dk.method, ("auto", "milp")),
        cost=k.str("cost", dk.cost, ("macs", "latency")),
        latency_margin=k.float("latency_margin", dk.latency_margin, lo=0, hi=0.25, lo_open=False),
    )
    k.done()

    f, df = r.sub("finetune"), FinetuneConfig()
    finetune = FinetuneConfig(
        epochs=f.int("epochs", df.epochs, minimum=0, maximum=LIMITS["epochs"]),
        batch_size=f.int("batch_size", df.batch_size, maximum=LIMITS["batch_size"]),
        learning_rate=f.float("learning_rate", df.learning_rate, lo=0, hi=1, lo_open=True),
        schedule=f.str("schedule", df.schedule, _SCHEDULES),
        optimizer=f.str("optimizer", df.optimizer, _OPTIMIZERS),
        weight_decay=f.float("weight_decay", df.weight_decay, lo=0, hi=1, lo_open=False),
        distill=f.bool("distill", df.distill),
        temperature=f.float("temperature", df.temperature, lo=0, hi=100, lo_open=True),
        alpha=f.float("alpha", df.alpha, lo=0, hi=1, lo_open=False),
        teacher=f.str("teacher", df.teacher, _TEACHERS),
        bn_stats=f.str("bn_stats", df.bn_stats, _BN_STATS),
        bn_affine=f.str("bn_affine", df.bn_affine, _BN_STATS),
    )
    if finetune.teacher == "base" and not finetune.distill:
        f.fail(
            f.key("teacher"),
            "base needs distill: true (the teacher is only used to distill)",
            "base",
        )
    if finetune.bn_affine == "per_submodel" and finetune.bn_stats != "per_submodel":
        f.fail(
            f.key("bn_affine"),
            "per_submodel needs bn_stats: per_submodel (the export folds both together)",
            finetune.bn_affine,
        )
    f.done()

    baseline = r.str("baseline", "none", _BASELINES)
    memory = _memory_budget(r, budgets, given)
    r.done()
    return Config(
        name=name,
        dataset=dataset,
        seed=seed,
        data=data_options,
        model=model,
        budgets=budgets,
        block=block,
        train=train,
        importance=importance,
        knapsack=knapsack,
        finetune=finetune,
        baseline=baseline,
        memory_budget_bytes=memory,
        source=source,
    )


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    try:
        data = yaml_load(text)
    except ValueError:  # PyYAML's int() of a number with thousands of digits
        raise ConfigError(f"{path}: malformed YAML: a number with too many digits") from None
    except yaml.YAMLError as e:
        where = ""
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        raise ConfigError(f"{path}: the config is empty; see configs/fmnist_dnn.yaml")
    return parse_config(data, str(path))


def with_overrides(cfg: Config, **overrides: Any) -> Config:
    """Apply CLI overrides (``epochs``, ``finetune_epochs``, ``limit``, ``seed``,
    ``baseline``); ``None`` means "keep the config value". Values are validated
    like config values."""
    data = config_to_dict(cfg)
    mapping = {
        "epochs": ("train", "epochs"),
        "finetune_epochs": ("finetune", "epochs"),
        "limit": ("train", "limit"),
        "seed": ("seed",),
        "baseline": ("baseline",),
    }
    for k, v in overrides.items():
        if v is None:
            continue
        if k not in mapping:
            raise TypeError(f"unknown override {k}")
        node = data
        *parents, leaf = mapping[k]
        for p in parents:
            node = node[p]
        node[leaf] = v
    changed = any(v is not None for v in overrides.values())
    return parse_config(
        data, f"{cfg.source} (with command-line overrides)" if changed else cfg.source
    )


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain-YAML form of the resolved config (tuples as lists, no ``source``)."""

    def conv(x: Any) -> Any:
        if dataclasses.is_dataclass(x):
            return {
                f.name: conv(getattr(x, f.name))
                for f in dataclasses.fields(x)
                if f.name != "source"
            }
        if isinstance(x, tuple):
            return [conv(v) for v in x]
        return x

    out = conv(cfg)
    # Keys that do not apply stay out, so the resolved config names only what
    # matters (and run dirs written before these keys existed still resume).
    model = out["model"]
    keep = {
        "dnn": ("hidden", "dropout"),
        "cnn": ("hidden", "dropout", "conv"),
        "dscnn": ("first", "blocks"),
        "resnet": ("first", "blocks"),
        "mobilenet_v1": ("alpha",),
    }.get(cfg.model.type)
    if keep is not None:
        out["model"] = {"type": model["type"], **{k: model[k] for k in keep}}
    if not cfg.train.augment.active:
        del out["train"]["augment"]
    if cfg.train.distribute == DistributeConfig():
        del out["train"]["distribute"]
    if cfg.finetune.bn_stats == "shared":
        del out["finetune"]["bn_stats"]
    if cfg.finetune.bn_affine == "shared":
        del out["finetune"]["bn_affine"]
    if cfg.finetune.teacher == "inplace":
        del out["finetune"]["teacher"]
    for section in ("train", "finetune"):
        # Adam without weight decay: the recipe older run dirs were trained with.
        if out[section]["optimizer"] == "adam" and out[section]["weight_decay"] == 0:
            del out[section]["optimizer"], out[section]["weight_decay"]
    if cfg.memory_budget_bytes is None:
        del out["memory_budget_bytes"]
    if not cfg.data:
        del out["data"]
    return out


def config_to_yaml(cfg: Config) -> str:
    header = f"# resolved config (from {cfg.source}); defaults and overrides applied\n"
    return header + yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
