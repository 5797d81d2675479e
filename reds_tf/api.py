"""The Python API: train, export and run REDS models from a notebook.

Convert, compile, predict, without writing YAML or saving models by hand::

    import reds_tf
    run = reds_tf.train(
        config={"name": "blobs", "model": {"type": "dnn", "hidden": [64, 64]}},
        data=(x_train, y_train, x_test, y_test),  # or dataset: in the config
        model=my_tf_keras_model,                   # optional: else built from config
        out="runs/blobs",
    )
    run.submodels            # budget, MACs, accuracy of each nested submodel
    run.submodel(0)          # the smallest one as a plain tf_keras model
    run.export()             # int8 .tflite per submodel + the C++ runtime
    rt = run.runtime()       # that runtime, compiled and loaded through ctypes
    rt.predict(rt.quantize(x_test), 0)   # int8 logits of submodel 0

Everything lands in a run directory that the ``reds`` command line reads too
(``reds simulate``, ``reds firmware``, ``reds monitor --demo``), also in a new
process: a run trained from arrays keeps a copy of its calibration inputs and
test sample (``data.npz``). :func:`load` opens an existing run directory.

This module loads TensorFlow only when a function needs it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reds_tf import rundir
from reds_tf.config import Config, load_config, parse_config
from reds_tf.data import ARRAYS, Dataset
from reds_tf.errors import ConfigError, RedsError


class Run:
    """A trained run directory (``runs/<name>/``): what :func:`train` returns.

    ``path``: the directory. Attributes read the files training wrote, so a
    ``Run`` opened later (:func:`load`) sees what the first one saw.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._doc = rundir.load_submodels(self.path)  # checked: names what is missing

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, {len(self.submodels)} submodels)"

    @property
    def name(self) -> str:
        return str(self._doc["name"])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One sample's shape, e.g. ``(28, 28, 1)``."""
        return tuple(int(d) for d in self._doc["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self._doc["num_classes"])

    @property
    def submodels(self) -> list[dict[str, Any]]:
        """One dict per submodel, smallest first: ``index``, ``budget`` (MAC
        fraction asked for), ``macs``, ``macs_fraction``, ``params``,
        ``accuracy`` (float, test set) and ``widths`` (units kept per layer)."""
        keep = ("index", "budget", "macs", "macs_fraction", "params", "accuracy", "widths")
        return [
            {k: s[k] for k in keep if k in s} | {"index": s.get("index", i)}
            for i, s in enumerate(self._doc["submodels"])
        ]

    def submodel(self, k: int) -> Any:
        """Submodel ``k`` (0 = smallest, -1 = full) as a plain tf_keras model
        with its own weights: input ``(N, *input_shape)`` float32, output
        ``(N, num_classes)`` logits. Per-submodel BatchNorm statistics, when
        training made them, are the submodel's own."""
        from reds_tf import export, models
        from reds_tf.quant import bnfold

        subs = self._doc["submodels"]
        if not isinstance(k, (int, np.integer)) or not -len(subs) <= k < len(subs):
            raise RedsError(f"submodel index must be in 0..{len(subs) - 1}, got {k!r}")
        k = int(k) % len(subs)
        full = export.load_model(self.path)
        if self._doc.get("bn_stats") == "per_submodel" and bnfold.bn_layer_names(full):
            stats = bnfold.read_bn_stats(self.path, full, len(subs))
            full = bnfold.with_bn_stats(full, stats[k])
        return models.submodel(full, subs[k]["widths"])

    def report(self) -> str:
        """``report.md``: the accuracy/MACs table (and the int8 section after
        :meth:`export`)."""
        path = self.path / rundir.REPORT
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise RedsError(f"{path} is missing; re-run training to write it") from None

    def export(
        self,
        *,
        qat: bool = False,
        qat_epochs: int = 2,
        limit: int | None = None,
        arena: str | int = "balanced",
        log: Callable[[str], None] | None = print,
    ) -> Path:
        """``reds export``: int8 ``.tflite`` per submodel, the generated C++
        runtime (checked bit-exact against TensorFlow Lite Micro) and
        ``export/manifest.json``; returns the ``export/`` folder. ``limit``:
        evaluate on at most this many test samples. ``arena``: "balanced"
        (least RAM with two rows per call), "smallest" (least RAM: streams too),
        "fastest" (no in-place rows) or bytes per submodel."""
        from reds_tf.export import run_export

        return run_export(
            self.path, qat=qat, qat_epochs=qat_epochs, limit=limit, arena=arena, log=log or _quiet
        )

    def runtime(self, *, trust: bool = False) -> Any:
        """The exported C++ runtime compiled for this machine and loaded through
        ctypes (:class:`reds_tf.sim.Runtime`): ``predict(x, k)`` maps int8
        inputs ``(N, *input_shape)`` to int8 logits ``(N, num_classes)`` of
        submodel ``k``; ``quantize(x)`` turns float inputs into its int8."""
        from reds_tf.sim import load_runtime

        return load_runtime(self.path, trust=trust)


def load(path: str | os.PathLike) -> Run:
    """Open a trained run directory (one ``reds train`` or :func:`train` wrote)."""
    return Run(rundir.require_run_dir(path))


def train(
    config: Mapping[str, Any] | str | os.PathLike | Config,
    *,
    model: Any = None,
    data: Sequence[np.ndarray] | Dataset | None = None,
    out: str | os.PathLike | None = None,
    epochs: int | None = None,
    finetune_epochs: int | None = None,
    limit: int | None = None,
    seed: int | None = None,
    force: bool = False,
    verbose: int | None = None,
    log: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> Run:
    """``reds train`` in this process; returns the trained :class:`Run`.

    ``config``: a dict with the keys of a YAML config (configs/fmnist_dnn.yaml;
    ``name`` defaults to ``"model"``), a path to one, or a parsed Config.
    ``model``: a tf_keras model to start from instead of training one from
    ``config["model"]`` (what ``--base`` does with a file); it is used as given,
    not trained further before ranking.
    ``data``: ``(x_train, y_train, x_test, y_test)`` arrays in place of the
    config's ``dataset``: x ``(N, *input_shape)`` uint8 (scaled by 1/255) or
    float (used as given), y ``(N,)`` class indices ``0..C-1`` or one-hot
    ``(N, C)``; or a :class:`reds_tf.data.Dataset`.
    ``out``: the run directory (default ``runs/<name>``). An existing run of
    the same config resumes; ``force=True`` starts over.
    ``epochs``, ``finetune_epochs``, ``limit``, ``seed``: override the config.
    ``verbose``: Keras verbosity (0 silent). ``log``: where progress lines go
    (default: printed).
    """
    from reds_tf.train_records import check_training_inputs

    dataset = _as_dataset(data) if data is not None else None
    cfg = _as_config(config, arrays=dataset is not None)
    checked = check_training_inputs(
        cfg,
        out_dir=out,
        epochs=epochs,
        finetune_epochs=finetune_epochs,
        limit=limit,
        seed=seed,
        base_model=model,
        force=force,
        log=log,
        threads=threads,
        data=dataset,
    )
    from reds_tf.pipeline import train_checked

    return Run(train_checked(checked, log=log, verbose=verbose))


def _as_config(config: Any, *, arrays: bool) -> Config:
    if isinstance(config, Config):
        return config
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    if not isinstance(config, Mapping):
        raise ConfigError(
            f"config must be a dict, a path to a YAML file or a Config, got {type(config).__name__}"
        )
    doc = {"name": "model", **dict(config)}
    if arrays:
        doc.setdefault("dataset", ARRAYS)
    return parse_config(doc, "config")


def _as_dataset(data: Any) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if not isinstance(data, (tuple, list)) or len(data) != 4:
        raise RedsError(
            "data must be (x_train, y_train, x_test, y_test) or a reds_tf.data.Dataset, got "
            f"{type(data).__name__}"
            + (f" of {len(data)}" if isinstance(data, (tuple, list)) else "")
        )
    from reds_tf.data.user_data import from_arrays

    return from_arrays(
        ARRAYS, *data, where="data=(x_train, y_train, x_test, y_test)", source="in-memory arrays"
    )


def _quiet(_msg: str) -> None:
    pass
