"""Test-only fault injection: ``REDS_FAULT_AT=<point>`` kills the process at a
named point with SIGKILL (no clean-up handlers run, like ``kill -9`` or a power
cut), so tests can check that an interrupted command leaves a consistent run
directory and that the next run recovers.

Points are ``"<command>:<where>"``, e.g. ``export:submodel`` (see the
``fault_point`` calls in the modules). Unset (the normal case) this is one
environment lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "REDS_FAULT_AT"


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL when ``$REDS_FAULT_AT`` equals ``name``."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
