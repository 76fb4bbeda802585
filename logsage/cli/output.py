"""Output helpers shared by the commands: strict JSON on stdout, CSV, rich tables on a terminal.

In `--json` mode stdout holds exactly one strict JSON document (no NaN/Infinity
tokens: they become null); everything else (warnings, progress) goes to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click


def emit_json(doc: Any) -> None:
    from logsage.core.history import json_safe

    text = json.dumps(json_safe(doc), indent=2, allow_nan=False)
    try:
        click.echo(text)
        sys.stdout.flush()  # now, not at exit: a full disk or a closed pipe is reported here, in one line
    except OSError as e:
        raise stdout_failure(e) from None


def stdout_failure(err: OSError):
    """The one-line error for a stdout that cannot be written (`> /dev/full`, a closed pipe).

    Also points stdout at /dev/null so that Python's own flush at exit does not print a second error.
    """
    import os

    from logsage.core.errors import LogsageError

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor (a test runner's buffer)
        pass
    return LogsageError(f"stdout: could not write the output ({err.strerror or err}); send it to a file on a disk "
                        "with space, or to a program that reads it")


_HINTS = {
    "EACCES": "you may not write there; choose a folder you own",
    "EPERM": "you may not write there; choose a folder you own",
    "EROFS": "choose a folder on a writable filesystem",
    "ENOSPC": "free some space or choose another disk",
    "EDQUOT": "your disk quota is used up; free some space or choose another disk",
    "ENOTDIR": "a file is in the way of that folder; choose another path",
    "EEXIST": "a file is in the way; choose another path",
    "EISDIR": "that is a folder; give a file name",
    "ENOENT": "a folder on the way does not exist; create it or choose another path",
}


def describe_os_error(err: OSError) -> str:
    """One line for an OSError nobody caught: the path, what happened, what to do."""
    import errno

    name = errno.errorcode.get(err.errno or 0, "")
    where = err.filename if err.filename is not None else "(a file)"
    hint = _HINTS.get(name, "check the path and the disk, then retry")
    return f"{where}: {err.strerror or err}; {hint}"


def partial_failure(n_failed: int, n_runs: int, verb: str) -> str:
    """The one line of the multi-run rule: every multi-run command (ingest, replay, tune, report)
    reports the runs it could read and exits 1 when any PATH could not be."""
    return (f"{n_failed} of {n_runs} run(s) could not be {verb} (see above); the others are reported - "
            "exit code 1 so that scripts notice")


def warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def console(stderr: bool = False):
    from rich.console import Console

    # soft_wrap: a long run path or reason stays on one line (greppable); tables still fit the width.
    # Piped output (no terminal to measure) gets a roomy fixed width instead of rich's 80.
    tty = (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=None if tty else 140)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print one strict JSON document on stdout.")(f)


def markdown_option(f):
    return click.option("--markdown", "as_markdown", is_flag=True,
                        help="Print a compact Markdown summary on stdout (for $GITHUB_STEP_SUMMARY or a PR "
                             "comment).")(f)


def cache_options(f):
    f = click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Where parsed event files are cached (default: the user cache folder).")(f)
    f = click.option("--no-cache", is_flag=True, help="Read every log from disk, ignoring the cache.")(f)
    return f


# The names of the readers in logsage/ingest (kept here so that --help never imports
# them; tests/cli/test_cli.py checks that this list equals logsage.ingest.formats()).
FORMAT_NAMES = ("trainer-state", "tensorboard", "swift", "llamafactory", "lightning", "yolo",
                "sentence-transformers", "keras", "openai-ft", "bedrock", "dvclive", "tb-csv", "wandb", "wandb-run",
                "trackio", "mlflow", "model-card", "torchtune", "mlx-lm", "hf-console", "wide")


def format_option(f):
    return click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES), default=None,
                        help="Force a log format instead of detecting it (default: detect and report).")(f)


def _session(value: str | None) -> int | str | None:
    if value is None or value == "all":
        return value
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a session number or 'all'") from None
    if n == 0:
        raise click.BadParameter("sessions count from 1 (or -1 for the last)")
    return n


def session_option(f):
    return click.option("--session", "session", default=None, metavar="N|all",
                        callback=lambda ctx, param, value: _session(value),
                        help="For a log holding several training sessions (Keras CSVLogger append=True): read "
                             "session N (1-based, -1 = last; default the last, said in a cleanup), or 'all', each "
                             "as its own run.")(f)
