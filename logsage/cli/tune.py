"""`logsage tune`: recommend a stopping rule from past runs, with honest (leave-one-run-out) estimates."""

from __future__ import annotations

import math
from typing import Any

import click

from logsage.cli.output import (cache_options, console, emit_json, format_option, json_option, markdown_option,
                                warn)


def cost_options(f):
    """--gpus / --gpu-hour-cost / --run-hours, shared by tune and report."""
    f = click.option("--run-hours", type=float, default=None,
                     help="Wall-clock hours of a whole run, for logs that record no times.")(f)
    f = click.option("--gpu-hour-cost", type=float, default=None,
                     help="Price of one GPU-hour, to report money saved (any currency).")(f)
    f = click.option("--gpus", type=float, default=None, help="GPUs each run used (default: 1, reported as assumed).")(f)
    return f


def metric_options(f):
    f = click.option("--mode", type=click.Choice(["min", "max"]), default=None,
                     help="Direction of the metric (default: from its name: losses min, others max).")(f)
    f = click.option("--metric", default=None,
                     help="Metric the rules watch, e.g. eval_loss, or \"mean(eval_*_loss)\" for the mean over "
                          "several eval sets (default: each run's eval loss, else its first eval metric).")(f)
    return f


def parse_grid(items: tuple[str, ...]) -> dict[str, list[str]] | None:
    """The shared `--grid` parser (`logsage.rules.base.parse_grid`); None when no --grid was given."""
    from logsage.rules.base import parse_grid as parse

    return parse(items) or None


def cost_model(gpus: float | None, gpu_hour_cost: float | None, run_hours: float | None):
    from logsage.analysis.cost import CostModel

    return CostModel(gpus=gpus, gpu_hour_cost=gpu_hour_cost, run_hours=run_hours)


@click.command("tune")
@click.argument("paths", nargs=-1, required=True)
@click.option("--rule", "rules", multiple=True,
              help="Rule to search, NAME or NAME:k=v,... (repeatable; `all` = every rule). The parameters given "
                   "stay fixed, the rest of the rule's default grid varies. Default: every rule over its default "
                   "grid, plus the common defaults. threshold and multi have no default grid: they need a value "
                   "of your own (threshold:target=V in the metric's units; multi:metrics=NAME:MODE:WEIGHT;...), "
                   "so `all` leaves them out (with a note) unless --grid gives it; name them with the value "
                   "(--rule threshold:target=0.8) or search values (--rule threshold --grid target=0.8,0.9).")
@click.option("--grid", "grid_items", multiple=True,
              help="Parameter values to search, NAME=V1,V2,... (repeatable); replaces the default grids.")
@metric_options
@click.option("--objective", default=None,
              help="beat-baseline (default: the lowest mean regret among rules saving at least as much as the "
                   "baseline), exchange[:rate=R] (maximise saved - R x regret), min-regret[:min_saved=F] or "
                   "max-saved[:max_regret=F]. Regret is the scale-free share of the achievable improvement lost.")
@click.option("--baseline", default=None, metavar="RULE[:k=v,...]",
              help="The rule the default objective must beat (default: hf:patience=3,threshold=1e-4).")
@click.option("--min-evals", type=int, default=None,
              help="Runs with fewer evaluations of the metric are left out (listed); default 3.")
@click.option("--progress/--no-progress", default=None,
              help="A progress bar on stderr while runs are replayed (default: when stderr is a terminal).")
