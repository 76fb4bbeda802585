"""The adaptive patience rule: patience and δ that change with training progress.

Both published forms are offered, by name, because a guide's code and its
formula disagree:

* ``late-tightening`` (the guide's code): once progress p = step / budget passes
  `late`, patience becomes max(2, int(patience·(1 − p))) and δ becomes δ·(1 + p);
* ``decaying`` (the guide's formula): δ_t = δ·exp(−decay · t / T), patience fixed.
"""

from __future__ import annotations

import math

from logsage.rules.common import (
    at_least,
    best_phrase,
    check_series,
    evals,
    finite_at_least,
    num,
    require,
    undecidable,
)
from logsage.rules.base import Outcome, RuleInput, rule
from logsage.rules.patience import no_improvement_scan

FORMS = ("late-tightening", "decaying")


def progress(x: RuleInput, budget: int) -> tuple[list[float], str] | None:
    """Progress p at each evaluation and how it was measured, or None when no budget is known.

    The budget is, in order: the `budget` parameter (steps), the run's max_steps,
    or its number of epochs (then p = epoch / epochs).
    """
    steps = x.steps.tolist()
    if budget > 0:
        return [s / budget for s in steps], f"step / budget {budget}"
    if x.budget_steps:
        return [s / x.budget_steps for s in steps], f"step / max_steps {x.budget_steps}"
    if x.budget_epochs and x.epochs is not None:
        ep = x.epochs.tolist()
        if all(math.isfinite(e) for e in ep):
            return [e / x.budget_epochs for e in ep], f"epoch / {num(x.budget_epochs)} epochs"
    return None


def schedule(p: list[float], *, form: str, patience: int, min_delta: float, late: float,
             decay: float) -> tuple[list[int], list[float]]:
    """The patience and δ in force at each evaluation, given its progress p."""
    if form == "decaying":
        return [patience] * len(p), [min_delta * math.exp(-decay * q) for q in p]
    pats = [max(2, int(patience * (1.0 - q))) if q > late else patience for q in p]
    deltas = [min_delta * (1.0 + q) if q > late else min_delta for q in p]
    return pats, deltas


def _validate(*, form: str, patience: int, min_delta: float, late: float, decay: float, budget: int) -> None:
    require("adaptive", form in FORMS, f"form must be one of {', '.join(FORMS)}, got {form!r}")
    at_least("adaptive", "patience", patience, 0)
    finite_at_least("adaptive", "min_delta", min_delta, 0.0)
    require("adaptive", late is not None and 0.0 <= late <= 1.0, f"late must be in [0, 1], got {late!r}")
    finite_at_least("adaptive", "decay", decay, 0.0)
    at_least("adaptive", "budget", budget, 0)


@rule("adaptive", reference="Goodfellow, Bengio & Courville 2016, Deep Learning, Algorithm 7.1 with patience "
                            "and δ scheduled on progress = step / max_steps (transformers TrainingArguments.max_steps)",
      needs=("budget",), choices={"form": FORMS}, validate=_validate,
      grid={"patience": [3, 5, 7]})  # the initial patience the guides try
def adaptive(x: RuleInput, *, form: str = "late-tightening", patience: int = 5, min_delta: float = 0.001,
             late: float = 0.7, decay: float = 1.0, budget: int = 0) -> Outcome:
    """Adaptive patience: patience and min_delta follow training progress (late-tightening or decaying).

    Counting is the no-improvement patience rule, with the patience and δ in force
    at each evaluation. Progress is step / budget (the budget parameter, else the
    run's max_steps), or epoch / epochs when only an epoch budget is known; without
    any budget the rule cannot judge. best_index is the best evaluation at the stop.

    Args:
        form: late-tightening (after progress `late`: patience max(2, int(patience·(1-p))),
            δ·(1+p); before it, the initial values) or decaying (δ·exp(-decay·p), fixed patience).
        patience: initial patience in evaluations; the stop comes when the count of
            non-improving evaluations reaches the patience in force. Must be >= 0.
        min_delta: initial δ: an improvement must beat the best by more than it (a gain
            equal to δ counts as no improvement); in the metric's units. Must be >= 0.
        late: late-tightening only: progress (0..1) after which the schedule tightens;
            strictly after (p > late). Must be in [0, 1].
        decay: decaying only: the rate α in δ·exp(-α·p); 0 keeps δ constant. Must be >= 0.
        budget: total training steps T; 0 takes max_steps (or the epoch count) from the log.
    """
    _validate(form=form, patience=patience, min_delta=min_delta, late=late, decay=decay, budget=budget)
    bad = check_series(x, "adaptive")
    if bad is not None:
        return bad
    prog = progress(x, budget)
    if prog is None:
        return undecidable(f"adaptive needs the run's training budget and the log states none; "
                           f"give budget=<max_steps>, e.g. adaptive:budget={max(int(x.steps[-1]), 1)}")
    p, how = prog
    pats, deltas = schedule(p, form=form, patience=patience, min_delta=min_delta, late=late, decay=decay)
    vals = x.values.tolist()
    s = no_improvement_scan(vals, pats, deltas, not_before=x.not_before)
    if s.stop is not None:
        t = s.stop
        return Outcome(t, s.best_index,
                       f"{x.metric} did not improve by more than {num(deltas[t])} for {evals(s.count)} "
                       f"(patience {pats[t]} at progress {p[t]:.2f} = {how}, {form}) at step {int(x.steps[t])}; "
                       f"{best_phrase(x, s.best_index)}")
    return Outcome(None, s.best_index,
                   f"{x.metric} never ran out of patience ({form}, progress = {how}, patience {pats[-1]} and "
                   f"min_delta {num(deltas[-1])} at the end) in {evals(len(vals))}; {best_phrase(x, s.best_index)}")
