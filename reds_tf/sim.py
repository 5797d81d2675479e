"""Host simulation of the generated runtime: compile ``export/src`` into a shared
library with the host g++ and drive it through ctypes.

The library is cached under ``$REDS_CACHE_DIR`` (default
``~/.cache/reds_tf/sim``) by a hash of the sources and compiler flags, so a
re-run loads instantly and two different exports never collide.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from reds_tf import rundir
from reds_tf.errors import OutputError, RedsError, RunDirError
from reds_tf.fsutil import write_bytes_atomic
from reds_tf.quant import numerics
from reds_tf.resources import cache_dir as reds_cache_dir

# -O3: GCC 12 vectorises the reference kernel's 16-lane tile only at -O3 (4x faster);
# -march=native adds the host's wider integer SIMD (about 2x more). The library is
# cached per CPU (see _host_id), and a compiler without -march=native falls back.
CXX_FLAGS = ["-O3", "-std=c++11", "-Wall", "-Wextra", "-fPIC", "-shared"]
NATIVE_FLAGS = ["-march=native"]


def _host_id() -> str:
    """CPU model and feature flags, so a cache shared between machines stays correct."""
    ident = platform.machine() + platform.processor()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    ident += line
                if line.strip() == "":
                    break  # the first CPU is enough
    except OSError:
        pass
    return ident


def cache_dir() -> Path:
    """Folder of the compiled runtimes (``<reds_tf cache>/sim``)."""
    return reds_cache_dir() / "sim"


def build_library(
    src_dir: str | os.PathLike, *, cxx: str | None = None, native: bool = True
) -> Path:
    """Compile every ``*.cpp`` in ``src_dir`` into a cached shared library; returns its path.

    ``native=False`` builds for the generic target (no ``-march=native``)."""
    src = Path(src_dir)
    cpps = sorted(src.glob("*.cpp"))
    if not cpps or not (src / "reds_model.h").is_file():
        raise RunDirError(f"{src} holds no generated runtime; run `reds export` first")
    cxx = cxx or os.environ.get("CXX") or "g++"
    if shutil.which(cxx) is None:
        raise RedsError(f"C++ compiler '{cxx}' not found; install g++ or set CXX")
    extra = NATIVE_FLAGS if native else []
    h = hashlib.sha256(" ".join([cxx, *CXX_FLAGS, *extra, _host_id()]).encode())
    for p in sorted(src.glob("*.[ch]*")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    lib = cache_dir() / f"reds_{h.hexdigest()[:20]}.so"
    if lib.is_file():
        return lib
    with tempfile.TemporaryDirectory(prefix="reds_sim_") as d:
        out = Path(d) / "lib.so"
        base = [cxx, *CXX_FLAGS, "-I", str(src), *map(str, cpps), "-o", str(out)]
        proc = subprocess.run(base[:1] + extra + base[1:], capture_output=True, text=True)
        if proc.returncode != 0 and extra:  # e.g. a compiler without -march=native
            proc = subprocess.run(base, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RedsError(f"compiling {src} failed:\n{proc.stderr.strip()}")
        try:
            write_bytes_atomic(lib, out.read_bytes())
        except OSError as e:
            raise OutputError(
                f"cannot write the compiled runtime to {e.filename or lib}: "
                f"{e.strerror or e}; set REDS_CACHE_DIR to a writable folder"
            ) from e
    return lib


class Runtime:
    """The generated runtime loaded through ctypes.

    ``predict(x, k)``: x (N, *input_shape) int8 -> (N, output_size) int8, one
    ``reds_invoke`` per row with submodel k active.
    """

    def __init__(
        self,
        src_dir: str | os.PathLike,
        input_shape: tuple[int, ...] | None = None,
        *,
        native: bool = True,
    ):
        self.path = build_library(src_dir, native=native)
        lib = ctypes.CDLL(str(self.path))
        i8p = ctypes.POINTER(ctypes.c_int8)
        sigs = {
            "reds_num_submodels": ([], ctypes.c_int),
            "reds_set_submodel": ([ctypes.c_int], ctypes.c_int),
            "reds_get_submodel": ([], ctypes.c_int),
            "reds_invoke": ([i8p, i8p], ctypes.c_int),
            "reds_model_name": ([], ctypes.c_char_p),
            "reds_input_size": ([], ctypes.c_int),
            "reds_output_size": ([], ctypes.c_int),
            "reds_input_scale": ([], ctypes.c_float),
            "reds_input_zero_point": ([], ctypes.c_int),
            "reds_macs": ([ctypes.c_int], ctypes.c_uint32),
            "reds_weight_bytes": ([], ctypes.c_uint32),
            "reds_arena_bytes": ([], ctypes.c_uint32),
        }
        for name, (args, res) in sigs.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        self._lib = lib
        self.name = lib.reds_model_name().decode()
        self.num_submodels = lib.reds_num_submodels()
        self.input_size = lib.reds_input_size()
        self.output_size = lib.reds_output_size()
        self.input_scale = float(lib.reds_input_scale())
        self.input_zero_point = int(lib.reds_input_zero_point())
        self.weight_bytes = int(lib.reds_weight_bytes())
        self.arena_bytes = int(lib.reds_arena_bytes())
        # per submodel (runtimes exported before per-submodel plans lack it)
        self.submodel_arena_bytes: list[int] | None = None
        if hasattr(lib, "reds_submodel_arena_bytes"):
            fn = lib.reds_submodel_arena_bytes
            fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_uint32
            self.submodel_arena_bytes = [int(fn(k)) for k in range(self.num_submodels)]
        self.input_shape = tuple(input_shape) if input_shape else (self.input_size,)
        if int(np.prod(self.input_shape)) != self.input_size:
            raise RunDirError(f"input shape {self.input_shape} != runtime size {self.input_size}")

    def macs(self, k: int) -> int:
        return int(self._lib.reds_macs(k))

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Float inputs ``(N, *input_shape)`` as the int8 the runtime takes (the
        model's input scale and zero point, TFLite's rounding)."""
        return numerics.quantize(x, self.input_scale, self.input_zero_point)

    def set_submodel(self, k: int) -> None:
        if self._lib.reds_set_submodel(int(k)) != 0:
            raise RedsError(f"submodel {k} out of range 0..{self.num_submodels - 1}")

    def get_submodel(self) -> int:
        return int(self._lib.reds_get_submodel())

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise RedsError(
                f"inputs must be int8 (quantised with scale {self.input_scale:g}, zero point "
                f"{self.input_zero_point}), got {x.dtype}"
            )
        if x.ndim < 1 or tuple(x.shape[1:]) != self.input_shape:
            raise RedsError(
                f"inputs must have shape (N, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}"
            )
        return np.ascontiguousarray(x.reshape(len(x), self.input_size))

    def predict(self, x: np.ndarray, k: int | None = None) -> np.ndarray:
        """Outputs of submodel ``k`` (default: the active one) for every row of x."""
        flat = self._check(x)
        if k is not None:
            self.set_submodel(k)
        out = np.zeros((len(flat), self.output_size), np.int8)
        i8p = ctypes.POINTER(ctypes.c_int8)
        base_in, base_out = flat.ctypes.data, out.ctypes.data
        invoke = self._lib.reds_invoke
        for i in range(len(flat)):
            rc = invoke(
                ctypes.cast(base_in + i * self.input_size, i8p),
                ctypes.cast(base_out + i * self.output_size, i8p),
            )
            if rc != 0:
                raise RuntimeError(f"reds_invoke returned {rc}")
        return out

    def seconds_per_inference(self, x: np.ndarray, k: int, repeats: int = 3) -> float:
        """Wall time of one ``reds_invoke`` call (ctypes call included): the best
        over ``repeats`` passes of the mean over the rows of x (robust to load)."""
        flat = self._check(x)
        self.set_submodel(k)
        out = np.zeros(self.output_size, np.int8)
        i8p = ctypes.POINTER(ctypes.c_int8)
        pin = [ctypes.cast(flat.ctypes.data + i * self.input_size, i8p) for i in range(len(flat))]
        pout = ctypes.cast(out.ctypes.data, i8p)
        invoke = self._lib.reds_invoke
        best = float("inf")
        for _ in range(max(1, repeats)):
            total = 0.0
            for p in pin:
                t0 = time.perf_counter()
                invoke(p, pout)
                total += time.perf_counter() - t0
            best = min(best, total / max(1, len(pin)))
        return best


