"""Replay engine: decide_values, rule/grid expansion, selection among whole checkpoints, scores per decision.

Expected numbers here are worked out by hand from the rule definitions in
/work/shared/reference (stopping-semantics.md §1.3 for HF), not copied from output.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

from logsage.core.errors import RuleConfigError, UsageError
from logsage.core.history import Checkpoint, History, Series
from logsage.decide.engine import Decision, decide_values, expand_rules, not_before, replay, replay_paths
from corpus import REAL_RUNS, needs_corpus, run_dirs

ROOT = Path(__file__).resolve().parents[2]
REAL = REAL_RUNS
HF_RUNS = run_dirs(REAL, "hf_trainer_state")


def make_history(values, steps=None, *, name="eval_loss", train=None, checkpoints=None, meta=None,
                 extra=None, path="run-a", wall_times=None) -> History:
    """A History built directly (no log file): one eval series, optional train loss and extra series."""
    steps = list(range(100, 100 * (len(values) + 1), 100)) if steps is None else steps
    series = {name: Series(name, steps, values, wall_times=wall_times)}
    if train is not None:
        tsteps, tvals = train
        series["loss"] = Series("loss", tsteps, tvals)
    for ename, (esteps, evals) in (extra or {}).items():
        series[ename] = Series(ename, esteps, evals)
    h = History(path=path, format="test", series=series, meta=dict(meta or {}))
    if checkpoints is not None:
        h.checkpoints = list(checkpoints)
    return h


def ckpt(step, whole=True, problem=None):
    return Checkpoint(step=step, path=f"/runs/x/checkpoint-{step}", kind="adapter", whole=whole, problem=problem)


# ---------------------------------------------------------------------- decide_values
def test_decide_values_hf_conformance_vector_typical():
    # Reference §8 "typical": HF stops at 1-based 5 -> index 4; best .8 at index 2.
    out = decide_values([1.0, .9, .8, .85, .82, .81, .79, .80, .80, .80], "hf", {"patience": 2})
    assert (out.stop_index, out.best_index, out.decidable) == (4, 2, True)


def test_decide_values_orients_max_mode():
    # Reference §8 "max_mode (HF)": stop at 1-based 6; best .3 at index 3.
    out = decide_values([.1, .2, .2, .3, .25, .29, .31], "hf", {"patience": 2}, mode="max")
    assert (out.stop_index, out.best_index) == (5, 3)
    # The same numbers read as a loss: nothing beats .1, so the counter reaches 2 at index 2.
    assert decide_values([.1, .2, .2, .3, .25, .29, .31], "hf", {"patience": 2}).stop_index == 2


def test_decide_values_accepts_strings_and_aliases():
    a = decide_values([1.0, .9, .95, .96], "hf", {"early_stopping_patience": "2"})
    b = decide_values([1.0, .9, .95, .96], "hf", {"patience": 2})
    assert a == b and a.stop_index == 3


@pytest.mark.parametrize("min_evals,min_steps,expected", [
    (0, 0, 0),      # nothing holds it back
    (1, 0, 0),      # "do not stop before 1 evaluation": index 0 is the first evaluation
    (3, 0, 2),      # index >= min_evals - 1
    (0, 250, 2),    # steps 100, 200, 300...: first step >= 250 is index 2
    (2, 450, 4),    # the later of the two
    (0, 10_000, 5),  # beyond the last step: never allowed (= length)
])
def test_not_before(min_evals, min_steps, expected):
    assert not_before(np.array([100, 200, 300, 400, 500]), min_evals, min_steps) == expected


def test_min_evals_delays_the_stop_but_the_rule_keeps_counting():
    vals = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5]
    assert decide_values(vals, "hf", {"patience": 1}).stop_index == 1
    # The counter keeps running; the stop comes at the first allowed index.
    assert decide_values(vals, "hf", {"patience": 1, "min_evals": 4}).stop_index == 3
    assert decide_values(vals, "hf", {"patience": 1, "min_steps": 5}, steps=[0, 2, 4, 6, 8, 10]).stop_index == 3


def test_decide_values_errors():
    with pytest.raises(RuleConfigError, match="unknown rule"):
        decide_values([1.0], "nope")
    with pytest.raises(RuleConfigError, match="unknown parameter 'patiense'"):
        decide_values([1.0], "hf", {"patiense": 1})
    with pytest.raises(UsageError, match="mode"):
        decide_values([1.0], "hf", mode="up")
    with pytest.raises(RuleConfigError, match="differ in length"):
        decide_values([1.0, 2.0], "hf", steps=[1])


def test_decide_values_extra_series_for_multi():
    # Composite 1.0*loss + 1.0*(-acc): loss flat, accuracy rises then stalls.
    loss = [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    acc = [0.1, 0.2, 0.3, 0.3, 0.3, 0.3]
    out = decide_values(loss, "multi", {"metrics": "eval_loss:min:1;eval_accuracy:max:1", "patience": 2},
                        extra={"eval_accuracy": acc})
    assert out.decidable and out.stop_index == 4 and out.best_index == 2


# ---------------------------------------------------------------------- expansion
def test_expand_all_and_grid():
    pairs = expand_rules(["all"])
    from logsage.rules import list_rules

    assert [i.name for i, _ in pairs] == [r.name for r in list_rules()]
    pairs = expand_rules(["hf", "keras"], {"patience": ["1", "2"], "threshold": ["0", "1e-4"]})
    got = [(i.name, p["patience"], p.get("threshold")) for i, p in pairs]
    # threshold applies to hf only; keras gets the patience values alone.
    assert got == [("hf", 1, 0.0), ("hf", 1, 1e-4), ("hf", 2, 0.0), ("hf", 2, 1e-4),
                   ("keras", 1, None), ("keras", 2, None)]


def test_grid_accepts_aliases_and_common_params_and_refuses_a_value_the_spec_sets():
    pairs = expand_rules(["hf:threshold=0.5"], {"early_stopping_patience": [1, 3]})
    assert [(p["patience"], p["threshold"]) for _, p in pairs] == [(1, 0.5), (3, 0.5)]
    pairs = expand_rules(["gl"], {"min_evals": [0, 5]})
    assert [p["min_evals"] for _, p in pairs] == [0, 5]
    with pytest.raises(RuleConfigError, match="sets patience and the grid sweeps early_stopping_patience"):
        expand_rules(["hf:patience=9,threshold=0.5"], {"early_stopping_patience": [1, 3]})


def test_grid_errors_and_dedupe():
    with pytest.raises(RuleConfigError, match="'window' is not a parameter of hf, keras"):
        expand_rules(["hf", "keras"], {"window": [1]})
    with pytest.raises(RuleConfigError, match="no values"):
        expand_rules(["hf"], {"patience": []})
    with pytest.raises(RuleConfigError, match="patience must be int"):
        expand_rules(["hf"], {"patience": ["x"]})
    with pytest.raises(RuleConfigError, match="no rule"):
        expand_rules([])
    # The same rule and parameters asked twice is one decision per run.
    assert len(expand_rules(["hf", "hf:patience=1", ("hf", {"patience": 1})])) == 1


# ---------------------------------------------------------------------- a decision by hand
def test_hf_decision_scored_by_hand():
    # eval 1.0, .8, .9, .85, .95 at steps 100..500; HF patience 2: reset, reset (.8 best), +1, +2 -> stop idx 3.
    h = make_history([1.0, 0.8, 0.9, 0.85, 0.95], meta={"max_steps": 1000},
                     train=([50, 150, 250, 350, 450], [1.2, 0.7, 0.6, 0.5, 0.4]))
    (d,) = replay([h], ["hf:patience=2"]).decisions
    assert (d.stop_step, d.stop_eval_index, d.selected_step, d.selected_value) == (400, 3, 200, 0.8)
    assert (d.best_step, d.best_value, d.best_saved_step) == (200, 0.8, None)
    assert d.regret == 0.0 and d.regret_rel == 0.0
    assert (d.steps_saved, d.fraction_saved) == (600, 0.6)
    assert d.stopped_before_best is False
    # Overfit gap: mean eval at steps <= 400 (1.0,.8,.9,.85) minus mean train at steps <= 400 (1.2,.7,.6,.5).
    assert d.overfit_gap == pytest.approx((1.0 + 0.8 + 0.9 + 0.85) / 4 - (1.2 + 0.7 + 0.6 + 0.5) / 4)
    # Trend over evals 0..3 (4 points): least-squares slope of [1.0, .8, .9, .85] against 0..3.
    assert d.trend_slope == pytest.approx(np.polyfit(np.arange(4), [1.0, 0.8, 0.9, 0.85], 1)[0])
    assert d.metric == "eval_loss" and d.mode == "min" and d.decidable
    assert "did not improve" in d.reason and d.note is None
    assert d.params == {"patience": 2, "threshold": 0.0, "min_evals": 0, "min_steps": 0}


def test_regret_when_a_rule_stops_too_early():
    # HF patience 1 stops at the first non-improvement (idx 2), keeping .8; the best is .5 at idx 4.
    h = make_history([1.0, 0.8, 0.9, 0.7, 0.5, 0.6])
    (d,) = replay([h], ["hf"]).decisions
    assert (d.stop_step, d.selected_step, d.best_step) == (300, 200, 500)
    assert d.regret == pytest.approx(0.3) and d.regret_rel == pytest.approx(0.3 / 0.5)
    assert d.stopped_before_best is True
    # Budget without max_steps: the last logged step (600).
    assert d.steps_saved == 300 and d.fraction_saved == pytest.approx(0.5)


def test_never_stopping_rule_saves_nothing():
    h = make_history([1.0, 0.9, 0.8, 0.7])
    (d,) = replay([h], ["none"]).decisions
    assert d.stop_step is None and d.stop_eval_index is None
    assert (d.steps_saved, d.fraction_saved, d.stopped_before_best) == (0, 0.0, False)
    assert d.selected_step == 400 and d.regret == 0.0


def test_params_echoed_unchanged():
    h = make_history([0.1, 0.2, 0.3, 0.25, 0.2], name="eval_accuracy")
    ds = replay([h], ["hf:threshold=1e-4,patience=1", "keras:restore_best_weights=true,min_delta=0.1",
                      "lightning:stopping_threshold=0.25"]).decisions
    assert ds[0].params["threshold"] == 1e-4  # not float32-cast, not negated for a max metric
    assert ds[1].params["restore_best_weights"] is True and ds[1].params["min_delta"] == 0.1
    assert ds[2].params["stopping_threshold"] == 0.25 and ds[2].params["divergence_threshold"] is None
    assert all(d.mode == "max" for d in ds)
    doc = json.loads(json.dumps(ds[1].to_dict(), allow_nan=False))
    assert doc["params"]["restore_best_weights"] is True


# ---------------------------------------------------------------------- selection
def test_selection_skips_a_missing_checkpoint_and_says_so():
    # Best .5 at step 300 but checkpoint-300 is not on disk; the best saved one is step 200 (.7).
    h = make_history([1.0, 0.7, 0.5, 0.8, 0.9, 0.95],
                     checkpoints=[ckpt(100), ckpt(200), ckpt(400), ckpt(500), ckpt(600)])
    (d,) = replay([h], ["hf:patience=2"]).decisions
    assert d.stop_step == 500
    assert (d.selected_step, d.selected_value) == (200, 0.7)
    assert (d.best_step, d.best_saved_step, d.best_saved_value) == (300, 200, 0.7)
    assert d.regret == pytest.approx(0.2)
    assert "checkpoint-300 is missing" in d.note and "selected step 200" in d.note


def test_selection_skips_a_broken_checkpoint_naming_its_problem():
    h = make_history([1.0, 0.7, 0.5, 0.8, 0.9],
                     checkpoints=[ckpt(100), ckpt(200), ckpt(300, whole=False, problem="adapter is empty"),
                                  ckpt(400), ckpt(500)])
    (d,) = replay([h], ["hf:patience=2"]).decisions
    assert d.selected_step == 200
    assert "checkpoint-300: adapter is empty" in d.note


def test_selection_without_inventory_uses_all_evaluations():
    h = make_history([1.0, 0.7, 0.5, 0.8, 0.9])
    (d,) = replay([h], ["hf:patience=2"]).decisions
    assert d.selected_step == 300 and d.note is None and d.best_saved_step is None


def test_nothing_selectable_before_the_stop():
    h = make_history([1.0, 0.7, 0.8, 0.9], checkpoints=[ckpt(400)])
    (d,) = replay([h], ["hf"]).decisions  # stops at step 300; only checkpoint-400 exists
    assert d.stop_step == 300 and d.selected_step is None and d.regret is None
    assert "nothing selected" in d.note


def test_never_selects_a_non_finite_value():
    # Keras keeps a first NaN as its best (reference §8 nan_first: stops at 1-based 3, restores epoch 1).
    h = make_history([math.nan, 1.0, 0.9, 0.8, 0.7, 0.6])
    (d,) = replay([h], ["keras:patience=2,restore_best_weights=true"]).decisions
    assert d.stop_eval_index == 2
    assert d.selected_step == 300 and d.selected_value == 0.9  # best finite at or before the stop
    assert "not finite" in d.note


# ---------------------------------------------------------------------- metric, mode and problems
def test_metric_by_alias_and_default_mode():
    h = make_history([0.5, 0.6, 0.55], name="eval/accuracy")
    (d,) = replay([h], ["hf"], metric="eval_accuracy").decisions
    assert d.metric == "eval/accuracy" and d.mode == "max" and d.selected_step == 200
    (d,) = replay([h], ["hf"], metric="eval_accuracy", mode="min").decisions
    assert d.mode == "min" and d.selected_step == 100


def test_one_runs_problem_never_aborts_the_others():
    good = make_history([1.0, 0.9, 0.95], path="good")
    other = make_history([0.3, 0.4], name="eval_wer", path="other")
    res = replay([good, other], ["hf", "gl"], metric="eval_loss")
    assert [(d.run, d.rule, d.decidable) for d in res.decisions] == [
        ("good", "hf", True), ("good", "gl", True), ("other", "hf", False), ("other", "gl", False)]
    assert res.errors == [{"run": "other", "error": res.decisions[2].reason}]
    assert "available: eval_wer" in res.errors[0]["error"]


def test_a_run_without_eval_series_is_an_error_entry():
    h = History(path="train-only", format="test", series={"loss": Series("loss", [1, 2], [1.0, 0.9])})
    res = replay([h], ["hf"])
    assert res.errors and "no evaluation metric" in res.errors[0]["error"]
    assert res.decisions[0].decidable is False


def test_missing_inputs_make_that_decision_undecidable():
    h = make_history([1.0, 0.9, 0.95, 0.97, 0.99])
    pq, multi = replay([h], ["pq", "multi:metrics=eval_loss;eval_bleu:max"]).decisions
    assert not pq.decidable and "training-loss" in pq.reason
    assert not multi.decidable and "eval_bleu" in multi.reason and "available" in multi.reason


def test_extra_series_aligned_by_step():
    # accuracy logged at steps 100 and 300 only: NaN at step 200, a non-improvement for the composite,
    # so patience 1 stops there. (Misaligned as [.1, .5, nan] it would improve at 200 and stop at 300.)
    h = make_history([1.0, 1.0, 1.0], extra={"eval_accuracy": ([100, 300], [0.1, 0.5])})
    (d,) = replay([h], ["multi:metrics=eval_accuracy:max,patience=1"]).decisions
    assert d.decidable and d.stop_step == 200


def test_wall_clock_saved_from_wall_times_and_from_runtime():
    h = make_history([1.0, 0.8, 0.9, 0.95], wall_times=[10.0, 20.0, 30.0, 45.0])
    (d,) = replay([h], ["hf"]).decisions  # stops at idx 2 (wall 30); the log ends at 45
    assert d.wall_saved_s == pytest.approx(15.0)
    h = make_history([1.0, 0.8, 0.9, 0.95], meta={"train_runtime": 800.0, "global_step": 400, "max_steps": 1000})
    (d,) = replay([h], ["hf"]).decisions  # 2 s/step, stop at 300 of a 1000-step budget: 700 steps saved
    assert d.steps_saved == 700 and d.wall_saved_s == pytest.approx(1400.0)
    (d,) = replay([make_history([1.0, 0.8, 0.9])], ["hf"]).decisions
    assert d.wall_saved_s is None


def test_result_is_strict_json():
    h = make_history([math.nan, 1.0, math.inf, 0.9, 0.95], train=([50, 250], [math.nan, 1.0]))
    doc = replay([h], ["all"]).to_dict()
    text = json.dumps(doc, allow_nan=False)
    assert json.loads(text)["decisions"][0]["run"] == "run-a"
    assert set(doc) == {"decisions", "summary", "errors"}
    assert set(doc["decisions"][0]) == {f for f in Decision.__dataclass_fields__}


# ---------------------------------------------------------------------- real runs
@needs_corpus
def test_sweep_and_scan_engines_agree_on_real_runs():
    from logsage.ingest import load_history

    runs = [load_history(p) for p in HF_RUNS[:8]]
    grid = {"patience": [0, 1, 2, 3, 5], "threshold": [0, 1e-4, 1e-2], "min_delta": [0, 1e-3, 0.05]}
    a = replay(runs, ["hf", "patience", "patience:definition=degradation"], grid=grid, engine="scan")
    b = replay(runs, ["hf", "patience", "patience:definition=degradation"], grid=grid, engine="sweep")
    assert len(a.decisions) == 8 * (15 + 15 + 15)
    assert a.decisions == b.decisions
    assert a.summary == b.summary


@needs_corpus
def test_replay_paths_echoes_paths_and_keeps_going(tmp_path, monkeypatch):
    rel = os.path.relpath(HF_RUNS[0], ROOT)
    monkeypatch.chdir(ROOT)
    res = replay_paths([rel, str(tmp_path / "missing")], ["hf:patience=2"])
    assert [d.run for d in res.decisions] == [rel, str(tmp_path / "missing")]
    assert res.decisions[0].decidable and not res.decisions[1].decidable
    assert res.errors[0]["run"] == str(tmp_path / "missing") and "no such file" in res.errors[0]["error"]
    assert len(res.histories) == 1


def test_every_decision_carries_the_scale_free_regret_and_the_summary_averages_it():
    from logsage.core.history import History, Series

    runs = []
    for k, scale in enumerate((1.0, 1000.0)):  # the same curve at two scales: the same scale-free regret
        h = History(path=f"runs/{k}", format="synthetic")
        vals = scale * np.array([2.0, 1.5, 1.6, 1.0, 1.2, 1.3, 1.4, 1.5])  # patience 1 stops at 1.6, keeps 1.5
        h.series["eval_loss"] = Series("eval_loss", np.arange(1, 9) * 10, vals)
        h.meta["max_steps"] = 80
        runs.append(h)
    for engine in ("scan", "auto"):
        res = replay(runs, ["patience:patience=1", "none"], engine=engine)
        by = {(d.run, d.rule): d for d in res.decisions}
        for run, scale in (("runs/0", 1.0), ("runs/1", 1000.0)):
            d = by[(run, "patience")]
            first, best = 2.0 * scale, 1.0 * scale
            assert d.regret_scaled == pytest.approx(abs(d.selected_value - best) / abs(first - best))
            assert by[(run, "none")].regret_scaled == 0.0
        rows = {r["rule"]: r for r in res.summary}
        scaled = [by[(r, "patience")].regret_scaled for r in ("runs/0", "runs/1")]
        assert scaled[0] == pytest.approx(scaled[1]) == pytest.approx(0.5)  # the absolute regrets differ 1000x
        assert rows["patience"]["mean_regret_scaled"] == pytest.approx(np.mean(scaled))
        assert rows["patience"]["p90_regret_scaled"] == pytest.approx(np.percentile(scaled, 90))
