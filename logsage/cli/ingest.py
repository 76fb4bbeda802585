"""`logsage ingest`: read logs into histories and report what was found (format, metrics, checkpoints, warnings)."""

from __future__ import annotations

from typing import Any

import click

from logsage.cli.output import cache_options, console, emit_json, format_option, json_option, session_option, warn


@click.command("ingest")
@click.argument("paths", nargs=-1, required=True)
@format_option
@click.option("--stitch", is_flag=True,
              help="Treat the PATHS as segments of one resumed run, in order; later segments win overlapping steps.")
@session_option
@json_option
@cache_options
def command(paths: tuple[str, ...], fmt: str | None, stitch: bool, session, as_json: bool, no_cache: bool,
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
    from logsage.ingest import load_histories, load_history, load_sessions, stitch_histories

    opts: dict[str, Any] = dict(format=fmt, use_cache=not no_cache, cache_dir=cache_dir)
    errors: list[dict[str, str]]
    if session == "all":  # each training session of each path is its own run
        histories, errors = [h for p in paths for h in load_sessions(p, **opts)], []
    elif len(paths) == 1 or stitch:  # a single run's (or a stitch's) problem is the command's error
        histories, errors = [load_history(p, session=session, **opts) for p in paths], []
    else:
        histories, errors = load_histories(paths, session=session, **opts)
    if stitch:
        histories = [stitch_histories(histories)]
    if as_json:
        emit_json({"runs": [_with_direction(h) for h in histories], "errors": errors})
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


def _with_direction(h) -> dict:
    """The run's JSON description plus the direction inferred for each metric (ingest states no --mode)."""
    from logsage.core.names import direction

    doc = h.summary_dict()
    for name, m in doc["metrics"].items():
        if m["kind"] != "other":
            mode, why = direction(name)
            m["direction"] = {"mode": mode, "inferred": True, "why": why}
    return doc


def _render(h) -> None:
    from rich.table import Table

    from logsage.core.names import direction

    con = console()
    primary = h.primary_eval_metric()
    head = f"[bold]{h.path}[/bold]  format: {h.format}  evaluations: {len(h.series[primary]) if primary else 0}"
    if primary:
        mode, why = direction(primary)
        head += f" ({primary}; {mode}, inferred: {why} - pass --mode to replay with the other)"
    con.print(head)
    t = Table(show_edge=False, pad_edge=False)
    for col in ("metric", "canonical", "kind", "better", "points", "steps", "non-finite"):
        t.add_column(col, justify="right" if col in ("points", "non-finite") else "left")
    for name, s in h.series.items():
        rng = f"{s.first_step}..{s.last_step}" if len(s) else "-"
        better = "" if s.kind == "other" else direction(name)[0]
        t.add_row(name, s.canonical, s.kind, better, str(len(s)), rng, str(s.n_non_finite or ""))
    con.print(t)
    if h.checkpoints:
        _render_checkpoints(con, h.checkpoints)
    routine = [c for c in h.cleanups if is_routine_cleanup(c, h)]
    for c in h.cleanups:
        if c not in routine:
            con.print(f"  [dim]{c.kind}:[/dim] {c.message}")
    if routine:
        con.print(f"  [dim]{len(routine)} routine note(s): the same points also in a less precise source, or "
                  "checkpoint copies of the run's trainer_state.json; --json lists each[/dim]")


def is_routine_cleanup(c, h) -> bool:
    """A note that loses nothing: every run written by HF Trainer (and `logsage train`) has them.

    The run's trainer_state.json and its TensorBoard events hold the same points (the
    float64 copy wins); each checkpoint's trainer_state.json is an earlier copy of the
    root one; a repeated step in a source that lost to the more precise one affects no
    kept point. They stay in the History (and in --json); the terminal counts them.
    """
    if c.kind == "source_choice":
        return True
    if c.kind == "skipped_file":
        return "superseded by" in c.message
    if c.kind == "duplicates":
        return bool(c.metric) and c.metric not in h.series
    return False


# Beyond this many checkpoints the whole ones are summarised; the broken ones are always listed.
CHECKPOINTS_LISTED = 12


def _render_checkpoints(con, checkpoints) -> None:
    """One line per checkpoint (folder, kind, whole or what is wrong); long whole runs are elided in the middle."""
    from pathlib import Path

    whole = sum(c.whole for c in checkpoints)
    con.print(f"checkpoints: {len(checkpoints)} ({whole} whole)")
    shown = set(range(len(checkpoints)))
    if len(checkpoints) > CHECKPOINTS_LISTED:
        half = CHECKPOINTS_LISTED // 2
        shown = set(range(half)) | set(range(len(checkpoints) - half, len(checkpoints)))
    elided = 0
    for i, c in enumerate(checkpoints):
        if i not in shown and c.whole:
            elided += 1
            continue
        if elided:
            con.print(f"  ... {elided} more whole checkpoints")
            elided = 0
        state = "whole" if c.whole else f"NOT whole: {c.problem}"
        pickle = ", pickle weights (not loaded without --allow-pickle)" if c.pickle else ""
        con.print(f"  step {c.step:>8}  {Path(c.path).name}  {c.kind}, {state}{pickle}", markup=False)
    if elided:
        con.print(f"  ... {elided} more whole checkpoints")
