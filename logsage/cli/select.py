"""`logsage select`: choose a run's checkpoint under a rule, re-evaluate it with the real model, export it safely."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # rich is imported only when a bar is shown
    from rich.progress import Progress as RichProgress, TaskID

from logsage.cli.evaluate import generation_options, print_generation
from logsage.cli.output import console, emit_json, json_option, warn


class _Progress:
    """Progress on stderr: a rich bar on a terminal, one line per stage otherwise (logs, CI, --json pipes)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar: RichProgress | None = None
        self.task: TaskID | None = None
        self.label: str | None = None

    def __call__(self, label: str, done: int, total: int) -> None:
        if self.tty:
            if self.bar is None:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

                self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TimeElapsedColumn(), console=console(stderr=True), transient=True)
                self.bar.start()
            if self.task is None or label != self.label:
                if self.task is not None:
                    self.bar.remove_task(self.task)
                self.task = self.bar.add_task(label, total=total)
            self.bar.update(self.task, completed=done, total=total)
        elif label != self.label:
            click.echo(f"{label} ...", err=True)
        self.label = label

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@click.command("select")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--rule", required=True, metavar="NAME[:k=v,...]",
              help="The stopping rule whose pick to ship, e.g. hf:patience=3,threshold=1e-4 (see `logsage rules`).")
@click.option("--metric", default=None, help="Monitored metric (default: the run's eval loss).")
@click.option("--mode", type=click.Choice(["min", "max"]), default=None,
              help="Direction of the metric (default: from its name).")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Re-evaluate the K best checkpoints by the logged metric and ship the best after re-evaluation.")
@click.option("--eval-data", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Eval data (JSON/JSONL, the formats `logsage train` reads); default: the eval set named in the "
                   "run's logsage_run.json. Repeatable.")
@click.option("--base", default=None,
              help="Base model folder (default: the adapter's base_model_name_or_path, then the run's manifest).")
@click.option("--export", "export", type=click.Path(file_okay=False), default=None,
              help="Write the selected checkpoint to this folder (atomically; refused if it exists unless --force).")
@click.option("--merge", is_flag=True, help="Export the base with the adapter merged (sharded safetensors).")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto",
              help="Dtype of a merged export (default: the base's).")
@click.option("--force", is_flag=True,
              help="Replace an existing --export folder that logsage exported (it holds logsage_selection.json); "
                   "the old one is removed only after the new one is verified.")
@click.option("--force-any", is_flag=True,
              help="With --force: replace an existing --export folder even if logsage did not write it. Never "
                   "the run, a checkpoint, the base, the current directory or a filesystem root.")
@click.option("--allow-pickle", is_flag=True,
              help="Consider and load checkpoints whose weights are pickle files (.bin/.pt), with "
                   "torch.load(weights_only=True).")
@click.option("--trust-remote-code", is_flag=True, help="Let transformers run the model's own code from its folder.")
@click.option("--carry-remote-code", is_flag=True,
              help="Copy the base's own modelling code (*.py named by auto_map) into a merged export (default: "
                   "left out, with a warning).")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=None,
              help="Re-evaluation batch size (default: the run's per_device_eval_batch_size, else 8).")
@click.option("--max-length", type=click.IntRange(min=2), default=None,
              help="Truncate eval examples to this many tokens (default: the run's, else 2048).")