def load_manifest(run_dir: str | os.PathLike) -> dict:
    """``export/manifest.json``, checked (:func:`reds_tf.rundir.load_manifest`)."""
    return rundir.load_manifest(run_dir)


def load_runtime(
    run_dir: str | os.PathLike, *, native: bool = True, trust: bool = False
) -> Runtime:
    """Compile (cached) and load the runtime of an exported run.

    ``export/src`` must hash to the manifest's ``sources_sha256`` (what
    ``reds export`` generated), since loading it runs its code in this process;
    ``trust=True`` skips that check (:func:`reds_tf.rundir.verify_sources`)."""
    manifest = load_manifest(run_dir)
    src = rundir.verify_sources(run_dir, manifest, trust=trust)
    return Runtime(src, tuple(manifest["input_shape"]), native=native)


def run_simulate(
    run_dir: str | os.PathLike,
    *,
    submodel: int,
    inputs: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    limit: int | None = None,
    trust: bool = False,
) -> np.ndarray | float:
    """``reds simulate``: map int8 inputs to int8 outputs, or report test accuracy.

    With ``inputs`` (.npy, int8, (N, *input_shape)): returns (N, classes) int8
    outputs, saved to ``output`` if given, else printed as predicted classes.
    Without: prints and returns submodel ``submodel``'s int8 test accuracy.

    Everything is checked before the runtime is compiled: the manifest, the
    submodel index, ``inputs`` (header first: dtype, shape, size) and
    ``output``'s folder, which must exist (none is created). ``trust``: compile
    ``export/src`` even if it differs from what the export generated.
    """
    manifest = load_manifest(run_dir)
    num = len(manifest["submodels"])
    if not 0 <= submodel < num:
        raise RedsError(f"--submodel must be in 0..{num - 1}, got {submodel}")
    if output is not None and inputs is None:
        raise RedsError("--output needs --inputs")
    if limit is not None and limit < 1:
        raise RedsError(f"--limit must be positive, got {limit}")
    if output is not None:
        rundir.check_output_file(output, "--output")
    x = None
    if inputs is not None:
        hint = (
            f" (quantised with scale {manifest['input_scale']:g}, zero point "
            f"{manifest['input_zero_point']})"
        )
        x = rundir.load_inputs(inputs, manifest["input_shape"], hint=hint)
    rt = load_runtime(run_dir, trust=trust)
    if x is not None:
        y = rt.predict(x, submodel)
        if output is not None:
            buf = _npy_bytes(y)
            with rundir.output_errors(str(output)):
                write_bytes_atomic(output, buf)
            print(f"simulate: submodel {submodel}: {len(y)} outputs -> {output}")
        else:
            for i, row in enumerate(y):
                print(f"{i}: class {int(np.argmax(row))}  logits {row.tolist()}")
        return y
    xq, labels = rundir.quantized_test_set(run_dir, manifest, limit)
    n = len(xq)
    y = rt.predict(xq, submodel)
    acc = float(np.mean(np.argmax(y, axis=1) == labels))
    print(
        f"simulate: {rt.name} submodel {submodel} ({rt.macs(submodel):,} MACs): "
        f"int8 test accuracy {acc:.4f} on {n} samples"
    )
    return acc


def _npy_bytes(a: np.ndarray) -> bytes:
    bio = io.BytesIO()
    np.save(bio, a, allow_pickle=False)
    return bio.getvalue()
