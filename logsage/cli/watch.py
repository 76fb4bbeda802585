"""`logsage watch`: follow a running training's log and print a stopping rule's advice at each evaluation."""

from __future__ import annotations

import math

import click

from logsage.cli.output import emit_json, format_option, json_option, warn


@click.command("watch")
@click.argument("path")
@click.option("--rule", required=True, help="The rule to follow, NAME or NAME:k=v,... e.g. hf:patience=3.")
@click.option("--metric", default=None, help="Metric the rule watches (default: the run's eval loss).")
@click.option("--mode", type=click.Choice(["min", "max"]), default=None,
              help="Direction of the metric (default: from its name).")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between looks at the log.")
@click.option("--timeout", type=float, default=None,
              help="Stop watching after this many seconds (default: when the run reaches its step budget).")
@click.option("--max-evals", type=int, default=None, help="Stop watching after this many evaluations.")
@click.option("--until-stop", is_flag=True, help="Stop watching once the rule says it would stop (exit code 0).")
@format_option
@json_option
def command(path: str, rule: str, metric: str | None, mode: str | None, interval: float, timeout: float | None,
            max_evals: int | None, until_stop: bool, fmt: str | None, as_json: bool) -> None:
    """Follow the growing log of a run logsage did not launch (PATH: a run folder or a
    log file: ms-swift logging.jsonl, LLaMA-Factory trainer_log.jsonl, Lightning
    metrics.csv, trainer_state.json, TensorBoard events) and print the rule's advice at
    each new evaluation, e.g. "would stop now (hf:patience=3); best checkpoint-1200".

    Only what was appended is read, and the rule's state is kept between polls. The
    advice is the same as `logsage replay` gives on the log so far. PATH must exist (start
    watch once training has created it). --interval, --timeout and --max-evals must be
    finite and > 0. Warnings about the log (a damaged line, dropped) go to stderr; when
    the run finishes (its step budget reached, or HF's training summary written) watch says
    so and exits 0. When the log already holds evaluations, the first line advises on the
    latest one (saying so if the rule would have stopped earlier). With --json, one JSON
    document with every advice is printed at the end.

    \b
    Example:
        logsage watch output/qwen-lora --rule hf:patience=3,threshold=1e-4
        logsage watch lightning_logs/version_0/metrics.csv --rule lightning --until-stop
    """
    from logsage.live.watch import watch

    seen = []
    try:
        for advice in watch(path, rule, metric=metric, mode=mode, format=fmt, interval=interval, timeout=timeout,
                            max_evals=max_evals, until_stop=until_stop, on_warning=warn, on_finish=warn):
            seen.append(advice)
            if not as_json:
                value = "nan" if not math.isfinite(advice.value) else f"{advice.value:.6g}"
                click.echo(f"[eval {advice.eval_index + 1}, step {advice.step}] {advice.metric} {value}: "
                           f"{advice.message}")
                if advice.note:
                    click.echo(f"    note: {advice.note}")
    except KeyboardInterrupt:
        warn("stopped watching")
    if as_json:
        emit_json({"run": path, "rule": rule, "advice": [a.to_dict() for a in seen]})
    elif not seen:
        warn(f"no evaluation of the metric appeared in {path} while watching")
