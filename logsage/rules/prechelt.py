"""Prechelt's (1998) stopping criteria GL_α, PQ_α and UP_s ("Early Stopping — But When?").

Definitions as in stopping-semantics.md §6.1:

* E_opt(t) = lowest validation error up to t; GL(t) = 100 · (E_va(t) / E_opt(t) − 1);
* P_k(t) = 1000 · (Σ of the strip's k training errors / (k · their minimum) − 1);
* GL_α stops after the first evaluation with GL > α; PQ_α after the first strip end
  with GL / P_k > α; UP_s after s successive strip ends, each worse than the strip
  end before it.

Prechelt works with errors: positive, lower is better. For a min metric the value
is the error and must be >= 0; for a max metric that is a rate in [0, 1] (accuracy)
the error is 1 − value; anything else cannot be judged by GL or PQ (UP only compares
values, so it takes any metric). Prechelt's result model is restore-best: best_index
is the lowest-error evaluation up to the stop.
"""

from __future__ import annotations

import bisect
import math

import numpy as np

from logsage.rules.common import (
    at_least,
    best_index_upto,
    best_phrase,
    check_series,
    evals,
    finite_at_least,
    num,
    raw_values,
    undecidable,
)
from logsage.rules.base import Outcome, RuleInput, rule


def errors(x: RuleInput) -> tuple[list[float], str] | str:
    """Prechelt's validation error at each evaluation and what it is, or why there is none."""
    raw = raw_values(x)
    finite = raw[np.isfinite(raw)]
    if x.mode == "max":
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            return (f"{x.metric} is maximized and not a rate in [0, 1], so it has no error 1 - value; "
                    f"GL and PQ need a positive error such as a loss")
        return (1.0 - raw).tolist(), f"error = 1 - {x.metric}"
    if finite.size and finite.min() < 0:
        return (f"{x.metric} has negative values (lowest {num(float(finite.min()))}); GL and PQ are ratios "
                f"to the best error and need errors >= 0")
    return raw.tolist(), x.metric


def generalization_loss(errs: list[float]) -> list[float]:
    """GL(t) = 100 · (E(t) / E_opt(t) − 1) with E_opt the lowest finite error so far.

    A NaN error gives NaN (never above α); before the first finite error GL is NaN.
    A best of 0 makes any later positive error an infinite loss.
    """
    out = []
    best = math.inf
    for e in errs:
        if math.isfinite(e) and e < best:
            best = e
        if not math.isfinite(best) or math.isnan(e):
            out.append(math.nan)
        elif best == 0.0:
            out.append(0.0 if e == 0.0 else math.inf)
        else:
            out.append(100.0 * (e / best - 1.0))
    return out


# ------------------------------------------------------------------ GL
def _validate_gl(*, alpha: float) -> None:
    finite_at_least("gl", "alpha", alpha, 0.0)


@rule("gl", reference="Prechelt 1998, 'Early Stopping - But When?', GL_alpha (generalization loss)",
      grid={"alpha": [1.0, 2.0, 3.0, 5.0]}, common=[("Prechelt GL (defaults)", {})],  # the alphas of his study
      validate=_validate_gl)
def gl(x: RuleInput, *, alpha: float = 2.0) -> Outcome:
    """Prechelt GL_α: stop after the first evaluation whose generalization loss exceeds α percent.

    GL(t) = 100·(E(t)/E_opt(t) − 1) is how far the error has risen above its lowest
    value so far, in percent. See the module docstring for what counts as the error.

    Args:
        alpha: the limit in percent; the stop needs GL strictly greater than alpha
            (GL equal to alpha does not stop). Prechelt used 1, 2, 3 and 5. Must be >= 0.
    """
    _validate_gl(alpha=alpha)
    bad = check_series(x, "gl")
    if bad is not None:
        return bad
    got = errors(x)
    if isinstance(got, str):
        return undecidable(got)
    errs, what = got
    g = generalization_loss(errs)
    for t, v in enumerate(g):
        if v > alpha and t >= x.not_before:
            best = best_index_upto(errs, t)
            return Outcome(t, best, f"generalization loss of {what} reached {num(v)}% > {num(alpha)}% at step "
                                    f"{int(x.steps[t])}; {best_phrase(x, best)}")
    best = best_index_upto(errs, len(errs) - 1)
    return Outcome(None, best, f"generalization loss of {what} never exceeded {num(alpha)}% "
                               f"(highest {num(max((v for v in g if not math.isnan(v)), default=math.nan))}%) "
                               f"in {evals(len(errs))}; {best_phrase(x, best)}")


# ------------------------------------------------------------------ PQ
def _validate_pq(*, alpha: float, k: int) -> None:
    finite_at_least("pq", "alpha", alpha, 0.0)
    at_least("pq", "k", k, 2)


def training_progress(train_steps: list[int], train_vals: list[float], eval_step: int, k: int) -> float:
    """P_k at an evaluation: from the last k training-loss points logged at or before eval_step.

    NaN when fewer than k points exist, one is non-finite or their minimum is <= 0.
    """
    end = bisect.bisect_right(train_steps, eval_step)
    if end < k:
        return math.nan
    strip = train_vals[end - k: end]
    low = min(strip)
    if not all(math.isfinite(v) for v in strip) or low <= 0:
        return math.nan
    return 1000.0 * (sum(strip) / (k * low) - 1.0)


