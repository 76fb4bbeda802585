"""Live early stopping: a Hugging Face `TrainerCallback` that runs logsage rules during training.

The callback holds no counters of its own. At each evaluation it takes the
monitored metric's whole history so far from `state.log_history` and asks the same
function `logsage replay` uses (`logsage.replay.engine.decide_values`) whether the rule
stops at the current evaluation. Because the Trainer restores `log_history` from
the checkpoint on `--resume-from-checkpoint`, a rule's state survives a resume
exactly, and the live stop is by construction the stop that an offline replay of
the finished log computes.

When a rule fires, training stops after this step and the stopping evaluation's
checkpoint is saved; the reason is logged to stderr and kept in `self.stopped` (the
recipe writes it into the run manifest).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
from transformers import TrainerCallback

from logsage.core.names import default_mode
from logsage.rules.base import get_rule, parse_rule_spec, resolve_params

log = logging.getLogger("logsage.train")


@dataclass(frozen=True)
class LiveRule:
    spec: str
    name: str
    params: dict[str, Any]  # as given (strings), resolved by decide_values


def parse_live_rules(specs: list[str]) -> list[LiveRule]:
    """Parse and validate `--early-stop` specs now (a bad rule is a usage error before any model loads)."""
    rules = []
    for spec in specs:
        name, given = parse_rule_spec(spec)
        resolve_params(get_rule(name), given)  # raises RuleConfigError on a bad name, parameter or value
        rules.append(LiveRule(spec, name, dict(given)))
    return rules


def hf_metric_key(metric: str) -> str:
    """The key the Trainer logs a metric under: an `eval_` prefix is added when missing (as HF does)."""
    return metric if metric.startswith("eval_") else f"eval_{metric}"


def series_from_log_history(log_history: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one logged key; a step logged twice keeps its later value (as ingest does)."""
    by_step: dict[int, float] = {}
    for entry in log_history:
        if key in entry and "step" in entry:
            v = entry[key]
            by_step[int(entry["step"])] = float("nan") if v is None else float(v)
    steps = np.asarray(sorted(by_step), dtype=np.int64)
    return steps, np.asarray([by_step[int(s)] for s in steps], dtype=np.float64)


class LiveRuleCallback(TrainerCallback):
    """Stop training when any of the given logsage rules stops on the metric's history so far."""

    def __init__(self, rules: list[LiveRule], *, metric: str = "eval_loss", mode: str | None = None,
                 per_example: Callable[[], dict[int, dict[str, np.ndarray]]] | None = None,
                 echo: Callable[[str], None] | None = None):
        self.rules = rules
        self.metric = metric
        self.key = hf_metric_key(metric)
        self.mode = mode or default_mode(metric)
        self.per_example = per_example
        self.echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.stopped: dict[str, Any] | None = None

    def decide(self, log_history: list[dict[str, Any]], max_steps: int | None) -> dict[str, Any] | None:
        """The first rule that stops at (or before) the latest evaluation, as a dict; None to go on."""
        from logsage.replay.engine import decide_values

        steps, values = series_from_log_history(log_history, self.key)
        if values.size == 0:
            return None
        train_steps, train_values = series_from_log_history(log_history, "loss")
        wants_per_example = any("per_example" in get_rule(r.name).needs for r in self.rules)
        per_example = self.per_example() if (self.per_example and wants_per_example) else None
        last = values.size - 1
        for r in self.rules:
            outcome = decide_values(
                values, r.name, r.params, mode=self.mode, steps=steps,
                train_steps=train_steps if train_steps.size else None,
                train_values=train_values if train_values.size else None,
                budget_steps=max_steps if max_steps and max_steps > 0 else None,
                per_example={k: v for k, v in (per_example or {}).items() if k <= int(steps[-1])} or None,
                metric=self.metric,
            )
            if outcome.stop_index is not None and outcome.stop_index <= last:
                late = outcome.stop_index < last
                return {
                    "rule": r.spec,
                    "step": int(steps[last]),
                    "rule_stop_step": int(steps[outcome.stop_index]),
                    "eval_index": int(last),
                    "best_step": None if outcome.best_index is None else int(steps[outcome.best_index]),
                    "reason": outcome.reason + (
                        f" (the rule had already fired at step {int(steps[outcome.stop_index])}, before this "
                        "segment of the run)" if late else ""),
                }
        return None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.stopped is not None or not metrics or self.key not in metrics:
            return control  # HF's callback also ignores an evaluation without the key (another eval set)
        decision = self.decide(state.log_history, state.max_steps)
        if decision is None:
            return control
        self.stopped = decision
        control.should_training_stop = True
        control.should_save = True  # keep the stopping evaluation's checkpoint
        if state.is_world_process_zero:
            self.echo(f"logsage: early stop at step {decision['step']} by {decision['rule']}: {decision['reason']}")
        log.info("early stop: %s", decision)
        return control


class SaveEveryEvalCallback(TrainerCallback):
    """--save-all: make sure every evaluation is followed by a save, whatever triggered the evaluation."""

    def on_evaluate(self, args, state, control, **kwargs):
        control.should_save = True
        return control
