"""`logsage replay`: when would each run have stopped under each rule, what would it have kept, how good was that."""

from __future__ import annotations

from typing import Any

import click

from logsage.cli.output import (cache_options, console, emit_json, format_option, json_option, markdown_option,
                                session_option, warn)

# Decision fields as CSV columns (params as a JSON object in one cell).
_CSV_COLUMNS = ("run", "rule", "params", "metric", "mode", "stop_step", "stop_eval_index", "selected_step",
                "selected_value", "best_step", "best_value", "best_saved_step", "best_saved_value", "regret",
                "regret_rel", "steps_saved", "fraction_saved", "wall_saved_s", "stopped_before_best",
                "trend_slope", "trend_p", "overfit_gap", "decidable", "reason", "note")


@click.command("replay")
@click.argument("paths", nargs=-1, required=True)
@click.option("--rule", "rules", multiple=True, required=True, metavar="NAME[:k=v,...]",
              help="A stopping rule and its parameters, e.g. hf:patience=3,threshold=1e-4 (repeatable; "
                   "'all' = every rule with defaults; see `logsage rules`).")
@click.option("--grid", "grid", multiple=True, metavar="NAME=V1,V2,...",
              help="Try every value of a parameter, for every asked rule that has it (repeatable: the "
                   "grid is the cartesian product).")
@click.option("--metric", default=None,
              help="Metric to monitor: the name the log uses (eval/loss, val_loss) or its canonical alias "
                   "(eval_loss), or \"mean(eval_*_loss)\": the mean over several eval sets. Default: each "
                   "run's eval loss, else its first eval metric.")
@click.option("--mode", type=click.Choice(["min", "max"]), default=None,
              help="Direction of the metric. Default: from its name (loss, error, perplexity: min; else max).")
@json_option
@click.option("--csv", "as_csv", is_flag=True, help="Print one CSV row per decision on stdout.")
@markdown_option
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG of the curves with each rule's stop and selection marked "
                   "(one file per run: NAME-1.png, NAME-2.png... when several runs are given).")
@click.option("--stitch", is_flag=True,
              help="The PATHS are segments of one resumed run, in order: replay them as one run "
                   "(later segments win the steps they rewrite; seams are recorded).")
@format_option
@session_option
@cache_options
@click.option("--engine", type=click.Choice(["auto", "scan", "sweep"]), default="auto", hidden=True,
              help="Force the reference scan or the vectorized sweep (the results are identical).")
