"""Scores of one decision (trend, gap, regret, saved) and the summary / Pareto front over runs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsage import scoring


# ---------------------------------------------------------------------- per decision
def test_hindsight_best_is_earliest_finite_minimum():
    v = np.array([math.nan, 0.5, -math.inf, 0.2, 0.2, math.inf])
    # -inf is not finite: never a best. The two 0.2 tie: the earlier wins.
    assert scoring.hindsight_best(v) == 3
    assert scoring.hindsight_best(v, upto=2) == 1
    eligible = np.array([True, True, True, False, True, True])
    assert scoring.hindsight_best(v, eligible) == 4
    assert scoring.hindsight_best(np.array([math.nan, math.inf])) is None
    assert scoring.hindsight_best(np.array([])) is None


def test_regret():
    assert scoring.regret(0.9, 0.6) == (pytest.approx(0.3), pytest.approx(0.5))
    assert scoring.regret(-0.4, -0.5) == (pytest.approx(0.1), pytest.approx(0.2))  # a negated max metric
    assert scoring.regret(0.0, 0.0) == (0.0, None)  # relative to a zero best is undefined
    assert scoring.regret(None, 0.5) == (None, None)
    assert scoring.regret(math.nan, 0.5) == (None, None)


def test_steps_saved():
    assert scoring.steps_saved(300, 1000) == (700, 0.7)
    assert scoring.steps_saved(None, 1000) == (0, 0.0)
    assert scoring.steps_saved(1200, 1000) == (0, 0.0)  # a log past its stated budget saves nothing
    assert scoring.steps_saved(300, None) == (None, None)


def test_trend_matches_an_independent_least_squares_fit():
    from scipy import stats as sps

    y = np.array([3.0, 2.0, 1.5, 1.4, 1.45, 1.5, 1.6, 1.58])
    slope, p = scoring.trend(y, upto=7)
    # The last 5 evaluations (indices 3..7), by the normal equations and a two-sided t-test.
    x = np.arange(3, 8, dtype=float)
    w = y[3:8]
    b = ((x - x.mean()) * (w - w.mean())).sum() / ((x - x.mean()) ** 2).sum()
    resid = w - (w.mean() + b * (x - x.mean()))
    se = math.sqrt((resid ** 2).sum() / (len(x) - 2) / ((x - x.mean()) ** 2).sum())
    p_expected = 2 * sps.t.sf(abs(b / se), df=len(x) - 2)
    assert slope == pytest.approx(b) and p == pytest.approx(p_expected)


def test_trend_edge_cases():
    assert scoring.trend(np.array([1.0, 2.0]), upto=1) == (None, None)  # fewer than 3 points
    assert scoring.trend(np.array([1.0, math.nan, 2.0, math.nan, 3.0]), upto=4)[0] == pytest.approx(0.5)
    assert scoring.trend(np.array([1.0, math.nan, math.inf, 2.0]), upto=3) == (None, None)  # 2 finite
    assert scoring.trend(np.array([2.0, 2.0, 2.0, 2.0]), upto=3) == (0.0, None)  # flat: no test
    assert scoring.trend(np.array([1.0, 2.0, 3.0]), upto=-1) == (None, None)
    # Only evaluations up to `upto` count: a later jump does not leak in.
    assert scoring.trend(np.array([1.0, 2.0, 3.0, 100.0]), upto=2)[0] == pytest.approx(1.0)


def test_overfit_gap_uses_points_at_or_before_the_step():
    es, ev = np.array([100, 200, 300, 400]), np.array([1.0, 0.9, math.nan, 0.95])
    ts, tv = np.array([50, 150, 250, 350, 450]), np.array([1.2, 0.8, 0.7, 0.6, 0.1])
    # at step 300: eval 1.0, .9 (NaN dropped); train 1.2, .8, .7 (450 is later).
    assert scoring.overfit_gap(es, ev, ts, tv, 300) == pytest.approx(0.95 - 0.9)
    assert scoring.overfit_gap(es, ev, ts, tv, 300, window=1) == pytest.approx(0.9 - 0.7)
    assert scoring.overfit_gap(es, ev, None, None, 300) is None
    assert scoring.overfit_gap(es, ev, ts, tv, 40) is None


def test_wall_saved():
    wall = np.array([10.0, 20.0, 30.0])
    assert scoring.wall_saved(1, 100, wall_times=wall, end_wall_time=50.0, runtime_s=None, steps_run=None) == 30.0
    assert scoring.wall_saved(None, 0, wall_times=wall, end_wall_time=50.0, runtime_s=None, steps_run=None) == 0.0
    assert scoring.wall_saved(1, 100, wall_times=None, end_wall_time=None, runtime_s=500.0, steps_run=1000) == 50.0
    assert scoring.wall_saved(1, 100, wall_times=None, end_wall_time=None, runtime_s=None, steps_run=None) is None


# ---------------------------------------------------------------------- over runs
def _d(rule, params, regret, rel, frac, before, decidable=True, stop=1):
    return SimpleNamespace(rule=rule, params=params, regret=regret, regret_rel=rel, fraction_saved=frac,
                           stopped_before_best=before, decidable=decidable, stop_step=stop)


def test_summarize_groups_by_rule_and_params():
    ds = [
        _d("hf", {"patience": 1}, 0.2, 0.1, 0.5, True),
        _d("hf", {"patience": 1}, 0.0, 0.0, 0.3, False),
        _d("hf", {"patience": 1}, None, None, None, None, decidable=False, stop=None),
        _d("hf", {"patience": 3}, 0.0, 0.0, 0.1, False),
    ]
    rows = scoring.summarize(ds)
    assert [(r["rule"], r["params"]["patience"]) for r in rows] == [("hf", 1), ("hf", 3)]
    r = rows[0]
    assert (r["n_runs"], r["n_decided"], r["n_stopped"]) == (3, 2, 2)
    assert r["mean_regret"] == pytest.approx(0.1) and r["median_regret"] == pytest.approx(0.1)
    assert r["mean_regret_rel"] == pytest.approx(0.05)
    assert r["mean_fraction_saved"] == pytest.approx(0.4)
    assert r["stopped_before_best_rate"] == pytest.approx(0.5)
    # patience 1: more regret (0.05) but more saved (0.4) than patience 3 (0, 0.1): both on the front.
    assert [r["pareto"] for r in rows] == [True, True]


def _dominated_bruteforce(points):
    out = []
    for i, (ri, si) in enumerate(points):
        out.append(any(rj <= ri and sj >= si and (rj < ri or sj > si)
                       for j, (rj, sj) in enumerate(points) if j != i))
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0.0, 0.1, 0.2, 0.3]), st.sampled_from([0.0, 0.25, 0.5, 1.0])),
                min_size=1, max_size=12))
def test_pareto_front_equals_brute_force(points):
    rows = [{"mean_regret_rel": r, "mean_regret": r, "mean_fraction_saved": s, "pareto": None} for r, s in points]
    scoring.mark_pareto(rows)
    assert [r["pareto"] for r in rows] == [not d for d in _dominated_bruteforce(points)]


def test_pareto_falls_back_to_absolute_regret_and_skips_missing():
    rows = [{"mean_regret_rel": None, "mean_regret": 1.0, "mean_fraction_saved": 0.5},
            {"mean_regret_rel": 0.0, "mean_regret": 2.0, "mean_fraction_saved": 0.5},
            {"mean_regret_rel": None, "mean_regret": None, "mean_fraction_saved": 0.9}]
    scoring.mark_pareto(rows)
    assert [r["pareto"] for r in rows] == [True, False, False]
