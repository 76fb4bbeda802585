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

    click.echo(json.dumps(json_safe(doc), indent=2, allow_nan=False))


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


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print one strict JSON document on stdout.")(f)


def cache_options(f):
    f = click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Where parsed event files are cached (default: the user cache folder).")(f)
    f = click.option("--no-cache", is_flag=True, help="Read every log from disk, ignoring the cache.")(f)
    return f


# The names of the readers in logsage/ingest (kept here so that --help never imports
# them; tests/test_cli.py checks that this list equals logsage.ingest.formats()).
FORMAT_NAMES = ("trainer-state", "tensorboard", "swift", "llamafactory", "lightning", "keras",
                "tb-csv", "wandb", "mlflow", "model-card", "wide")


def format_option(f):
    return click.option("--format", "fmt", type=click.Choice(FORMAT_NAMES), default=None,
                        help="Force a log format instead of detecting it (default: detect and report).")(f)
