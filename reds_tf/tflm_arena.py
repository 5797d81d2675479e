"""TensorFlow Lite Micro's activation arena for a ``.tflite``: the reference
that ``reds bench`` puts beside our own arena (``manifest.json``'s
``arena_bytes``).

Which number, and why
---------------------
TFLM places everything in one caller-supplied arena that its
``SingleArenaBufferAllocator`` fills from both ends:

- the **head** (the non-persistent section, from the bottom): every activation
  tensor (model input, intermediate tensors, output) at the offsets its greedy
  memory planner chose, plus the scratch buffers kernels request in
  ``Prepare``, each aligned to 16 bytes. It is the peak of what is live at once
  during ``Invoke()``, the same quantity as our arena;
- the **tail** (the persistent section, from the top): ``TfLiteEvalTensor``
  structs, quantisation parameters, each operator's ``OpData``, node and
  registration structs, the planner's own plan: bookkeeping of the interpreter
  (on the device, our runtime keeps the equivalent in flash as ``const`` tables).

:func:`tflm_arena_bytes` returns the **head**: the "Arena allocation head N
bytes" line that ``Interpreter.print_allocations()`` (the
``RecordingMicroAllocator`` report) prints. :func:`tflm_allocations` returns all
three of its lines (head, tail, total = head + tail): a TFLM application has to
give its arena at least ``total`` bytes.

How it is read
--------------
The tflite-micro Python package (``tflite_micro.python.tflite_micro.runtime``)
exposes no allocation numbers to Python: ``print_allocations()`` prints them
from C++ (to the process's stderr in the pinned nightly; stdout in others). The
interpreter therefore runs in a child process (``python -m reds_tf.tflm_arena
MODEL...``) whose stdout is joined to its stderr before TFLM loads; the parent
parses the child's output. A child also keeps an interpreter abort (TFLM can
SIGABRT on degenerate models, see ``reds_tf.quant.tflm``) out of the caller.
The arena given to the interpreter (:data:`ARENA_BYTES`, doubled on failure)
only has to be large enough: the numbers do not depend on it (checked: 1 and 8
MiB give the same report). ``print_allocations()`` runs after one ``invoke()``
on a zero input, as its documentation asks; the head is fixed when the
interpreter allocates its tensors and does not change with ``invoke()``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from reds_tf.errors import RedsError

ARENA_BYTES = 4 * 1024 * 1024  # first arena size tried; doubled up to MAX_ARENA_BYTES
MAX_ARENA_BYTES = 256 * 1024 * 1024
MARKER = "reds_tflm_arena model"  # the child's line before each model's report

_LINE = re.compile(r"Arena allocation (head|tail|total) (\d+) bytes")

# TFLite TensorType -> bytes per element (schema.fbs).
_TYPE_BYTES = {0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 8: 8, 9: 1, 10: 8, 11: 16, 12: 8}


def tflm_allocations(models: Sequence[bytes], timeout: float = 600.0) -> list[dict[str, int]]:
    """TFLM's arena report for every model in ``models`` (``.tflite`` bytes):
    one dict per model with ``head`` (activations and kernel scratch buffers),
    ``tail`` (persistent interpreter data) and ``total``; one child process for
    all of them. A RedsError when TFLM cannot load a model or prints no report."""
    if not models:
        return []
    with tempfile.TemporaryDirectory(prefix="reds_tflm_arena_") as d:
        paths = []
        for i, m in enumerate(models):
            p = Path(d) / f"m{i}.tflite"
            p.write_bytes(bytes(m))
            paths.append(str(p))
        cmd = [sys.executable, "-m", "reds_tf.tflm_arena", *paths]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        try:
            proc = subprocess.run(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                env=env,
            )
        except subprocess.TimeoutExpired:
            raise RedsError(
                f"TFLite Micro's arena report timed out after {timeout:.0f} s"
            ) from None
    out = proc.stdout or ""
    if proc.returncode != 0:
        tail = " / ".join(out.strip().splitlines()[-3:])
        how = (
            f"killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exit {proc.returncode}"
        )
        raise RedsError(f"TFLite Micro could not report its arena ({how}): {tail}")
    return parse_report(out, len(models))


def parse_report(text: str, count: int) -> list[dict[str, int]]:
    """Per model, head/tail/total from the child's output: ``MARKER i`` lines,
    each followed by that model's ``print_allocations()`` lines."""
    found: list[dict[str, int]] = []
    for line in text.splitlines():
        if line.startswith(MARKER):
            found.append({})
            continue
        m = _LINE.search(line)
        if m and found and m.group(1) not in found[-1]:
            found[-1][m.group(1)] = int(m.group(2))
    if len(found) != count or any(set(f) != {"head", "tail", "total"} for f in found):
        raise RedsError(
            "TFLite Micro's print_allocations() report was not found for every model: "
            + " / ".join(text.strip().splitlines()[-3:])
        )
    return found


def tflm_arena_bytes(tflite_bytes: bytes) -> int:
    """TensorFlow Lite Micro's activation arena for one ``.tflite``: the "head"
    of its ``print_allocations()`` report (see the module docstring)."""
    return tflm_allocations([tflite_bytes])[0]["head"]


def activation_tensor_bytes(tflite_bytes: bytes) -> list[int]:
    """Bytes of every activation tensor (no constant data) of subgraph 0, in
    tensor order: what TFLM's planner places in the head."""
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_bytes), 0)
    sizes = []
    for t in model.subgraphs[0].tensors:
        buf = model.buffers[t.buffer] if 0 <= t.buffer < len(model.buffers) else None
        has_data = buf is not None and (
            (buf.data is not None and len(buf.data) > 0) or (buf.size or 0) > 0
        )
        if has_data or t.isVariable:
            continue
        n = 1
        for dim in t.shape if t.shape is not None else []:
            n *= max(int(dim), 1)
        sizes.append(n * _TYPE_BYTES.get(int(t.type), 1))
    return sizes


def _child(paths: list[str]) -> int:
    # stdout joins stderr (the parent reads one stream) before TFLM prints.
    sys.stdout.flush()
    os.dup2(2, 1)
    import ctypes

    import numpy as np
    from tflite_micro.python.tflite_micro import runtime

    libc = ctypes.CDLL(None)
    for i, path in enumerate(paths):
        buf = Path(path).read_bytes()
        size, interp = ARENA_BYTES, None
        while interp is None:
            try:
                interp = runtime.Interpreter.from_bytes(buf, arena_size=max(size, 4 * len(buf)))
            except (RuntimeError, MemoryError, ValueError):
                if size >= MAX_ARENA_BYTES:
                    raise
                size *= 2
        d = interp.get_input_details(0)
        interp.set_input(np.zeros(d["shape"], d["dtype"]), 0)
        interp.invoke()
        sys.stderr.write(f"{MARKER} {i}\n")
        sys.stderr.flush()
        interp.print_allocations()
        libc.fflush(None)  # C stdio buffers, whichever stream TFLM used
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
