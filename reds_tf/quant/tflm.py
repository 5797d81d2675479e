"""Run the TensorFlow Lite Micro interpreter on a batch, in a subprocess.

TFLM is the reference for the generated runtime (double rounding). It can abort
the whole process (SIGABRT without a message) on degenerate models, so it
always runs in a child process; a crash becomes a :class:`RedsError`.

Child usage (internal):
``python -m reds_tf.quant.tflm MODEL IN.npy OUT.npz [T1,T2,..] [REPEATS]``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reds_tf.errors import RedsError


@dataclass
class TflmResult:
    """Outputs of one batch: ``outputs`` (N, *output_shape) int8; ``tensors`` maps
    a requested tensor index to its values (N, *shape); ``seconds_per_invoke`` is
    the mean wall time of ``invoke()`` alone."""

    outputs: np.ndarray
    tensors: dict[int, np.ndarray] = field(default_factory=dict)
    seconds_per_invoke: float = 0.0


def run_tflm(
    model: bytes | str | os.PathLike,
    inputs: np.ndarray,
    *,
    tensors: Sequence[int] = (),
    repeats: int = 0,
    timeout: float = 600.0,
) -> TflmResult:
    """Run every row of ``inputs`` (N, *input_shape) int8 through TFLM.

    ``tensors``: indices (subgraph 0) of intermediate tensors to record too
    (uses TFLM's preserve-all-tensors mode). ``repeats`` > 0 runs the batch
    that many more times for timing: ``seconds_per_invoke`` is the best pass's
    mean (0.0 without timing).
    """
    if isinstance(model, (str, os.PathLike)):
        model = Path(model).read_bytes()
    inputs = np.ascontiguousarray(inputs)
    if inputs.dtype != np.int8:
        raise RedsError(f"TFLM inputs must be int8, got {inputs.dtype}")
    with tempfile.TemporaryDirectory(prefix="reds_tflm_") as d:
        mpath, ipath, opath = (os.path.join(d, n) for n in ("m.tflite", "in.npy", "out.npz"))
        Path(mpath).write_bytes(model)
        np.save(ipath, inputs)
        cmd = [sys.executable, "-m", "reds_tf.quant.tflm", mpath, ipath, opath]
        cmd += [",".join(str(int(t)) for t in tensors), str(max(0, int(repeats)))]
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-3:]
            how = (
                f"killed by signal {-proc.returncode}"
                if proc.returncode < 0
                else f"exit {proc.returncode}"
            )
            raise RedsError(f"TFLite Micro failed on the model ({how}): {' / '.join(tail)}")
        with np.load(opath) as z:
            result = TflmResult(z["outputs"], seconds_per_invoke=float(z["seconds"]))
            for t in tensors:
                result.tensors[int(t)] = z[f"t{int(t)}"]
        return result


def _child(argv: list[str]) -> int:
    # Lazy on purpose: only the child process runs the interpreter.
    from tflite_micro.python.tflite_micro import runtime

    mpath, ipath, opath = argv[:3]
    want = [int(t) for t in argv[3].split(",")] if len(argv) > 3 and argv[3] else []
    repeats = int(argv[4]) if len(argv) > 4 else 0
    buf = Path(mpath).read_bytes()
    cfg = (
        runtime.InterpreterConfig.kPreserveAllTensors
        if want
        else runtime.InterpreterConfig.kAllocationRecording
    )
    interp = runtime.Interpreter.from_bytes(
        buf, arena_size=max(64 * 1024, 4 * len(buf)), intrepreter_config=cfg
    )
    x = np.load(ipath)
    outs = []
    recorded: dict[int, list[np.ndarray]] = {t: [] for t in want}
    for i in range(len(x)):
        interp.set_input(x[i : i + 1], 0)
        interp.invoke()
        outs.append(np.array(interp.get_output(0))[0])
        for t in want:
            recorded[t].append(np.array(interp.GetTensor(t, 0)["tensor_data"]).reshape(-1).copy())
    # Timing: invoke() alone, best pass of `repeats` extra passes.
    best = float("inf")
    for _ in range(repeats if len(x) else 0):
        total = 0.0
        for i in range(len(x)):
            interp.set_input(x[i : i + 1], 0)
            t0 = time.perf_counter()
            interp.invoke()
            total += time.perf_counter() - t0
        best = min(best, total / len(x))
    arrays = {f"t{t}": np.stack(v) for t, v in recorded.items()}
    np.savez(
        opath,
        outputs=np.stack(outs) if outs else np.zeros((0,), np.int8),
        seconds=best if repeats and len(x) else 0.0,
        **arrays,
    )
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