def command(paths: tuple[str, ...], rules: tuple[str, ...], grid: tuple[str, ...], metric: str | None,
            mode: str | None, as_json: bool, as_csv: bool, as_markdown: bool, plot_path: str | None, stitch: bool,
            fmt: str | None, session, no_cache: bool, cache_dir: str | None, engine: str) -> None:
    """Replay each PATH (one run: a log file or a run folder) through stopping rules and score every decision.

    For each run, rule and parameter set: the step it would have stopped at, the
    checkpoint it would have kept (the best so far that exists and is whole), the
    hindsight best, the regret, the compute saved, the metric's trend at the stop
    and the train/eval gap. With several runs or a --grid, a summary per rule and
    parameter set follows, with the Pareto front of regret against compute saved.

    \b
    Example:
        logsage replay runs/qwen-lora --rule hf:patience=3,threshold=1e-4 --rule patience
        logsage replay runs/* --rule hf --grid patience=1,2,3,5 --json
        logsage replay metrics.csv --metric val_acc --mode max --rule all --plot curves.png
        logsage replay runs/* --rule hf:patience=3 --rule gl --markdown >> "$GITHUB_STEP_SUMMARY"

    Several PATHS: a run that cannot be read or replayed is reported (in the table, in
    --json "errors") and never stops the others. Exit code 1 when any PATH could not be read, with every other run still reported; 0 when all were (a run that was read but cannot be judged, e.g. it lacks the metric, is reported and does not count).
    """
    from logsage.cli.output import partial_failure
    from logsage.core.errors import LogsageError, UsageError
    from logsage.decide.engine import replay_paths

    if sum((as_json, as_csv, as_markdown)) > 1:
        raise UsageError("--json, --csv and --markdown are exclusive; pick one")
    from logsage.rules.base import parse_grid
    if plot_path:
        from logsage.report.plot import check_plot_target

        check_plot_target(plot_path)  # before any work: a missing folder or matplotlib is the user's to fix
    if stitch:
        from logsage.ingest import load_history, stitch_histories
        from logsage.decide.engine import expand_rules, replay

        expand_rules(list(rules), parse_grid(grid) or None)  # a bad rule fails before any file is read
        run = stitch_histories([load_history(p, format=fmt, use_cache=not no_cache, cache_dir=cache_dir)
                                for p in paths])
        paths = (run.path,)
        result = replay([run], list(rules), metric=metric, mode=mode, grid=parse_grid(grid) or None,
                        engine=engine)
    elif session is not None:  # a training session of each log (Keras append=True), or each session as a run
        from logsage.ingest import load_history, load_sessions
        from logsage.decide.engine import expand_rules, replay

        expand_rules(list(rules), parse_grid(grid) or None)
        opts: dict[str, Any] = dict(format=fmt, use_cache=not no_cache, cache_dir=cache_dir)
        runs = ([h for p in paths for h in load_sessions(p, **opts)] if session == "all"
                else [load_history(p, session=session, **opts) for p in paths])
        paths = tuple(h.path for h in runs)
        result = replay(runs, list(rules), metric=metric, mode=mode, grid=parse_grid(grid) or None, engine=engine)
    else:
        result = replay_paths(list(paths), list(rules), metric=metric, mode=mode,
                              grid=parse_grid(grid) or None, format=fmt, use_cache=not no_cache,
                              cache_dir=cache_dir, engine=engine)
    for h in result.histories:
        for w in h.warnings:
            warn(w)
    all_failed = bool(result.errors) and len(result.errors) == len(paths)
    if as_json:
        emit_json(result.to_dict())
    elif as_csv:
        _emit_csv(result)
    elif as_markdown:
        from logsage.report.markdown import replay_markdown

        click.echo(replay_markdown(result.to_dict()), nl=False)
    elif not all_failed:
        _render(result, several=len(paths) > 1, inferred=mode is None)
    if plot_path:
        _plot(result, plot_path)
    if as_json or as_csv or as_markdown or all_failed:  # the terminal table already shows each run's problem
        for e in result.errors if len(paths) > 1 else ():
            warn(e["error"])
    if all_failed:
        if len(paths) == 1:
            raise LogsageError(result.errors[0]["error"])
        raise LogsageError(f"none of the {len(paths)} runs could be replayed; first: {result.errors[0]['error']}")
    unread = set(paths) - {h.path for h in result.histories}
    if unread:  # the multi-run rule (see --help): the others are reported, the exit code says not all were read
        raise LogsageError(partial_failure(len(unread), len(paths), "read"))


def _emit_csv(result) -> None:
    import csv
    import json
    import sys

    writer = csv.DictWriter(sys.stdout, fieldnames=_CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for d in result.decisions:
        row = d.to_dict()
        row["params"] = json.dumps(row["params"], separators=(",", ":"))
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in _CSV_COLUMNS})


def _plot(result, plot_path: str) -> None:
    from pathlib import Path

    from logsage.report.plot import plot_run

    runs = result.histories
    if not runs:
        return
    out = Path(plot_path)
    for i, h in enumerate(runs, 1):
        target = out if len(runs) == 1 else out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}")
        plot_run(h, [d for d in result.decisions if d.run == h.path and d.decidable], target)
        click.echo(f"wrote {target} ({h.path})", err=True)


# ---------------------------------------------------------------------- terminal
def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _shown_params(rule: str, params: dict) -> str:
    """The parameters that differ from the rule's defaults, as `rule_spec` writes them (the JSON has them all)."""
    from logsage.rules.base import rule_spec

    return rule_spec(rule, params).partition(":")[2] or "defaults"


# What the terminal table's columns mean, printed under it (the JSON has the same fields by name).
COLUMN_LEGEND = ("stop: step the rule stops at · selected: checkpoint it keeps · regret: kept value minus the "
                 "best in hindsight, in the metric's units (0 = nothing lost) · saved: share of the run's steps "
                 "after the stop · trend/eval: least-squares slope per evaluation over the last 5 evaluations up "
                 "to the stop, p its two-sided p-value · gap: eval loss minus train loss near the stop "
                 "(positive = overfitting)")


