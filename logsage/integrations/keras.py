"""`LogsageEarlyStopping` for Keras 3: stop `model.fit` with a logsage rule.

    from logsage.integrations.keras import LogsageEarlyStopping

    model.fit(x, y, validation_data=(xv, yv), epochs=50,
              callbacks=[LogsageEarlyStopping("keras:patience=3", monitor="val_loss")])

At each epoch's end (with validation) the callback records the monitored value at step
`epoch + 1` (the number of epochs completed, as logsage reads a Keras `CSVLogger` file)
and the training `loss`, then asks `logsage.decide.live.first_stop` (the function
`logsage replay` uses) whether the rule stops: the stop is the one `logsage replay
training.log --rule RULE --metric MONITOR` computes on the CSVLogger file, and for
`keras:` rules the one Keras's own `EarlyStopping` makes.

Resume: the same callback object keeps its history across `fit` calls (continuing with
`initial_epoch=`); after a restart of the process pass `log=` the run's CSVLogger file
and the history is read back from it (epochs that are trained again replace their rows).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from logsage.core.extras import MissingExtraError
from logsage.core.names import canonical_name, default_mode
from logsage.decide.live import closest_keys, first_stop, parse_live_rules

try:
    import keras
except ModuleNotFoundError as e:  # pragma: no cover - exercised without keras
    if e.name != "keras":
        raise  # keras is there but its backend is not (e.g. set KERAS_BACKEND=torch): keras's own message
    raise MissingExtraError("logsage.integrations.keras needs keras, which is not installed: pip install keras") from None


class LogsageEarlyStopping(keras.callbacks.Callback):
    """Stop Keras training when a logsage rule stops on the monitored metric's history.

    Args:
        rule: a rule spec as `logsage replay --rule` takes it, e.g. "keras:patience=3" (`logsage rules`);
            a list stops at the first that fires.
        monitor: the logged metric to watch, e.g. "val_loss".
        mode: "min" or "max"; default from the metric's name.
        log: the run's CSVLogger file, read at the start of training to restore the history
            after a restart (optional).
        strict: raise `MetricNotFound` when an epoch that ran validation lacks the metric.

    After fit, `stopped` is None or a dict with `rule`, `step` (epochs completed),
    `rule_stop_step`, `eval_index`, `best_step`, `reason` and `epoch` (0-based, as
    Keras's `EarlyStopping.stopped_epoch`).
    """

    def __init__(self, rule: str | Sequence[str], *, monitor: str, mode: str | None = None,
                 log: str | os.PathLike | None = None, strict: bool = True):
        super().__init__()
        self.rules = parse_live_rules(rule)
        self.monitor = monitor
        self.mode = mode or default_mode(canonical_name(monitor))
        self.log = log
        self.strict = strict
        self.evals: dict[int, float] = {}  # step (epochs completed) -> value
        self.train_loss: dict[int, float] = {}
        self.stopped: dict[str, Any] | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.stopped = None
        if self.log and os.path.isfile(self.log):
            from logsage.ingest import load_history

            h = load_history(self.log, format="keras", use_cache=False)
            for target, name in ((self.evals, self.monitor), (self.train_loss, "loss")):
                try:
                    s = h.metric(name)
                except Exception:  # the metric is not in the file yet
                    continue
                target.update({int(st): float(v) for st, v in zip(s.steps, s.values)})

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        step = int(epoch) + 1
        for series in (self.evals, self.train_loss):  # an epoch trained again replaces what came after it
            for s in [s for s in series if s >= step]:
                del series[s]
        if "loss" in logs:
            self.train_loss[step] = float(logs["loss"])
        if self.monitor not in logs:
            validated = not self.monitor.startswith("val_") or any(k.startswith("val_") for k in logs)
            if self.strict and validated:
                from logsage.core.errors import MetricNotFound

                logged = sorted(logs)
                raise MetricNotFound(
                    f"LogsageEarlyStopping: epoch {epoch} logged no {self.monitor!r} (logged: "
                    f"{', '.join(logged) or 'nothing'}){closest_keys(self.monitor, logged)}; pass monitor= one of "
                    "the logged metrics")
            return
        self.evals[step] = float(logs[self.monitor])
        steps = sorted(self.evals)
        train_steps = sorted(self.train_loss)
        decision = first_stop(self.rules, steps, [self.evals[s] for s in steps], mode=self.mode,
                              metric=self.monitor, train_steps=train_steps,
                              train_values=[self.train_loss[s] for s in train_steps])
        if decision is None:
            return
        decision["epoch"] = int(epoch)
        self.stopped = decision
        self.model.stop_training = True
        print(f"logsage: early stop after epoch {epoch} by {decision['rule']}: {decision['reason']}", flush=True)
