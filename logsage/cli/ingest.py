"""`logsage ingest`: read logs into histories and report what was found (format, metrics, checkpoints, warnings)."""

from __future__ import annotations

import click

from logsage.cli.output import cache_options, console, emit_json, format_option, json_option, warn


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True)
@format_option
@click.option("--stitch", is_flag=True,
              help="Treat the PATHS as segments of one resumed run, in order; later segments win overlapping steps.")
@json_option
@cache_options
def command(paths: tuple[str, ...], fmt: str | None, stitch: bool, as_json: bool, no_cache: bool,
            cache_dir: str | None) -> None:
    """Read each PATH (a log file or a run folder) as one run and report what it holds.

    For each run: the detected format, every metric with its point count and step
    range, the number of evaluations, the checkpoints on disk and whether each is
    whole, and every cleanup or warning made while reading.

    \b
    Example:
        logsage ingest runs/qwen-lora
        logsage ingest lightning_logs/version_0/metrics.csv --json
        logsage ingest run-part1 run-part2 --stitch

    Several PATHS: each run that cannot be read gets its own error line (in --json, an entry
    of "errors") and the others are still reported. Exit code 1 when any PATH could not be read, with every other run still reported; 0 when all were.
    """
    from logsage.ingest import load_histories, load_history, stitch_histories

    if len(paths) == 1 or stitch:  # a single run's (or a stitch's) problem is the command's error
        histories, errors = [load_history(p, format=fmt, use_cache=not no_cache, cache_dir=cache_dir)
                             for p in paths], []
    else:
        histories, errors = load_histories(paths, format=fmt, use_cache=not no_cache, cache_dir=cache_dir)
    if stitch:
        histories = [stitch_histories(histories)]
    if as_json:
        emit_json({"runs": [h.summary_dict() for h in histories], "errors": errors})
    else:
        for h in histories:
            _render(h)
    for h in histories:
        for w in h.warnings:
            warn(w)
    for e in errors:
        click.echo(f"Error: {e['error']}", err=True)
    if errors:  # the multi-run rule (see --help)
        from logsage.cli.output import partial_failure

        click.echo(f"Error: {partial_failure(len(errors), len(paths), 'read')}", err=True)
        raise SystemExit(1)


def _render(h) -> None:
    from rich.table import Table

    con = console()
    primary = h.primary_eval_metric()
    con.print(f"[bold]{h.path}[/bold]  format: {h.format}  evaluations: "
              f"{len(h.series[primary]) if primary else 0}" + (f" ({primary})" if primary else ""))
    t = Table(show_edge=False, pad_edge=False)
    for col in ("metric", "canonical", "kind", "points", "steps", "non-finite"):
        t.add_column(col, justify="right" if col in ("points", "non-finite") else "left")
    for name, s in h.series.items():
        rng = f"{s.first_step}..{s.last_step}" if len(s) else "-"
        t.add_row(name, s.canonical, s.kind, str(len(s)), rng, str(s.n_non_finite or ""))
    con.print(t)
    if h.checkpoints:
        whole = sum(c.whole for c in h.checkpoints)
        con.print(f"checkpoints: {len(h.checkpoints)} ({whole} whole)")
        for c in h.checkpoints:
            if not c.whole:
                con.print(f"  checkpoint-{c.step}: {c.kind}, NOT whole: {c.problem}")
    for c in h.cleanups:
        con.print(f"  [dim]{c.kind}:[/dim] {c.message}")
