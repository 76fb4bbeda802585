"""The `logsage` command line: a thin client of the library.

Each command lives in `logsage/cli/<name>.py`, parses its options, makes one
library call and renders the result. This module only builds the Click group and
renders errors: a `LogsageError` becomes one line on stderr and exit code 1 (2 for
usage errors); so does an `OSError` nobody caught (a report, plot or run folder that
cannot be written, a stdout that fails): the path, what happened, what to do.
`--debug` shows the traceback instead. Nothing here (or in the
command modules at import time) imports torch, transformers or peft, so
`logsage --help` starts fast.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from logsage import __version__

# Command modules in workflow order (read, decide, learn, show, follow, train, ship), each
# defining `command` (a click.Command). Loaded lazily so that
# `logsage --help` stays fast and one command's imports never slow another.
_COMMANDS = {
    "ingest": "logsage.cli.ingest",
    "rules": "logsage.cli.rules",
    "replay": "logsage.cli.replay",
    "tune": "logsage.cli.tune",
    "report": "logsage.cli.report",
    "watch": "logsage.cli.watch",
    "train": "logsage.cli.train",
    "select": "logsage.cli.select",
    "evaluate": "logsage.cli.evaluate",
    "prune": "logsage.cli.prune",
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
        return list(_available())  # workflow order, as `_COMMANDS` declares them

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Click cuts each description to the terminal's width with "..."; show the first
        # sentence whole instead (the definition list wraps it).
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if args and self.get_command(ctx, name) is None and not name.startswith("-"):
            import difflib

            close = difflib.get_close_matches(name, list(_COMMANDS), n=1, cutoff=0.6)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            ctx.fail(f"No such command '{name}'.{hint} (commands: {', '.join(self.list_commands(ctx))})")
        return super().resolve_command(ctx, args)

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

        from logsage.cli.output import describe_os_error, stdout_failure

        try:
            try:
                result = super().invoke(ctx)
                sys.stdout.flush()  # a failing stdout (> /dev/full) is an error here, not a traceback at exit
                return result
            except OSError as e:
                if ctx.obj and ctx.obj.get("debug"):
                    raise
                if e.filename is None:  # no path: writing stdout failed (> /dev/full, a closed pipe)
                    raise stdout_failure(e) from None
                raise LogsageError(describe_os_error(e)) from None  # report --out, --plot, --png, --output ...
        except LogsageError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)
        except ModuleNotFoundError as e:
            # An optional dependency reached deep inside a command (e.g. transformers for a
            # re-evaluation): one line naming the extra, not a traceback. Any other missing
            # module is a bug and keeps its traceback.
            from logsage.core.extras import EXTRA_OF_MODULE, missing_extra_error

            top = (e.name or "").split(".")[0]
            if top not in EXTRA_OF_MODULE or (ctx.obj and ctx.obj.get("debug")):
                raise
            sub = ctx.invoked_subcommand
            err = missing_extra_error(f"logsage {sub}" if sub else "logsage", top)
            click.echo(f"Error: {err}", err=True)
            ctx.exit(err.exit_code)


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
    main()
