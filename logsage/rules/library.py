"""The library rules: Hugging Face, Lightning and Keras early stopping, reproduced exactly.

Each scan follows the library's own order of operations, comparison strictness
and number type (float64 for HF, float32 for Lightning and Keras), so that the
stop index and the best it reports equal what the real callback does on the same
sequence of evaluations (see /work/shared/reference/stopping-semantics.md §1.3,
§2.2, §3.2 and the conformance vectors in §8). They have no minimum length: an
empty or all-NaN series gets the answer the library would give.

Values arrive oriented (lower is better); thresholds given in the metric's units
are oriented here the same way. Orientation is exact for all three libraries:
negation commutes with IEEE rounding, so `-(a - b)` and `(-a) + b` agree bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

from logsage.rules.common import (
    ReasonWords,
    at_least,
    best_phrase,
    evals,
    finite_at_least,
    finite_or_unset,
    num,
    raw_values,
    require,
    shown,
    to_oriented,
)
from logsage.rules.base import Outcome, RuleInput, rule


# ------------------------------------------------------------------ Hugging Face
def _validate_hf(*, patience: int, threshold: float) -> None:
    at_least("hf", "patience", patience, 0)
    finite_at_least("hf", "threshold", threshold, 0.0)


@rule(
    "hf",
    reference="transformers 4.47+ / 5.x: EarlyStoppingCallback.check_metric_value + "
              "Trainer._determine_best_metric",
    aliases={"early_stopping_patience": "patience", "early_stopping_threshold": "threshold"},
    exact="transformers",
    validate=_validate_hf,
    # The patience and threshold values the guides use (0, HF's default; 1e-4 and 1e-3 as in the blog recipes).
    grid={"patience": [1, 2, 3, 5, 8], "threshold": [0.0, 1e-4, 1e-3]},
    sweep="logsage.decide.sweep:HF_FORM",
    counts="threshold",
    common=[("HF patience 3, threshold 1e-4 (blog recipe)", {"patience": 3, "threshold": 1e-4}),
            ("HF defaults (patience 1)", {})],
)
def hf(x: RuleInput, *, patience: int = 1, threshold: float = 0.0) -> Outcome:
    """Hugging Face EarlyStoppingCallback: stop after `patience` evaluations without a gain above `threshold`.

    The Trainer's best metric moves on any strict gain (a ratchet), while the
    callback's counter resets only on a gain strictly larger than `threshold`
    against the best of the previous evaluations. The first evaluation always
    resets the counter, so patience 0 stops right after it. NaN never becomes the
    best; a first-eval NaN leaves the best at +inf, which the next finite value beats.
    Arithmetic is float64. best_index is the Trainer's best_metric at the stop
    (what load_best_model_at_end loads when every evaluation is saved).

    Args:
        patience: evaluations in a row without a large-enough gain before stopping
            (counted in evaluations, not steps); the stop comes when the counter
            reaches it. 0 stops at the first evaluation. Must be >= 0.
        threshold: absolute gain over the best that resets the counter; the gain must
            be strictly greater (a gain equal to the threshold counts as no
            improvement). 0 means any strict gain. Must be >= 0.
    """
    _validate_hf(patience=patience, threshold=threshold)
    vals = x.values.tolist()
    best: float | None = None  # Trainer.state.best_metric (None before the first evaluation)
    best_index: int | None = None
    counter = 0
    for t, v in enumerate(vals):
        # The callback runs first and compares with the best of the previous evaluations.
        if best is None or (v < best and abs(v - best) > threshold):
            counter = 0
        else:
            counter += 1
        # Then Trainer._determine_best_metric: starts from +inf, moves on any strict gain.
        if best is None:
            best = math.inf
        if v < best:
            best = v
            best_index = t
        if counter >= patience and t >= x.not_before:
            if t == 0 and counter == 0:
                why = HF_STOPS_AT_ONCE
            else:
                words = hf_reason_words(patience, threshold)
                why = f"{x.metric}{words.first}{evals(counter)}{words.second}{int(x.steps[t])}"
            return Outcome(t, best_index, f"{why}; best {_hf_best(x, best_index)}")
    words = hf_reason_words(patience, threshold)
    return Outcome(None, best_index,
                   f"{x.metric}{words.never}{evals(len(vals))} (counter {counter} at the end); "
                   f"best {_hf_best(x, best_index)}")


HF_STOPS_AT_ONCE = "patience 0: HF stops right after the first evaluation"


def hf_reason_words(patience: int, threshold: float) -> ReasonWords:
    """hf's reasons, worded once: "<metric>" + first + "<n evaluations>" + second + "<step>" when it
    stops, "<metric>" + never + "<n evaluations> (counter c at the end)" when it does not. The scan
    above and the vectorized sweep (`logsage.decide.sweep`) both word their reasons with these."""
    thr = num(threshold)
    return ReasonWords(f" did not improve by more than {thr} for ", f" (patience {patience}) at step ",
                       f" never went {evals(patience)} without a gain above {thr} in ")


def _f32(v: float) -> float:
    """v rounded to float32, as a Python float (exact)."""
    with np.errstate(over="ignore"):
        return float(np.float32(v))


def _hf_best(x: RuleInput, i: int | None) -> str:
    return shown(x, i) if i is not None else "none (no finite evaluation)"


# ------------------------------------------------------------------ Lightning
def _validate_lightning(*, patience: int, min_delta: float, check_finite: bool,
                        stopping_threshold: float | None, divergence_threshold: float | None) -> None:
    at_least("lightning", "patience", patience, 0)
    require("lightning", min_delta is not None and math.isfinite(min_delta),
            f"min_delta must be a finite number, got {min_delta!r}")
    finite_or_unset("lightning", "stopping_threshold", stopping_threshold)
    finite_or_unset("lightning", "divergence_threshold", divergence_threshold)


@rule("lightning", reference="lightning 2.6: lightning.pytorch.callbacks.EarlyStopping._evaluate_stopping_criteria",
      exact="lightning", validate=_validate_lightning,
      grid={"patience": [1, 2, 3, 5, 8], "min_delta": [0.0, 1e-4, 1e-3]}, counts="min_delta",
      common=[("Lightning defaults (patience 3)", {})])
def lightning(x: RuleInput, *, patience: int = 3, min_delta: float = 0.0, check_finite: bool = True,
              stopping_threshold: float | None = None,
              divergence_threshold: float | None = None) -> Outcome:
    """Lightning EarlyStopping: non-finite, thresholds, then `patience` checks without an improvement.

    Each evaluation is judged by the first test that applies, in Lightning's
    order: a non-finite value stops (check_finite); a value strictly better than
    stopping_threshold stops; a value strictly worse than divergence_threshold
    stops; a value that beats the best by more than min_delta becomes the best and
    resets the wait; anything else adds 1 to the wait and stops once it reaches
    patience. Comparisons are float32, like the logged metric tensor, so values
    1e-9 apart tie. best_index is Lightning's best_score at the stop.

    Args:
        patience: validation checks in a row without improvement before stopping; the
            stop comes when the wait reaches it, so 0 stops at the first
            non-improvement. Must be >= 0.
        min_delta: an improvement must beat the best by more than this (strict: a gain
            equal to min_delta counts as no improvement); in the metric's units.
            Lightning applies the sign as given, so a negative value makes improving easier.
        check_finite: stop at the first NaN or inf. When off, a non-finite value just
            counts as no improvement.
        stopping_threshold: stop as soon as the metric is strictly better than this
            value (equal does not stop); in the metric's units; none = off. Such a
            stop does not update the best.
        divergence_threshold: stop as soon as the metric is strictly worse than this
            value (equal does not stop); in the metric's units; none = off.
    """
    _validate_lightning(patience=patience, min_delta=min_delta, check_finite=check_finite,
                        stopping_threshold=stopping_threshold, divergence_threshold=divergence_threshold)
    # Lightning compares float32 tensors. Every float32 value is exact as a Python float, so the
    # float32 results are computed once here and compared as Python floats with identical outcomes.
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32's range is inf, as in the tensor
        vals32 = x.values.astype(np.float32)  # what self.log makes of the metric
        shifted = (vals32 + np.float32(min_delta)).tolist()  # current + min_delta (oriented), float32
    current = vals32.tolist()
    stop_at = _f32(to_oriented(x, stopping_threshold)) if stopping_threshold is not None else None
    diverge_at = _f32(to_oriented(x, divergence_threshold)) if divergence_threshold is not None else None
    best = math.inf
    best_index: int | None = None
    wait = 0
    for t, c in enumerate(current):
        if check_finite and not math.isfinite(c):
            why = f"{x.metric} = {shown(x, t)} is not finite (check_finite)"
        elif stop_at is not None and c < stop_at:
            why = (f"{x.metric} reached {shown(x, t)}, strictly better than "
                   f"stopping_threshold {num(stopping_threshold)}")
        elif diverge_at is not None and c > diverge_at:
            why = (f"{x.metric} diverged to {shown(x, t)}, strictly worse than "
                   f"divergence_threshold {num(divergence_threshold)}")
        elif shifted[t] < best:
            best = c
            best_index = t
            wait = 0
            continue
        else:
            wait += 1
            if wait < patience:
                continue
            why = (f"{x.metric} did not improve by more than {num(min_delta)} for {evals(wait)} "
                   f"(patience {patience}) at step {int(x.steps[t])}")
        if t >= x.not_before:
            return Outcome(t, best_index, f"{why}; {best_phrase(x, best_index)}")
    return Outcome(None, best_index,
                   f"{x.metric} never went {evals(patience)} without improving by more than "
                   f"{num(min_delta)} in {evals(vals32.size)} (wait {wait} at the end); "
                   f"{best_phrase(x, best_index)}")


# ------------------------------------------------------------------ Keras
def _validate_keras(*, patience: int, min_delta: float, baseline: float | None, start_from_epoch: int,
                    restore_best_weights: bool) -> None:
    at_least("keras", "patience", patience, 0)
    require("keras", min_delta is not None and math.isfinite(min_delta),
            f"min_delta must be a finite number, got {min_delta!r}")
    finite_or_unset("keras", "baseline", baseline)
    at_least("keras", "start_from_epoch", start_from_epoch, 0)


@rule("keras", reference="keras 3.15: keras.callbacks.EarlyStopping.on_epoch_end (keras/src/callbacks/early_stopping.py)",
      exact="keras", validate=_validate_keras,
      # Keras' own default patience 0 is in the grid.
      grid={"patience": [0, 1, 2, 3, 5, 8], "min_delta": [0.0, 1e-4, 1e-3]}, counts="min_delta",
      common=[("Keras defaults (patience 0)", {})])
def keras(x: RuleInput, *, patience: int = 0, min_delta: float = 0.0, baseline: float | None = None,
          start_from_epoch: int = 0, restore_best_weights: bool = False) -> Outcome:
    """Keras EarlyStopping: stop after `patience` epochs without an improvement, Keras' way.

    Each evaluation is one Keras "epoch" (0-based eval index). The wait counter is
    incremented first; the first monitored value is always an improvement (even
    NaN, which then can never be beaten); an improvement must beat the best by
    more than |min_delta| (float32 comparison); an improving epoch never reaches
    the stop check; the stop comes when wait >= patience on an epoch > 0.
    best_index is Keras' own best epoch (`EarlyStopping.best_epoch`): the last
    evaluation that counted as an improvement under min_delta, ties and NaN as above
    (an improvement that misses the baseline still moves it); None when Keras saw no
    evaluation (empty series, or all of it before start_from_epoch). Replay selects
    from it, so the selected checkpoint is the best so far at the stop either way. What
    Keras itself would leave in the model - the last epoch's weights, or with
    restore_best_weights the best epoch's - is said in the reason. "Epoch" in the
    reason is the 0-based evaluation index, as in `best_epoch` and CSVLogger's column.

    Args:
        patience: epochs without improvement before stopping; the stop comes when the
            wait reaches it, so 0 stops at the first non-improvement. Must be >= 0.
        min_delta: an improvement must beat the best by more than |min_delta| (strict:
            a gain equal to it counts as no improvement); the sign is ignored, as in Keras.
        baseline: a value the metric must beat by more than |min_delta| before the wait
            resets; improvements that miss it still become the best but keep the
            wait growing (in the metric's units; none = off).
        start_from_epoch: evaluations with a 0-based index below this are ignored
            entirely (no best tracking, no counting). Must be >= 0.
        restore_best_weights: whether Keras restores the best epoch's weights at the
            end of training. It only changes the reason's wording (Keras "restores epoch
            N" vs "keeps the last epoch's weights"); the stop and best_index (Keras'
            best_epoch, which replay selects from) are the same either way.
    """
    _validate_keras(patience=patience, min_delta=min_delta, baseline=baseline,
                    start_from_epoch=start_from_epoch, restore_best_weights=restore_best_weights)
    n = int(x.values.size)
    delta = abs(min_delta)
    # Keras subtracts min_delta in Python (float64), then compares as float32 tensors; both sides
    # are rounded to float32 once here and compared as (exact) Python floats.
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = (x.values + delta).astype(np.float32).tolist()
        as32 = x.values.astype(np.float32).tolist()
    base32 = _f32(to_oriented(x, baseline)) if baseline is not None else None
    best_index: int | None = None
    wait = 0
    stop: int | None = None
    for t in range(n):
        if t < start_from_epoch:
            continue
        wait += 1
        if best_index is None or shifted[t] < as32[best_index]:
            best_index = t
            if base32 is None or shifted[t] < base32:
                wait = 0
            continue
        if wait >= patience and t > 0 and t >= x.not_before:
            stop = t
            break
    if best_index is None:
        keeps = "Keras saw no evaluation" + (" (start_from_epoch)" if n else "") + ", so it has no best epoch"
    else:
        best_at = f"best epoch {best_index} at step {int(x.steps[best_index])} ({num(raw_values(x)[best_index])})"
        keeps = (f"Keras restores epoch {best_index} (restore_best_weights=true); {best_at}" if restore_best_weights
                 else f"Keras keeps the last epoch's weights (restore_best_weights=false); {best_at}")
    if stop is not None:
        base_note = f", baseline {num(baseline)}" if baseline is not None else ""
        why = (f"{x.metric} did not improve by more than {num(delta)} for {evals(wait)} "
               f"(patience {patience}{base_note}) at step {int(x.steps[stop])}")
        return Outcome(stop, best_index, f"{why}; {keeps}")
    return Outcome(None, best_index,
                   f"{x.metric} never went {evals(patience)} without improving by more than {num(delta)} "
                   f"in {evals(n)}; {keeps}")
