"""`LogsageEarlyStopping` for Lightning: stop a `Trainer.fit` with a logsage rule.

    from logsage.integrations.lightning import LogsageEarlyStopping

    trainer = Trainer(callbacks=[LogsageEarlyStopping("lightning:patience=3", monitor="val_loss")])
    trainer.fit(model)

Works with `lightning` (`lightning.pytorch`) and `pytorch_lightning`: the base class is
the `Callback` of whichever the script imported (either Trainer calls its hooks by
name). After each validation (not the sanity check) the callback appends the monitored
value, at the step the logger writes for it, and asks `logsage.decide.live.first_stop`
(the function `logsage replay` uses) whether the rule stops: the stop is the one
`logsage replay lightning_logs/version_N/metrics.csv --rule RULE --metric MONITOR`
computes, and for `lightning:` rules the one Lightning's own `EarlyStopping` makes. The
series is the callback's checkpoint state (`state_dict`), so `fit(ckpt_path=...)`
resumes with the rule's history intact. Under several processes the stop is agreed as
Lightning's `EarlyStopping` does (`reduce_boolean_decision`).

Rules that need the training loss or per-example losses (`pq`, `significance`) are not
decidable here; use them offline on the run's metrics.csv.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

from logsage.core.extras import MissingExtraError
from logsage.core.names import canonical_name, default_mode
from logsage.decide.live import closest_keys, first_stop, parse_live_rules


def _callback_base() -> type:
    # The package the user's script imported wins; otherwise prefer the unified `lightning`.
    import importlib

    for name, module in (("lightning", "lightning.pytorch"), ("pytorch_lightning", "pytorch_lightning")):
        if name in sys.modules:
            return importlib.import_module(module).Callback
    try:
        from lightning.pytorch import Callback
    except ModuleNotFoundError:
        try:
            from pytorch_lightning import Callback
        except ModuleNotFoundError:
            raise MissingExtraError("logsage.integrations.lightning needs lightning or pytorch_lightning, which "
                                    "is not installed: pip install lightning") from None
    return Callback


def _logger_step(trainer: Any) -> int:
    # The step Lightning's loggers write for a validation's metrics (the CSVLogger's `step`
    # column) is the count of optimizer steps taken, which `global_step` may be ahead of.
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    return int(getattr(loop, "_batches_that_stepped", trainer.global_step))


class LogsageEarlyStopping(_callback_base()):  # type: ignore[misc]
    """Stop Lightning training when a logsage rule stops on the monitored metric's history.

    Args:
        rule: a rule spec as `logsage replay --rule` takes it, e.g. "lightning:patience=3" or
            "hf:patience=3,threshold=1e-4" (`logsage rules`); a list stops at the first that fires.
        monitor: the logged metric to watch, e.g. "val_loss".
        mode: "min" or "max"; default from the metric's name.
        strict: raise `MetricNotFound` when a validation ends without the metric (as
            Lightning's EarlyStopping(strict=True) does), naming the metrics that were logged.

    After fit, `stopped` is None or a dict with `rule`, `step`, `rule_stop_step`,
    `eval_index`, `best_step`, `reason` and `epoch`.
    """

    def __init__(self, rule: str | Sequence[str], *, monitor: str, mode: str | None = None, strict: bool = True):
        super().__init__()
        self.rules = parse_live_rules(rule)
        self.monitor = monitor
        self.mode = mode or default_mode(canonical_name(monitor))
        self.strict = strict
        self.steps: list[int] = []
        self.values: list[float] = []
        self.stopped: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return f"LogsageEarlyStopping{{monitor={self.monitor!r}, rules={[r.spec for r in self.rules]!r}}}"

    def state_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "values": list(self.values), "stopped": self.stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = [int(s) for s in state_dict.get("steps", [])]
        self.values = [float(v) for v in state_dict.get("values", [])]
        self.stopped = state_dict.get("stopped")

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            if self.strict:
                from logsage.core.errors import MetricNotFound

                logged = sorted(metrics)
                raise MetricNotFound(
                    f"LogsageEarlyStopping: the validation at step {_logger_step(trainer)} logged no "
                    f"{self.monitor!r} (logged: {', '.join(logged) or 'nothing'}){closest_keys(self.monitor, logged)}"
                    "; pass monitor= one of the logged metrics, or strict=False to ignore validations without it")
            return
        value = metrics[self.monitor]
        value = float(value.item() if hasattr(value, "item") else value)
        step = _logger_step(trainer)
        while self.steps and self.steps[-1] >= step:  # a validation repeated after a restart replaces the old one
            self.steps.pop()
            self.values.pop()
        self.steps.append(step)
        self.values.append(value)
        decision = None if self.stopped else first_stop(
            self.rules, self.steps, self.values, mode=self.mode, metric=self.monitor,
            budget_steps=trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None)
        should_stop = decision is not None
        reduce = getattr(trainer.strategy, "reduce_boolean_decision", None)
        if reduce is not None:
            should_stop = bool(reduce(should_stop, all=False))
        if not should_stop:
            return
        trainer.should_stop = True
        if decision is not None:
            decision["epoch"] = int(trainer.current_epoch)
            self.stopped = decision
            if trainer.is_global_zero:
                print(f"logsage: early stop at step {decision['step']} by {decision['rule']}: {decision['reason']}",
                      file=sys.stderr, flush=True)
