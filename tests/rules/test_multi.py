"""Golden cases for the multi-metric rule (weighted composite and 'all must stall').

Composites are computed by hand in the comments: s = Σ w·value for min metrics and
Σ w·(−value) for max metrics.
"""

from __future__ import annotations

import pytest

from logsage.core.errors import RuleConfigError
from logsage.rules.multi import parse_metrics

from ._helpers import NAN, check_golden, decide, golden_params

LOSS_ACC = "eval_loss:min:0.7;eval_accuracy:max:0.3"

GOLDEN: dict[str, list[tuple]] = {
    "multi": [
        # loss stalls at .8 from index 2, accuracy keeps rising: composite .7l - .3a =
        # .55, .45, .35, .335, .32 keeps improving -> never stops, best index 4.
        ([1.0, .9, .8, .8, .8], {"metrics": LOSS_ACC, "patience": 2}, "min", None, 4,
         {"extra": {"eval_accuracy": [.5, .6, .7, .75, .8]}}),
        # the loss alone with patience 2 stops at index 4 (two ties after .8).
        ([1.0, .9, .8, .8, .8], {"metrics": "eval_loss", "patience": 2}, "min", 4, 2),
        # combine=all: loss stalls from index 3; accuracy gains at index 4 (.71), then stalls:
        # counts at index 6 are loss 4, accuracy 2 -> both >= 2. Composite l - a (weights 1):
        # .5, .3, .1, .1, .09, .09, .09 -> best index 4.
        ([1.0, .9, .8, .8, .8, .8, .8], {"metrics": "eval_loss;eval_accuracy", "combine": "all", "patience": 2},
         "min", 6, 4, {"extra": {"eval_accuracy": [.5, .6, .7, .7, .71, .71, .71]}}),
        # normalize: loss 2.0→... and accuracy .5→..., weights 1/1, patience 2.
        # Raw composite l - a = 1.5, 1.4, 1.25, 1.3, 1.35 -> stops at index 4 (loss dominates) ...
        ([2.0, 1.9, 1.8, 1.9, 2.0], {"metrics": "eval_loss:1;eval_accuracy:1", "patience": 2}, "min", 4, 2,
         {"extra": {"eval_accuracy": [.5, .5, .55, .6, .65]}}),
        # ... normalized l/2 - a/.5 = 0, -.05, -.2, -.25, -.3 keeps improving -> never, best index 4.
        ([2.0, 1.9, 1.8, 1.9, 2.0], {"metrics": "eval_loss:1;eval_accuracy:1", "patience": 2, "normalize": True},
         "min", None, 4, {"extra": {"eval_accuracy": [.5, .5, .55, .6, .65]}}),
        # a NaN component makes its evaluation a non-improvement (patience 1 -> stop there).
        ([1.0, .9, .8], {"metrics": LOSS_ACC, "patience": 1}, "min", 1, 0,
         {"extra": {"eval_accuracy": [.5, NAN, .7]}}),
        # the mode in the spec overrides the series' own (here: treat accuracy as lower-is-better).
        ([1.0, 1.0, 1.0], {"metrics": "eval_accuracy:min", "patience": 1}, "min", None, 2,
         {"extra": {"eval_accuracy": [.5, .4, .3]}}),
        # min_evals=4 (the guide's min_epochs idea): the plateau may not stop before index 3.
        ([1.0, 1.0, 1.0, 1.0, 1.0], {"metrics": "eval_loss", "patience": 1, "min_evals": 4}, "min", 3, 0),
    ],
}


@pytest.mark.parametrize("rule,case", golden_params(GOLDEN))
def test_golden(rule, case):
    check_golden(rule, case)


def test_reason_says_whether_normalized():
    extra = {"eval_accuracy": [.5, .5, .55, .6, .65]}
    plain = decide([2.0, 1.9, 1.8, 1.9, 2.0], "multi", {"metrics": "eval_loss;eval_accuracy", "patience": 2},
                   extra=extra)
    assert "not normalized" in plain.reason and "1×eval_loss + 1×-eval_accuracy" in plain.reason
    normed = decide([2.0, 1.9, 1.8, 1.9, 2.0], "multi",
                    {"metrics": "eval_loss;eval_accuracy", "patience": 2, "normalize": True}, extra=extra)
    assert "normalized by first values" in normed.reason


def test_empty_metrics_or_missing_series_are_undecidable_with_the_fix():
    out = decide([1.0, .9, .8], "multi")
    assert not out.decidable and "metrics=eval_loss:min:0.7;eval_accuracy:max:0.3" in out.reason
    out = decide([1.0, .9, .8], "multi", {"metrics": "eval_bleu:max"})
    assert not out.decidable and "eval_bleu" in out.reason
    out = decide([1.0, .9, .8], "multi", {"metrics": "eval_loss;eval_accuracy", "normalize": True},
                 extra={"eval_accuracy": [0.0, .1, .2]})
    assert not out.decidable and "cannot normalize eval_accuracy" in out.reason


def test_parse_metrics():
    assert parse_metrics(LOSS_ACC) == [("eval_loss", "min", 0.7), ("eval_accuracy", "max", 0.3)]
    assert parse_metrics("eval_loss | eval_accuracy:max") == [("eval_loss", None, 1.0), ("eval_accuracy", "max", 1.0)]
    assert parse_metrics("") == []


@pytest.mark.parametrize("params,message", [
    ({"metrics": "eval_loss:up"}, "'up' is neither min/max nor a weight"),
    ({"metrics": "eval_loss:min:-1"}, "weight of eval_loss must be a finite number >= 0, got -1"),
    ({"metrics": "eval_loss:0;eval_acc:0"}, "at least one weight must be > 0"),
    ({"metrics": "eval_loss", "combine": "any"}, "combine must be one of weighted, all, got 'any'"),
    ({"metrics": "eval_loss", "patience": -3}, "patience must be >= 0, got -3"),
])
def test_bad_parameters_are_rejected_with_the_value(params, message):
    with pytest.raises(RuleConfigError) as err:
        decide([1.0, 0.9], "multi", params)
    assert message in str(err.value)
