"""The smoothed patience rule: patience on a causal moving average (or EMA) of the metric.

Commenters on fine-tuning guides recommend it so that one noisy evaluation does not
stop a run.
"""

from __future__ import annotations

import math

from logsage.rules.common import (
    at_least,
    best_index_upto,
    best_phrase,
    check_series,
    evals,
    finite_at_least,
    num,
    require,
    to_user_units,
)
from logsage.rules.base import Outcome, RuleInput, rule
from logsage.rules.patience import no_improvement_scan


def smooth(vals: list[float], *, window: int, alpha: float) -> list[float]:
    """The causal smoothing of vals: trailing mean over `window` values, or an EMA when alpha > 0.

    Non-finite values are left out: the mean is over the finite values in the
    window (NaN when there are none), and the EMA holds its last value (NaN before
    the first finite value). The EMA starts at the first finite value.
    """
    out: list[float] = []
    if alpha > 0:
        ema = math.nan
        for v in vals:
            if math.isfinite(v):
                ema = v if math.isnan(ema) else alpha * v + (1.0 - alpha) * ema
            out.append(ema)
        return out
    for t in range(len(vals)):
        total, k = 0.0, 0
        for v in vals[max(0, t - window + 1): t + 1]:
            if math.isfinite(v):
                total += v
                k += 1
        out.append(total / k if k else math.nan)
    return out


def _validate(*, window: int, alpha: float, patience: int, min_delta: float) -> None:
    at_least("smoothed", "window", window, 1)
    require("smoothed", alpha is not None and 0.0 <= alpha <= 1.0,
            f"alpha must be in [0, 1] (0 = use the window), got {alpha!r}")
    at_least("smoothed", "patience", patience, 0)
    finite_at_least("smoothed", "min_delta", min_delta, 0.0)


@rule("smoothed", reference="Goodfellow, Bengio & Courville 2016, Deep Learning, Algorithm 7.1 on a causal "
                            "trailing mean (pandas Series.rolling(w, min_periods=1).mean()) or EMA "
                            "(Series.ewm(alpha, adjust=False).mean())",
      validate=_validate,
      # The guides' window 3 and a wider 5, each with patience 2-5.
      grid={"window": [3, 5], "patience": [2, 3, 5]})
def smoothed(x: RuleInput, *, window: int = 3, alpha: float = 0.0, patience: int = 3,
             min_delta: float = 0.0) -> Outcome:
    """Smoothed patience: the no-improvement patience rule applied to a moving average of the metric.

    Causal: the smoothed value at evaluation t uses evaluations up to t only
    (fewer than `window` at the start). A non-finite raw value is left out of the
    average, but the evaluation it belongs to counts as no improvement.
    best_index is the evaluation with the best RAW value up to the stop (the
    checkpoint you would restore); the reason also names the best smoothed value.

    Args:
        window: number of trailing evaluations averaged (fewer at the start); 1 is
            the plain patience rule. Must be >= 1. Ignored when alpha > 0.
        alpha: when > 0, an exponential moving average with this weight on the newest
            value replaces the window (s = alpha*v + (1-alpha)*s_prev). Must be in [0, 1].
        patience: evaluations without a smoothed improvement before stopping; the
            stop comes when the count reaches it. Must be >= 0.
        min_delta: the smoothed value must beat its best by more than this (a gain
            equal to min_delta counts as no improvement); in the metric's units. Must be >= 0.
    """
    _validate(window=window, alpha=alpha, patience=patience, min_delta=min_delta)
    bad = check_series(x, "smoothed")
    if bad is not None:
        return bad
    vals = x.values.tolist()
    n = len(vals)
    smoothed_vals = smooth(vals, window=window, alpha=alpha)
    # A non-finite raw value makes its evaluation a non-improvement, whatever the average says.
    judged = [s if math.isfinite(v) else math.nan for s, v in zip(smoothed_vals, vals)]
    s = no_improvement_scan(judged, [patience] * n, [min_delta] * n, not_before=x.not_before)
    how = f"EMA alpha={num(alpha)}" if alpha > 0 else f"mean of the last {window}"
    end = s.stop if s.stop is not None else n - 1
    raw_best = best_index_upto(vals, end)
    sm_best = (f"best smoothed {num(to_user_units(x, judged[s.best_index]))} at step {int(x.steps[s.best_index])}"
               if s.best_index is not None else "no finite smoothed value")
    if s.stop is not None:
        return Outcome(s.stop, raw_best,
                       f"{x.metric} ({how}) did not improve by more than {num(min_delta)} for {evals(s.count)} "
                       f"(patience {patience}) at step {int(x.steps[s.stop])}; {sm_best}; "
                       f"{best_phrase(x, raw_best)}")
    return Outcome(None, raw_best,
                   f"{x.metric} ({how}) never went {evals(patience)} without improving by more than "
                   f"{num(min_delta)} in {evals(n)}; {sm_best}; {best_phrase(x, raw_best)}")

