"""Rules that need no patience: a target to reach, a divergence guard, and the train-to-the-end baseline."""

from __future__ import annotations

import math

from logsage.rules.common import (
    best_index_upto,
    best_phrase,
    check_series,
    evals,
    finite_at_least,
    finite_or_unset,
    num,
    raw_values,
    require,
    shown,
    to_oriented,
    undecidable,
)
from logsage.rules.base import Outcome, RuleInput, rule


# ------------------------------------------------------------------ threshold
def _validate_threshold(*, target: float, strict: bool) -> None:
    require("threshold", target is not None and not math.isinf(target),
            f"target must be a finite number, got {target!r}")


@rule("threshold", reference="lightning 2.6 EarlyStopping(stopping_threshold=...) and optuna 4.x "
                             "optuna.pruners.ThresholdPruner: stop on reaching a target value", validate=_validate_threshold,
      needs_value="target=0.8")  # a target in the metric's own units: only the user knows it
def threshold(x: RuleInput, *, target: float = math.nan, strict: bool = False) -> Outcome:
    """Threshold: stop at the first evaluation that reaches a target value.

    Reaching means value <= target for a min metric and value >= target for a max
    metric (< and > when strict). A non-finite value (NaN, ±inf) never reaches. best_index is the best
    evaluation at the stop.

    Args:
        target: the value to reach, in the metric's units. Required (the default nan
            means unset: the rule then cannot judge and says so).
        strict: when on, the value must be strictly beyond the target; equal does not stop.
    """
    _validate_threshold(target=target, strict=strict)
    if math.isnan(target):
        return undecidable(f"rule threshold needs a target; set e.g. threshold:target=<a value of {x.metric}>")
    bad = check_series(x, "threshold", min_len=1)
    if bad is not None:
        return bad
    goal = to_oriented(x, target)
    vals = x.values.tolist()
    cmp = "<" if x.mode == "min" else ">"
    cmp = cmp if strict else cmp + "="
    for t, v in enumerate(vals):
        # A non-finite value never reaches a target (-inf is a divergence, not a success).
        if math.isfinite(v) and (v < goal if strict else v <= goal) and t >= x.not_before:
            best = best_index_upto(vals, t)
            return Outcome(t, best, f"{x.metric} reached the target: {shown(x, t)} {cmp} {num(target)}; "
                                    f"{best_phrase(x, best)}")
    best = best_index_upto(vals, len(vals) - 1)
    return Outcome(None, best, f"{x.metric} never reached the target ({cmp} {num(target)}) in {evals(len(vals))}; "
                               f"{best_phrase(x, best)}")


# ------------------------------------------------------------------ divergence
def _validate_divergence(*, bound: float | None, ratio: float) -> None:
    finite_or_unset("divergence", "bound", bound)
    finite_at_least("divergence", "ratio", ratio, 0.0)
    require("divergence", ratio == 0.0 or ratio > 1.0,
            f"ratio must be 0 (off) or > 1 (how many times worse than the best), got {ratio!r}")


@rule("divergence", reference="lightning 2.6 EarlyStopping(check_finite=True, divergence_threshold=...): "
                              "non-finite values, a bound, or (here) a multiple of the best",
      validate=_validate_divergence,
      # Non-finite values only (ratio 0, its default), or 1.5, 2 or 3 times worse than the best so far;
      # the absolute `bound` is in the metric's units: the user's.
      grid={"ratio": [0.0, 1.5, 2.0, 3.0]})
def divergence(x: RuleInput, *, bound: float | None = None, ratio: float = 0.0) -> Outcome:
    """Divergence: stop at the first non-finite value, or the first value past a bound or a multiple of the best.

    A value diverges when it is NaN or ±inf; when it is strictly worse than `bound`
    (above it for a min metric, below it for a max metric); or, with ratio > 1,
    when it is strictly worse than ratio × best for a min metric (best / ratio for a
    max metric), judged in the metric's own units and only while the best is > 0.
    best_index is the best finite evaluation before the stop.

    Args:
        bound: a value the metric must not get strictly worse than, in its units;
            equal does not stop; none = no bound.
        ratio: when > 1, stop once the metric is strictly worse than ratio times its
            best so far (e.g. 1.5: a loss 50% above its best; for a max metric, below
            best / 1.5). 0 = off. Must be 0 or > 1.
    """
    _validate_divergence(bound=bound, ratio=ratio)
    n = int(x.values.size)
    if n == 0:
        return undecidable(f"{x.metric} has no evaluations")
    raw = raw_values(x).tolist()
    vals = x.values.tolist()
    limit = to_oriented(x, bound) if bound is not None else None
    best_raw = math.nan
    for t, v in enumerate(vals):
        r = raw[t]
        why = None
        if not math.isfinite(v):
            why = f"{x.metric} = {num(r)} at step {int(x.steps[t])} is not finite"
        elif limit is not None and v > limit:
            side = "above" if x.mode == "min" else "below"
            why = f"{x.metric} = {shown(x, t)} is {side} the bound {num(bound)}"
        elif ratio > 0 and best_raw > 0 and (r > ratio * best_raw if x.mode == "min" else r < best_raw / ratio):
            times = f"{num(ratio)} × its best" if x.mode == "min" else f"its best / {num(ratio)}"
            why = f"{x.metric} = {shown(x, t)} is worse than {times} ({num(best_raw)})"
        if why is not None and t >= x.not_before:
            best = best_index_upto(vals, t - 1) if t > 0 else None
            return Outcome(t, best, f"{why}; {best_phrase(x, best)}")
        if math.isfinite(v) and (math.isnan(best_raw) or (r < best_raw if x.mode == "min" else r > best_raw)):
            best_raw = r
    best = best_index_upto(vals, n - 1)
    return Outcome(None, best, f"{x.metric} never diverged in {evals(n)}; {best_phrase(x, best)}")


# ------------------------------------------------------------------ none
@rule("none", reference="Prechelt 1998, 'Early Stopping - But When?': the baseline every criterion is scored "
                        "against (train to the end, keep the best evaluation)",
      grid={}, common=[("no early stop", {})])
def none(x: RuleInput) -> Outcome:
    """None: never stop; the selected evaluation is the best over the whole run (the baseline to beat).

    Every early-stopping decision is scored against this one: it costs the whole
    budget and, with restore-best, gets the hindsight best.
    """
    bad = check_series(x, "none", min_len=1)
    if bad is not None:
        return bad
    vals = x.values.tolist()
    best = best_index_upto(vals, len(vals) - 1)
    return Outcome(None, best, f"trains to the end ({evals(len(vals))}); {best_phrase(x, best)}")
