"""Scores of one decision (trend, gap, regret, saved) and the summary / Pareto front over runs."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from logsage.decide import scoring  # ---------------------------------------------------------------------- per decision
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


def _trend_linregress(raw, upto, window=scoring.TREND_WINDOW):
    """The trend as logsage first computed it: scipy.stats.linregress on each window."""
    from scipy import stats as sps

    if upto < 0:
        return None, None
    lo = max(0, upto - window + 1)
    y = np.asarray(raw[lo: upto + 1], dtype=np.float64)
    x = np.arange(lo, upto + 1, dtype=np.float64)
    ok = np.isfinite(y)
    if ok.sum() < 3:
        return None, None
    x, y = x[ok], y[ok]
    if np.all(y == y[0]):
        return 0.0, None
    res = sps.linregress(x, y)
    slope, p = float(res.slope), float(res.pvalue)
    return (slope if math.isfinite(slope) else None), (p if math.isfinite(p) else None)


def _trend_series(rng, n):
    kind = rng.integers(4)
    if kind == 0:  # noisy decay, wide range of scales
        v = rng.uniform(0.3, 2.0) + np.exp(-np.arange(n) / 7) + rng.normal(0, 10 ** rng.uniform(-8, -1), n)
    elif kind == 1:  # few distinct values: ties and flat windows
        v = rng.choice([0.5, 0.6, 0.7], n)
    elif kind == 2:  # exact lines, where r is +-1 and only TINY keeps the t statistic finite
        v = rng.uniform(-1, 1) * np.arange(n) + rng.uniform(0, 3)
    else:  # large offsets
        v = rng.uniform(1e3, 1e6) + rng.normal(0, 1, n)
    special = rng.random(n) < 0.15
    v[special] = rng.choice([math.nan, math.inf, -math.inf], special.sum())
    return v


def test_closed_form_trend_equals_linregress_bit_for_bit():
    rng = np.random.default_rng(0)
    runs = [_trend_series(rng, int(rng.integers(0, 40))) for _ in range(150)]
    horizons = [list(range(-1, len(v))) for v in runs]
    got = scoring.trend_runs(runs, horizons)
    n_windows = n_tests = 0
    for v, hs, answers in zip(runs, horizons, got):
        assert answers == scoring.trend_many(v, hs)
        for h, answer in zip(hs, answers):
            want = _trend_linregress(v, h)
            assert answer == want, (v[max(0, h - 4): h + 1], answer, want)  # exact, not approx
            assert answer == scoring.trend(v, h)
            n_windows += 1
            n_tests += want[1] is not None
    assert n_windows > 2000 and n_tests > 700
    for w in (3, 4, 7):  # other window sizes
        v = runs[3]
        assert scoring.trend_many(v, range(len(v)), window=w) == [_trend_linregress(v, h, w) for h in range(len(v))]


def test_trend_p_value_is_the_student_t_tail():
    from scipy import stats as sps

    y = np.array([1.0, 0.9, 0.85, 0.86, 0.84])
    slope, p = scoring.trend(y, 4)
    x = np.arange(5.0)
    r = np.corrcoef(x, y)[0, 1]
    t = r * math.sqrt(3 / (1 - r * r))
    assert p == pytest.approx(2 * sps.t.sf(abs(t), 3), rel=1e-12)


def test_overfit_gap_many_equals_the_scalar_gap():
    rng = np.random.default_rng(1)
    runs, horizons, want = [], [], []
    for _ in range(200):
        n = int(rng.integers(0, 30))
        es = np.sort(rng.choice(2000, n, replace=False))
        ev = rng.uniform(0, 2, n)
        ev[rng.random(n) < 0.2] = math.nan
        m = int(rng.integers(0, 80))
        ts = np.sort(rng.choice(2000, m, replace=False))
        tv = rng.uniform(0, 2, m)
        tv[rng.random(m) < 0.2] = math.inf
        if rng.random() < 0.1:
            ts = tv = None
        hs = list(range(-1, n))
        runs.append((es, ev, ts, tv))
        horizons.append(hs)
        want.append([None if h < 0 else scoring.overfit_gap(es, ev, ts, tv, int(es[h])) for h in hs])
    assert scoring.overfit_gap_runs(runs, horizons) == want  # exact
    assert [scoring.overfit_gap_many(*r, hs) for r, hs in zip(runs, horizons)] == want
    assert any(g is not None for w in want for g in w)


def test_prefix_best_is_hindsight_best_at_every_index():
    rng = np.random.default_rng(2)
    for _ in range(100):
        n = int(rng.integers(0, 30))
        v = rng.choice([0.5, 0.6, 0.7, math.nan, math.inf, -math.inf], n)
        eligible = rng.random(n) < 0.7
        for elig in (None, eligible):
            got = scoring.prefix_best(v, elig)
            want = [scoring.hindsight_best(v, elig, upto=t) for t in range(n)]
            assert [None if g < 0 else g for g in got.tolist()] == want


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
def _d(rule, params, regret, rel, frac, before, decidable=True, stop=1, scaled=None):
    # The scale-free regret defaults to twice the absolute one (any value the summary must average).
    scaled = None if regret is None else (2 * regret if scaled is None else scaled)
    return SimpleNamespace(rule=rule, params=params, regret=regret, regret_rel=rel, regret_scaled=scaled,
                           fraction_saved=frac, stopped_before_best=before, decidable=decidable, stop_step=stop)


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
    assert r["mean_regret_scaled"] == pytest.approx(0.2) and r["p90_regret_scaled"] == pytest.approx(0.36)
    assert r["mean_fraction_saved"] == pytest.approx(0.4)
    assert r["stopped_before_best_rate"] == pytest.approx(0.5)
    # patience 1: more regret (0.05) but more saved (0.4) than patience 3 (0, 0.1): both on the front.
    assert [r["pareto"] for r in rows] == [True, True]


def test_summarize_columns_equals_summarize():
    rng = np.random.default_rng(3)
    n_runs, heads = 37, [("hf", {"patience": p}) for p in range(6)]
    grid = [[None] * len(heads) for _ in range(n_runs)]
    for r in range(n_runs):
        for j, (rule, params) in enumerate(heads):
            dec = bool(rng.random() < 0.85)
            pick = lambda *xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
            reg = pick(None, 0.0, 0.1, float(rng.uniform(0, 1)), 0.3)
            rel = None if reg is None else pick(None, reg * 2, math.inf) if j == 5 else reg * 3
            grid[r][j] = _d(rule, params, reg if dec else None, rel if dec else None,
                            pick(None, 0.0, float(rng.uniform(0, 1))) if dec else None,
                            pick(None, True, False) if dec else None, decidable=dec,
                            stop=pick(None, 100) if dec else None)
    flat = [d for row in grid for d in row]
    col = lambda f: np.array([[np.nan if getattr(d, f) is None else float(getattr(d, f)) for d in row]  # noqa: E731
                              for row in grid])
    got = scoring.summarize_columns(heads, np.array([[d.decidable for d in row] for row in grid]),
                                    col("regret"), col("regret_rel"), col("fraction_saved"),
                                    col("stopped_before_best"),
                                    np.array([[d.stop_step is not None for d in row] for row in grid]),
                                    regret_scaled=col("regret_scaled"))
    assert got == scoring.summarize(flat)
    assert scoring.summarize_columns(heads, *[np.zeros((0, len(heads)))] * 6) == []


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
