"""Random sequences: our hf / lightning / keras rules stop where the real libraries stop.

Hypothesis draws short metric sequences built to hit the places where early-stopping
implementations disagree: repeated values (ties), steps of exactly the threshold (in
float64, so `best - threshold` appears exactly and `0.9 - 0.8 != 0.1` appears too), tiny
1e-9 gains (float32 vs float64), occasional NaN / +inf / -inf, patience 0, thresholds
equal to differences present in the sequence, and both modes. Each example runs the real
library (see `oracles.py`) and `logsage.decide.engine.decide_values` and requires the same stop
index and the same best index (HF best_global_step, Lightning best_score, Keras best_epoch); for Keras the
weights it leaves in the model must also match what the reason says. Derandomized with no example database,
so every run explores the same examples.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .oracles import hf_stop, keras_run, lightning_stop

NAN = float("nan")
INF = float("inf")

# Binary-exact and decimal (inexact) values, plus 1e-9 neighbours that float32 cannot tell apart.
POOL = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 1.0,
        1.0 - 1e-9, 1.0 - 2e-9, 1.5, 2.0)
SPECIAL = (NAN, INF, -INF)
DELTAS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3)

DETERMINISTIC = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module", autouse=True)
def _libraries_imported_before_hypothesis_runs():
    """Import the three libraries (via one oracle call each) outside any Hypothesis run.

    Importing keras raises the recursion limit, which Hypothesis warns about when it
    happens inside a test; it also keeps the one-off import cost out of the examples.
    """
    hf_stop([1.0], patience=1, threshold=0.0, mode="min")
    lightning_stop([1.0], patience=1, min_delta=0.0, mode="min")
    keras_run([1.0], patience=1, min_delta=0.0, mode="min")


@st.composite
def metric_sequences(draw, favoured_step=None):
    """1..40 values: drawn from a small pool (ties), or a walk of threshold-sized steps.

    A walk mostly moves by `favoured_step` (the rule's threshold) when one is given, so
    gains of exactly the threshold - as float64 computes them - are common.
    """
    n = draw(st.integers(1, 40))
    special_odds = draw(st.sampled_from((0, 0, 10, 25)))  # 0: no NaN/inf in this sequence

    def maybe_special():
        if special_odds and draw(st.integers(0, special_odds - 1)) == 0:
            return draw(st.sampled_from(SPECIAL))
        return None

    values = []
    if draw(st.integers(0, 2)) == 0:
        for _ in range(n):
            special = maybe_special()
            values.append(special if special is not None else draw(st.sampled_from(POOL)))
    else:
        current = draw(st.sampled_from(POOL))
        steps = DELTAS if favoured_step is None else (favoured_step,) * 4 + DELTAS
        for _ in range(n):
            special = maybe_special()
            if special is not None:
                values.append(special)
                continue
            step = draw(st.sampled_from(steps))
            # Mostly downhill (a loss), sometimes up or flat, so patience gets exercised.
            current = current + draw(st.sampled_from((-step, -step, -step, step, 0.0)))
            values.append(current)
    return values


def _finite_gaps(values):
    finite = [v for v in values if math.isfinite(v)]
    return sorted({abs(a - b) for a in finite[:12] for b in finite[:12] if 0 < abs(a - b) <= 0.3})


@st.composite
def sequence_and_delta(draw):
    """A sequence and a threshold / min_delta in [0, 0.3]: a round value or a gap in the sequence."""
    delta = draw(st.sampled_from(DELTAS))
    values = draw(metric_sequences(favoured_step=delta))
    gaps = _finite_gaps(values)
    if gaps and draw(st.integers(0, 2)) == 0:
        delta = draw(st.sampled_from(gaps))
    return values, delta


@st.composite
def optional_level(draw, values):
    """None, a pool value, or a value of the sequence itself (exact-threshold hits)."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return None
    finite = [v for v in values if math.isfinite(v)]
    if choice == 1 and finite:
        return draw(st.sampled_from(finite))
    return draw(st.sampled_from(POOL))


@st.composite
def hf_cases(draw):
    values, delta = draw(sequence_and_delta())
    params = dict(patience=draw(st.integers(0, 5)), threshold=delta)
    return values, draw(st.sampled_from(("min", "max"))), params


@st.composite
def lightning_cases(draw):
    values, delta = draw(sequence_and_delta())
    params = dict(
        patience=draw(st.integers(0, 5)),
        min_delta=delta,
        check_finite=draw(st.booleans()),
        stopping_threshold=draw(optional_level(values)),
        divergence_threshold=draw(optional_level(values)),
    )
    return values, draw(st.sampled_from(("min", "max"))), params


@st.composite
def keras_cases(draw):
    values, delta = draw(sequence_and_delta())
    params = dict(
        patience=draw(st.integers(0, 5)),
        min_delta=delta,
        baseline=draw(optional_level(values)),
        start_from_epoch=draw(st.integers(0, 3)),
        restore_best_weights=draw(st.booleans()),
    )
    return values, draw(st.sampled_from(("min", "max"))), params


def _decide(values, rule, mode, params):
    from logsage.decide.engine import decide_values

    given_params = {k: v for k, v in params.items() if v is not None}  # None: not given (default)
    return decide_values(list(values), rule, given_params, mode=mode)


def _assert_same(rule, values, mode, params, library_stop, library_best):
    ours = _decide(values, rule, mode, params)
    where = f"{rule} {params} mode={mode} on {values}"
    assert ours.stop_index == library_stop, (
        f"{where}: library stops at {library_stop}, logsage at {ours.stop_index} ({ours.reason})")
    assert ours.best_index == library_best, (
        f"{where}: library best {library_best}, logsage best {ours.best_index}")


@DETERMINISTIC
@given(hf_cases())
def test_hf_matches_transformers(case):
    values, mode, params = case
    stop, best = hf_stop(values, mode=mode, **params)
    _assert_same("hf", values, mode, params, stop, best)


@DETERMINISTIC
@given(lightning_cases())
def test_lightning_matches_pytorch_lightning(case):
    values, mode, params = case
    stop, best = lightning_stop(values, mode=mode, **params)
    _assert_same("lightning", values, mode, params, stop, best)


@DETERMINISTIC
@given(keras_cases())
def test_keras_matches_keras(case):
    values, mode, params = case
    run = keras_run(values, mode=mode, **params)
    # Best = the callback's best_epoch, whether or not restore_best_weights is on.
    _assert_same("keras", values, mode, params, run.stop_index, run.best_epoch)
    if run.best_epoch is None:
        return
    # The reason says which weights Keras leaves in the model (read back after on_train_end).
    reason = _decide(values, "keras", mode, params).reason
    if params["restore_best_weights"]:
        assert run.kept_index == run.best_epoch
        assert f"Keras restores epoch {run.kept_index} (restore_best_weights=true)" in reason, reason
    else:
        assert run.kept_index == (run.stop_index if run.stop_index is not None else len(values) - 1)
        assert "Keras keeps the last epoch's weights (restore_best_weights=false)" in reason, reason
