"""`logsage evaluate`: re-evaluate a run's checkpoints (eval loss and/or generation metrics) and rank them.

Also holds the generation options and the generation summary printout that `logsage select` shares.
"""

from __future__ import annotations

import click

from logsage.cli.output import console, emit_json, json_option, warn

SELECT_BY = ("gen", "loss", "gen-then-loss")


def generation_options(f):
    """--eval-generate, --gen-metric, --max-new-tokens, --select-by (shared by select and evaluate)."""
    f = click.option("--select-by", type=click.Choice(SELECT_BY), default=None,
                     help="Rank re-evaluated candidates by the generation metric (gen; the default with "
                          "--eval-generate), the re-evaluated loss (loss), or the lowest loss among the candidates "
                          "not distinguishable from the metric's best (gen-then-loss).")(f)
    f = click.option("--max-new-tokens", type=click.IntRange(min=1), default=None,
                     help="Tokens to generate at most per prompt (default 64).")(f)
    f = click.option("--gen-metric", default="exact", show_default=True,
                     help="Score of a generation against its reference: exact, contains, rouge-l, bleu (the gen "
                          "extra), or MODULE:FUNCTION / file.py:FUNCTION returning a float (higher is better).")(f)
    f = click.option("--eval-generate", multiple=True, type=click.Path(exists=True, dir_okay=False),
                     metavar="PROMPTS.jsonl",
                     help="Generate greedily from each candidate for these prompts (any format `logsage train` "
                          "reads; the output / last assistant turn / completion is the reference) and score them. "
                          "Repeatable.")(f)
    return f


def print_generation(out, gen: dict, *, exp_file: str | None = None) -> None:
    """The generation re-evaluation's verdicts: best and the indistinguishable ones, loss vs metric disagreement."""
    out.print(f"generation: {gen['n_prompts']} prompts from {gen['prompts']}, greedy, at most "
              f"{gen['max_new_tokens']} new tokens; {gen['verdict']}")
    if gen.get("disagreement"):
        out.print(f"[bold]loss and {gen['metric_label']} disagree:[/bold] {gen['disagreement']}")
    elif gen.get("agree"):
        out.print(f"{gen['loss_label']} and {gen['metric_label']} agree on step {gen['best_step']}")
    if gen.get("objective"):
        out.print(f"ranked {gen['objective']}")
    if exp_file:
        out.print(f"per-example generations: {exp_file}")


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


@click.command("evaluate")
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--checkpoints", default=None, metavar="STEP,STEP,...",
              help="Steps to re-evaluate, e.g. 200,400,600 (default: every usable checkpoint).")
@click.option("--eval-data", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Eval data for the loss (default: the eval set named in the run's logsage_run.json). Repeatable.")
@generation_options
@click.option("--metric", default=None, help="The logged metric to compare with (default: the run's eval loss).")
@click.option("--base", default=None, help="Base model folder (default: the adapter's config, then the manifest).")
@click.option("--allow-pickle", is_flag=True, help="Load pickle-only checkpoints with torch.load(weights_only=True).")
@click.option("--trust-remote-code", is_flag=True, help="Let transformers run the model's own code from its folder.")
@click.option("--eval-batch-size", type=click.IntRange(min=1), default=None,
              help="Batch size of the loss evaluation and of generation (default: the run's, else 8).")
@click.option("--max-length", type=click.IntRange(min=2), default=None,
              help="Truncate eval examples to this many tokens (default: the run's, else 2048).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Write the result here (JSON) and the per-example generations beside it "
                   "(<name>.generations.jsonl); `logsage report --selection OUT` shows it.")
@json_option
def command(run: str, checkpoints: str | None, eval_data: tuple[str, ...], eval_generate: tuple[str, ...],
            gen_metric: str, max_new_tokens: int | None, select_by: str | None, metric: str | None,
            base: str | None, allow_pickle: bool, trust_remote_code: bool, eval_batch_size: int | None,
            max_length: int | None, out: str | None, as_json: bool) -> None:
    """Re-evaluate RUN's checkpoints and rank them, without exporting anything.

    The base model is loaded once and each adapter swapped in; each candidate's
    eval loss is computed as HF Trainer computes it and, with --eval-generate, it
    answers the prompts greedily and is scored by --gen-metric. Candidates are
    compared paired by prompt (McNemar for exact/contains, a seeded paired
    bootstrap otherwise); the ones not distinguishable from the best are named, and
    a disagreement between the loss and the metric is said.

    \b
    Example:
        logsage evaluate runs/qwen-lora --checkpoints 200,400,600 --eval-generate data/prompts.jsonl
        logsage evaluate runs/qwen-lora --eval-generate p.jsonl --gen-metric rouge-l --out eval.json
    """
    from logsage.cli.select import Progress, quiet_libraries
    from logsage.ship.rerank import evaluate_run, parse_steps

    steps = parse_steps(checkpoints)
    quiet_libraries()
    progress = Progress()
    try:
        doc = evaluate_run(run, checkpoints=steps, eval_data=list(eval_data) or None,
                           eval_generate=list(eval_generate) or None, gen_metric=gen_metric,
                           max_new_tokens=max_new_tokens, select_by=select_by, metric=metric, base=base,
                           allow_pickle=allow_pickle, trust_remote_code=trust_remote_code,
                           eval_batch_size=eval_batch_size, max_length=max_length, out=out, progress=progress,
                           warn=warn)
    finally:
        progress.close()
    if as_json:
        emit_json(doc)
        return
    from rich.table import Table

    ev = doc["reevaluation"]
    gen = ev.get("generation") or {}
    losses = {r["step"]: r for r in ev.get("results") or []}
    scores = {r["step"]: r for r in gen.get("results") or []}
    con = console()
    con.print(f"[bold]{doc['run']}[/bold]  {len(doc['checkpoints'])} checkpoint(s), {ev['model_loads']} model load(s)")
    table = Table(show_header=True, header_style="bold")
    cols = ["step", f"logged {doc['metric'] or ''}".strip(), "re-eval loss"]
    if gen:
        cols += [gen["metric_label"], "p vs best"]
    for col in cols + ["rank"]:
        table.add_column(col, justify="right")
    for rank, s in enumerate(doc["ranking"], start=1):
        row = [str(s), _fmt(doc["logged"].get(s)), _fmt((losses.get(s) or {}).get("loss"))]
        if gen:
            g = scores.get(s) or {}
            row += [_fmt(g.get("mean"), 3), _fmt(g.get("p_vs_best"), 2)]
        table.add_row(*row, str(rank))
    con.print(table)
    con.print(f"best: step {doc['ranking'][0]}")
    if ev.get("paired_test"):
        con.print(ev["paired_test"]["verdict"])
    if gen:
        print_generation(con, gen, exp_file=next((w for w in doc.get("written", []) if w.endswith(".jsonl")), None))
    for w in doc.get("written", []):
        if w.endswith(".json"):
            con.print(f"wrote {w}")
