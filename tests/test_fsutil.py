"""Atomic writes follow the user's umask like ordinary ones: mkstemp/mkdtemp
make their temp files 0600 and folders 0700, which must not leak into the
artifacts (issue 15, item 9)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

# Runs in a child process so that the umask (process-wide, read once by
# fsutil) is set before anything reads it.
CHILD = r"""
import json, os, sys
from pathlib import Path
os.umask(int(sys.argv[2], 8))
from reds_tf import fsutil
out = Path(sys.argv[1])
fsutil.write_text_atomic(out / "a.txt", "a")
fsutil.write_json_atomic(out / "sub" / "b.json", {})
with fsutil.atomic_dir(out / "run") as tmp:
    (tmp / "inner").mkdir()
    fsutil.write_bytes_atomic(tmp / "inner" / "c.bin", b"c")
with fsutil.atomic_path(out / "d.keras") as tmp:
    tmp.write_text("d")
open(out / "plain.txt", "w").close()
os.mkdir(out / "plain_dir")
modes = {
    str(p.relative_to(out)): oct(p.stat().st_mode & 0o777)
    for p in sorted(out.rglob("*"))
}
print(json.dumps({"modes": modes, "umask": oct(os.umask(0o022))}))
"""


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path: Path, mask: int) -> None:
    out = tmp_path / "out"
    out.mkdir()
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(out), oct(mask)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = json.loads(r.stdout)
    assert got["umask"] == oct(mask)
    modes = got["modes"]
    files = {"a.txt", "sub/b.json", "run/inner/c.bin", "d.keras", "plain.txt"}
    dirs = {"sub", "run", "run/inner", "plain_dir"}
    assert set(modes) == files | dirs  # no temp left over
    for name in files:
        assert modes[name] == oct(0o666 & ~mask), name
    for name in dirs:
        assert modes[name] == oct(0o777 & ~mask), name


def test_umask_is_read_without_changing_it() -> None:
    from reds_tf import fsutil

    before = os.umask(0o022)
    os.umask(before)
    fsutil.umask.cache_clear()
    try:
        assert fsutil.umask() == before
        assert fsutil.file_mode() == 0o666 & ~before
        assert fsutil.dir_mode() == 0o777 & ~before
        now = os.umask(0o022)
        os.umask(now)
        assert now == before
    finally:
        fsutil.umask.cache_clear()


def test_exported_run_follows_the_umask(exported_run: Path) -> None:
    """Every file and folder of a trained and exported run, the atomically
    written ones and the .keras files alike, has the ordinary mode."""
    mask = os.umask(0o022)
    os.umask(mask)
    wrong = []
    for p in [exported_run, *exported_run.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        if p.is_dir():
            want = 0o777 & ~mask
        else:  # an executable (built tool) may add x bits, never lose r/w ones
            want = 0o666 & ~mask
            mode &= 0o666
        if mode != want:
            wrong.append(f"{p.relative_to(exported_run)}: {oct(mode)} != {oct(want)}")
    assert not wrong, wrong
    assert json.loads((exported_run / "export" / "manifest.json").read_text())
