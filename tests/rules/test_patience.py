"""Golden cases for the patience family: patience (both definitions), smoothed, adaptive.

Every expected index is traced by hand in the comment beside it (0-based).
Values sitting on a δ boundary are binary-exact (0.25, 0.125...) so that the
boundary really is equality in float64.
"""

from __future__ import annotations

import pytest

from logsage.core.errors import RuleConfigError

from ._helpers import INF, NAN, check_golden, decide, golden_params

GUIDE_STOPS = [0.5, 0.4, 0.35, 0.33, 0.32, 0.31, 0.315, 0.32]
GUIDE_NEVER = [0.5, 0.45, 0.4, 0.38, 0.35, 0.33, 0.31, 0.29]
PLATEAU = [0.5] * 10
NOISY = [1.0, 0.9, 0.8, 0.85, 0.7, 0.75, 0.74, 0.76]
STEPS_10 = list(range(10, 110, 10))

GOLDEN: dict[str, list[tuple]] = {
    "patience": [
        # seed-rules robustness cases. GUIDE_STOPS: best .31 at index 5, then .315, .32 -> only 2
        # non-improving evaluations before the series ends, so patience 3 cannot stop within it
        # (the guide's "stops" holds for patience 2, or for min_delta .025 as below).
        (GUIDE_STOPS, {"patience": 3}, "min", None, 5),
        (GUIDE_STOPS, {"patience": 2}, "min", 7, 5),
        # δ=.025: .33 (gain .02 on .35) counts, .32 (gain .03) resets, then .31, .315, .32 count 3.
        (GUIDE_STOPS, {"patience": 3, "min_delta": .025}, "min", 7, 4),
        (GUIDE_NEVER, {"patience": 3}, "min", None, 7),
        (PLATEAU, {"patience": 3}, "min", 3, 0),  # a plateau stops under no-improvement...
        (PLATEAU, {"patience": 3, "definition": "degradation"}, "min", None, 0),  # ...never under degradation
        # δ boundary: .75 gains exactly .25 on 1.0 -> no improvement; with δ .2 both gains count.
        ([1.0, 0.75, 0.5], {"patience": 1, "min_delta": .25}, "min", 1, 0),
        ([1.0, 0.75, 0.5], {"patience": 1, "min_delta": .2}, "min", None, 2),
        # relative δ: .875 gains .125 = 12.5% of 1.0 -> not more than 12.5%; with 12% it counts, and
        # .75 gains .125 > 12% of .875 (.105).
        ([1.0, 0.875, 0.75], {"patience": 1, "min_delta": .125, "relative": True}, "min", 1, 0),
        ([1.0, 0.875, 0.75], {"patience": 1, "min_delta": .12, "relative": True}, "min", None, 2),
        # degradation: worse than the best (.8) at .9, .95, 1.0 -> 3 in a row.
        ([1.0, 0.8, 0.9, 0.95, 1.0], {"patience": 3, "definition": "degradation"}, "min", 4, 1),
        # degradation δ boundary: .75 is exactly .25 worse than .5 -> not a degradation.
        ([1.0, 0.5, 0.75, 0.75], {"patience": 1, "min_delta": .25, "definition": "degradation"}, "min", None, 1),
        ([1.0, 0.5, 0.75, 0.75], {"patience": 1, "min_delta": .2, "definition": "degradation"}, "min", 2, 1),
        # degradation: one evaluation back within δ resets the run of degradations.
        ([1.0, 1.5, 1.5, 1.0, 1.5, 1.5], {"patience": 3, "definition": "degradation"}, "min", None, 0),
        # NaN never becomes best and counts as no improvement / as a degradation.
        ([1.0, NAN, NAN, 0.9], {"patience": 2}, "min", 2, 0),
        ([1.0, NAN, NAN, 0.9], {"patience": 2, "definition": "degradation"}, "min", 2, 0),
        ([NAN, 1.0, 0.9], {"patience": 2}, "min", None, 2),
        ([1.0, INF, 0.9], {"patience": 1}, "min", 1, 0),
        # max mode: .2 improves on .1, then two ties.
        ([0.1, 0.2, 0.2, 0.2], {"patience": 2}, "max", 3, 1),
        # patience 0 stops at the first non-improvement (not at the first evaluation).
        ([1.0, 0.9, 0.95], {"patience": 0}, "min", 2, 1),
        # min_evals=6: the count reaches 3 at index 3 but no stop before index 5.
        (PLATEAU, {"patience": 3, "min_evals": 6}, "min", 5, 0),
        # min_steps=60 with steps 10..100: first allowed index is 5 (step 60).
        (PLATEAU, {"patience": 3, "min_steps": 60}, "min", 5, 0, {"steps": STEPS_10}),
    ],
    "smoothed": [
        # window 1 is plain patience: .85 after .8 stops with patience 1.
        (NOISY, {"window": 1, "patience": 1}, "min", 3, 2),
        # window 2: means 1, .95, .85, .825, .775, .725, .745 -> first rise at index 6; raw best .7 (index 4).
        (NOISY, {"window": 2, "patience": 1}, "min", 6, 4),
        # EMA alpha .5: 1, .95, .875, .8625, .78125, .765625, .7528125, .75640625 -> rise at index 7.
        (NOISY, {"alpha": .5, "patience": 1}, "min", 7, 4),
        # a NaN evaluation counts as no improvement even though the window mean of .9 and 1.0 exists.
        ([1.0, 0.9, NAN, 0.8], {"window": 3, "patience": 1}, "min", 2, 1),
        # max mode, window 2: means .1, .15, .25, .275, .225 -> worse at index 4; raw best .3 (index 2).
        ([0.1, 0.2, 0.3, 0.25, 0.2], {"window": 2, "patience": 1}, "max", 4, 2),
        (PLATEAU, {}, "min", 3, 0),
        # δ boundary on the means 1.0, .75, .375 (window 2): .75 gains exactly .25 -> no improvement...
        ([1.0, 0.5, 0.25], {"window": 2, "patience": 1, "min_delta": .25}, "min", 1, 1),
        # ...while with δ .2 both gains count.
        ([1.0, 0.5, 0.25], {"window": 2, "patience": 1, "min_delta": .2}, "min", None, 2),
    ],
    "adaptive": [
        # late-tightening, budget 100, steps 10..100. Decreasing by .01 to .94 at step 70 (p = .7,
        # not > .7); at p .8 and .9 patience is max(2, int(5*(1-p))) = 2 -> two flat evaluations stop.
        ([1.0, .99, .98, .97, .96, .95, .94, .94, .94, .94], {"budget": 100}, "min", 8, 6, {"steps": STEPS_10}),
        # the same via the run's max_steps instead of budget=
        ([1.0, .99, .98, .97, .96, .95, .94, .94, .94, .94], {}, "min", 8, 6,
         {"steps": STEPS_10, "budget_steps": 100}),
        # δ tightening: after .4 at p .7, .3985 gains .0015 < δ·1.8 = .0018 (no improvement), .399
        # too; patience 2 -> stop at index 8. (Plain δ .001 would count .3985 as a gain.)
        ([1.0, .9, .8, .7, .6, .5, .4, .3985, .399, .399], {"budget": 100}, "min", 8, 6, {"steps": STEPS_10}),
        # decaying: δ .1 at p 0, .1·e^-1 = .0368 at p 1: the .05 gain at step 100 counts...
        ([1.0, 0.95], {"form": "decaying", "min_delta": .1, "patience": 1, "budget": 100}, "min", None, 1,
         {"steps": [0, 100]}),
        # ...but not without decay (δ stays .1).
        ([1.0, 0.95], {"form": "decaying", "min_delta": .1, "patience": 1, "budget": 100, "decay": 0}, "min", 1, 0,
         {"steps": [0, 100]}),
        # an epoch budget when no step budget is known: p = epoch / 10, as in the first case.
        ([1.0, .99, .98, .97, .96, .95, .94, .94, .94, .94], {}, "min", 8, 6,
         {"steps": list(range(10)), "epochs": list(range(1, 11)), "budget_epochs": 10}),
    ],
}


