"""The bad inputs and faults of RELIABILITY.md, run as a user would: every case
of the ``tests/reliability_*.py`` modules is a ``reds`` command in a fresh
subprocess whose exit code and message are checked, and whose output must not
hold a Python traceback. RELIABILITY.md is generated from those cases and their
actual outcomes; when it differs this test fails. Regenerate with

    REDS_UPDATE_RELIABILITY=1 .venv/bin/python -m pytest tests/test_reliability.py

Each module defines ``CASES``, a list of dicts:

- ``area``: the table the case goes into (e.g. "train/config", "monitor");
- ``input``: the bad input or fault, in a few words;
- ``argv``: the ``reds`` arguments, with placeholders ``{tmp}`` (a fresh
  folder per case), ``{run}`` (a fresh copy of the session's exported run, see
  tests/conftest.py) and ``{repo}`` (the repository root);
- ``setup`` (optional): the name of a function of the module called with
  ``(tmp, run)`` (or ``(tmp)``) before the command; what it returns is closed
  after the command if it has ``close()`` (e.g. a fake serial device);
- ``stdin`` (optional): text or bytes for the command's standard input;
- ``exit``: the expected exit code; ``message``: a substring expected in
  stderr or stdout (placeholders allowed).

and may define ``FAULTS``: rows verified by other tests, listed in the document
as they are: ``area``, ``input``, ``outcome``, ``test`` ("tests/x.py::name").
A module that does not exist yet is skipped.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "RELIABILITY.md"
# Train first (the pipeline's order), then export, then the monitor; any
# other module after them, by name.
MODULE_ORDER = ["reliability_train", "reliability_export", "reliability_monitor"]
CASE_KEYS = {"area", "input", "argv", "exit", "message"}
OPTIONAL_KEYS = {"setup", "stdin", "timeout"}
FAULT_KEYS = {"area", "input", "outcome", "test"}
TIMEOUT = 120.0  # seconds per case, unless the case says otherwise
WORKERS = max(2, min(6, (os.cpu_count() or 2) * 2))
TRACEBACK = "Traceback (most recent call last)"
# A digest: 16 or more hex digits with at least one letter and one digit.
HEX_DIGEST = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{16,}\b")
# Run copies leave out what no case reads and what is large.
RUN_IGNORE = shutil.ignore_patterns("base.keras", "permuted.keras", "firmware", ".bench")


def _modules() -> list[Any]:
    names = {p.stem for p in Path(__file__).parent.glob("reliability_*.py")}
    ordered = [n for n in MODULE_ORDER if n in names] + sorted(names - set(MODULE_ORDER))
    return [importlib.import_module(n) for n in ordered]


MODULES = _modules()


@dataclass
class Case:
    module: Any
    spec: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.spec['area']}: {self.spec['input']}"

    @property
    def needs_run(self) -> bool:
        return any("{run}" in a for a in self.spec["argv"]) or "{run}" in self.spec["message"]


@dataclass
class Outcome:
    exit: int | None  # None: timed out
    stdout: str
    stderr: str
    seconds: float
    tmp: Path
    run: Path | None

    def normalise(self, text: str) -> str:
        """Machine-specific parts replaced by placeholders: the case's folders,
        the repository, the home folder; hex digests of 16+ digits."""
        if self.run is not None:
            text = text.replace(str(self.run), "{run}")
        text = text.replace(str(self.tmp), "{tmp}").replace(str(REPO), "{repo}")
        text = text.replace(str(Path.home()), "~")
        return HEX_DIGEST.sub("<hash>", text)


CASES = [Case(m, spec) for m in MODULES for spec in getattr(m, "CASES", [])]
FAULTS = [(m, f) for m in MODULES for f in getattr(m, "FAULTS", [])]


def _fill(text: str, tmp: Path, run: Path | None) -> str:
    text = text.replace("{tmp}", str(tmp)).replace("{repo}", str(REPO))
    if run is not None:
        text = text.replace("{run}", str(run))
    return text


def _run_case(case: Case, base: Path, index: int, exported_run: Path | None) -> Outcome:
    spec = case.spec
    folder = base / f"case{index:03d}"
    tmp = folder / "tmp"
    tmp.mkdir(parents=True)
    run = None
    if exported_run is not None:
        run = folder / exported_run.name
        shutil.copytree(exported_run, run, ignore=RUN_IGNORE)
    resource = None
    if spec.get("setup"):
        fn = getattr(case.module, spec["setup"])
        nargs = len(inspect.signature(fn).parameters)
        resource = fn(tmp, run) if nargs >= 2 else fn(tmp)
    stdin = spec.get("stdin", b"")
    if isinstance(stdin, str):
        stdin = stdin.encode("utf-8")
    argv = [_fill(a, tmp, run) for a in spec["argv"]]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "reds_tf", *argv],
            input=stdin,
            capture_output=True,
            cwd=tmp,
            env=env,
            timeout=spec.get("timeout", TIMEOUT),
        )
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = None, e.stdout or b"", e.stderr or b""
    finally:
        if resource is not None and hasattr(resource, "close"):
            resource.close()
    return Outcome(
        code,
        out.decode("utf-8", "replace"),
        err.decode("utf-8", "replace"),
        time.monotonic() - t0,
        tmp,
        run,
    )


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest) -> Iterator[dict[str, Outcome]]:
    """Every case run once, in parallel (each subprocess mostly waits for its
    Python start-up)."""
    exported = request.getfixturevalue("exported_run") if any(c.needs_run for c in CASES) else None
    base = Path(tempfile.mkdtemp(prefix="reds_reliability_"))
    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            futures = {
                c.id: pool.submit(_run_case, c, base, i, exported if c.needs_run else None)
                for i, c in enumerate(CASES)
            }
            yield {cid: f.result() for cid, f in futures.items()}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_case_tables_are_well_formed() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "two cases with the same area and input"
    for c in CASES:
        keys = set(c.spec)
        assert CASE_KEYS <= keys <= CASE_KEYS | OPTIONAL_KEYS, (c.module.__name__, c.spec)
        assert isinstance(c.spec["argv"], list) and all(isinstance(a, str) for a in c.spec["argv"])
        assert isinstance(c.spec["exit"], int) and c.spec["message"]
        if c.spec.get("setup"):
            assert callable(getattr(c.module, c.spec["setup"], None)), c.spec["setup"]
    for m, f in FAULTS:
        assert set(f) == FAULT_KEYS, (m.__name__, f)
        path, _, name = f["test"].partition("::")
        assert (REPO / path).is_file() and name, f["test"]
        assert re.search(
            rf"^def {re.escape(name.split('[')[0])}\(", (REPO / path).read_text(), re.M
        ), f"{f['test']} does not exist"


def _message_line(case: Case, o: Outcome) -> str | None:
    """The first output line holding the expected message (stderr first)."""
    want = _fill(case.spec["message"], o.tmp, o.run)
    for line in (o.stderr + "\n" + o.stdout).splitlines():
        if want in line:
            return line.strip()
    return None


def _check(case: Case, o: Outcome) -> list[str]:
    problems = []
    if o.exit is None:
        problems.append(f"timed out after {o.seconds:.0f} s")
    elif o.exit != case.spec["exit"]:
        problems.append(f"exit {o.exit}, expected {case.spec['exit']}")
    if _message_line(case, o) is None:
        problems.append(f"no line holds {case.spec['message']!r}")
    if TRACEBACK in o.stderr or TRACEBACK in o.stdout:
        problems.append("a Python traceback")
    return problems


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, outcomes: dict[str, Outcome]) -> None:
    o = outcomes[case.id]
    problems = _check(case, o)
    assert not problems, (
        f"{case.module.__name__}: {case.id}: {'; '.join(problems)}\n"
        f"argv: {case.spec['argv']}\n--- stderr ---\n{o.stderr[-3000:]}\n"
        f"--- stdout ---\n{o.stdout[-2000:]}"
    )


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _code(text: str) -> str:
    text = _cell(text)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render(outcomes: dict[str, Outcome]) -> str:
    """RELIABILITY.md from the case tables and their outcomes."""
    areas: dict[str, dict[str, list]] = {}
    for c in CASES:
        areas.setdefault(c.spec["area"], {"cases": [], "faults": []})["cases"].append(c)
    for _, f in FAULTS:
        areas.setdefault(f["area"], {"cases": [], "faults": []})["faults"].append(f)
    n_cases, n_faults = len(CASES), len(FAULTS)
    lines = [
        "# Reliability: bad inputs and faults, and what happens",
        "",
        "Generated by `tests/test_reliability.py` from the case tables in",
        "`tests/reliability_*.py`; do not edit. Every case below is run as a `reds`",
        "command in a fresh process by the test suite, which checks the exit code,",
        "the message and that no Python traceback appears; the test fails when this",
        "file no longer matches, and",
        "`REDS_UPDATE_RELIABILITY=1 .venv/bin/python -m pytest tests/test_reliability.py`",
        "writes it again. `{tmp}` is an empty folder, `{run}` a copy of a trained and",
        "exported run (`configs/fmnist_dnn.yaml`, briefly trained), `{repo}` the",
        "repository; `<hash>` stands for a digest. Exit 2 is an input error: one",
        "line on stderr, nothing written.",
        "",
        f"{n_cases} commands run, {n_faults} faults verified by other tests.",
    ]
    for area, rows in areas.items():
        lines += ["", f"## {area}", ""]
        if rows["cases"]:
            lines += ["| input | command | exit | message |", "|---|---|---|---|"]
            for c in rows["cases"]:
                o = outcomes[c.id]
                msg = _message_line(c, o) or "(missing)"
                msg = o.normalise(msg)
                cmd = "reds " + " ".join(c.spec["argv"])
                if "stdin" in c.spec:
                    cmd += " < " + repr(c.spec["stdin"])
                lines.append(
                    f"| {_cell(c.spec['input'])} | {_code(cmd)} | {o.exit} | {_code(msg)} |"
                )
        if rows["faults"]:
            if rows["cases"]:
                lines += ["", "Verified by other tests:", ""]
            lines += ["| fault | outcome | test |", "|---|---|---|"]
            for f in rows["faults"]:
                lines.append(f"| {_cell(f['input'])} | {_cell(f['outcome'])} | `{f['test']}` |")
    return "\n".join(lines) + "\n"


def test_reliability_md_is_current(outcomes: dict[str, Outcome]) -> None:
    failed = [c.id for c in CASES if _check(c, outcomes[c.id])]
    if failed:
        pytest.fail(f"{len(failed)} case(s) fail (see test_case); not comparing RELIABILITY.md")
    text = render(outcomes)
    if os.environ.get("REDS_UPDATE_RELIABILITY"):
        DOC.write_text(text, encoding="utf-8")
    hint = (
        "RELIABILITY.md is out of date; regenerate it with "
        "REDS_UPDATE_RELIABILITY=1 .venv/bin/python -m pytest tests/test_reliability.py"
    )
    assert DOC.is_file(), hint
    assert DOC.read_text(encoding="utf-8") == text, hint
