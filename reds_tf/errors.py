"""User-facing errors.

Anything a user can cause (a bad config, a missing file, an infeasible budget)
raises :class:`RedsError`; the CLI prints its message and exits with status 2
instead of showing a traceback. Programming errors stay ordinary exceptions.
"""

from __future__ import annotations


class RedsError(Exception):
    """An error caused by user input, with a message that says how to fix it."""


class ConfigError(RedsError):
    """The YAML config is malformed or has an invalid value."""


class DataError(RedsError):
    """A data set cannot be found or read."""


class InfeasibleBudgetError(RedsError):
    """A budget is below the smallest achievable submodel."""


class RunDirError(RedsError):
    """A run directory is missing, incomplete or corrupt."""


class FirmwareError(RedsError):
    """A firmware build, upload or serve step cannot run (missing tool, bad board...)."""


class OutputError(RedsError):
    """An output location cannot be written (read-only, missing folder, disk full...)."""
