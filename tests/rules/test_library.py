"""Golden cases for the library rules (hf, lightning, keras).

Expected values come from the conformance vectors observed by running the real
libraries (stopping-semantics.md §8; its table counts from 1, these indices from
0) and from hand traces of §1.3 / §2.2 / §3.2, written next to each case.
"""

from __future__ import annotations

import pytest

from logsage.core.errors import RuleConfigError

from ._helpers import INF, NAN, check_golden, decide, golden_params

TYPICAL = [1.0, .9, .8, .85, .82, .81, .79, .80, .80, .80]
TIES = [1.0, .9, .9, .9, .9, .9]
EXACT_DELTA = [1.0, .75, .5, .25, 0.0]
SLOW_CREEP = [1.0, .9, .8, .7, .6, .5, .4]
NAN_FIRST = [NAN, 1.0, .9, .8, .7, .6]
NAN_MID = [1.0, .9, NAN, .8, NAN, NAN, .7]
INF_MID = [1.0, INF, .9, .8]
P0 = [1.0, .9, .95, .8]
PREC = [1.0, 1 - 1e-9, 1 - 2e-9, 1 - 3e-9]
MAX_MODE = [.1, .2, .2, .3, .25, .29, .31]

GOLDEN: dict[str, list[tuple]] = {
    "hf": [
        # §8 vectors: (values, params, mode, stop, best = Trainer.best_metric's evaluation)
        (TYPICAL, {"patience": 2}, "min", 4, 2),
        (TIES, {"patience": 2}, "min", 3, 1),
        (EXACT_DELTA, {"patience": 1, "threshold": .25}, "min", 1, 1),  # HF's best ratchets to .75
        (SLOW_CREEP, {"patience": 2, "threshold": .15}, "min", 2, 2),
        (NAN_FIRST, {"patience": 2}, "min", None, 5),
        (NAN_MID, {"patience": 2}, "min", 5, 3),
        (INF_MID, {"patience": 2}, "min", None, 3),
        (P0, {"patience": 0}, "min", 0, 0),
        (PREC, {"patience": 2}, "min", None, 3),  # float64: 1e-9 is a gain
        (MAX_MODE, {"patience": 2}, "max", 5, 3),
        # §1.3 item 3: the first evaluation resets; a single point never stops with patience >= 1.
        ([1.0], {"patience": 1}, "min", None, 0),
        ([1.0], {"patience": 0}, "min", 0, 0),
        # §1.2/§1.3 item 4: all NaN: best stays +inf (index None), the counter grows from eval 2.
        ([NAN, NAN, NAN], {"patience": 2}, "min", 2, None),
        # NaN first then inf: inf < +inf is False, so the counter grows.
        ([NAN, INF, 1.0], {"patience": 1}, "min", 1, None),
        # threshold boundary: a gain of exactly 0.5 is not > 0.5 (stop), but the best still moves to 0.5.
        ([1.0, 0.5, 0.25], {"patience": 1, "threshold": 0.5}, "min", 1, 1),
        ([1.0, 0.5, 0.25], {"patience": 1, "threshold": 0.4999}, "min", 2, 2),
        # the same boundary in max mode
        ([0.25, 0.75, 1.0], {"patience": 1, "threshold": 0.5}, "max", 1, 1),
        # min_evals=7 (no stop before index 6): the counter is 2 at index 4 but resets at index 6 (.79).
        (TYPICAL, {"patience": 2, "min_evals": 7}, "min", 8, 6),
    ],
    "lightning": [
        (TYPICAL, {"patience": 2}, "min", 4, 2),
        (TIES, {"patience": 2}, "min", 3, 1),
        (EXACT_DELTA, {"patience": 1, "min_delta": .25}, "min", 1, 0),  # no ratchet: best stays 1.0
        (SLOW_CREEP, {"patience": 2, "min_delta": .15}, "min", None, 6),
        (NAN_FIRST, {"patience": 2}, "min", 0, None),  # non-finite stops at once
        (NAN_MID, {"patience": 2}, "min", 2, 1),
        (INF_MID, {"patience": 2}, "min", 1, 0),
        (P0, {"patience": 0}, "min", 2, 1),
        (PREC, {"patience": 2}, "min", 2, 0),  # float32 ties
        (NAN_FIRST, {"patience": 2, "check_finite": False}, "min", None, 5),
        (NAN_MID, {"patience": 2, "check_finite": False}, "min", 5, 3),
        (INF_MID, {"patience": 2, "check_finite": False}, "min", None, 3),
        # §8 Lightning thresholds (patience default 3); equal to a threshold does not trigger.
        ([1, .5, .3, .2], {"stopping_threshold": 0.3}, "min", 3, 2),
        ([1, .5, 2.0, 3.0], {"divergence_threshold": 2.0}, "min", 3, 1),
        ([1, .5, 2.0001, 3], {"divergence_threshold": 2.0}, "min", 2, 1),
        # thresholds are in the metric's units, also for max metrics
        ([.5, .8, .9], {"stopping_threshold": .85}, "max", 2, 1),
        ([.5, .8, .3], {"divergence_threshold": .4}, "max", 2, 1),
        # §8 max-mode vector (δ=.05): float32 .25-.05 equals .2, a tie; never stops.
        ([.1, .2, .25, .3, .31], {"patience": 2, "min_delta": .05}, "max", None, 3),
        # 1e39 is finite in float64 but inf in float32, which is what Lightning checks.
        ([1.0, 1e39], {"patience": 3}, "min", 1, 0),
        # min_delta boundary on both sides
        ([1.0, 0.74], {"patience": 1, "min_delta": .25}, "min", None, 1),
        # min_evals=3: the NaN at index 1 may not stop; the state runs on and .9, .8 improve.
        ([1.0, NAN, .9, .8], {"patience": 3, "min_evals": 3}, "min", None, 3),
        ([1.0], {}, "min", None, 0),
        ([], {}, "min", None, None),
    ],
    "keras": [
        # best_index is Keras' best_epoch whether or not restore_best_weights is on (Keras' default
        # is off: it then keeps the last epoch's weights, which only the reason says).
        (TYPICAL, {"patience": 2}, "min", 4, 2),
        (TYPICAL, {"patience": 2, "restore_best_weights": True}, "min", 4, 2),  # §8: restores epoch 3
        (TIES, {"patience": 2, "restore_best_weights": True}, "min", 3, 1),
        (EXACT_DELTA, {"patience": 1, "min_delta": .25, "restore_best_weights": True}, "min", 1, 0),
        (SLOW_CREEP, {"patience": 2, "min_delta": .15, "restore_best_weights": True}, "min", None, 6),
        (NAN_FIRST, {"patience": 2, "restore_best_weights": True}, "min", 2, 0),  # §8: best NaN, restores ep 1
        (NAN_MID, {"patience": 2, "restore_best_weights": True}, "min", 5, 3),
        (INF_MID, {"patience": 2, "restore_best_weights": True}, "min", None, 3),
        (INF_MID, {"patience": 2}, "min", None, 3),  # never stops; .8 is the best epoch (and the last)
        (NAN_FIRST, {"patience": 2}, "min", 2, 0),  # the first NaN stays Keras' best (replay skips it)
        (P0, {"patience": 0, "restore_best_weights": True}, "min", 2, 1),
        (PREC, {"patience": 2, "restore_best_weights": True}, "min", 2, 0),
        # §8 Keras baseline 0.5, patience 2
        ([1.0, .9, .8, .7, .6, .55], {"patience": 2, "baseline": .5, "restore_best_weights": True}, "min", None, 5),
        ([1.0, .9, .95], {"patience": 2, "baseline": .5, "restore_best_weights": True}, "min", 2, 1),
        ([1.0, .4, .45, .46, .47], {"patience": 2, "baseline": .5, "restore_best_weights": True}, "min", 3, 1),
        # §8 start_from_epoch=2, patience 1: evaluations 0 and 1 are invisible
        ([5, 4, 3, 3.5, 3.6], {"patience": 1, "start_from_epoch": 2, "restore_best_weights": True}, "min", 3, 2),
        # §8 max mode, δ=.05, patience 2: never stops
        ([.1, .2, .25, .3, .31], {"patience": 2, "min_delta": .05, "restore_best_weights": True}, "max", None, 3),
        # min_delta boundary, other side: .74 beats 1.0 by more than .25 -> improvement, never stops
        ([1.0, 0.74], {"patience": 1, "min_delta": .25}, "min", None, 1),
        # baseline boundary (patience 2): .5 equals the baseline, so the wait is not reset (1, 2, 3 -> stop
        # at index 2); with baseline .5001 it is reset at index 1 and .6 leaves the wait at 1.
        ([1.0, 0.5, 0.6], {"patience": 2, "baseline": .5, "restore_best_weights": True}, "min", 2, 1),
        ([1.0, 0.5, 0.6], {"patience": 2, "baseline": .5001, "restore_best_weights": True}, "min", None, 1),
        # the sign of min_delta is ignored (Keras stores abs)
        (EXACT_DELTA, {"patience": 1, "min_delta": -.25, "restore_best_weights": True}, "min", 1, 0),
        # the epoch > 0 guard: the first value is an improvement, so a single point never stops
        ([1.0], {"patience": 0}, "min", None, 0),
        # all NaN: the first NaN is the best, the next one does not beat it
        ([NAN, NAN, NAN], {"patience": 1, "restore_best_weights": True}, "min", 1, 0),
        # min_evals=5: index 2 would stop (p0) but may not; index 3 (.8) improves; index 4 stops.
        ([1.0, .9, .95, .8, .85], {"patience": 0, "min_evals": 5}, "min", 4, 3),
        # min_delta .15: Keras' best is its last counted improvement (.8 beats 1.0 by .2), not the
        # lowest value (.7 misses .8 by only .1), so best_epoch is 2 at the stop.
        (SLOW_CREEP, {"patience": 2, "min_delta": .15}, "min", None, 6),
        ([1.0, .9, .8, .7, .75], {"patience": 2, "min_delta": .15}, "min", 4, 2),
        # start_from_epoch beyond the end: Keras saw nothing, has no best epoch.
        ([1.0, 2.0], {"patience": 0, "start_from_epoch": 5}, "min", None, None),
        ([], {}, "min", None, None),
    ],
}