@cost_options
@click.option("--top", type=int, default=10, show_default=True, help="Candidates listed in the terminal table.")
@format_option
@json_option
@markdown_option
@cache_options
def command(paths: tuple[str, ...], rules: tuple[str, ...], grid_items: tuple[str, ...], metric: str | None,
            mode: str | None, objective: str | None, baseline: str | None, min_evals: int | None,
            progress: bool | None, gpus: float | None, gpu_hour_cost: float | None,
            run_hours: float | None, top: int, fmt: str | None, as_json: bool, as_markdown: bool, no_cache: bool,
            cache_dir: str | None) -> None:
    """Search stopping rules x parameter grids over past runs (each PATH is one run) and
    recommend one by an explicit objective, with leave-one-run-out estimates of its
    regret and savings, a comparison with common defaults, and the GPU-hours saved.

    \b
    Example:
        logsage tune runs/* --metric eval_loss
        logsage tune runs/* --rule hf --grid patience=1,2,3,5 --objective max-saved:max_regret=0.05
        logsage tune runs/* --objective exchange:rate=5 --baseline hf:patience=5
        logsage tune runs/* --gpus 8 --gpu-hour-cost 2.5 --json
        logsage tune runs/* --markdown >> "$GITHUB_STEP_SUMMARY"

    A run that cannot be read is left out (listed in "excluded", marked "unreadable") and
    the others are tuned on. Exit code 1 when any PATH could not be read, with every other run still reported; 0 when all were (a run that was read but cannot be judged, e.g. it lacks the metric, is reported and does not count).
    """
    import sys

    from logsage.analysis.tune import run_message, tune_paths

    if as_json and as_markdown:
        raise click.UsageError("--json and --markdown are exclusive; pick one")

    if progress is None:
        progress = sys.stderr.isatty()
    result = tune_paths(list(paths), format=fmt, use_cache=not no_cache, cache_dir=cache_dir,
                        rules=list(rules) or None, grid=parse_grid(grid_items), metric=metric, mode=mode,
                        objective=objective, baseline=baseline, progress=progress,
                        **({"min_evals": min_evals} if min_evals is not None else {}), cost=cost_model(gpus, gpu_hour_cost, run_hours))
    if as_json:
        emit_json(result.to_dict())
    elif as_markdown:
        from logsage.report.markdown import tune_markdown

        click.echo(tune_markdown(result.to_dict()), nl=False)
    else:
        render(result.to_dict(), top=top, inferred=mode is None)
    for e in result.excluded:
        warn(f"left out {run_message(e['run'], e['reason'])}")
    if result.recommendation is None:
        raise SystemExit(1)
    unread = [e for e in result.excluded if e.get("unreadable")]
    if unread:  # the multi-run rule (see --help): tuned on the others; the exit code says not all were read
        from logsage.cli.output import partial_failure
        from logsage.core.errors import LogsageError

        raise LogsageError(partial_failure(len(unread), len(paths), "read"))


# ---------------------------------------------------------------------- rendering
def _pct(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}%"


def _num(v: Any, fmt: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, fmt)


def _figure(block: dict | None) -> str:
    """'2.1% (p90 6.3%)' for a {mean, p90} block: the mean and the tail, never a median alone."""
    if not block or block.get("mean") is None:
        return "-"
    return f"{_pct(block['mean'])} (p90 {_pct(block.get('p90'))})"


def _short(path: str, width: int = 48) -> str:
    """The end of a long path (the run's own name is at the end)."""
    return path if len(path) <= width else "…" + path[-(width - 1):]


def _mode_note(doc: dict, inferred: bool) -> str:
    """' (mode min)', or with the reason when the direction was inferred from the name (no --mode)."""
    mode = doc.get("mode")
    if not mode:
        return ""
    if not inferred or not doc.get("metric"):
        return f" (mode {mode})"
    from logsage.core.names import direction

    return f" (mode {mode}, inferred: {direction(doc['metric'])[1]}; --mode to override)"


