"""The forecasting rule: stop when the rest of the budget is unlikely to beat the best by more than δ.

At each evaluation the curve so far is modelled as a decaying trend plus noise, both
estimated from the run itself (no prior from other runs):

* trend: the least-squares slope s of the last `window` finite values (oriented lower
  is better), decaying geometrically by γ per evaluation, where γ = (s / s_prev)^(1/w)
  from the slope of the window before (clipped to [0, 0.99]) when both improve, else
  0.5 (a trend that is not confirmed is not trusted to last);
* noise: the residual standard deviation of that line fit (ddof 2), or, once 2w finite
  values exist, of a line through the last 3w values when that is larger (a short fit
  can pass through its own points and understate the noise);
* the future: evaluation k ahead ~ Normal(L + s·(γ + ... + γ^k), σ), independent, where L
  is the fitted level at the current evaluation.

The stop comes when P(any remaining evaluation < best − δ) < α, with δ = delta × (first
value − best): a share of the improvement achieved so far, so the rule is scale-free.
"Remaining" is the stated budget (max_steps) divided by the run's evaluation interval;
a run that states no budget gets `horizon` evaluations ahead, and its reason says that
this was assumed. This is the idea of learning-curve extrapolation (Domhan et al. 2015;
Swersky, Snoek & Adams 2014, 'Freeze-Thaw Bayesian Optimization') with a deliberately
small model, cheap enough to run at every evaluation.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from logsage.rules.common import at_least, best_phrase, check_series, evals, finite_at_least, num, require
from logsage.rules.base import Outcome, RuleInput, rule

_SQRT2 = math.sqrt(2.0)


def _validate(*, alpha: float, delta: float, window: int, horizon: int) -> None:
    require("forecast", alpha is not None and 0.0 < alpha < 1.0, f"alpha must be in (0, 1), got {alpha!r}")
    finite_at_least("forecast", "delta", delta, 0.0)
    at_least("forecast", "window", window, 3)
    at_least("forecast", "horizon", horizon, 1)


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """(slope, fitted value at the last x, residual standard deviation with ddof 2) of a least-squares line."""
    n = len(xs)
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((a - mx) ** 2 for a in xs)
    s = sum((a - mx) * (b - my) for a, b in zip(xs, ys)) / sxx
    level = my + s * (xs[-1] - mx)
    ss = sum((b - (my + s * (a - mx))) ** 2 for a, b in zip(xs, ys))
    return s, level, math.sqrt(ss / (n - 2))


def chance_to_beat(level: float, slope: float, gamma: float, sigma: float, target: float, ahead: int,
                   at_least: float = 1.0) -> float:
    """P(min over k = 1..ahead of Normal(level + slope·(γ + ... + γ^k), σ) < target), evaluations independent.

    Exact below `at_least`; at or above it, a lower bound that is itself >= `at_least`
    (the rule only asks whether the chance is below alpha). The means are monotone in k,
    so the likeliest single evaluation is at k = 1 or k = ahead, and its chance bounds the
    whole from below. Once γ^k is negligible the remaining factors are equal (one power).
    """
    if ahead <= 0:
        return 0.0
    if sigma <= 0.0:
        sigma = 1e-300
    scale = sigma * _SQRT2
    g_total = gamma * (1.0 - gamma ** ahead) / (1.0 - gamma) if gamma < 1.0 else float(ahead)
    lowest = min(level + slope * gamma, level + slope * g_total)
    single = 0.5 * math.erfc((lowest - target) / scale)  # P(the likeliest evaluation beats the target)
    if single >= at_least:
        return single
    fail = 1.0  # P(no evaluation beats the target)
    mu, g = level, 1.0
    for k in range(ahead):
        g *= gamma
        step = slope * g
        mu += step
        factor = 0.5 * math.erfc((target - mu) / scale)  # P(this evaluation >= target)
        fail *= factor
        if fail == 0.0:
            break
        if abs(step) <= 1e-15 * max(abs(mu), 1e-300):  # the trend has run out: the rest are all equal
            fail *= factor ** (ahead - k - 1)
            break
    return 1.0 - fail


def _fits(xs: np.ndarray, ys: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`_fit` of every window of w consecutive points at once: (slope, level, noise) per window end."""
    X = sliding_window_view(xs, w)
    Y = sliding_window_view(ys, w)
    dx = X - X.mean(axis=1)[:, None]
    my = Y.mean(axis=1)
    dy = Y - my[:, None]
    s = (dx * dy).sum(axis=1) / (dx * dx).sum(axis=1)
    level = my + s * dx[:, -1]
    resid = dy - s[:, None] * dx
    return s, level, np.sqrt((resid * resid).sum(axis=1) / (w - 2))


@rule("forecast", reference="Domhan, Springenberg & Hutter 2015 (IJCAI), learning-curve extrapolation for early "
                            "termination; Swersky, Snoek & Adams 2014, 'Freeze-Thaw Bayesian Optimization' "
                            "(decaying-trend model of a training curve)",
      validate=_validate,
      grid={"alpha": [0.02, 0.05, 0.1], "delta": [0.05, 0.1, 0.2], "window": [4, 5]})
