"""The fixed-budget rule: stop after a fixed share of the stated budget, or a fixed number of evaluations.

Learning-curve studies find a fixed training length hard to beat (Domhan, Springenberg &
Hutter 2015 and Klein et al. 2017 use it as the baseline of their curve-extrapolation
stopping), so `tune` keeps it among the candidates: when a fixed epoch count does as
well as any rule on the user's runs, the output says so. The rule ignores the values
(it is trivially causal and direction-free); best_index is the best evaluation so far.
"""

from __future__ import annotations

import math

import numpy as np

from logsage.rules.common import at_least, best_index_upto, best_phrase, evals, num, require, undecidable
from logsage.rules.base import Outcome, RuleInput, rule


def _validate(*, fraction: float, evals: int) -> None:
    require("fixed", fraction is not None and math.isfinite(fraction) and 0.0 < fraction <= 1.0,
            f"fraction must be in (0, 1], got {fraction!r}")
    at_least("fixed", "evals", evals, 0)


@rule("fixed", reference="Domhan, Springenberg & Hutter 2015 (IJCAI), 'Speeding up automatic hyperparameter "
                         "optimization of deep neural networks by extrapolation of learning curves': the fixed-length "
                         "baseline", validate=_validate,
      grid={"evals": [5, 10, 15, 20, 30]})
def fixed(x: RuleInput, *, fraction: float = 0.5, evals: int = 0) -> Outcome:
    """Fixed budget: stop at the first evaluation at or past `fraction` of the stated step budget, or after `evals` evaluations.

    With evals > 0 the stop is at evaluation index evals - 1 and fraction is not used.
    Otherwise the stop is at the first evaluation whose step reaches fraction x the
    run's stated max_steps; a run that states no budget cannot be judged by the
    fraction (its last step is known only in hindsight), and the reason says to use
    evals instead. best_index is the best evaluation at the stop.

    Args:
        fraction: share of the stated step budget (max_steps) after which to stop, in (0, 1].
        evals: stop after this many evaluations (0: use fraction). Must be >= 0.
    """
    _validate(fraction=fraction, evals=evals)
    if x.values.size == 0:  # the values play no part otherwise: a run of NaN still stops on time
        return undecidable(f"{x.metric} has no evaluations")
    vals = x.values.tolist()
    n = len(vals)
    if evals > 0:
        at, what = evals - 1, f"{_evals(evals)} done"
    else:
        if not x.budget_steps:
            return Outcome(None, None, "the run states no step budget (max_steps), so fixed:fraction cannot be "
                                       "placed; use fixed:evals=K", decidable=False)
        target = fraction * x.budget_steps
        hit = np.flatnonzero(np.asarray(x.steps) >= target)
        at = int(hit[0]) if hit.size else n
        what = f"step {num(target)} = {num(fraction)} of max_steps {x.budget_steps} reached"
    at = max(at, x.not_before)
    if at < n:
        best = best_index_upto(vals, at)
        return Outcome(at, best, f"fixed budget: {what} at step {int(x.steps[at])}; {best_phrase(x, best)}")
    best = best_index_upto(vals, n - 1)
    return Outcome(None, best, f"fixed budget not reached in {_evals(n)}; {best_phrase(x, best)}")


def _evals(n: int) -> str:
    return evals(n)
