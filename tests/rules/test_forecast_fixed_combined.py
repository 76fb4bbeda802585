"""Golden cases for the rules of issue 12 (forecast, fixed, patience-trend, the learned `recommended`),
and their properties: causal (a prefix never decides differently) and direction-symmetric
(maximising -v is minimising v), with and without a stated budget.

Every expected index is traced by hand in the comment beside it (0-based).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logsage.core.errors import RuleConfigError

from ._helpers import NAN, check_golden, decide, golden_params

PLATEAU_AFTER_DROP = [1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
RISE = [1.0, 0.8, 0.6, 0.7, 0.8, 0.9]

GOLDEN: dict[str, list[tuple]] = {
    "forecast": [
        # window 4, no budget (10 ahead assumed). At index 3 the fit through 1, .5, .5, .5 still falls
        # (slope -.15, level .4 < the target .45), so an improvement is likely. At index 4 the last
        # 4 values are flat: slope 0, noise 0, the level .5 never reaches the target
        # .5 - .1 x (1 - .5) = .45 -> chance 0 < .02.
        (PLATEAU_AFTER_DROP, {}, "min", 4, 1),
        ([0.0, 0.5, 0.5, 0.5, 0.5, 0.5], {}, "max", 4, 1),  # the same plateau, maximised
        # a straight falling line: the trend (decay .99, no noise) keeps beating the target: never.
        ([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], {}, "min", None, 7),
        ([1.0, 0.5, 0.5], {}, "min", None, 1),  # fewer than window=4 finite values: no forecast yet
        # stated budget 4 reached at index 3 (step 4): nothing left to improve in -> stop at the first forecast.
        ([1.0, 0.9, 0.8, 0.7, 0.6], {}, "min", 3, 3, {"steps": [1, 2, 3, 4, 5], "budget_steps": 4}),
        # min_evals=7: the plateau's stop at 4 waits for index 6.
        (PLATEAU_AFTER_DROP, {"min_evals": 7}, "min", 6, 1),
    ],
    "fixed": [
        ([1.0, 0.9, 0.8, 0.7, 0.6], {"evals": 3}, "min", 2, 2),  # after 3 evaluations: index 2
        ([1.0, 0.9, 0.95, 0.7], {"evals": 3}, "min", 2, 1),  # best so far at the stop: .9 at index 1
        ([1.0, 0.9], {"evals": 5}, "min", None, 1),  # the run ends first
        ([0.1, 0.2, 0.15], {"evals": 3}, "max", 2, 1),
        # fraction .3 of max_steps 100: the first step >= 30 is index 2.
        ([1.0, 0.9, 0.8, 0.7, 0.6], {"fraction": 0.3}, "min", 2, 2,
         {"steps": [10, 20, 30, 40, 50], "budget_steps": 100}),
        ([1.0, 0.9, 0.8, 0.7, 0.6], {"evals": 2, "min_evals": 4}, "min", 3, 3),  # min_evals holds it to index 3
    ],
    "patience-trend": [
        # a plateau: count 2 at index 2 and the slope of 0.5, 0.5, 0.5 is 0 (not improving) -> stop.
        ([0.5] * 10, {}, "min", 2, 0),
        # RISE, window 5: count 2 at index 4 but 1, .8, .6, .7, .8 still falls (slope -.05); at index 5
        # .8, .6, .7, .8, .9 rises (slope .04) -> stop at 5. With window 3, .6, .7, .8 rises at index 4.
        (RISE, {}, "min", 5, 2),
        (RISE, {"window": 3}, "min", 4, 2),
        ([0.0, 0.2, 0.4, 0.3, 0.2, 0.1], {}, "max", 5, 2),  # RISE maximised
        # a noisy step down: plain patience 2 stops at index 4, the trend (1, .8, .6, .65, .64 falls) does
        # not, and .4 at index 5 is the next best.
        ([1.0, 0.8, 0.6, 0.65, 0.64, 0.4], {}, "min", None, 5),
        # NaN counts as no improvement, but a window with one finite value has no trend: keep going.
        ([1.0, NAN, NAN, 0.9], {}, "min", None, 3),
    ],
    "recommended": [
        (PLATEAU_AFTER_DROP, {}, "min", 4, 1),  # the shipped forecast's decision
    ],
}


@pytest.mark.parametrize("rule,case", golden_params(GOLDEN))
def test_golden(rule, case):
    check_golden(rule, case)


def test_plain_patience_stops_where_the_trend_does_not():
    assert decide([1.0, 0.8, 0.6, 0.65, 0.64, 0.4], "patience", {"patience": 2}).stop_index == 4


def test_fixed_fraction_needs_a_stated_budget_and_says_so():
    out = decide([1.0, 0.9, 0.8], "fixed", {"fraction": 0.5})
    assert not out.decidable and "fixed:evals" in out.reason


def test_forecast_says_when_no_budget_was_stated():
    assert "no stated budget, 10 evaluations ahead assumed" in decide(PLATEAU_AFTER_DROP, "forecast").reason
    stated = decide(PLATEAU_AFTER_DROP, "forecast", steps=list(range(1, 8)), budget_steps=20).reason
    assert "left in the stated budget" in stated


@pytest.mark.parametrize("rule,params", [("forecast", {"alpha": 1.0}), ("forecast", {"window": 2}),
                                         ("fixed", {"fraction": 0.0}), ("fixed", {"evals": -1}),
                                         ("patience-trend", {"window": 1}), ("patience-trend", {"patience": 0})])
def test_bad_parameters_are_refused(rule, params):
    with pytest.raises(RuleConfigError, match=f"rule {rule}"):
        decide([1.0, 0.9, 0.8], rule, params)


def test_recommended_decides_as_the_shipped_rule():
    from logsage.rules.recommended import learned

    doc = learned()
    values = [1.0, 0.7, 0.6, 0.62, 0.58, 0.59, 0.6, 0.61, 0.63, 0.6, 0.64, 0.66]
    a = decide(values, "recommended")
    b = decide(values, doc["rule"], doc["params"])
    assert (a.stop_index, a.best_index) == (b.stop_index, b.best_index) and b.reason in a.reason


# ---------------------------------------------------------------- properties
NEW_RULES = [("forecast", {}), ("forecast", {"alpha": 0.3, "delta": 0.0, "window": 3}), ("fixed", {"evals": 4}),
             ("fixed", {"fraction": 0.4}), ("patience-trend", {}), ("patience-trend", {"patience": 1, "window": 3}),
             ("recommended", {})]
values_strategy = st.lists(st.one_of(st.floats(0.05, 3.0), st.sampled_from([0.5, 0.5, 1.0, math.nan])),
                           min_size=1, max_size=16)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("rule,params", NEW_RULES)
@pytest.mark.parametrize("budget", [None, 200])
@SETTINGS
@given(values=values_strategy)
def test_new_rules_are_causal(rule, params, budget, values):
    steps = [10 * (i + 1) for i in range(len(values))]
    full = decide(values, rule, params, steps=steps, budget_steps=budget)
    if not full.decidable:
        return
    for m in range(1, len(values) + 1):
        part = decide(values[:m], rule, params, steps=steps[:m], budget_steps=budget)
        expected = full.stop_index if full.stop_index is not None and full.stop_index < m else None
        assert part.stop_index == expected, (m, part.reason)


@pytest.mark.parametrize("rule,params", NEW_RULES)
@pytest.mark.parametrize("budget", [None, 200])
@SETTINGS
@given(values=values_strategy)
def test_new_rules_are_direction_symmetric(rule, params, budget, values):
    steps = [10 * (i + 1) for i in range(len(values))]
    low = decide(values, rule, params, mode="min", steps=steps, budget_steps=budget)
    high = decide([-v for v in values], rule, params, mode="max", steps=steps, budget_steps=budget)
    assert (low.stop_index, low.best_index, low.decidable) == (high.stop_index, high.best_index, high.decidable)
