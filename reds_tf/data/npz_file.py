"""``dataset: npz``: arrays saved with NumPy in one ``.npz`` file.

Config::

    dataset: npz
    data: {path: my_data.npz}

The file holds ``x_train``, ``y_train``, ``x_test``, ``y_test`` and optionally
``class_names`` (an array of strings, one per class in label order), e.g.
``np.savez("my_data.npz", x_train=x, y_train=y, x_test=xt, y_test=yt,
class_names=np.array(["cat", "dog"]))``. It is read with
``allow_pickle=False``: object arrays (lists of Python objects, ragged lists)
are refused.

- Inputs ``x_*``: ``(N, ...)``, kept in the shape given: ``(N, features)`` for
  a dense model, ``(N, H, W)`` or ``(N, H, W, C)`` for images; the training
  pipeline reshapes inputs to the model's input when only the shape differs
  and the element count matches. uint8 is scaled to [0, 1] by 1/255; float is
  used as given (as float32; NaN/inf refused); other dtypes (int16, int32...)
  are refused: convert them to uint8 or float.
- Labels ``y_*``: integer class indices ``0 .. C-1`` of shape ``(N,)`` (or
  whole-valued floats), or one-hot ``(N, C)`` (the argmax is the label).
  Every class needs at least two training samples and one test sample.
"""

from __future__ import annotations

import zipfile

import numpy as np

from reds_tf.data import Dataset, register
from reds_tf.data.user_data import from_arrays, user_path
from reds_tf.errors import DataError

ARRAYS = ("x_train", "y_train", "x_test", "y_test")
SAVE_HINT = "save it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"


def read_npz(path: object) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of an npz file (``ARRAYS`` and optional ``class_names``)
    and its absolute path, with every read problem as a one-line DataError."""
    p = user_path(path, "npz")
    if not p.is_file():
        what = "is a folder" if p.is_dir() else "does not exist"
        raise DataError(f"npz file {p} {what}; set data.path to your .npz file")
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise DataError(f"cannot read {p} ({e}); check its permissions") from e
    if magic == b"\x93NUMPY":
        raise DataError(f"{p} holds a single array (.npy), not named arrays; {SAVE_HINT}")
    if not zipfile.is_zipfile(p):
        raise DataError(f"{p} is not an .npz file (not a zip archive); {SAVE_HINT}")
    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{p} is not a readable .npz file ({e}); {SAVE_HINT}") from e
    with z:
        missing = [k for k in ARRAYS if k not in z.files]
        if missing:
            raise DataError(
                f"{p} lacks the array(s) {', '.join(missing)} (it has: "
                f"{', '.join(z.files) or 'none'}); {SAVE_HINT}"
            )
        arrays = {}
        for k in [*ARRAYS, "class_names"]:
            if k not in z.files:
                continue
            try:
                arrays[k] = z[k]
            except ValueError as e:  # object arrays need pickle, which is refused
                raise DataError(
                    f"{p}: array {k} cannot be read without pickle ({e}); save it as a "
                    "numeric (or, for class_names, string) array, e.g. np.asarray(..., "
                    "np.float32)"
                ) from e
            except (OSError, EOFError, zipfile.BadZipFile) as e:
                raise DataError(f"{p}: array {k} is corrupt ({e}); {SAVE_HINT}") from e
    return arrays, str(p)


@register("npz")
def load(path: str | None = None) -> Dataset:
    """Arrays from one .npz file (module doc: names, scaling, labels)."""
    arrays, where = read_npz(path)
    names = arrays.get("class_names")
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(
                f"{where}: class_names must be a 1-D array of strings, got dtype "
                f"{names.dtype} shape {names.shape}; e.g. np.array(['cat', 'dog'])"
            )
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in names.tolist()]
    kind = "uint8 scaled by 1/255" if arrays["x_train"].dtype == np.uint8 else "as given"
    return from_arrays(
        "npz",
        arrays["x_train"],
        arrays["y_train"],
        arrays["x_test"],
        arrays["y_test"],
        where=where,
        source=f"{where} (npz, inputs {kind})",
        class_names=names,
    )
