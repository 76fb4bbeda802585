"""The `logsage` command line: a thin client of the library.

Each command lives in `logsage/cli/<name>.py`, parses its options, makes one
library call and renders the result. This module only builds the Click group and
renders errors: a `LogsageError` becomes one line on stderr and exit code 1 (2 for
usage errors); `--debug` shows the traceback instead. Nothing here (or in the
command modules at import time) imports torch, transformers or peft, so
`logsage --help` starts fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from logsage import __version__

# Command modules, each defining `command` (a click.Command). Loaded lazily so that
# `logsage --help` stays fast and one command's imports never slow another.
_COMMANDS = {
    "ingest": "logsage.cli.ingest",
    "replay": "logsage.cli.replay",
    "rules": "logsage.cli.rules",
    "train": "logsage.cli.train",
    "select": "logsage.cli.select",
    "prune": "logsage.cli.prune",
    "tune": "logsage.cli.tune",
    "report": "logsage.cli.report",
    "watch": "logsage.cli.watch",
}


def _available() -> dict[str, str]:
    out = {}
    for name, mod in _COMMANDS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = mod
    return out


class _Group(click.Group):
    """A group whose commands are imported only when listed or run, with errors rendered once."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_available())

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        mod = _available().get(name)
        if mod is None:
            return None
        from logsage.core import startup

        startup.one_blas_thread(name)  # before numpy loads (logsage/core/startup.py)
        return importlib.import_module(mod).command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # `--debug` is a group option; accept it after the subcommand too (`logsage replay ... --debug`).
        if "--debug" in args[1:] and "--" not in args[: args.index("--debug")]:
            args = ["--debug", *[a for a in args if a != "--debug"]]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        from logsage.core.errors import LogsageError

        try:
            return super().invoke(ctx)
        except LogsageError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="logsage")
@click.option("--debug", is_flag=True, help="Show the full traceback on errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Replay fine-tuning logs through early-stopping rules, score every decision,
    and ship the right checkpoint.

    \b
    Example:
        logsage ingest runs/qwen-lora
        logsage replay runs/qwen-lora --rule hf:patience=3 --rule adaptive
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    from logsage.core import startup as _startup
    _startup.SKIP_NUMBA_BLAS_PROBE = True  # the CLI owns its process: see logsage/core/startup.py


def main() -> None:  # pragma: no cover
    cli(prog_name="logsage")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
