"""Golden cases for Prechelt's GL, PQ and UP, led by the reference's worked example (§6.1).

Worked example on [1.00, .80, .70, .72, .69, .71, .74, .78, .83] (1-based in the
reference): GL = [0, 0, 0, 2.86, 0, 2.90, 7.25, 13.04, 20.29]; GL_1 and GL_2 stop at
eval 4, GL_5 at 7; k=1: UP_1 4, UP_2 7, UP_3 8; k=2: UP_1 8, UP_2 never.
"""

from __future__ import annotations

import pytest

from logsage.core.errors import RuleConfigError
from logsage.rules.prechelt import generalization_loss, training_progress

from ._helpers import NAN, check_golden, decide, golden_params

WORKED = [1.00, .80, .70, .72, .69, .71, .74, .78, .83]

# PQ fixture: evaluations at steps 10, 20, 30, 40; training loss every 2 steps.
PQ_EVAL = [1.0, 0.8, 0.84, 0.9]  # GL: 0, 0, 5.0, 12.5
PQ_TRAIN_STEPS = list(range(2, 42, 2))
PQ_TRAIN = ([2.0, 1.8, 1.6, 1.4, 1.2]  # strip before step 10: P5 = 1000·(8/(5·1.2) − 1) = 333.3
            + [1.1, 1.0, 0.95, 0.9, 0.85]  # strip before step 20
            + [0.84, 0.83, 0.82, 0.81, 0.80]  # before step 30: P5 = 1000·(4.1/4 − 1) = 25 -> GL/P = 0.2
            + [0.80] * 5)  # before step 40: flat, P5 = 0 -> GL/P = inf
PQ_KW = {"steps": [10, 20, 30, 40], "train_steps": PQ_TRAIN_STEPS, "train_values": PQ_TRAIN}

GOLDEN: dict[str, list[tuple]] = {
    "gl": [
        (WORKED, {"alpha": 1}, "min", 3, 2),
        (WORKED, {"alpha": 2}, "min", 3, 2),
        (WORKED, {"alpha": 5}, "min", 6, 4),
        # boundary: .5625/.5 = 1.125 -> GL exactly 12.5, which is not > 12.5.
        ([1.0, 0.5, 0.5625], {"alpha": 12.5}, "min", None, 1),
        ([1.0, 0.5, 0.5625], {"alpha": 12.4}, "min", 2, 1),
        # max metric in [0, 1]: error = 1 - accuracy = .5, .25, .3 -> GL 20 at index 2.
        ([0.5, 0.75, 0.7], {"alpha": 2}, "max", 2, 1),
        # a NaN has no GL (never above alpha); the rise after it still counts.
        ([1.0, NAN, 0.8, 0.9], {"alpha": 5}, "min", 3, 2),
    ],
    "pq": [
        (PQ_EVAL, {"alpha": 0.5}, "min", 3, 1, PQ_KW),  # 0.2 at step 30 is below 0.5; inf at step 40
        (PQ_EVAL, {"alpha": 0.1}, "min", 2, 1, PQ_KW),  # 0.2 > 0.1 at step 30
    ],
    "up": [
        (WORKED, {"s": 1, "k": 1}, "min", 3, 2),
        (WORKED, {"s": 2, "k": 1}, "min", 6, 4),
        (WORKED, {"s": 3, "k": 1}, "min", 7, 4),
        (WORKED, {"s": 1, "k": 2}, "min", 7, 4),
        (WORKED, {"s": 2, "k": 2}, "min", None, 4),
        # compares with the previous strip end, not the best: a dip resets the run.
        ([1.0, 1.1, 1.0, 1.1, 1.0], {"s": 2, "k": 1}, "min", None, 0),
        # a NaN counts as worse.
        ([1.0, NAN, 0.9], {"s": 1, "k": 1}, "min", 1, 0),
        # max mode: accuracy falls from .6 to .55.
        ([0.5, 0.6, 0.55], {"s": 1, "k": 1}, "max", 2, 1),
    ],
}


@pytest.mark.parametrize("rule,case", golden_params(GOLDEN))
def test_golden(rule, case):
    check_golden(rule, case)


def test_generalization_loss_matches_the_worked_example():
    got = [round(g, 2) for g in generalization_loss(WORKED)]
    assert got == [0, 0, 0, 2.86, 0, 2.90, 7.25, 13.04, 20.29]


def test_training_progress_uses_the_last_k_points_up_to_the_evaluation():
    assert training_progress(PQ_TRAIN_STEPS, PQ_TRAIN, 10, 5) == pytest.approx(1000 * (8.0 / 6.0 - 1))
    assert training_progress(PQ_TRAIN_STEPS, PQ_TRAIN, 30, 5) == pytest.approx(25.0)
    # at step 9 only 4 points exist
    assert training_progress(PQ_TRAIN_STEPS, PQ_TRAIN, 9, 5) != training_progress(PQ_TRAIN_STEPS, PQ_TRAIN, 9, 5)


def test_gl_cannot_judge_unbounded_max_metrics_or_negative_losses():
    out = decide([10.0, 20.0, 15.0], "gl", mode="max", metric="eval_reward")
    assert not out.decidable and "not a rate in [0, 1]" in out.reason
    out = decide([-1.0, -2.0, -1.5], "gl")
    assert not out.decidable and "negative" in out.reason


def test_pq_without_training_loss_or_full_strips_is_undecidable():
    out = decide(PQ_EVAL, "pq", steps=[10, 20, 30, 40])
    assert not out.decidable and "training" in out.reason
    out = decide(PQ_EVAL, "pq", {"k": 50}, **PQ_KW)
    assert not out.decidable and "k=50" in out.reason


def test_up_needs_two_strip_ends():
    out = decide([1.0, 0.9, 0.8], "up", {"k": 2})
    assert not out.decidable and "at least 4" in out.reason


def test_reasons_carry_the_numbers():
    assert "reached 2.85714% > 2%" in decide(WORKED, "gl", {"alpha": 2}).reason
    assert "0.74 at step 6 vs 0.71 at step 5" in decide(WORKED, "up", {"s": 2}).reason


@pytest.mark.parametrize("rule,params,message", [
    ("gl", {"alpha": -1}, "alpha must be a finite number >= 0, got -1"),
    ("pq", {"k": 1}, "k must be >= 2, got 1"),
    ("up", {"s": 0}, "s must be >= 1, got 0"),
    ("up", {"k": 0}, "k must be >= 1, got 0"),
])
def test_bad_parameters_are_rejected_with_the_value(rule, params, message):
    with pytest.raises(RuleConfigError) as err:
        decide([1.0, 0.9], rule, params)
    assert message in str(err.value)
