"""`logsage prune`: free the disk a --save-all run used, keeping the checkpoints the user names."""

from __future__ import annotations

import click

from logsage.cli.output import console, emit_json, json_option, warn


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.command("prune")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--keep", "keep", required=True, multiple=True, metavar="selected,best,last,STEP",
              help="What to keep: selected (the rule's pick; needs --rule), best (best logged), last (newest "
                   "whole checkpoint) and/or checkpoint steps. Comma-separated or repeated.")
@click.option("--rule", default=None, metavar="NAME[:k=v,...]", help="The rule for --keep selected.")
@click.option("--metric", default=None, help="Monitored metric for selected/best (default: the run's eval loss).")
@click.option("--mode", type=click.Choice(["min", "max"]), default=None, help="Direction of the metric.")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted and freed; delete nothing.")
@click.option("--yes", "-y", is_flag=True,
              help="Delete without asking (needed when stdin is not a terminal: scripts, CI).")
@json_option
def command(run: str, keep: tuple[str, ...], rule: str | None, metric: str | None, mode: str | None,
            dry_run: bool, yes: bool, as_json: bool) -> None:
    """Delete RUN's checkpoint-N folders except the ones to keep, and say how much disk that freed.

    Only checkpoint-N folders directly inside RUN are ever deleted (symbolic links,
    two folders for one step, other layouts and checkpoints newer than the log are
    left alone); logs, the manifest and everything else stay. On a terminal it shows
    the plan and asks first; --yes skips the question (and is required when stdin is
    not a terminal); --dry-run never asks and deletes nothing.

    \b
    Example:
        logsage prune runs/qwen-lora --keep selected,best,last --rule hf:patience=3 --dry-run
        logsage prune runs/qwen-lora --keep best,last --yes
    """
    import sys

    from logsage.core.errors import UsageError
    from logsage.ship.prune import parse_keep, prune

    keep_items = parse_keep(list(keep))
    if not dry_run and not yes:
        plan = prune(run, keep_items, rule=rule, metric=metric, mode=mode, dry_run=True)  # bad input fails here
        if plan.delete and not sys.stdin.isatty():
            raise UsageError(f"prune would delete {len(plan.delete)} checkpoint folder(s) and stdin is not a "
                             "terminal to confirm on; pass --yes to delete, or --dry-run to see the plan")
        if not plan.delete:
            dry_run = True  # nothing to delete: report the plan, ask nothing
        else:
            _render(plan, dry_run=True, err=True)
            if not click.confirm(f"delete {len(plan.delete)} checkpoint folder(s) of {run}?", default=False,
                                 err=True):
                raise click.exceptions.Exit(1)
    plan = prune(run, keep_items, rule=rule, metric=metric, mode=mode, dry_run=dry_run)
    for n in plan.notes:
        warn(n)
    if as_json:
        emit_json(plan.to_dict())
        return
    _render(plan, dry_run=dry_run)


def _render(plan, *, dry_run: bool, err: bool = False) -> None:
    from logsage.core.runfolder import checkpoint_name

    def label(entry: dict) -> str:
        name = entry["path"].rstrip("/").rsplit("/", 1)[-1] if entry.get("path") else checkpoint_name(entry["step"])
        return f"{name!r}" if not name.isprintable() else name

    out = console(stderr=err)
    for k in plan.keep:
        out.print(f"{'keep':<12} {label(k):<19} {_size(k['bytes']):>10}  ({', '.join(k['why'])})")
    for d in plan.delete:
        extra = f"  ({d['problem']})" if d.get("problem") else ""
        verb = "would delete" if dry_run else "deleted"
        out.print(f"{verb:<12} {label(d):<19} {_size(d['bytes']):>10}{extra}")
    for a in plan.left_alone:
        out.print(f"{'left alone':<12} {label(a):<19} {a['reason']}")
    verb = "would free" if dry_run else "freed"
    out.print(f"{verb} {_size(plan.freed_bytes)} ({len(plan.delete)} checkpoint(s)); "
              f"kept {_size(plan.kept_bytes)} ({len(plan.keep)})")
