"""Where reds_tf's non-Python files live.

In a checkout (or an editable install) they are the repository's top-level
folders ``templates/`` and ``firmware/``; a wheel carries copies of both under
``reds_tf/_assets/`` (setup.py maps them in at build time). The fixed kernel
sources and the QEMU plugin source are package data in either case. Writable
state (PlatformIO's core folder, the built QEMU plugin) goes to the checkout's
own ignored folders or, for an installed wheel, to the user's cache folder.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "_assets"
# A checkout: the package sits next to pyproject.toml and the asset folders.
IN_CHECKOUT = (PACKAGE_DIR.parent / "pyproject.toml").is_file() and (
    PACKAGE_DIR.parent / "firmware"
).is_dir()
_ROOT = PACKAGE_DIR.parent if IN_CHECKOUT else ASSETS_DIR

TEMPLATES_DIR = _ROOT / "templates"  # Jinja2 templates of the model-specific C++
FIRMWARE_DIR = _ROOT / "firmware"  # PlatformIO project, board layers, bench harness
KERNELS_DIR = PACKAGE_DIR / "kernels"  # fixed C++ kernel sources
QEMU_PLUGIN_SOURCE = PACKAGE_DIR / "qemu_plugin" / "icount.c"


def cache_dir() -> Path:
    """reds_tf's cache folder: ``$REDS_CACHE_DIR``, else ``$XDG_CACHE_HOME/reds_tf``
    (``~/.cache/reds_tf``)."""
    root = os.environ.get("REDS_CACHE_DIR")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(xdg) / "reds_tf"


def platformio_core_dir() -> Path:
    """PlatformIO's core folder (its packages and platforms): inside the
    checkout's firmware folder (ignored by git, removed by ``make clean``), or
    in the cache folder when running from an installed wheel, whose files may
    be read-only."""
    return FIRMWARE_DIR / ".pio-core" if IN_CHECKOUT else cache_dir() / "pio-core"
