"""Typed errors of the logsage library.

Every error a user can cause (a missing file, a broken log, a metric that is not
there, a bad rule parameter) is a `LogsageError` subclass whose message is one
line that names the file or value and says how to fix it. The CLI renders them
once (exit code 1, or 2 for `UsageError`); the library never prints.
"""

from __future__ import annotations


class LogsageError(Exception):
    """Base class: a problem with the input or the run (CLI exit code 1)."""

    exit_code = 1


class UsageError(LogsageError):
    """The command was called wrongly: unknown rule or parameter, bad value (exit code 2)."""

    exit_code = 2


class IngestError(LogsageError):
    """A log could not be read: missing path, unknown or broken format."""


class MetricNotFound(LogsageError):
    """The asked metric is not in the run; the message lists the available ones."""


class RuleConfigError(UsageError):
    """A rule name, parameter name or parameter value is invalid."""


class CheckpointError(LogsageError):
    """A checkpoint is missing, partial, empty or unsafe to load."""


class ExportError(LogsageError):
    """An export could not be written or failed its verification."""


class DataError(LogsageError):
    """Training or evaluation data is malformed (names the file and line)."""
