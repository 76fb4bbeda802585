"""The vectorized sweep engine equals the reference scans in logsage.rules, outcome for outcome.

Random sequences are in tests/decide/test_properties.py; here: the reference's conformance
vectors (with the libraries' observed answers), edge cases, ragged batches, and the
switch-over inside `replay`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from logsage.decide import sweep
from logsage.decide.engine import not_before, run_rule
from logsage.rules import RuleInput, get_rule, resolve_params

NAN, INF = math.nan, math.inf

# stopping-semantics.md §8: (id, sequence, patience, delta, HF's 1-based stop or None).
VECTORS = [
    ("typical", [1.0, .9, .8, .85, .82, .81, .79, .80, .80, .80], 2, 0.0, 5),
    ("ties", [1.0, .9, .9, .9, .9, .9], 2, 0.0, 4),
    ("exact_delta", [1.0, .75, .5, .25, 0], 1, .25, 2),
    ("slow_creep", [1.0, .9, .8, .7, .6, .5, .4], 2, .15, 3),
    ("nan_first", [NAN, 1.0, .9, .8, .7, .6], 2, 0.0, None),
    ("nan_mid", [1.0, .9, NAN, .8, NAN, NAN, .7], 2, 0.0, 6),
    ("inf_mid", [1.0, INF, .9, .8], 2, 0.0, None),
    ("p0", [1.0, .9, .95, .8], 0, 0.0, 1),
    ("prec", [1.0, 1 - 1e-9, 1 - 2e-9, 1 - 3e-9], 2, 0.0, None),
]


def _scan(rule: str, x: RuleInput, params: dict):
    """The reference: the rule's own per-evaluation scan."""
    xr = dataclasses.replace(x, not_before=not_before(x.steps, params["min_evals"], params["min_steps"]))
    return run_rule(get_rule(rule), xr, params)


def _x(values, steps=None) -> RuleInput:
    v = np.asarray(values, dtype=float)
    s = np.arange(len(v)) * 10 if steps is None else np.asarray(steps)
    return RuleInput(values=v, steps=s, raw_values=v, metric="eval_loss")


@pytest.mark.parametrize("name,seq,patience,delta,hf_stop", VECTORS, ids=[v[0] for v in VECTORS])
def test_hf_sweep_matches_the_library_vectors(name, seq, patience, delta, hf_stop):
    ps = resolve_params(get_rule("hf"), {"patience": patience, "threshold": delta})
    (got,) = sweep.outcomes("hf", _x(seq), [ps])
    assert got.stop_index == (None if hf_stop is None else hf_stop - 1)
    assert got == _scan("hf", _x(seq), ps)


@pytest.mark.parametrize("name,seq,patience,delta,hf_stop", VECTORS, ids=[v[0] for v in VECTORS])
def test_patience_sweep_equals_scan_on_the_vectors(name, seq, patience, delta, hf_stop):
    info = get_rule("patience")
    for definition, relative in itertools.product(("no-improvement", "degradation"), (False, True)):
        ps = resolve_params(info, {"patience": patience, "min_delta": delta, "definition": definition,
                                   "relative": relative})
        (got,) = sweep.outcomes("patience", _x(seq), [ps])
        assert got == _scan("patience", _x(seq), ps), (definition, relative)


def test_patience_ties_and_plateaus_by_definition():
    # A plateau stops the no-improvement rule but never the degradation rule (seed-rules.md).
    info = get_rule("patience")
    plateau = [0.5] * 10
    ni = resolve_params(info, {"patience": 3})
    dg = resolve_params(info, {"patience": 3, "definition": "degradation"})
    a, b = sweep.outcomes("patience", _x(plateau), [ni, dg])
    assert a.stop_index == 3 and a.best_index == 0
    assert b.stop_index is None


@pytest.mark.parametrize("values", [[], [NAN], [1.0], [NAN, NAN, NAN], [INF, -INF], [-INF, 1.0, 2.0]])
def test_degenerate_series(values):
    for rule, grid in (("hf", {"patience": [0, 1, 2], "threshold": [0, 0.5]}),
                       ("patience", {"patience": [0, 1, 2], "min_delta": [0, 0.5],
                                     "definition": ["no-improvement", "degradation"]})):
        info = get_rule(rule)
        psets = [resolve_params(info, dict(zip(grid, combo))) for combo in itertools.product(*grid.values())]
        got = sweep.outcomes(rule, _x(values), psets)
        assert got == [_scan(rule, _x(values), ps) for ps in psets], rule


