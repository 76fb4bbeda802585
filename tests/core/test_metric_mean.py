"""`--metric "mean(PATTERN)"`: the mean over several eval sets, as a derived eval series (issue 11)."""

from __future__ import annotations

import numpy as np
import pytest

import logsage
from corpus import REAL_RUNS_2, needs_corpus_2
from logsage.core.errors import MetricNotFound
from logsage.core.history import History, Series

MULTI = REAL_RUNS_2 / "hf_trainer_state" / "multi-evalset-g0-g5-31evals"


@needs_corpus_2
def test_mean_over_the_real_runs_six_eval_sets_drives_the_replay():
    h = logsage.load_history(MULTI)
    sets = [f"eval_g{i}_loss" for i in range(6)]
    want = np.mean([h.metric(n).values for n in sets], axis=0)  # every set is evaluated at every step here
    result = logsage.replay([h], ["hf:patience=3"], metric="mean(eval_*_loss)")
    derived = h.series["mean(eval_*_loss)"]
    np.testing.assert_allclose(derived.values, want, rtol=0, atol=1e-12)
    assert derived.kind == "eval" and derived.steps.tolist() == h.metric("eval_g0_loss").steps.tolist()
    (d,) = result.decisions
    assert d.metric == "mean(eval_*_loss)" and d.mode == "min"
    assert d.best_value == pytest.approx(want.min())
    assert any(c.kind == "derived" and "mean of 6 eval series" in c.message for c in h.cleanups)


def _history() -> History:
    h = History(path="runs/two-sets", format="synthetic")
    h.series["eval_a_loss"] = Series("eval_a_loss", [10, 20, 30], [1.0, 0.8, 0.9])
    h.series["eval_b_loss"] = Series("eval_b_loss", [10, 30], [2.0, 1.0])  # not evaluated at step 20
    h.series["eval_a_accuracy"] = Series("eval_a_accuracy", [10, 20, 30], [0.5, 0.6, 0.7])
    h.series["loss"] = Series("loss", [10, 20, 30], [3.0, 2.0, 1.0])  # a train series never joins the mean
    return h


def test_mean_keeps_only_the_steps_every_set_has_and_counts_the_rest():
    h = _history()
    s = h.metric("mean(eval_*_loss)")
    assert s.steps.tolist() == [10, 30] and s.values.tolist() == [1.5, 0.95]
    (c,) = [c for c in h.cleanups if c.kind == "derived"]
    assert c.count == 1 and "1 point(s) at steps not shared by all left out" in c.message


def test_a_pattern_of_both_directions_or_of_nothing_is_a_one_line_error():
    with pytest.raises(MetricNotFound, match="both directions"):
        _history().resolve("mean(eval_*)")
    with pytest.raises(MetricNotFound, match=r"no eval series of runs/two-sets matches 'eval_\*_f1'"):
        _history().resolve("mean(eval_*_f1)")
    with pytest.raises(MetricNotFound):
        _history().resolve("mean(loss)")  # a train series is not an eval set
