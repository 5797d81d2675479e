"""Build hook: a wheel carries the repository's top-level ``templates/`` and
``firmware/`` folders as ``reds_tf/_assets/`` (see ``reds_tf/resources.py``),
so ``pip install .`` gives a ``reds`` that exports, builds firmware and benches
from any directory. Everything else is declared in pyproject.toml."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
ASSET_FOLDERS = ("templates", "firmware")
# Build output and per-machine state stay out of the wheel.
IGNORE = shutil.ignore_patterns(
    ".pio", ".pio-core", "reds_model", "__pycache__", "*.pyc", "*.o", "*.so"
)


class BuildPyWithAssets(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads the checkout's folders directly
        dest = Path(self.build_lib) / "reds_tf" / "_assets"
        for name in ASSET_FOLDERS:
            target = dest / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(ROOT / name, target, ignore=IGNORE)


setup(cmdclass={"build_py": BuildPyWithAssets})