def forecast(x: RuleInput, *, alpha: float = 0.02, delta: float = 0.1, window: int = 4,
             horizon: int = 10) -> Outcome:
    """Forecast: stop when the probability that the rest of the budget improves on the best by more than δ falls below α.

    See the module docstring for the model. No stop before `window` finite values
    exist. A run with no stated budget (max_steps) is forecast `horizon` evaluations
    ahead, and the reason says so. best_index is the best evaluation at the stop.

    Args:
        alpha: stop when the chance of a worthwhile improvement is below this, in (0, 1).
        delta: a worthwhile improvement beats the best by more than delta × (first value −
            best so far), a share of the improvement achieved so far. Must be >= 0.
        window: finite evaluations the trend and noise are estimated from. Must be >= 3.
        horizon: evaluations assumed ahead when the run states no budget. Must be >= 1.
    """
    _validate(alpha=alpha, delta=delta, window=window, horizon=horizon)
    bad = check_series(x, "forecast")
    if bad is not None:
        return bad
    v = x.values
    n = v.size
    steps = [int(st) for st in x.steps]
    budget = x.budget_steps
    finite = np.isfinite(v)
    fin = np.flatnonzero(finite)
    # Per evaluation t, what the forecast at t uses (values up to t only): the best so far (earliest on
    # ties), the first finite value, and e = how many finite values there are, minus 1.
    running = np.minimum.accumulate(np.where(finite, v, np.inf))
    prev = np.concatenate([[np.inf], running[:-1]])
    best_at = np.maximum.accumulate(np.where(finite & (v < prev), np.arange(n), -1))
    e_at = np.cumsum(finite) - 1
    last_best = int(best_at[-1]) if n and best_at[-1] >= 0 else None
    ts = np.flatnonzero((e_at + 1 >= window) & (np.arange(n) >= x.not_before))
    if ts.size == 0:
        return Outcome(None, last_best, f"{x.metric}: the chance of a worthwhile improvement never fell below "
                                        f"alpha {num(alpha)} in {evals(n)}; {best_phrase(x, last_best)}")
    fx, fy = fin.astype(np.float64), v[fin]
    slope_w, level_w, sigma_w = _fits(fx, fy, window)
    long_w = 3 * window
    sigma_long = _fits(fx, fy, long_w)[2] if fin.size >= long_w else np.zeros(0)
    e = e_at[ts]
    row = e - window + 1
    s_t, level_t, sigma_t = slope_w[row], level_w[row], sigma_w[row].copy()
    gamma_t = np.full(ts.size, 0.5)
    longer = e + 1 >= 2 * window
    # The noise of a longer stretch when larger (a short fit can pass through its own points): the last 3w
    # values, or all of them while there are fewer.
    full = e + 1 >= long_w
    sigma_t[full] = np.maximum(sigma_t[full], sigma_long[e[full] - long_w + 1])
    for k in np.flatnonzero(longer & ~full).tolist():
        ek = int(e[k])
        sigma_t[k] = max(float(sigma_t[k]), _fit(fx[:ek + 1].tolist(), fy[:ek + 1].tolist())[2])
    # The trend's decay, from the slope of the window before, when both improve.
    s_prev = np.where(longer, slope_w[np.maximum(row - window, 0)], 0.0)
    both = longer & (s_t < 0) & (s_prev < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma_t[both] = np.clip((s_t[both] / s_prev[both]) ** (1.0 / window), 0.0, 0.99)
    first = float(fy[0])
    best_t = running[ts]
    target_t = best_t - delta * (first - best_t)
    if budget:
        st = np.asarray(steps, dtype=np.float64)[ts]
        with np.errstate(divide="ignore", invalid="ignore"):
            interval = np.where((ts > 0) & (st > steps[0]), (st - steps[0]) / np.maximum(ts, 1), 0.0)
            ahead_t = np.where(interval > 0, np.rint((budget - st) / np.where(interval > 0, interval, 1.0)), 0.0)
        ahead_t = np.maximum(ahead_t, 0).astype(np.int64)
    else:
        ahead_t = np.full(ts.size, horizon, dtype=np.int64)
    # Only an evaluation whose likeliest future evaluation has a chance below alpha can stop (that chance
    # bounds the whole from below; see chance_to_beat): the exact chance is computed there only.
    from scipy.special import erfc

    g = gamma_t
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        g_total = g * (1.0 - g ** ahead_t) / (1.0 - g)
        lowest = np.minimum(level_t + s_t * g, level_t + s_t * g_total)
        single = 0.5 * erfc((lowest - target_t) / (np.where(sigma_t > 0, sigma_t, 1e-300) * _SQRT2))
    maybe = np.flatnonzero((single < alpha) | (ahead_t <= 0))
    for k in maybe.tolist():
        t = int(ts[k])
        ahead = int(ahead_t[k])
        where = (f"{evals(ahead)} left in the stated budget" if budget
                 else f"no stated budget, {evals(ahead)} ahead assumed")
        s, level, sigma, gamma = float(s_t[k]), float(level_t[k]), float(sigma_t[k]), float(gamma_t[k])
        p = chance_to_beat(level, s, gamma, sigma, float(target_t[k]), ahead, at_least=alpha)
        if p < alpha:
            best_index = int(best_at[t])
            return Outcome(t, best_index, f"{x.metric}: chance {num(p)} < alpha {num(alpha)} of beating the best by "
                                          f"more than {num(delta * 100)}% of the improvement so far ({where}; trend "
                                          f"{num(-s if x.mode == 'max' else s)}/evaluation decaying x{num(gamma)}, "
                                          f"noise {num(sigma)}) at step {steps[t]}; {best_phrase(x, best_index)}")
    return Outcome(None, last_best, f"{x.metric}: the chance of a worthwhile improvement never fell below "
                                    f"alpha {num(alpha)} in {evals(n)}; {best_phrase(x, last_best)}")
