"""`logsage prune`: free the disk a --save-all run used, keeping the checkpoints the user names."""

from __future__ import annotations

import click

from logsage.cli.output import console, emit_json, json_option, warn


def _size(n: int) -> str:
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
@json_option
def command(run: str, keep: tuple[str, ...], rule: str | None, metric: str | None, mode: str | None,
            dry_run: bool, as_json: bool) -> None:
    """Delete RUN's checkpoint-N folders except the ones to keep, and say how much disk that freed.

    Only checkpoint-N folders directly inside RUN are ever deleted (symbolic links
    are left alone); logs, the manifest and everything else stay.

    \b
    Example:
        logsage prune runs/qwen-lora --keep selected,best,last --rule hf:patience=3 --dry-run
        logsage prune runs/qwen-lora --keep best,last
    """
    from logsage.ship.prune import parse_keep, prune

    plan = prune(run, parse_keep(list(keep)), rule=rule, metric=metric, mode=mode, dry_run=dry_run)
    for n in plan.notes:
        warn(n)
    if as_json:
        emit_json(plan.to_dict())
        return
    out = console()
    for k in plan.keep:
        out.print(f"{'keep':<12} checkpoint-{k['step']:<8} {_size(k['bytes']):>10}  ({', '.join(k['why'])})")
    for d in plan.delete:
        extra = f"  ({d['problem']})" if d.get("problem") else ""
        verb = "would delete" if dry_run else "deleted"
        out.print(f"{verb:<12} checkpoint-{d['step']:<8} {_size(d['bytes']):>10}{extra}")
    for a in plan.left_alone:
        out.print(f"{'left alone':<12} checkpoint-{a['step']:<8} {a['reason']}")
    verb = "would free" if dry_run else "freed"
    out.print(f"{verb} {_size(plan.freed_bytes)} ({len(plan.delete)} checkpoint(s)); "
              f"kept {_size(plan.kept_bytes)} ({len(plan.keep)})")
