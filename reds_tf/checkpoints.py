"""Checkpoints inside long training stages: the state at the end of the last
finished epoch, so that a killed ``reds train`` goes on from there instead of
from the stage's start.

A checkpoint is one folder (written under a temp name, then renamed, so it
exists whole or not at all) holding ``checkpoint.json`` (the stage, the epoch
reached and the identity it was made under) and a ``tf.train.Checkpoint`` of
the weights (BatchNorm moving statistics included) and the optimizer (its
slots and step counter, hence the learning-rate schedule's position). The
training data order and augmentation are functions of (seed, epoch, step)
(:func:`reds_tf.training.epoch_batches`), so a resumed run sees exactly the
batches the uninterrupted run would have; only random ops inside the model
(Dropout masks) draw from TensorFlow's global generator, whose state is not
saved: with dropout the resumed run is as close as a second run with another
seed, without it equal.

The identity (the stage's config hash, the record of the stage before, the
data's content hash) must match for a checkpoint to be used; otherwise it is
deleted and the stage starts over.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensorflow as tf
import tf_keras as keras

from reds_tf import faults
from reds_tf.fsutil import atomic_dir

META = "checkpoint.json"
_PREFIX = "state"  # tf.train.Checkpoint file prefix inside the folder
_VERSION = 1

Log = Callable[[str], None]


class EpochCheckpoint:
    """The checkpoint folder of one training stage.

    ``identity``: what the state depends on (compared as JSON); ``fault``: the
    fault-injection prefix (``train:<stage>``); a kill point
    ``<fault>:epoch<N>`` follows the commit of epoch N's checkpoint.
    """

    def __init__(self, path: Path, identity: dict[str, Any], *, log: Log, fault: str = ""):
        self.path = Path(path)
        self.identity = identity
        self.log = log
        self.fault = fault

    def read_meta(self) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.path / META).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) and doc.get("version") == _VERSION else None

    def restore(self, objects: dict[str, Any], epochs: int) -> int:
        """Load the saved state into ``objects`` (the optimizer already built);
        returns the number of epochs it covers (0: none usable, start over)."""
        if not self.path.exists():
            return 0
        meta = self.read_meta()
        done = meta.get("epoch") if meta else None
        if meta is None or meta.get("identity") != self.identity:
            self.log(f"discarding {self.path.name}: made under another config or earlier stage")
            self.remove()
            return 0
        if not isinstance(done, int) or not 0 < done <= epochs:
            self.log(f"discarding {self.path.name}: epoch {done!r} is out of range")
            self.remove()
            return 0
        try:
            status = tf.train.Checkpoint(**objects).read(str(self.path / _PREFIX))
            status.assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as e:
            # Unreadable: the next epochs overwrite it anyway; start the stage over.
            self.log(f"discarding {self.path.name}: unreadable ({str(e).splitlines()[0]})")
            self.remove()
            return 0
        self.log(f"resuming from {self.path.name} after epoch {done} of {epochs}")
        return done

    def save(self, objects: dict[str, Any], epoch: int) -> None:
        """Commit the state after ``epoch`` finished epochs (atomically)."""
        with atomic_dir(self.path, replace=True) as tmp:
            tf.train.Checkpoint(**objects).write(str(tmp / _PREFIX))
            meta = {"version": _VERSION, "epoch": int(epoch), "identity": self.identity}
            (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if self.fault:
            faults.fault_point(f"{self.fault}:epoch{epoch}")

    def callback(self, objects: dict[str, Any]) -> keras.callbacks.Callback:
        """A Keras callback saving after every epoch."""
        return _SaveEachEpoch(self, objects)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


class _SaveEachEpoch(keras.callbacks.Callback):
    def __init__(self, ckpt: EpochCheckpoint, objects: dict[str, Any]):
        super().__init__()
        self.ckpt = ckpt
        self.objects = objects

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.ckpt.save(self.objects, epoch + 1)
