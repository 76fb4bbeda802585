"""Helpers shared by the rule modules: parameter checks, number wording and best-so-far tracking.

Nothing here decides a stop; it only keeps the rule modules short and their
messages uniform ("rule hf: patience must be >= 0, got -1").
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from logsage.core.errors import RuleConfigError
from logsage.rules.base import Outcome, RuleInput


# ------------------------------------------------------------------ validation
def require(rule_name: str, ok: bool, message: str) -> None:
    """Raise RuleConfigError("rule <name>: <message>") unless ok."""
    if not ok:
        raise RuleConfigError(f"rule {rule_name}: {message}")


def at_least(rule_name: str, name: str, value: float, low: float) -> None:
    require(rule_name, value is not None and value >= low, f"{name} must be >= {low:g}, got {value!r}")


def finite_at_least(rule_name: str, name: str, value: float, low: float) -> None:
    """value must be a finite number >= low (NaN and inf are rejected)."""
    require(rule_name, value is not None and math.isfinite(value) and value >= low,
            f"{name} must be a finite number >= {low:g}, got {value!r}")


def finite_or_unset(rule_name: str, name: str, value: float | None) -> None:
    require(rule_name, value is None or math.isfinite(value),
            f"{name} must be a finite number or none, got {value!r}")


# ------------------------------------------------------------------ wording
def num(v: float | None) -> str:
    """A number for a reason: 6 significant digits, 'nan'/'inf' spelled out."""
    if v is None:
        return "none"
    v = float(v)
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.6g}"


def raw_values(x: RuleInput) -> np.ndarray:
    """The values as logged (un-negated), whether or not the caller filled raw_values."""
    if x.raw_values is not None:
        return x.raw_values
    return -x.values if x.mode == "max" else x.values


def shown(x: RuleInput, i: int) -> str:
    """'1.79 at step 500' for evaluation i."""
    return f"{num(raw_values(x)[i])} at step {int(x.steps[i])}"


def to_user_units(x: RuleInput, oriented: float) -> float:
    """Undo the orientation of a threshold or a value for wording."""
    return -oriented if x.mode == "max" else oriented


def to_oriented(x: RuleInput, value: float) -> float:
    """Bring a threshold given in the metric's units into the oriented (lower is better) frame."""
    return -value if x.mode == "max" else value


def best_phrase(x: RuleInput, best_index: int | None) -> str:
    return f"best {shown(x, best_index)}" if best_index is not None else "no finite best"


class ReasonWords(NamedTuple):
    """The run-independent parts of a counting rule's reason (see each rule's `*_reason_words`)."""

    first: str  # after the metric's name, before the count: " did not improve by more than 0.0001 for "
    second: str  # after the count, before the stop step: " (patience 3) at step "
    never: str  # after the metric's name when it never stops, before the total: " never went 3 ... in "


def evals(n: int) -> str:
    return f"{n} evaluation" if n == 1 else f"{n} evaluations"


# ------------------------------------------------------------------ common answers
def undecidable(reason: str) -> Outcome:
    return Outcome(None, None, reason, decidable=False)


def best_index_upto(vals: list[float], end: int) -> int | None:
    """Index of the lowest finite value in vals[:end + 1] (earliest on ties); None if none is finite."""
    best = None
    best_v = math.inf
    for i in range(min(end + 1, len(vals))):
        v = vals[i]
        if v < best_v and math.isfinite(v):
            best_v = v
            best = i
    return best


def check_series(x: RuleInput, rule_name: str, min_len: int = 2) -> Outcome | None:
    """The common 'cannot judge' answers for non-library rules, or None when the series is usable.

    A rule that compares evaluations needs at least `min_len` of them and at least
    one finite value.
    """
    n = int(x.values.size)
    if n == 0:
        return undecidable(f"{x.metric} has no evaluations")
    if not np.isfinite(x.values).any():
        return undecidable(f"{x.metric} has no finite value in {evals(n)}")
    if n < min_len:
        return undecidable(f"only {evals(n)} of {x.metric}; rule {rule_name} needs at least {min_len}")
    return None