def test_ragged_batch_equals_one_run_at_a_time():
    rng = np.random.default_rng(7)
    runs = [np.round(rng.random(n), 1) for n in (0, 1, 5, 17, 40)]
    runs[3][4] = NAN
    runs[4][10:13] = INF
    steps = [np.arange(len(r)) * 50 for r in runs]
    for rule, dk in (("hf", "threshold"), ("patience", "min_delta")):
        info = get_rule(rule)
        psets = [resolve_params(info, {"patience": p, dk: d, "min_evals": me, "min_steps": ms})
                 for p, d, me, ms in itertools.product([0, 1, 3, 50], [0.0, 0.05, 0.2], [0, 4], [0, 120])]
        res = sweep.sweep_indices(rule, runs, psets, steps=steps)
        for r, (v, s) in enumerate(zip(runs, steps)):
            for k, ps in enumerate(psets):
                ref = _scan(rule, _x(v, s), ps)
                want_stop = -1 if ref.stop_index is None else ref.stop_index
                want_best = -1 if ref.best_index is None else ref.best_index
                assert (res.stop[r, k], res.best[r, k]) == (want_stop, want_best), (rule, r, ps)


def test_supports_and_unknown_rule():
    assert sweep.supports("hf") and sweep.supports("patience") and not sweep.supports("keras")
    with pytest.raises(KeyError):
        sweep.sweep_indices("keras", [np.array([1.0])], [{}])


def test_replay_switches_to_the_sweep_for_large_grids(monkeypatch):
    from logsage.decide import engine as replay_mod
    from logsage.core.history import History, Series

    calls = []
    real = sweep.batch_outcomes
    monkeypatch.setattr(sweep, "batch_outcomes", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    h = History(path="r", format="t", series={"eval_loss": Series("eval_loss", [1, 2, 3, 4],
                                                                  [1.0, 0.9, 0.95, 0.97])})
    replay_mod.replay([h], ["hf", "keras"])
    assert calls == []  # one parameter set: the reference scan
    small = replay_mod.replay([h], ["hf", "keras"], grid={"patience": [1, 2, 3, 4, 5]}, engine="scan")
    big = replay_mod.replay([h], ["hf", "keras"], grid={"patience": [1, 2, 3, 4, 5]})
    assert calls == ["hf"]  # keras has no sweep form
    assert big.decisions == small.decisions


@pytest.mark.parametrize("chunk_cells", [1, 64, 1 << 21])
def test_batch_outcomes_over_many_runs_equal_the_scan(monkeypatch, chunk_cells):
    # Runs of every length swept together (and in chunks of similar length): each run's outcomes,
    # reasons and counts included, are the scan's.
    monkeypatch.setattr(sweep, "CHUNK_CELLS", chunk_cells)
    rng = np.random.default_rng(11)
    runs = [np.round(rng.random(n), 1) for n in (0, 1, 2, 7, 30, 3, 45, 12)]
    runs[4][[3, 9]] = NAN
    runs[6][20:23] = INF
    runs[6][30] = -INF
    xs = [_x(v, np.arange(len(v)) * 50) for v in runs]
    for rule, grid in (("hf", {"patience": [0, 1, 3, 50], "threshold": [0.0, 0.05, 0.2], "min_evals": [0, 4]}),
                       ("patience", {"patience": [0, 1, 3], "min_delta": [0.0, 0.05], "relative": [False, True],
                                     "definition": ["no-improvement", "degradation"], "min_steps": [0, 120]})):
        info = get_rule(rule)
        psets = [resolve_params(info, dict(zip(grid, combo))) for combo in itertools.product(*grid.values())]
        batch = sweep.batch_outcomes(rule, xs, psets)
        for r, x in enumerate(xs):
            assert batch.outcomes(r) == [_scan(rule, x, ps) for ps in psets], (rule, r)