@pytest.mark.parametrize("rule,case", golden_params(GOLDEN))
def test_golden(rule, case):
    check_golden(rule, case)


def test_hf_reason_names_threshold_count_best_and_step():
    # The contract's example reason: 3 evaluations without a gain above 1e-4 after 1.79 at step 500.
    steps = [100, 200, 300, 400, 500, 600, 700, 800]
    values = [2.5, 2.2, 2.0, 1.9, 1.79, 1.79005, 1.795, 1.8]
    out = decide(values, "hf", {"early_stopping_patience": 3, "early_stopping_threshold": 1e-4}, steps=steps)
    assert out.stop_index == 7
    assert "did not improve by more than 0.0001 for 3 evaluations" in out.reason
    assert "best 1.79 at step 500" in out.reason


def test_hf_ratchet_moves_best_on_sub_threshold_gain():
    # §1.3 item 2: .9 and .8 are gains of 0.1 <= 0.15: the counter grows but the Trainer's best follows.
    out = decide([1.0, .9, .8], "hf", {"patience": 5, "threshold": .15})
    assert out.stop_index is None and out.best_index == 2


def test_lightning_reasons_say_which_check_fired():
    assert "not finite" in decide([1.0, NAN], "lightning").reason
    assert "stopping_threshold 0.3" in decide([1, .5, .3, .2], "lightning", {"stopping_threshold": .3}).reason
    assert "divergence_threshold 2" in decide([1, 3.0], "lightning", {"divergence_threshold": 2.0}).reason
    assert "did not improve" in decide([1, 1, 1, 1], "lightning").reason


