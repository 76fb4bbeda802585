"""The slope rule: stop when a least-squares line through the latest evaluations rises significantly.

The guides score a stop by the slope of the last 5 validation losses
(a common way to score a stopping decision); this rule turns that score into a
decision, with the p-value as its statistically honest companion.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from logsage.rules.common import (
    at_least,
    best_index_upto,
    best_phrase,
    evals,
    num,
    require,
    undecidable,
)
from logsage.rules.base import Outcome, RuleInput, rule


def _validate(*, window: int, alpha: float) -> None:
    at_least("slope", "window", window, 3)
    require("slope", alpha is not None and 0.0 < alpha < 1.0, f"alpha must be in (0, 1), got {alpha!r}")


def ols_t(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, t statistic of the slope) of the least-squares line; t is ±inf for a perfect fit."""
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((a - mx) ** 2 for a in xs)
    sxy = sum((a - mx) * (b - my) for a, b in zip(xs, ys))
    syy = sum((b - my) ** 2 for b in ys)
    slope = sxy / sxx
    ssr = max(syy - slope * sxy, 0.0)
    if ssr == 0.0:
        return slope, (math.copysign(math.inf, slope) if slope != 0 else math.nan)
    return slope, slope / math.sqrt(ssr / (n - 2) / sxx)


@functools.lru_cache(maxsize=256)
def _critical_t(alpha: float, df: int) -> float:
    """The one-sided Student-t critical value (a pure function of its arguments, so cached)."""
    from scipy.stats import t as student_t

    return float(student_t.ppf(1.0 - alpha, df))


def one_sided_p(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(slope, p-value for 'slope > 0') from scipy.stats.linregress: the two-sided p halved on the rising side."""
    from scipy.stats import linregress

    res = linregress(xs, ys)
    p2 = float(res.pvalue) if not math.isnan(res.pvalue) else 1.0
    return float(res.slope), (p2 / 2 if res.slope > 0 else 1.0 - p2 / 2)


@rule("slope", reference="scipy 1.x scipy.stats.linregress (least-squares slope of the last w evaluations) "
                         "with its t statistic read one-sided (scipy.stats.t.sf)",
      validate=_validate, grid={"window": [3, 5, 8], "alpha": [0.05, 0.1]})
def slope(x: RuleInput, *, window: int = 5, alpha: float = 0.05) -> Outcome:
    """Slope: stop when the metric's least-squares trend over the last `window` evaluations worsens significantly.

    At each evaluation the line is fitted through the last `window` finite values
    (x = evaluation index, so the slope is per evaluation; non-finite values are
    skipped). The test is one-sided: p is scipy.stats.linregress' two-sided p-value
    halved when the slope points the worsening way (rising loss, falling accuracy),
    and 1 − p/2 otherwise; the stop needs p < alpha, so a flat or improving trend
    never stops. Before `window` finite values exist the rule keeps going. best_index
    is the best evaluation at the stop.

    Args:
        window: finite evaluations in the fit. Must be >= 3 (a p-value needs one
            degree of freedom).
        alpha: significance level; the stop needs the one-sided p-value strictly
            below it. Must be in (0, 1).
    """
    _validate(window=window, alpha=alpha)
    vals = x.values.tolist()
    n = len(vals)
    finite_idx = [t for t, v in enumerate(vals) if math.isfinite(v)]
    if len(finite_idx) < window:
        return undecidable(f"{x.metric} has {evals(len(finite_idx))} with a finite value; "
                           f"rule slope needs at least window={window}")
    # p < alpha  <=>  t statistic > the one-sided critical value: one ppf instead of a test per evaluation,
    # and every window's statistic at once (the same formulas as `ols_t`, over the finite values only).
    t_crit = _critical_t(alpha, window - 2)
    fin = np.asarray(finite_idx, dtype=np.int64)
    xs_w = sliding_window_view(fin.astype(np.float64), window)
    ys_w = sliding_window_view(x.values[fin], window)
    dx = xs_w - xs_w.mean(axis=1)[:, None]
    dy = ys_w - ys_w.mean(axis=1)[:, None]
    sxx = (dx * dx).sum(axis=1)
    sxy = (dx * dy).sum(axis=1)
    b = sxy / sxx
    ssr = np.maximum((dy * dy).sum(axis=1) - b * sxy, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = np.where(ssr == 0.0, np.where(b > 0, np.inf, np.nan), b / np.sqrt(ssr / (window - 2) / sxx))
    ends = fin[window - 1:]
    hits = np.flatnonzero((b > 0) & (tstat > t_crit) & (ends >= x.not_before))
    if hits.size:
        k = int(hits[0])
        t = int(ends[k])
        b_lin, p = one_sided_p(fin[k:k + window].astype(float).tolist(), x.values[fin[k:k + window]].tolist())
        shown_slope = -b_lin if x.mode == "max" else b_lin
        best = best_index_upto(vals, t)
        word = "falling" if x.mode == "max" else "rising"
        return Outcome(t, best, f"{x.metric} has been {word} over its last {window} finite evaluations "
                                f"(slope {num(shown_slope)} per evaluation, one-sided p {num(p)} < {num(alpha)}) "
                                f"at step {int(x.steps[t])}; {best_phrase(x, best)}")
    best = best_index_upto(vals, n - 1)
    return Outcome(None, best, f"{x.metric} never worsened significantly (alpha {num(alpha)}) over {window} "
                               f"evaluations in {evals(n)}; {best_phrase(x, best)}")
