"""`logsage report`: write one self-contained HTML report (and optional PNGs) for one or more runs."""

from __future__ import annotations

import click

from logsage.cli.output import cache_options, emit_json, format_option, json_option, partial_failure, warn
from logsage.cli.tune import cost_model, cost_options, metric_options


@click.command("report")
@click.argument("paths", nargs=-1, required=True)
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
@click.option("--rule", "rules", multiple=True,
              help="Rule to draw, NAME or NAME:k=v,... (repeatable). Default: the common defaults "
                   "(HF, Keras, Lightning, Prechelt GL/UP, no early stop).")
@metric_options
@click.option("--png", "png_dir", type=click.Path(file_okay=False), default=None,
              help="Also write each plot as a PNG file into this folder.")
@click.option("--tune", "with_tune", is_flag=True,
              help="Add a tune over the runs: the recommendation and its leave-one-run-out validation.")
@click.option("--objective", default=None, help="Objective for --tune (see `logsage tune --help`).")
@click.option("--title", default=None, help="Title of the report.")
@click.option("--selection", "selections", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="A selection file with re-evaluation results (an export's logsage_selection.json, or "
                   "`logsage evaluate --out`): adds its loss / generation-metric table. Repeatable.")
@cost_options
@format_option
@json_option
@cache_options
def command(paths: tuple[str, ...], out: str, rules: tuple[str, ...], metric: str | None, mode: str | None,
            png_dir: str | None, with_tune: bool, objective: str | None, title: str | None,
            selections: tuple[str, ...], gpus: float | None,
            gpu_hour_cost: float | None, run_hours: float | None, fmt: str | None, as_json: bool,
            no_cache: bool, cache_dir: str | None) -> None:
    """Write an HTML report for the runs (each PATH is one run): per run, the eval and
    train curves with each rule's stop and kept checkpoint, the checkpoint inventory and
    the scored decisions; for several runs the summary and the regret-savings Pareto front.

    The HTML file is self-contained (no other file or URL is referenced): send it as is.

    \b
    Example:
        logsage report runs/qwen-lora --out report.html
        logsage report runs/* --out report.html --tune --png plots/

    A run that cannot be read is named at the top of the report and on stderr; the report
    of the others is still written. Exit code 1 when any PATH could not be read, with every other run still reported; 0 when all were (a run that was read but cannot be judged, e.g. it lacks the metric, is reported and does not count).
    """
    from logsage.report.html import report_paths
    from logsage.analysis.tune import run_message

    if objective and not with_tune:
        raise click.UsageError("--objective applies to --tune; add --tune")
    if png_dir:
        from logsage.core.extras import require

        require("report --png", "matplotlib")  # before the HTML work, not after it
    result = report_paths(list(paths), out, png_dir=png_dir, format=fmt, use_cache=not no_cache,
                          cache_dir=cache_dir, rules=list(rules) or None, metric=metric, mode=mode,
                          with_tune=with_tune, objective=objective, title=title, selections=list(selections),
                          cost=cost_model(gpus, gpu_hour_cost, run_hours))
    for e in result["errors"]:
        warn(run_message(e["run"], e["error"]))
    if as_json:
        emit_json(result)
    else:
        for p in result["written"]:
            click.echo(f"wrote {p}")
    unread = set(paths) - set(result["runs"])
    if unread:  # the multi-run rule (see --help): the report names them; the exit code says not all were read
        from logsage.core.errors import LogsageError

        raise LogsageError(partial_failure(len(unread), len(paths), "read"))