def test_lightning_negative_min_delta_is_applied_with_its_sign():
    # Lightning computes current + min_delta < best (min mode) without abs(): -0.1 lets a
    # value up to 0.1 worse count as an improvement, so this never stops...
    out = decide([1.0, 1.05, 1.1, 1.15], "lightning", {"patience": 1, "min_delta": -0.1})
    assert out.stop_index is None and out.best_index == 3
    # ...while Keras takes |min_delta| and stops at the first epoch that does not beat 1.0 by 0.1.
    assert decide([1.0, 1.05], "keras", {"patience": 0, "min_delta": -0.1}).stop_index == 1


def test_keras_reason_names_what_keras_keeps_and_its_best_epoch():
    steps = list(range(10, 110, 10))
    out = decide(TYPICAL, "keras", {"patience": 2}, steps=steps)
    assert (out.stop_index, out.best_index) == (4, 2)
    assert ("Keras keeps the last epoch's weights (restore_best_weights=false); best epoch 2 at step 30 (0.8)"
            in out.reason)
    # With restore_best_weights the reason names the restored epoch; nothing else changes.
    on = decide(TYPICAL, "keras", {"patience": 2, "restore_best_weights": True}, steps=steps)
    assert (on.stop_index, on.best_index) == (4, 2)
    assert "Keras restores epoch 2 (restore_best_weights=true); best epoch 2 at step 30 (0.8)" in on.reason
    assert "keeps the last epoch" not in on.reason
    assert "Keras saw no evaluation (start_from_epoch)" in decide([1.0], "keras", {"start_from_epoch": 3}).reason


