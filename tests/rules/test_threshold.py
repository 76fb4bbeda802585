"""Golden cases for threshold, divergence and none (no patience involved)."""

from __future__ import annotations

import pytest

from logsage.core.errors import RuleConfigError

from ._helpers import INF, NAN, check_golden, decide, golden_params

GOLDEN: dict[str, list[tuple]] = {
    "threshold": [
        ([1.0, 0.8, 0.6], {"target": 0.8}, "min", 1, 1),  # equal reaches...
        ([1.0, 0.8, 0.6], {"target": 0.8, "strict": True}, "min", 2, 2),  # ...unless strict
        ([.5, .7, .9], {"target": .7}, "max", 1, 1),
        ([.5, .7, .9], {"target": .7, "strict": True}, "max", 2, 2),
        ([NAN, 1.0, 0.5], {"target": 0.5}, "min", 2, 2),  # NaN never reaches
        ([1.0, 0.9], {"target": 0.5}, "min", None, 1),
        ([0.4], {"target": 0.5}, "min", 0, 0),  # one evaluation is enough
        ([0.4, 0.3, 0.2], {"target": 0.5, "min_evals": 3}, "min", 2, 2),
    ],
    "divergence": [
        ([1.0, 0.9, NAN, 0.8], {}, "min", 2, 1),
        ([1.0, INF], {}, "min", 1, 0),
        ([INF, 1.0], {}, "min", 0, None),
        ([1, .5, 2.0, 3.0], {"bound": 2.0}, "min", 3, 1),  # equal to the bound does not stop
        ([.5, .6, .3], {"bound": .4}, "max", 2, 1),  # below the bound for a max metric
        # ratio 2: 1.0 equals 2 × .5 (no stop), 1.1 is above it.
        ([1.0, 0.5, 0.9, 1.0, 1.1], {"ratio": 2}, "min", 4, 1),
        # max metric, ratio 2: best .8 -> stop below .4 (.5 no, .39 yes).
        ([.4, .8, .5, .39], {"ratio": 2}, "max", 3, 1),
        ([1.0, 0.9], {}, "min", None, 1),
    ],
    "none": [
        ([1.0, 0.5, 0.7], {}, "min", None, 1),
        ([NAN, 1.0, 0.9, INF], {}, "min", None, 2),
        ([.5, .7, .6], {}, "max", None, 1),
        ([0.3], {}, "min", None, 0),
    ],
}


@pytest.mark.parametrize("rule,case", golden_params(GOLDEN))
def test_golden(rule, case):
    check_golden(rule, case)


def test_threshold_without_target_says_how_to_set_it():
    out = decide([1.0, 0.5], "threshold")
    assert not out.decidable and "target=" in out.reason


def test_none_on_all_nan_is_undecidable():
    assert not decide([NAN, NAN], "none").decidable


def test_reasons():
    assert "reached the target: 0.8 at step 1 <= 0.8" in decide([1.0, 0.8], "threshold", {"target": .8}).reason
    assert "is not finite" in decide([1.0, NAN], "divergence").reason
    assert "above the bound 2" in decide([1.0, 3.0], "divergence", {"bound": 2}).reason
    assert "worse than 2 × its best (0.5)" in decide([0.5, 1.5], "divergence", {"ratio": 2}).reason


@pytest.mark.parametrize("rule,params,message", [
    ("threshold", {"target": "inf"}, "target must be a finite number, got inf"),
    ("divergence", {"ratio": 0.5}, "ratio must be 0 (off) or > 1 (how many times worse than the best), got 0.5"),
    ("divergence", {"ratio": -1}, "ratio must be a finite number >= 0, got -1"),
    ("divergence", {"bound": "nan"}, "bound must be a finite number or none, got nan"),
    ("none", {"patience": 3}, "unknown parameter 'patience'"),
])
def test_bad_parameters_are_rejected_with_the_value(rule, params, message):
    with pytest.raises(RuleConfigError) as err:
        decide([1.0, 0.9], rule, params)
    assert message in str(err.value)
