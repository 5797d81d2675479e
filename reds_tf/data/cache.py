"""Where decoded data sets and precomputed features are cached.

``$REDS_CACHE_DIR`` if set, else ``~/.cache/reds_tf``. Every cache file name
carries a key derived from its source (path, size, modification time) and the
options that shaped it, so a changed source or option never reads stale data.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from reds_tf.fsutil import write_bytes_atomic
from reds_tf.resources import cache_dir


def cache_root() -> Path:
    """reds_tf's cache folder (``reds_tf.resources.cache_dir``)."""
    return cache_dir()


def cache_key(obj: Any, n: int = 16) -> str:
    """A short stable hash of a JSON-able description."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:n]


def file_signature(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime": int(st.st_mtime)}


def save_npz_atomic(path: Path, **arrays: np.ndarray) -> Path:
    """Write an uncompressed .npz (fast to load) all-or-nothing."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_bytes_atomic(path, buf.getvalue())


def load_npz(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a cache file, or None if it is missing or unreadable (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None
