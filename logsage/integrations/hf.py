"""`LogsageCallback`: a Hugging Face `TrainerCallback` that stops training with a logsage rule.

    from logsage.integrations.hf import LogsageCallback

    trainer = Trainer(..., callbacks=[LogsageCallback("hf:patience=3,threshold=1e-4")])
    trainer.train()

At each evaluation the callback takes the monitored metric's whole history so far from
`state.log_history` and asks `logsage.decide.live.first_stop` (the function `logsage
replay` uses) whether the rule stops now. It keeps no counters: the Trainer restores
`log_history` on `resume_from_checkpoint`, so a rule's state survives a resume exactly,
and the live stop is the stop that `logsage replay OUTPUT_DIR --rule RULE` computes on
the finished log. When the rule fires, training stops after this step and that
evaluation's checkpoint is saved (`control.should_save`); the decision is kept in
`callback.stopped` and printed on stderr.

Unlike HF's own `EarlyStoppingCallback` (which only warns), a metric that is never
logged is an error: with `strict=True` (the default) the first evaluation round that
lacks the metric raises `MetricNotFound` naming the metric and the keys that were
logged. Several eval sets are fine: the check waits until every set of the round was
evaluated. At the start of training the callback warns once when the save cadence
means the checkpoint the rule keeps (its best evaluation) may not exist on disk.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any, Callable, Sequence

import numpy as np

from logsage.core.extras import missing_extra_error
from logsage.core.names import default_mode
from logsage.decide.live import closest_keys, first_stop, parse_live_rules, wants_per_example

try:
    from transformers import TrainerCallback
except ModuleNotFoundError as e:  # pragma: no cover - exercised without the train extra
    if (e.name or "").split(".")[0] not in ("transformers", "torch"):
        raise
    raise missing_extra_error("logsage.integrations.hf", e.name or "transformers") from None

log = logging.getLogger("logsage.integrations.hf")

__all__ = ["LogsageCallback", "hf_metric_key", "series_from_log_history", "save_cadence_problem"]


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


def _strategy(value: Any) -> str:
    return str(getattr(value, "value", value)).lower()


def save_cadence_problem(args: Any, state: Any, key: str, mode: str) -> str | None:
    """Why the checkpoint a rule keeps (any evaluation may be its best) may not be on disk; None when it will be.

    Reads the resolved TrainingArguments and TrainerState (`state.eval_steps` /
    `state.save_steps` are absolute step counts at `on_train_begin`).
    """
    save, evals = _strategy(args.save_strategy), _strategy(args.eval_strategy)
    if save == "no":
        return "save_strategy is 'no': no checkpoint is saved"
    if save == "best":
        best = hf_metric_key(args.metric_for_best_model or "loss")
        if best != key:
            return f"save_strategy is 'best' by {best}, not by {key}"
    elif save != evals:
        return f"evaluations are every {evals}, saves every {save}"
    elif save == "steps":
        eval_steps, save_steps = int(state.eval_steps or 0), int(state.save_steps or 0)
        if save_steps and eval_steps and eval_steps % save_steps:
            return (f"an evaluation every {eval_steps} steps but a save every {save_steps}: some evaluations "
                    "get no checkpoint")
    if args.save_total_limit:
        protected = hf_metric_key(args.metric_for_best_model) if args.metric_for_best_model else None
        greater = bool(args.greater_is_better) if args.greater_is_better is not None else False
        if protected != key or greater != (mode == "max"):
            return (f"save_total_limit={args.save_total_limit} deletes older checkpoints and only the best by "
                    f"{protected or 'nothing'} ({'max' if greater else 'min'}) is protected, not by {key} ({mode})")
    return None


class LogsageCallback(TrainerCallback):
    """Stop a `transformers.Trainer` run when a logsage rule stops on the metric's history so far.

    Args:
        rule: a rule spec as `logsage replay --rule` takes it, e.g. "hf:patience=3,threshold=1e-4"
            (`logsage rules` lists them); a list of specs stops at the first that fires.
        metric: the monitored metric (an `eval_` prefix is added when missing, as HF does).
        mode: "min" or "max"; default from the metric's name (losses min, accuracies max).
        strict: raise `MetricNotFound` when an evaluation round never logs the metric
            (HF's own callback only warns, and a typo trains to the end).
        per_example, echo: used by `logsage train` (per-example eval losses for the
            `significance` rule; where the stop message goes, default stderr).

    After training, `stopped` is None (the rule never fired) or a dict with `rule`, `step`,
    `rule_stop_step`, `eval_index`, `best_step` and `reason`.
    """

    def __init__(self, rule: str | Sequence[str], *, metric: str = "eval_loss", mode: str | None = None,
                 strict: bool = True,
                 per_example: Callable[[], dict[int, dict[str, np.ndarray]]] | None = None,
                 echo: Callable[[str], None] | None = None):
        self.rules = parse_live_rules(rule)  # a bad rule fails here, before any training
        self.metric = metric
        self.key = hf_metric_key(metric)
        self.mode = mode or default_mode(self.key)
        self.strict = strict
        self.per_example = per_example
        self.echo = echo or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.stopped: dict[str, Any] | None = None
        self._round: tuple[int, set[str], bool] | None = None  # (step, keys logged, metric seen) of open round
        self._warned = False

    # ------------------------------------------------------------------ the decision
    def decide(self, log_history: list[dict[str, Any]], max_steps: int | None) -> dict[str, Any] | None:
        """The first rule that stops at (or before) the latest evaluation in `log_history`; None to go on."""
        steps, values = series_from_log_history(log_history, self.key)
        train_steps, train_values = series_from_log_history(log_history, "loss")
        per_example = self.per_example() if (self.per_example and wants_per_example(self.rules)) else None
        return first_stop(self.rules, steps, values, mode=self.mode, metric=self.metric,
                          train_steps=train_steps, train_values=train_values, budget_steps=max_steps,
                          per_example=per_example)

    # ------------------------------------------------------------------ Trainer events
    def on_train_begin(self, args, state, control, **kwargs):
        problem = save_cadence_problem(args, state, self.key, self.mode)
        if problem and not self._warned and state.is_world_process_zero:
            self._warned = True
            warnings.warn(
                f"LogsageCallback: {problem}, so the checkpoint the rule keeps (its best evaluation) may not exist; "
                f"save at every evaluation (save_strategy = eval_strategy, save_steps = eval_steps) and set "
                f"metric_for_best_model='{self.key}' to protect it from save_total_limit", UserWarning, stacklevel=2)
        return control

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics = metrics or {}
        step = int(state.global_step)
        if self._round is None or self._round[0] != step:
            self._close_round()
            self._round = (step, set(), False)
        _, keys, seen = self._round
        keys.update(metrics)
        self._round = (step, keys, seen or self.key in metrics)
        if self.stopped is not None or self.key not in metrics:
            return control  # another eval set's evaluation: the round is checked when it ends
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

    # A round of evaluations (one per eval set) ends at the next event after it.
    def on_save(self, args, state, control, **kwargs):
        self._close_round()
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        self._close_round()
        return control

    def on_epoch_begin(self, args, state, control, **kwargs):
        self._close_round()
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self._close_round()
        return control

    def _close_round(self) -> None:
        if self._round is None:
            return
        step, keys, seen = self._round
        self._round = None
        if seen or not self.strict:
            return
        from logsage.core.errors import MetricNotFound

        logged = sorted(k for k in keys if k != "epoch")
        raise MetricNotFound(
            f"LogsageCallback: the evaluation at step {step} logged no {self.key!r} "
            f"(logged: {', '.join(logged) or 'nothing'}){closest_keys(self.key, logged)}; pass metric= one of "
            "the logged keys, or strict=False to ignore evaluations without it")