@generation_options
@json_option
def command(run: str, rule: str, metric: str | None, mode: str | None, top_k: int | None,
            eval_data: tuple[str, ...], base: str | None, export: str | None, merge: bool, dtype: str,
            force: bool, force_any: bool, allow_pickle: bool, trust_remote_code: bool, carry_remote_code: bool,
            eval_batch_size: int | None, max_length: int | None, eval_generate: tuple[str, ...], gen_metric: str,
            max_new_tokens: int | None, select_by: str | None, as_json: bool) -> None:
    """Choose RUN's checkpoint under a rule, re-evaluate it with the real model, and export it.

    Checkpoints are found under RUN as given; a missing, truncated, empty or
    non-finite one is never chosen, and when the logged best has no usable
    checkpoint the output says what is wrong with it. With --eval-data (or the eval
    set of a `logsage train` run) each candidate is re-evaluated: the base model is
    loaded once and the adapters swapped in turn. --export writes the winner
    atomically with a provenance file (logsage_selection.json); --merge writes the
    merged model as sharded safetensors, checked against base + adapter (logits)
    before it is reported as done. --force replaces only an earlier logsage export
    (--force-any: any folder), and never the run, its checkpoints, the base, the
    current directory or a filesystem root.

    \b
    Example:
        logsage select runs/qwen-lora --rule hf:patience=3
        logsage select runs/qwen-lora --rule hf:patience=3 --top-k 3 --eval-data data/val.jsonl
        logsage select runs/qwen-lora --rule hf:patience=3 --export ship/qwen --merge --dtype bf16
        logsage select runs/qwen-lora --rule hf:patience=3 --top-k 3 --eval-generate data/prompts.jsonl
    """
    from logsage.core.errors import UsageError
    from logsage.ship.select import ExportOptions, ReevalOptions, select_checkpoint

    if merge and not export:
        raise UsageError("--merge needs --export OUT (the folder to write the merged model to)")
    if force_any and not force:
        raise UsageError("--force-any goes with --force (it widens what --force may replace)")
    if carry_remote_code and not merge:
        raise UsageError("--carry-remote-code applies to merged exports; add --merge")
    if dtype != "auto" and not merge:
        raise UsageError("--dtype applies to merged exports; add --merge (an adapter is exported as trained)")
    _quiet_libraries()
    progress = _Progress()
    try:
        reeval = ReevalOptions(eval_data=list(eval_data) or None, base=base,
                               eval_generate=list(eval_generate) or None, gen_metric=gen_metric,
                               max_new_tokens=max_new_tokens, select_by=select_by, eval_batch_size=eval_batch_size,
                               max_length=max_length, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        export_to = None if export is None else ExportOptions(
            out=export, merge=merge, dtype=None if dtype == "auto" else dtype, force=force, force_any=force_any,
            carry_remote_code=carry_remote_code)
        result = select_checkpoint(run, rule, metric=metric, mode=mode, top_k=top_k, reeval=reeval,
                                   export_to=export_to, progress=progress, warn=warn)
    finally:
        progress.close()
    doc = result.to_dict()
    if as_json:
        emit_json(doc)
    else:
        _render(doc)


def _quiet_libraries() -> None:
    """No per-file loading bars or deprecation chatter from transformers/peft: our own progress is on stderr."""
    import os
    import warnings

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read by transformers when it is imported
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\.")


# Public names for the other model-loading commands (logsage evaluate).
Progress = _Progress
quiet_libraries = _quiet_libraries


def _fmt(v, digits: int = 5) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _render(doc: dict) -> None:
    from rich.table import Table

    out = console()
    params = ",".join(f"{k}={v}" for k, v in doc["params"].items() if k not in ("min_evals", "min_steps") or v)
    out.print(f"[bold]{doc['run']}[/bold]  rule {doc['rule']}:{params}  metric {doc['metric']} ({doc['mode']})")
    table = Table(show_header=True, header_style="bold")
    gen = (doc.get("reevaluation") or {}).get("generation")
    gen_cols = (gen["metric_label"], "p vs best") if gen else ()
    for col in ("step", "logged", "re-eval", "diff", "ppl", *gen_cols, "rank", ""):
        table.add_column(col, justify="left" if col == "" else "right")
    for c in doc["candidates"]:
        r = c.get("reevaluated") or {}
        g = c.get("generated") or {}
        mark = "rule's pick" if c["rule_pick"] else ""
        if c["step"] == doc["selected_step"]:
            mark = (mark + ", " if mark else "") + "selected"
        extra = (_fmt(g.get("mean"), 3), _fmt(g.get("p_vs_best"), 2)) if gen else ()
        table.add_row(str(c["step"]), _fmt(c["logged_value"]), _fmt(r.get("loss")), _fmt(c.get("difference"), 3),
                      _fmt(r.get("perplexity")), *extra, _fmt(c.get("reevaluated_rank") or c["logged_rank"]), mark)
    out.print(table)
    out.print(f"selected: step {doc['selected_step']}"
              + (f" (differs from the rule's pick, step {doc['rule_step']})" if doc.get("differs_from_rule") else ""))
    if doc.get("reevaluation_skipped"):
        out.print(f"re-evaluation skipped: {doc['reevaluation_skipped']}")
    ev = doc.get("reevaluation") or {}
    if ev.get("paired_test"):
        out.print(ev["paired_test"]["verdict"])
    if gen:
        print_generation(out, gen, exp_file=(doc.get("export") or {}).get("generations_file"))
    elif doc.get("logged_paired_test"):
        out.print(f"from the logged per-example losses: {doc['logged_paired_test']['verdict']}")
    for n in doc["notes"]:
        out.print(f"note: {n}")
    exp = doc.get("export")
    if exp:
        size = sum(1 for _ in exp["files"])
        out.print(f"exported {exp['kind']} to {exp['out']} ({size} files"
                  + (f", {exp['dtype']}" if exp.get("dtype") else "") + ")")
        logits = (exp.get("verification") or {}).get("logits")
        if isinstance(logits, dict):
            out.print(f"verified: logits match base + adapter (max |diff| {logits['max_abs_diff']:.3g} <= "
                      f"{logits['tolerance']:.3g}, compared in {logits['compared_in']})")
