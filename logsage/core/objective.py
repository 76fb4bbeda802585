"""The objective of a replay: which metric a rule watches and in which direction.

Direction is handled here, once: `Objective.orient` turns a metric's values into
"lower is better" (a `max` metric is negated), so no rule ever branches on the mode.
NaN stays NaN and +/-inf swap sign, which is what every library's comparison does
with a negated monitor. `default_mode` (from the metric's name) lives in
`logsage.core.names`; this module only applies it.

    >>> from logsage.core.objective import resolve_objective
    >>> obj = resolve_objective(history, "eval_accuracy")      # -> Objective("eval/accuracy", "max")
    >>> oriented = obj.orient(history.series[obj.metric].values)

This module imports nothing of logsage beyond `history`, `names` and `errors`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from logsage.core.errors import MetricNotFound, UsageError
from logsage.core.names import default_mode

if TYPE_CHECKING:  # pragma: no cover
    from logsage.core.history import History

MODES = ("min", "max")


def check_mode(mode: str) -> str:
    """`mode` if it is "min" or "max", else a usage error naming the value."""
    if mode not in MODES:
        raise UsageError(f"mode must be 'min' or 'max', got {mode!r}")
    return mode


def orient(values: np.ndarray | list[float], mode: str) -> np.ndarray:
    """Values as float64, lower-is-better: unchanged for `min`, negated for `max`."""
    arr = np.asarray(values, dtype=np.float64)
    return -arr if check_mode(mode) == "max" else arr.copy()


@dataclass(frozen=True)
class Objective:
    """A monitored metric (its source name in the run) and its direction."""

    metric: str  # the source name of the series, e.g. "eval/loss"
    mode: str  # "min" | "max"

    def orient(self, values: np.ndarray | list[float]) -> np.ndarray:
        return orient(values, self.mode)


def resolve_objective(history: "History", metric: str | None = None, mode: str | None = None) -> Objective:
    """The metric a replay of `history` watches, and its direction.

    Args:
        metric: a source name (`eval/loss`, `Validation Loss`) or a canonical alias
            (`eval_loss`); default: the run's primary eval metric (its eval loss, else
            its first eval series).
        mode: "min" or "max"; default: from the metric's name (`logsage.core.names.default_mode`:
            losses, errors and perplexities are `min`, everything else `max`).

    Raises:
        MetricNotFound: the metric is not in the run (the message lists what is), or
            the run has no eval series and no metric was named.
        UsageError: `mode` is not "min" or "max".
    """
    if mode is not None:
        check_mode(mode)
    if metric is None:
        name = history.primary_eval_metric()
        if name is None:
            available = sorted(n for n, s in history.series.items() if s.kind in ("eval", "train", "test") and len(s))
            raise MetricNotFound(
                f"{history.path}: no evaluation metric in the run; pass --metric with one of: "
                f"{', '.join(available) or '(none)'}"
            )
    else:
        name = history.resolve(metric)
    return Objective(name, mode or default_mode(name))