def _mode_note(metric: str, mode: str, inferred: bool) -> str:
    """'mode min' or, when no --mode was given, 'mode min, inferred: why; --mode to override'."""
    if not inferred:
        return f"mode {mode}"
    from logsage.core.names import direction

    return f"mode {mode}, inferred: {direction(metric)[1]}; --mode to override"


def _render(result, *, several: bool, inferred: bool = False) -> None:
    from rich.table import Table

    con = console()
    by_run: dict[str, list] = {}
    for d in result.decisions:
        by_run.setdefault(d.run, []).append(d)
    failed = {e["run"]: e["error"] for e in result.errors}
    for run, ds in by_run.items():
        first = ds[0]
        if run in failed:  # the run could not be replayed at all (the message names it)
            con.print(f"[bold]{run}[/bold]: [red]could not be replayed:[/red] {failed[run]}", soft_wrap=True)
            continue
        best = f"best {_fmt(first.best_value)} at step {_fmt(first.best_step)}"
        if first.best_saved_step is not None and first.best_saved_step != first.best_step:
            best += f"; best saved {_fmt(first.best_saved_value)} at step {first.best_saved_step}"
        con.print(f"[bold]{run}[/bold]  metric: {first.metric} ({_mode_note(first.metric, first.mode, inferred)})  "
                  f"{best}")
        t = Table(show_edge=False, pad_edge=False)
        for col in ("rule", "params", "stop", "selected (value)", "regret", "saved", "trend/eval", "gap"):
            # params fold onto a second line in a narrow terminal instead of being cut to "patience…"
            t.add_column(col, justify="left" if col in ("rule", "params", "selected (value)") else "right",
                         overflow="fold" if col in ("params", "trend/eval") else "ellipsis",
                         min_width={"params": 17, "trend/eval": 10}.get(col))
        for d in ds:
            selected = "-" if d.selected_step is None else f"{d.selected_step} ({_fmt(d.selected_value)})"
            saved = "-" if d.fraction_saved is None else f"{100 * d.fraction_saved:.0f}%"
            trend = "-" if d.trend_slope is None else (
                f"{d.trend_slope:+.3g}" + ("" if d.trend_p is None else f" p={d.trend_p:.2g}"))
            stop = "never" if d.decidable and d.stop_step is None else _fmt(d.stop_step)
            t.add_row(d.rule, _shown_params(d.rule, d.params), stop, selected, _fmt(d.regret), saved, trend,
                      _fmt(d.overfit_gap))
        con.print(t)
        con.print(f"[dim]{COLUMN_LEGEND}[/dim]", soft_wrap=False)
        for d in ds:  # reasons are sentences: one line each under the table, not a squeezed column
            note = f" [yellow]Note: {d.note}[/yellow]" if d.note else ""
            con.print(f"  [dim]{d.rule} ({_shown_params(d.rule, d.params)}):[/dim] {d.reason}{note}",
                      soft_wrap=True)
    n_sets = len(result.summary)
    several_sets = n_sets > len({row["rule"] for row in result.summary})
    if (several or several_sets) and any(row["n_decided"] for row in result.summary):
        _render_summary(con, result.summary)


def _render_summary(con, rows: list[dict]) -> None:
    from rich.table import Table

    t = Table(title="summary over runs (* = Pareto front of regret vs compute saved; regret = share of each "
              "run's achievable improvement the stop gives up)", show_edge=False, pad_edge=False)
    for col in ("", "rule", "params", "runs", "mean regret", "p90 regret", "mean saved", "stopped before best"):
        t.add_column(col, justify="left" if col in ("", "rule", "params") else "right")
    for r in rows:
        mean = "-" if r.get("mean_regret_scaled") is None else f"{100 * r['mean_regret_scaled']:.2f}%"
        median = "-" if r.get("p90_regret_scaled") is None else f"{100 * r['p90_regret_scaled']:.2f}%"
        saved = "-" if r["mean_fraction_saved"] is None else f"{100 * r['mean_fraction_saved']:.0f}%"
        before = "-" if r["stopped_before_best_rate"] is None else f"{100 * r['stopped_before_best_rate']:.0f}%"
        t.add_row("*" if r["pareto"] else "", r["rule"], _shown_params(r["rule"], r["params"]),
                  f"{r['n_decided']}/{r['n_runs']}", mean, median, saved, before)
    con.print(t)
