"""reds_tf: resource-efficient deep subnetworks (REDS), from tf_keras training
to a switchable int8 runtime on microcontrollers.

The public Python API (:mod:`reds_tf.api`)::

    reds_tf.train(config=..., data=..., model=..., out=...) -> reds_tf.Run
    reds_tf.load(run_dir) -> reds_tf.Run
    reds_tf.__version__

The same steps are the ``reds`` command line (``reds --help``).
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

try:
    __version__ = metadata.version("reds_tf")
except metadata.PackageNotFoundError:  # a source checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["Run", "__version__", "load", "train"]


def __getattr__(name: str) -> Any:
    # Lazy: ``reds --help`` and the TensorFlow-free checks import this package.
    if name in ("Run", "load", "train"):
        from reds_tf import api

        return getattr(api, name)
    raise AttributeError(f"module 'reds_tf' has no attribute {name!r}")
