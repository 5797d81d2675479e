"""``train.distribute``: training on several devices or machines (tf.distribute).

- ``none``: TensorFlow's default (one device).
- ``mirrored``: ``MirroredStrategy`` over ``replicas`` local GPUs (default:
  all of them); on a machine without GPUs the CPU is split into ``replicas``
  logical devices, which must happen before TensorFlow sets up its devices
  (``reds train`` does it first thing), so the path runs anywhere.
- ``multi_worker``: ``MultiWorkerMirroredStrategy``, one process per machine,
  the cluster and this process's place in it in the standard ``TF_CONFIG``
  environment variable. The strategy must exist before TensorFlow runs any op.

Batch sizes stay global: each step's batch is split over the replicas and
their gradients summed, so one step equals a one-device step on the same
batch. Every worker runs every stage (on the same data, so they agree); only
the chief writes the run directory, the others write into a private copy
that is deleted at the end (:func:`worker_copy`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

from reds_tf.config import DistributeConfig
from reds_tf.errors import ConfigError

TF_CONFIG = "TF_CONFIG"


@dataclass
class Distribution:
    """The strategy training runs under, and this process's place in it."""

    strategy: tf.distribute.Strategy
    kind: str  # "none", "mirrored" or "multi_worker"
    replicas: int  # replicas in sync (over all workers)
    devices: tuple[str, ...]  # this process's replica devices
    chief: bool = True
    task: str = ""  # "worker 1 of 2" (multi_worker)

    @property
    def distributed(self) -> bool:
        return self.kind != "none"

    def describe(self) -> str:
        """One log line: the strategy and how many replicas are in sync."""
        if not self.distributed:
            return "distribute: none (one device)"
        where = ", ".join(d.split("/job:localhost/replica:0/task:0/")[-1] for d in self.devices)
        role = f"; {self.task}{' (chief)' if self.chief else ''}" if self.task else ""
        return f"distribute: {self.kind}, {self.replicas} replicas in sync (here: {where}){role}"


def setup(cfg: DistributeConfig, source: str = "<config>") -> Distribution:
    """Create the strategy ``cfg`` asks for (before TensorFlow runs any op)."""
    if cfg.strategy == "none":
        return Distribution(tf.distribute.get_strategy(), "none", 1, ("",))
    if cfg.strategy == "mirrored":
        return _mirrored(cfg.replicas, source)
    if cfg.strategy == "multi_worker":
        return _multi_worker(cfg.replicas, source)
    raise ConfigError(f"{source}: train.distribute.strategy: unknown {cfg.strategy!r}")


def _split_cpu(n: int, source: str) -> list[str]:
    """``n`` logical CPU devices (set up before TensorFlow initialises them)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError:
        pass  # already initialised: usable if it already has enough devices
    have = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(have) < n:
        raise ConfigError(
            f"{source}: train.distribute.replicas: {n} logical CPU devices must be set up "
            f"before TensorFlow initialises its devices, and this process already has "
            f"{len(have)}; train in a new process (e.g. `reds train`)"
        )
    return have[:n]


def _mirrored(replicas: int | None, source: str) -> Distribution:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        n = replicas or len(gpus)
        if n > len(gpus):
            raise ConfigError(
                f"{source}: train.distribute.replicas: {n}, but this machine has {len(gpus)} GPU(s)"
            )
        devices = [f"/gpu:{i}" for i in range(n)]
    else:
        devices = _split_cpu(replicas or 1, source)
    strategy = tf.distribute.MirroredStrategy(devices=devices)
    return Distribution(strategy, "mirrored", strategy.num_replicas_in_sync, tuple(devices))


def cluster_from_env(source: str = "<config>") -> tuple[dict, str, int]:
    """``(cluster, task type, task index)`` from ``TF_CONFIG``, checked."""
    raw = os.environ.get(TF_CONFIG)
    where = f"{source}: train.distribute.strategy: multi_worker"
    if not raw:
        raise ConfigError(
            f"{where} needs the {TF_CONFIG} environment variable (the cluster and this "
            'process\'s task, e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
            '"task": {"type": "worker", "index": 0}})'
        )
    try:
        doc = json.loads(raw)
        cluster, task = doc["cluster"], doc["task"]
        kind, index = task["type"], task["index"]
        hosts = cluster[kind]
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{where}: {TF_CONFIG} must be JSON with cluster.<type> lists of host:port and "
            "task.type / task.index naming this process among them"
        ) from None
    if not isinstance(index, int) or not 0 <= index < len(hosts):
        raise ConfigError(f"{where}: {TF_CONFIG} task.index {index!r} is not in cluster.{kind}")
    if kind not in ("chief", "worker"):
        raise ConfigError(f"{where}: {TF_CONFIG} task.type must be chief or worker, got {kind!r}")
    return cluster, kind, index


def _multi_worker(replicas: int | None, source: str) -> Distribution:
    cluster, kind, index = cluster_from_env(source)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    except (RuntimeError, ValueError) as e:
        raise ConfigError(
            f"{source}: train.distribute.strategy: multi_worker: {e} (the strategy must be "
            "created before TensorFlow runs anything: train in a new process)"
        ) from None
    n = strategy.num_replicas_in_sync
    if replicas is not None and replicas != n:
        raise ConfigError(
            f"{source}: train.distribute.replicas: {replicas}, but {TF_CONFIG}'s cluster and "
            f"the local devices give {n} replicas"
        )
    workers = sum(len(cluster.get(k, [])) for k in ("chief", "worker"))
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    pos = index + (len(cluster.get("chief", [])) if kind == "worker" else 0)
    devices = tuple(d for d in strategy.extended.worker_devices)
    return Distribution(
        strategy, "multi_worker", n, devices, chief=chief, task=f"worker {pos} of {workers}"
    )


def agree(dist: Distribution, value: str) -> bool:
    """True when every worker passed the same ``value`` (a barrier too: no
    worker returns before all have called it)."""
    if dist.kind != "multi_worker":
        return True
    code = float(zlib.crc32(value.encode("utf-8")) & 0xFFFFFF)  # exact in float32
    s = dist.strategy
    mine = s.run(lambda: tf.constant([code], tf.float32))
    every = s.gather(mine, axis=0).numpy()
    return bool((every == code).all())


def worker_copy(run: Path, extra: Sequence[Path] = ()) -> Path:
    """A private temp folder holding a copy of ``run`` (and the ``extra``
    paths beside it) for a non-chief worker: it resumes from what the chief
    has (on a shared filesystem) and writes only there. Returns the folder;
    the copy of ``run`` is ``<folder>/<run.name>``."""
    root = Path(tempfile.mkdtemp(prefix="reds-worker-"))
    for src in (run, *extra):
        if src.is_dir():
            shutil.copytree(src, root / src.name)
    return root
