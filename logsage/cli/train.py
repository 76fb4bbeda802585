"""`logsage train`: fine-tune with HF Trainer + LoRA, keeping a checkpoint at every evaluation.

The options are generated from `logsage.train.config.TrainConfig` (one source for
the names, help texts and defaults); the command resolves the configuration, makes
one library call (`logsage.train.recipe.run_training`) and renders its result.
Nothing heavy is imported until the command runs.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any, Callable

import click

from logsage.cli.output import emit_json, json_option
from logsage.train.config import FIELDS, PRESETS, field_type_name, cli_flag, help_with_default

# Options with a shape of their own; every other TrainConfig field becomes --<name>.
_SPECIAL = {"data", "eval_data", "early_stop", "resume_from_checkpoint", "output"}


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    for name in reversed(list(FIELDS)):
        if name in _SPECIAL:
            continue
        fld = FIELDS[name]
        kind = field_type_name(fld)
        help_text = help_with_default(name)
        flag = cli_flag(name)
        choices = fld.metadata.get("choices")
        if kind == "bool":
            f = click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_text)(f)
        else:
            ptype: Any = {"int": int, "float": float}.get(kind, str)
            if choices:
                ptype = click.Choice(choices)
            f = click.option(flag, name, type=ptype, default=None, help=help_text)(f)
    return f


def _preset_help() -> str:
    lines = []
    for p in PRESETS.values():
        values = ", ".join(f"{k}={v}" for k, v in p.values.items() if k != "model")
        lines.append(f"{p.name}: {values}")
    return "Start from a named preset (" + "; ".join(lines) + "). Sources in docs/train.md."


@click.command("train")
@click.option("--data", "data", multiple=True, metavar="FILE", help=help_with_default("data") + " Repeatable.")
@click.option("--eval-data", "eval_data", multiple=True, metavar="FILE",
              help=help_with_default("eval_data") + " Repeatable.")
@click.option("--output", "-o", "output", metavar="RUN_DIR", help=help_with_default("output"))
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="YAML file of settings (keys as the option names); command-line options override it.")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None, help=_preset_help())
@click.option("--early-stop", "early_stop", multiple=True, metavar="RULE[:k=v,...]",
              help=help_with_default("early_stop"))
@click.option("--resume-from-checkpoint", "resume_from_checkpoint", is_flag=False, flag_value="latest",
              default=None, metavar="[PATH|latest]", help=help_with_default("resume_from_checkpoint"))
@_options
@json_option
def command(config_file: str | None, preset: str | None, as_json: bool, **options: Any) -> None:
    """Fine-tune a causal LM with LoRA (HF Trainer + peft) and keep what replay needs.

    Evaluates every --eval-steps steps; with --save-all a checkpoint is saved at every
    evaluation and none is ever deleted. Each checkpoint also holds the per-example
    eval losses (per_example_eval_loss.jsonl); the run folder holds trainer_state.json,
    TensorBoard events (runs/) and the manifest logsage_run.json. --early-stop runs a
    logsage rule live, with the same code as `logsage replay`.

    \b
    Example (anywhere, CPU, no download):
        logsage train --model tiny-random-qwen2 --data examples/data/tiny_alpaca.jsonl \\
            --eval-data examples/data/tiny_alpaca_eval.jsonl --output runs/tiny \\
            --save-all --max-steps 20 --eval-steps 4 --device cpu
    \b
    Example (one 24 GB GPU):
        logsage train --preset qwen2.5-7b-lora --data train.jsonl --eval-data val.jsonl \\
            --output runs/qwen-lora --save-all
    """
    from logsage.train.config import resolve_config
    from logsage.train.recipe import is_main_process, require_training_stack, run_training

    require_training_stack()  # before the configuration and data are checked
    cfg, origin = resolve_config(options, config_file=config_file, preset=preset)

    def echo(msg: str) -> None:
        click.echo(msg, err=True)

    # The Trainer prints its log lines on stdout; stdout is kept for the result.
    with contextlib.redirect_stdout(sys.stderr):
        result = run_training(cfg, origin, echo=echo)
    if not is_main_process():  # under torchrun / accelerate launch, rank 0 alone reports
        return
    if as_json:
        emit_json(result.to_dict())
        return
    _render(result)


def _render(result) -> None:
    from logsage.cli.output import console

    con = console()
    con.print(f"[bold]{result.run_dir}[/bold]: {result.status} at step {result.global_step} of {result.max_steps}; "
              f"{len(result.evaluations)} evaluation(s), {len(result.checkpoints)} checkpoint(s)")
    if result.evaluations:
        best = min(result.evaluations, key=lambda e: e["eval_loss"])
        last = result.evaluations[-1]
        con.print(f"eval_loss: last {last['eval_loss']:.6g} at step {last['step']}; "
                  f"best {best['eval_loss']:.6g} at step {best['step']}")
    if result.early_stop:
        es = result.early_stop
        con.print(f"early stop by {es['rule']} at step {es['step']}: {es['reason']}")
    con.print(f"next: logsage replay {result.run_dir} --rule hf:patience=3")
