"""Golden cases for the slope rule, and a check of its fast test against scipy.stats.linregress."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import linregress

from logsage.core.errors import RuleConfigError

from ._helpers import NAN, check_golden, decide, golden_params

V_SHAPE = [1.0, .9, .8, .85, .9, .95, 1.0, 1.1]

GOLDEN: dict[str, list[tuple]] = {
    "slope": [
        # window 5. At index 5 the window .9,.8,.85,.9,.95 has slope .02 and t = 1.15 < t(.95, 3) = 2.35;
        # at index 6 the window .8...1.0 is a perfect rising line (p ~ 0).
        (V_SHAPE, {}, "min", 6, 2),
        ([1.0, .9, .8, .7, .6, .5], {}, "min", None, 5),  # falling: never
        ([.5] * 8, {}, "min", None, 0),  # flat: slope 0, never
        ([.9, .8, .7, .6, .5], {}, "max", 4, 0),  # a falling accuracy is a worsening trend
        # a NaN is skipped: at index 7 the last 5 finite values .8 .. 1.0 rise in a perfect line.
        ([1.0, .9, NAN, .8, .85, .9, .95, 1.0], {}, "min", 7, 3),
        # window 3: at index 4 the window .8, .85, .9 is a perfect line.
        (V_SHAPE, {"window": 3}, "min", 4, 2),
    ],
}


@pytest.mark.parametrize("rule,case", golden_params(GOLDEN))
def test_golden(rule, case):
    check_golden(rule, case)


def _first_significant_rise(values: list[float], window: int, alpha: float) -> int | None:
    """Independent oracle: the first index whose last `window` finite values rise with one-sided p < alpha."""
    xs, ys = [], []
    for t, v in enumerate(values):
        if not math.isfinite(v):
            continue
        xs.append(t)
        ys.append(v)
        if len(xs) >= window:
            res = linregress(xs[-window:], ys[-window:])
            if res.slope > 0 and res.pvalue / 2 < alpha:
                return t
    return None


@pytest.mark.parametrize("seed", range(25))
def test_decisions_match_linregress_one_sided(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 30))
    # a noisy U shape so that some series stop and some do not
    t = np.arange(n)
    values = (0.002 * (t - n / 2) ** 2 + rng.normal(0, 0.05, n) + 1.0).tolist()
    window = int(rng.integers(3, 8))
    alpha = float(rng.choice([0.01, 0.05, 0.2]))
    out = decide(values, "slope", {"window": window, "alpha": alpha})
    assert out.stop_index == _first_significant_rise(values, window, alpha)


def test_reason_gives_slope_and_p():
    out = decide(V_SHAPE, "slope", steps=[10 * i for i in range(8)])
    assert "rising over its last 5 finite evaluations (slope 0.05 per evaluation" in out.reason
    assert "at step 60" in out.reason


def test_too_few_finite_values_is_undecidable():
    out = decide([1.0, NAN, 0.9, 0.8], "slope")
    assert not out.decidable and "window=5" in out.reason


@pytest.mark.parametrize("params,message", [
    ({"window": 2}, "window must be >= 3, got 2"),
    ({"alpha": 0}, "alpha must be in (0, 1), got 0.0"),
    ({"alpha": 1}, "alpha must be in (0, 1), got 1.0"),
])
def test_bad_parameters_are_rejected_with_the_value(params, message):
    with pytest.raises(RuleConfigError) as err:
        decide([1.0, 0.9], "slope", params)
    assert message in str(err.value)
