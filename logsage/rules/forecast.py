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

from logsage.rules._common import at_least, best_phrase, check_series, evals, finite_at_least, num, require
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


def chance_to_beat(level: float, slope: float, gamma: float, sigma: float, target: float, ahead: int) -> float:
    """P(min over k = 1..ahead of Normal(level + slope·(γ + ... + γ^k), σ) < target), evaluations independent."""
    if ahead <= 0:
        return 0.0
    if sigma <= 0.0:
        sigma = 1e-300
    fail = 1.0  # P(no evaluation beats the target)
    mu, g = level, 1.0
    for _ in range(ahead):
        g *= gamma
        mu += slope * g
        fail *= 0.5 * math.erfc((target - mu) / (sigma * _SQRT2))  # P(this evaluation >= target)
        if fail == 0.0:
            break
    return 1.0 - fail


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
    vals = x.values.tolist()
    steps = [int(s) for s in x.steps]
    budget = x.budget_steps
    xs: list[float] = []
    ys: list[float] = []
    best, best_index = math.inf, None
    first = None
    for t, v in enumerate(vals):
        if math.isfinite(v):
            xs.append(float(t))
            ys.append(v)
            first = v if first is None else first
            if v < best:
                best, best_index = v, t
        if len(xs) < window or t < x.not_before:
            continue
        if budget:
            interval = (steps[t] - steps[0]) / t if t > 0 and steps[t] > steps[0] else 0.0
            ahead = int(round((budget - steps[t]) / interval)) if interval > 0 else 0
            ahead = max(ahead, 0)
            where = f"{evals(ahead)} left in the stated budget"
        else:
            ahead = horizon
            where = f"no stated budget, {evals(ahead)} ahead assumed"
        s, level, sigma = _fit(xs[-window:], ys[-window:])
        if len(xs) >= 2 * window:  # the noise of a longer stretch: a short fit can pass through its own points
            sigma = max(sigma, _fit(xs[-3 * window:], ys[-3 * window:])[2])
        gamma = 0.5
        if len(xs) >= 2 * window:
            s_prev = _fit(xs[-2 * window:-window], ys[-2 * window:-window])[0]
            if s < 0 and s_prev < 0:
                gamma = min(max((s / s_prev) ** (1.0 / window), 0.0), 0.99)
        target = best - delta * (first - best)
        p = chance_to_beat(level, s, gamma, sigma, target, ahead)
        if p < alpha:
            return Outcome(t, best_index, f"{x.metric}: chance {num(p)} < alpha {num(alpha)} of beating the best by "
                                          f"more than {num(delta * 100)}% of the improvement so far ({where}; trend "
                                          f"{num(-s if x.mode == 'max' else s)}/evaluation decaying x{num(gamma)}, "
                                          f"noise {num(sigma)}) at step {steps[t]}; {best_phrase(x, best_index)}")
    return Outcome(None, best_index, f"{x.metric}: the chance of a worthwhile improvement never fell below "
                                     f"alpha {num(alpha)} in {evals(len(vals))}; {best_phrase(x, best_index)}")