@pytest.mark.parametrize("case", [c for c in GOLDEN["keras"]], ids=lambda c: repr(c[1]))
def test_keras_restore_best_weights_changes_only_the_reason(case):
    values, params, mode, *_ = case
    off = decide(values, "keras", {**params, "restore_best_weights": False}, mode)
    on = decide(values, "keras", {**params, "restore_best_weights": True}, mode)
    assert (on.stop_index, on.best_index) == (off.stop_index, off.best_index)
    if off.best_index is not None:
        assert "restore_best_weights=false" in off.reason and "restore_best_weights=true" in on.reason


def test_library_rules_accept_none_for_optional_thresholds():
    out = decide([1, .5, .3, .2], "lightning", {"stopping_threshold": "none", "divergence_threshold": "null"})
    assert out.stop_index is None
    assert decide([1, .5, .3, .2], "lightning", {"stopping_threshold": "0.35"}).stop_index == 2


@pytest.mark.parametrize("rule,params,message", [
    ("hf", {"patience": -1}, "patience must be >= 0, got -1"),
    ("hf", {"threshold": -0.1}, "threshold must be a finite number >= 0, got -0.1"),
    ("hf", {"patience": "two"}, "patience must be int, got 'two'"),
    ("lightning", {"patience": -2}, "patience must be >= 0, got -2"),
    ("lightning", {"min_delta": "nan"}, "min_delta must be a finite number, got nan"),
    ("lightning", {"stopping_threshold": "inf"}, "stopping_threshold must be a finite number or none, got inf"),
    ("keras", {"start_from_epoch": -1}, "start_from_epoch must be >= 0, got -1"),
    ("keras", {"baseline": "inf"}, "baseline must be a finite number or none, got inf"),
])
def test_bad_parameters_are_rejected_with_the_value(rule, params, message):
    with pytest.raises(RuleConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        decide([1.0, 0.9], rule, params)
    assert f"rule {rule}:" in str(err.value)