@rule("pq", reference="Prechelt 1998, 'Early Stopping - But When?', PQ_alpha (generalization loss / progress)",
      grid={"alpha": [0.5, 0.75, 1.0, 2.0]}, common=[("Prechelt PQ (defaults)", {})],
      needs=("train_loss",), validate=_validate_pq)
def pq(x: RuleInput, *, alpha: float = 0.5, k: int = 5) -> Outcome:
    """Prechelt PQ_α: stop when generalization loss divided by training progress exceeds α.

    Each evaluation ends a training strip: the k training-loss points logged at or
    before its step. P_k = 1000·(mean of the strip / min of the strip − 1) is large
    while training loss still falls and near 0 once it is flat. The stop comes at the
    first evaluation with a full strip where GL/P_k > α (strict); evaluations with
    fewer than k earlier training points are not judged. Approximation: Prechelt's
    E_tr is a full pass per epoch; an HF `loss` point is the mean over its
    logging_steps mini-batches, so P_k here measures the last k·logging_steps steps
    and is noisier. Prechelt's extra 'stop when P_k < 0.1' guard is not part of PQ_α.

    Args:
        alpha: the limit on GL/P_k; the stop needs the ratio strictly greater (equal
            does not stop). Prechelt used 0.5 to 3. Must be >= 0.
        k: training-loss points per strip (Prechelt used 5). Must be >= 2.
    """
    _validate_pq(alpha=alpha, k=k)
    bad = check_series(x, "pq")
    if bad is not None:
        return bad
    if x.train_steps is None or x.train_values is None or x.train_steps.size == 0:
        return undecidable(f"rule pq needs the training loss (e.g. `loss`) logged alongside {x.metric}; "
                           f"this run has none")
    got = errors(x)
    if isinstance(got, str):
        return undecidable(got)
    errs, what = got
    order = np.argsort(x.train_steps, kind="stable")
    t_steps = x.train_steps[order].tolist()
    t_vals = x.train_values[order].tolist()
    g = generalization_loss(errs)
    judged = 0
    for t, step in enumerate(x.steps.tolist()):
        prog = training_progress(t_steps, t_vals, step, k)
        if math.isnan(prog):
            continue
        judged += 1
        ratio = g[t] / prog if prog > 0 else (math.inf if g[t] > 0 else math.nan)
        if ratio > alpha and t >= x.not_before:
            best = best_index_upto(errs, t)
            return Outcome(t, best, f"GL/P{k} of {what} reached {num(ratio)} > {num(alpha)} (GL {num(g[t])}%, "
                                    f"training progress {num(prog)}‰) at step {step}; {best_phrase(x, best)}")
    if judged == 0:
        return undecidable(f"rule pq needs k={k} positive, finite training-loss points before an evaluation; "
                           f"no evaluation of {x.metric} has them (lower k?)")
    best = best_index_upto(errs, len(errs) - 1)
    return Outcome(None, best, f"GL/P{k} of {what} never exceeded {num(alpha)} in {evals(judged)} with a full "
                               f"training strip; {best_phrase(x, best)}")


# ------------------------------------------------------------------ UP
def _validate_up(*, s: int, k: int) -> None:
    at_least("up", "s", s, 1)
    at_least("up", "k", k, 1)


@rule("up", reference="Prechelt 1998, 'Early Stopping - But When?', UP_s (successive strips with an increase)",
      # s = 1..4 (his best trade-offs were UP3/UP4), at every evaluation (k=1) or strips of 5 as in his study.
      grid={"s": [1, 2, 3, 4], "k": [1, 5]}, common=[("Prechelt UP (defaults)", {})],
      validate=_validate_up)
def up(x: RuleInput, *, s: int = 2, k: int = 1) -> Outcome:
    """Prechelt UP_s: stop after s successive strip ends each worse than the strip end before it.

    Strips are k evaluations long; strip ends are the evaluations k, 2k, 3k, ...
    (1-based). Each strip end is compared with the previous strip end, not with the
    best, so one strip end that is not worse resets the run. A NaN (or inf) after a
    finite strip end counts as worse; a strip end after a non-finite one is not
    compared and resets the run. Works on any metric (it compares values only).

    Args:
        s: successive worsening strip ends needed to stop (UP_1 stops at the first).
            Must be >= 1.
        k: evaluations per strip; 1 compares each evaluation with the one before
            (Prechelt used 5 epochs). Must be >= 1.
    """
    _validate_up(s=s, k=k)
    bad = check_series(x, "up", min_len=2 * k)
    if bad is not None:
        return bad
    vals = x.values.tolist()
    run = 0
    for t in range(2 * k - 1, len(vals), k):
        cur, prev = vals[t], vals[t - k]
        # A non-finite value after a finite strip end is worse; without a finite previous
        # strip end there is nothing to compare with, which ends the run.
        worse = math.isfinite(prev) and not (cur <= prev)
        run = run + 1 if worse else 0
        if run >= s and t >= x.not_before:
            best = best_index_upto(vals, t)
            raw = raw_values(x)
            ends = f"{run} strip end{'s' if run > 1 else ''}"
            return Outcome(t, best, f"{x.metric} got worse at {ends} in a row (k={k}, s={s}): {num(raw[t])} at "
                                    f"step {int(x.steps[t])} vs {num(raw[t - k])} at step {int(x.steps[t - k])}; "
                                    f"{best_phrase(x, best)}")
    best = best_index_upto(vals, len(vals) - 1)
    return Outcome(None, best, f"{x.metric} never got worse at {s} strip ends in a row (k={k}) in "
                               f"{evals(len(vals))}; {best_phrase(x, best)}")

