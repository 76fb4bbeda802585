"""The plain patience rule, and the patience scan that smoothed, adaptive and multi build on.

Two definitions of "no improvement" circulate in fine-tuning guides and must not
be confused:

* ``no-improvement``: count evaluations that are not better than the best so far
  by more than δ (a plateau stops);
* ``degradation``: count evaluations that are *worse* than the best so far by more
  than δ, in a row (a plateau never stops).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from logsage.rules.common import (ReasonWords, at_least, best_phrase, check_series, evals, finite_at_least, num,
                                   require)
from logsage.rules.base import Outcome, RuleInput, rule

DEFINITIONS = ("no-improvement", "degradation")


@dataclass(frozen=True)
class Scan:
    """Where a patience scan ended: its stop (None: never), best, and counter then."""

    stop: int | None
    best_index: int | None
    count: int  # the counter at the stop, or at the end of the series


def no_improvement_scan(vals: Sequence[float], patience: Sequence[int], min_delta: Sequence[float], *,
                        relative: bool = False, not_before: int = 0) -> Scan:
    """Count evaluations not better than the best by more than δ; stop when the count reaches patience.

    `patience[t]` and `min_delta[t]` are the values in force at evaluation t (the
    adaptive rule changes them as training progresses). The first finite value sets
    the best; an improvement needs `best - v > δ` (strict), so a gain equal to δ
    counts as no improvement. Non-finite values never become the best; they count as
    no improvement once a best exists (before the first finite value there is nothing
    to improve on, so nothing is counted, and a prefix with no finite value is never a
    stop). The stop check runs on non-improving evaluations only, so patience 0 stops
    at the first non-improvement.
    """
    best = math.inf
    best_index: int | None = None
    count = 0
    for t, v in enumerate(vals):
        if math.isfinite(v):
            delta = min_delta[t] * abs(best) if relative and best_index is not None else min_delta[t]
            if best_index is None or best - v > delta:
                best, best_index, count = v, t, 0
                continue
        elif best_index is None:
            continue
        count += 1
        if count >= patience[t] and t >= not_before:
            return Scan(t, best_index, count)
    return Scan(None, best_index, count)


def degradation_scan(vals: Sequence[float], patience: int, min_delta: float, *, relative: bool = False,
                     not_before: int = 0) -> Scan:
    """Count consecutive evaluations worse than the best so far by more than δ; stop at patience of them.

    The best is the running minimum (any strict gain moves it). A degradation needs
    `v - best > δ` (strict); a value within δ of the best, or a new best, resets the
    run. A non-finite value after the first finite one counts as a degradation (a
    diverging run should stop); before it nothing is counted.
    """
    best = math.inf
    best_index: int | None = None
    count = 0
    for t, v in enumerate(vals):
        if math.isfinite(v):
            delta = min_delta * abs(best) if relative and best_index is not None else min_delta
            degraded = best_index is not None and v - best > delta
            if v < best:
                best, best_index = v, t
        else:
            degraded = best_index is not None
        if not degraded:
            count = 0
            continue
        count += 1
        if count >= patience and t >= not_before:
            return Scan(t, best_index, count)
    return Scan(None, best_index, count)


def patience_reason_words(patience: int, min_delta: float, relative: bool, definition: str) -> ReasonWords:
    """patience's reasons, worded once: "<metric>" + first + "<n evaluations>" + second + "<step>" when
    it stops, "<metric>" + never + "<n evaluations>" (and the count, for no-improvement) when it does
    not. The scan and the vectorized sweep (`logsage.decide.sweep`) both word their reasons with these."""
    delta = delta_words(min_delta, relative)
    if definition == "degradation":
        return ReasonWords(f" was worse than its best by more than {delta} for ", f" in a row (patience {patience}) at step ",
                           f" was never worse than its best by more than {delta} for {evals(patience)} in a row in ")
    return ReasonWords(f" did not improve by more than {delta} for ", f" (patience {patience}) at step ",
                       f" never went {evals(patience)} without improving by more than {delta} in ")


def delta_words(min_delta: float, relative: bool) -> str:
    return f"{num(min_delta * 100)}% of the best" if relative else num(min_delta)


def _validate(*, patience: int, min_delta: float, relative: bool, definition: str) -> None:
    at_least("patience", "patience", patience, 0)
    finite_at_least("patience", "min_delta", min_delta, 0.0)
    require("patience", definition in DEFINITIONS,
            f"definition must be one of {', '.join(DEFINITIONS)}, got {definition!r}")


@rule("patience", reference="Goodfellow, Bengio & Courville 2016, Deep Learning, §7.8 Algorithm 7.1 (early "
                            "stopping with patience p); the degradation count as in Prechelt 1998 UP_s with strips of 1",
      choices={"definition": DEFINITIONS}, validate=_validate,
      grid={"patience": [1, 2, 3, 5, 8], "min_delta": [0.0, 1e-4, 1e-3]},
      sweep="logsage.decide.sweep:PATIENCE_FORM", counts="min_delta")
def patience_rule(x: RuleInput, *, patience: int = 3, min_delta: float = 0.0, relative: bool = False,
                  definition: str = "no-improvement") -> Outcome:
    """Plain patience: stop after `patience` evaluations without improvement (or with degradation).

    The first finite evaluation sets the best. NaN and inf never become the best;
    after it they count as no improvement, and under `degradation` as a degradation
    (before it nothing is counted). best_index
    is the best evaluation at the stop (what restore-best would load).

    Args:
        patience: evaluations counted (see definition) before stopping; the stop comes
            when the count reaches it, so 0 stops at the first counted evaluation.
            Must be >= 0.
        min_delta: the margin δ: an improvement must beat the best by more than δ (a gain
            equal to δ counts as no improvement); a degradation must be worse than the
            best by more than δ. In the metric's units, or a fraction of |best| when
            relative. Must be >= 0.
        relative: when on, δ is min_delta × |best| (min_delta=0.01 means 1% of the best).
        definition: no-improvement counts evaluations not better than the best by more
            than δ (a plateau stops); degradation counts evaluations in a row that are
            worse than the best by more than δ (a plateau never stops).
    """
    _validate(patience=patience, min_delta=min_delta, relative=relative, definition=definition)
    bad = check_series(x, "patience")
    if bad is not None:
        return bad
    vals = x.values.tolist()
    n = len(vals)
    words = patience_reason_words(patience, min_delta, relative, definition)
    if definition == "degradation":
        s = degradation_scan(vals, patience, min_delta, relative=relative, not_before=x.not_before)
        if s.stop is not None:
            return Outcome(s.stop, s.best_index,
                           f"{x.metric}{words.first}{evals(s.count)}{words.second}{int(x.steps[s.stop])}; "
                           f"{best_phrase(x, s.best_index)}")
        return Outcome(None, s.best_index, f"{x.metric}{words.never}{evals(n)}; {best_phrase(x, s.best_index)}")
    s = no_improvement_scan(vals, [patience] * n, [min_delta] * n, relative=relative, not_before=x.not_before)
    if s.stop is not None:
        return Outcome(s.stop, s.best_index,
                       f"{x.metric}{words.first}{evals(s.count)}{words.second}{int(x.steps[s.stop])}; "
                       f"{best_phrase(x, s.best_index)}")
    return Outcome(None, s.best_index,
                   f"{x.metric}{words.never}{evals(n)} (count {s.count} at the end); {best_phrase(x, s.best_index)}")