@pytest.mark.parametrize("rule,case", golden_params(GOLDEN))
def test_golden(rule, case):
    check_golden(rule, case)


def test_patience_reason_in_words():
    out = decide([2.0, 1.79, 1.8, 1.85, 1.9], "patience", {"patience": 3, "min_delta": 1e-4},
                 steps=[100, 500, 600, 700, 800])
    assert out.reason == ("eval_loss did not improve by more than 0.0001 for 3 evaluations (patience 3) "
                          "at step 800; best 1.79 at step 500")
    assert "was worse than its best" in decide([1.0, 2.0], "patience", {"patience": 1,
                                                                        "definition": "degradation"}).reason


def test_non_library_rules_refuse_too_short_or_non_finite_series():
    for values in ([], [1.0], [NAN, NAN]):
        out = decide(values, "patience")
        assert not out.decidable and out.stop_index is None
    assert "at least 2" in decide([1.0], "patience").reason
    assert "no finite value" in decide([NAN, INF], "smoothed").reason


def test_adaptive_without_budget_says_how_to_give_one():
    out = decide([1.0, 0.9, 0.9], "adaptive", steps=[10, 20, 30])
    assert not out.decidable and out.stop_index is None
    assert "budget=" in out.reason


def test_smoothed_reason_names_both_bests():
    out = decide(NOISY, "smoothed", {"window": 2, "patience": 1})
    assert "mean of the last 2" in out.reason
    assert "best smoothed 0.725" in out.reason and "best 0.7 at step 4" in out.reason


@pytest.mark.parametrize("rule,params,message", [
    ("patience", {"patience": -1}, "patience must be >= 0, got -1"),
    ("patience", {"min_delta": -0.5}, "min_delta must be a finite number >= 0, got -0.5"),
    ("patience", {"definition": "worse"}, "definition must be one of no-improvement, degradation, got 'worse'"),
    ("smoothed", {"window": 0}, "window must be >= 1, got 0"),
    ("smoothed", {"alpha": 1.5}, "alpha must be in [0, 1] (0 = use the window), got 1.5"),
    ("adaptive", {"late": 2}, "late must be in [0, 1], got 2.0"),
    ("adaptive", {"form": "linear"}, "form must be one of late-tightening, decaying, got 'linear'"),
    ("adaptive", {"budget": -5}, "budget must be >= 0, got -5"),
])
def test_bad_parameters_are_rejected_with_the_value(rule, params, message):
    with pytest.raises(RuleConfigError) as err:
        decide([1.0, 0.9], rule, params)
    assert message in str(err.value) and f"rule {rule}:" in str(err.value)
