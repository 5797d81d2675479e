"""Quiet TensorFlow by default: its C++ and Python log lines look like failures.

A normal run would otherwise print ``cuInit`` errors on machines without a
GPU, oneDNN notes, ``NodeDef mentions attribute use_unbounded_threadpool``
and retracing warnings. :func:`configure` runs in the CLI before anything
imports TensorFlow:

- ``TF_CPP_MIN_LOG_LEVEL=3`` hides TensorFlow's C++ log below FATAL;
- the lines TensorFlow's shared libraries print while they load, before the
  C++ log reads that setting (``All log messages before absl::InitializeLog()
  ...``, the oneDNN note, ``Could not find cuda drivers``), are filtered from
  stderr during ``import tensorflow`` (an import hook; anything else printed
  meanwhile is passed on);
- once TensorFlow is loaded, its Python logger and absl logging show errors
  only, and Python warnings raised inside TensorFlow/Keras are ignored.

``reds --verbose`` leaves all of it on (``TF_CPP_MIN_LOG_LEVEL=0``).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from types import ModuleType
from typing import Any

# Lines the TensorFlow libraries print while they load (absl's pre-init
# notice and INFO/WARNING/ERROR lines such as "I0000 00:00:... port.cc:153]").
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IWE]\d{4} [\d:.]+ +\d+ [\w.]+:\d+\]"
    r"|To enable the following instructions: .*rebuild TensorFlow)"
)
_TF_MODULES = r"(tensorflow|tf_keras|keras|absl|tensorflow_model_optimization)(\.|$)"


def configure(verbose: bool) -> None:
    """Set up TensorFlow's logging for this process; call before it is imported."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    warnings.filterwarnings("ignore", module=_TF_MODULES)
    if "tensorflow" in sys.modules:
        _quiet_python_loggers()
    elif not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


def _quiet_python_loggers() -> None:
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    with contextlib.suppress(ImportError):
        # Lazy on purpose: runs once TensorFlow loads; `reds --help` never imports absl.
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)


@contextlib.contextmanager
def _filtered_stderr() -> Iterator[None]:
    """Send file descriptor 2 to a temp file meanwhile; then pass on to the real
    stderr every line that is not load-time noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield  # no usable stderr: nothing to filter
        return
    with tempfile.TemporaryFile() as buf:
        os.dup2(buf.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buf.seek(0)
            text = buf.read().decode("utf-8", "replace")
            kept = [ln for ln in text.splitlines(keepends=True) if not _NOISE.match(ln)]
            if kept:
                os.write(2, "".join(kept).encode("utf-8"))


class _QuietImport(importlib.abc.MetaPathFinder):
    """Wraps the first ``import tensorflow`` in :func:`_filtered_stderr`."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once; and find the real spec below
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: Any):
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with _filtered_stderr():
            self._loader.exec_module(module)
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        _quiet_python_loggers()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)