def render(doc: dict, *, top: int = 10, inferred: bool = False) -> None:
    """The tune result for a terminal: objective, recommendation, honest estimates, comparison."""
    from rich.table import Table

    con = console()
    if not con.is_terminal:  # piped or captured: no terminal width to respect, keep tables on one line
        con.width = max(con.width, 200)
    obj = doc["objective"]
    con.print(f"[bold]Objective:[/bold] {obj['description']}  [dim]({obj['spec']})[/dim]")
    con.print(f"runs: {len(doc['runs'])} used, {len(doc['excluded'])} left out; "
              f"metric: {doc['metric'] or 'per run'}{_mode_note(doc, inferred)}; candidates searched: {doc['n_candidates']}")
    con.print("[dim]regret = share of the run's achievable improvement (first evaluation -> best) given up, "
              "judged as if every evaluation were saved (--save-all)[/dim]")
    rec = doc["recommendation"]
    if rec is None:
        con.print("[red]No recommendation.[/red] " + " ".join(doc["notes"]))
        return
    con.print(f"[bold green]Recommendation:[/bold green] --rule {rec['spec']}  [dim](chosen by {obj['spec']})[/dim]")
    if rec.get("note"):
        con.print(f"[yellow]{rec['note']}[/yellow]")
    ins, loo = doc["in_sample"], doc["leave_one_run_out"]
    priced = doc["cost"].get("gpu_hour_cost") is not None
    t = Table(show_edge=False, pad_edge=False)
    t.add_column("")
    t.add_column(f"in-sample ({ins['n_runs']} runs)")
    t.add_column("leave-one-run-out" + (f" ({loo['n_runs']} folds)" if loo.get("available") else ""))
    loo_ok = loo.get("available")
    t.add_row("regret, scale-free (mean)", _figure(ins["regret"]), _figure(loo["regret"]) if loo_ok else "-")
    t.add_row("relative regret (mean)", _figure(ins["regret_rel"]), _figure(loo["regret_rel"]) if loo_ok else "-")
    t.add_row("steps saved (mean)", _figure(ins["saved"]), _figure(loo["saved"]) if loo_ok else "-")
    t.add_row("stopped before the best", _pct(ins["stopped_before_best_rate"]),
              _pct(loo.get("stopped_before_best_rate")) if loo_ok else "-")
    t.add_row("GPU-hours saved (total)", _num(ins["gpu_hours_saved"], ".4g"),
              _num(loo.get("gpu_hours_saved"), ".4g") if loo_ok else "-")
    if ins.get("money_saved") is not None:
        t.add_row("money saved (total)", _num(ins["money_saved"], ",.2f"),
                  _num(loo.get("money_saved"), ",.2f") if loo_ok else "-")
    con.print(t)
    disk = ins.get("on_disk") or {}
    if disk.get("n_runs"):
        con.print(f"[dim]with the checkpoints on disk ({disk['n_runs']} runs with an inventory): mean regret "
                  f"{_pct(disk['mean_regret'])} (p90 {_pct(disk['p90_regret'])})"
                  + (f"; {disk['n_missing']} run(s) with no usable checkpoint at the stop" if disk["n_missing"] else "")
                  + "[/dim]")
    if loo_ok:
        con.print(f"Leave-one-run-out chose the recommended rule in {_pct(loo['agreement'])} of the folds; "
                  "its column is the honest estimate for the next run.")
        lt = Table(title="Leave-one-run-out, per run", show_edge=False, pad_edge=False)
        for col in ("run (left out)", "rule chosen on the others", "regret", "saved", "before best", "GPU-h saved",
                    *(["money saved"] if priced else [])):
            lt.add_column(col)
        for f in loo["folds"]:
            lt.add_row(_short(f["run"]), f.get("spec") or "-", _pct(f.get("regret")), _pct(f.get("fraction_saved")),
                       {True: "yes", False: "no"}.get(f.get("stopped_before_best"), "-"),
                       _num(f.get("gpu_hours_saved"), ".4g"),
                       *([_num(f.get("money_saved"), ",.2f")] if priced else []))
        con.print(lt)
    else:
        con.print(f"[yellow]{loo['reason']}[/yellow]")
    ct = Table(title="Compared with the baseline and common defaults (same runs, no tuning)", show_edge=False,
               pad_edge=False)
    for col in ("", "rule", "runs", "mean regret", "p90 regret", "mean rel. regret", "mean saved", "before best",
                "GPU-h saved", *(["money saved"] if priced else []), "on disk (mean, runs)"):
        ct.add_column(col, no_wrap=True)
    for row in doc["comparison"]:
        d = row.get("on_disk") or {}
        spec = f"recommended = {row['learned']['spec']}" if row.get("learned") else row["spec"]
        ct.add_row(row["label"].split(" (")[0] if not row["label"].startswith("learned") else "learned default",
                   spec, f"{row['n_decided']}/{row['n_runs']}",
                   _pct(row["mean_regret"]), _pct(row["p90_regret"]), _pct(row["mean_regret_rel"]),
                   _pct(row["mean_fraction_saved"]), _pct(row["stopped_before_best_rate"]),
                   _num(row["gpu_hours_saved"], ".4g"), *([_num(row["money_saved"], ",.2f")] if priced else []),
                   (f"{_pct(d.get('mean_regret'))} over {d['n_runs']}" if d.get("n_runs") else "-")
                   + (f" ({d['n_missing']} missing)" if d.get("n_missing") else ""))
    con.print(ct)
    from logsage.analysis.tune import partly_judged

    for line in partly_judged(doc["comparison"]):
        con.print(f"[yellow]{line}[/yellow]")
    con.print("[dim]cost: " + "; ".join(doc["cost"]["assumptions"]) + "[/dim]")
    for note in doc["notes"]:
        con.print(f"[dim]note: {note}[/dim]")
