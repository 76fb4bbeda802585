"""The fast replay path (all runs swept at once, many decisions of a run scored together) gives the
reference path's decisions field for field, reasons and notes included, and the same summary.

`replay(..., engine="scan")` is the reference: every rule's own per-evaluation scan and the
per-decision scorer (`logsage.decide.engine._score`), one (run, parameter set) at a time.
`engine="sweep"` (and "auto" for big grids) takes `logsage.decide.sweep.batch_outcomes` over all
runs and `logsage.decide.engine._score_many` per run and rule; "auto" with few parameter sets runs
the rules' scans but still scores through `_score_many`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logsage.decide import scoring
from logsage.core.history import Checkpoint, History, Series
from logsage.decide.engine import Decision, replay
from corpus import REAL_RUNS, needs_corpus, run_dirs

ROOT = Path(__file__).resolve().parents[2]
REAL = run_dirs(REAL_RUNS)
FIELDS = [f.name for f in dataclasses.fields(Decision)]

SWEPT = ["hf", "patience", "patience:definition=degradation", "patience:relative=true",
         "patience:definition=degradation,relative=true"]
GRID = {"patience": [0, 1, 2, 3, 5, 8], "threshold": [0, 1e-4, 1e-2, 0.2], "min_delta": [0, 1e-3, 0.05],
        "min_evals": [0, 3]}


def assert_same(fast, ref) -> None:
    """Two ReplayResults agree decision for decision, field for field (with a readable failure)."""
    assert len(fast.decisions) == len(ref.decisions)
    for i, (a, b) in enumerate(zip(fast.decisions, ref.decisions)):
        assert type(a) is Decision
        for name in FIELDS:
            va, vb = getattr(a, name), getattr(b, name)
            same = va == vb or (isinstance(va, float) and isinstance(vb, float) and math.isnan(va) and math.isnan(vb))
            assert same and type(va) is type(vb), (i, a.run, a.rule, a.params, name, va, vb)
    assert fast.decisions == ref.decisions
    assert fast.summary == ref.summary
    assert fast.errors == ref.errors
    assert json.dumps(fast.to_dict(), allow_nan=False) == json.dumps(ref.to_dict(), allow_nan=False)


@pytest.fixture(scope="module")
def real_runs():
    from logsage.ingest import load_history

    return [load_history(p) for p in REAL]


@needs_corpus
def test_real_runs_sweep_equals_scan_field_by_field(real_runs):
    assert len(real_runs) >= 40  # every format of ../shared/real-runs
    ref = replay(real_runs, SWEPT, grid=GRID, engine="scan")
    fast = replay(real_runs, SWEPT, grid=GRID, engine="sweep")
    assert_same(fast, ref)
    assert len(fast.decisions) == len(real_runs) * (48 + 4 * 36)
    # The scores are really exercised: trends, p-values, gaps and wall-clock savings occur.
    for name in ("trend_slope", "trend_p", "overfit_gap", "wall_saved_s", "regret_rel"):
        assert any(getattr(d, name) is not None for d in fast.decisions), name


@needs_corpus
def test_real_runs_auto_engine_for_every_rule(real_runs):
    # Few parameter sets: every rule's own scan, scored through the many-decision scorer.
    runs = real_runs[::3]
    ref = replay(runs, ["all"], engine="scan")
    assert_same(replay(runs, ["all"]), ref)
    assert_same(replay(runs, ["all", "hf"], grid={"patience": [1, 2, 3, 4, 6]}),
                replay(runs, ["all", "hf"], grid={"patience": [1, 2, 3, 4, 6]}, engine="scan"))


@needs_corpus
def test_real_runs_in_max_mode_and_by_other_metrics(real_runs):
    runs = [h for h in real_runs if "eval_accuracy" in {s.canonical for s in h.series.values()}][:4]
    assert runs
    kw = dict(metric="eval_accuracy", grid={"patience": [0, 1, 3], "threshold": [0, 0.01]})
    assert_same(replay(runs, ["hf", "patience"], engine="sweep", **kw),
                replay(runs, ["hf", "patience"], engine="scan", **kw))


# ---------------------------------------------------------------------- random histories
def random_history(rng: np.random.Generator, i: int) -> History:
    """A run with NaN/inf, ties, a train loss, maybe wall times, a runtime and a checkpoint
    inventory with missing and broken checkpoints."""
    n = int(rng.integers(0, 40))
    steps = np.sort(rng.choice(np.arange(10, 5000, 10), size=n, replace=False)) if n else np.array([], int)
    values = np.round(rng.uniform(0.2, 2.0, n), int(rng.integers(1, 4)))  # rounding makes ties
    for kind in (math.nan, math.inf, -math.inf):
        values[rng.random(n) < 0.08] = kind
    wall = np.cumsum(rng.uniform(1, 5, n)) if rng.random() < 0.4 else None
    if wall is not None and n:
        wall[rng.random(n) < 0.1] = math.nan
    series = {"eval_loss": Series("eval_loss", steps, values, wall_times=wall)}
    if rng.random() < 0.7:
        tsteps = np.arange(5, 5000, int(rng.integers(5, 200)))
        tvals = rng.uniform(0.1, 2.0, tsteps.size)
        tvals[rng.random(tsteps.size) < 0.1] = math.nan
        series["loss"] = Series("loss", tsteps, tvals, wall_times=None if wall is None else tsteps * 0.01)
    if rng.random() < 0.3:
        series["eval_accuracy"] = Series("eval_accuracy", steps, rng.uniform(0, 1, n))
    meta = {}
    if rng.random() < 0.5:
        meta["max_steps"] = int(rng.choice([0, 2500, 5000, 8000]))
    if rng.random() < 0.5:
        meta["train_runtime"] = float(rng.uniform(10, 1000))
        meta["global_step"] = int(rng.integers(1, 6000))
    h = History(path=f"random-{i}", format="test", series=series, meta=meta)
    if rng.random() < 0.6 and n:
        keep = rng.random(n) < 0.6
        h.checkpoints = [Checkpoint(step=int(t), path=f"/runs/r{i}/checkpoint-{t}", kind="adapter",
                                    whole=bool(rng.random() < 0.8),
                                    problem=None if rng.random() < 0.5 else "adapter_model.safetensors truncated")
                         for t in steps[keep]]
    return h


def edge_histories() -> list[History]:
    """Runs the rules cannot judge (one evaluation, nothing finite), one with no eval series, and
    one whose every checkpoint is broken."""
    def one(path, values, **kw):
        steps = list(range(100, 100 * (len(values) + 1), 100))
        return History(path=path, format="test", series={"eval_loss": Series("eval_loss", steps, values)}, **kw)

    broken = one("all-broken", [1.0, 0.8, 0.9, 0.95, 0.97])
    broken.checkpoints = [Checkpoint(step=t, path=f"/r/checkpoint-{t}", kind="full", whole=False, problem="empty")
                          for t in (100, 200, 300, 400, 500)]
    return [one("single", [0.5]), one("all-nan", [math.nan, math.nan, math.inf]), broken,
            History(path="train-only", format="test", series={"loss": Series("loss", [1, 2], [1.0, 0.9])})]


@pytest.mark.parametrize("seed", [0, 1])
def test_random_histories_sweep_equals_scan(seed):
    rng = np.random.default_rng(seed)
    runs = [random_history(rng, i) for i in range(20)] + edge_histories()
    grid = {**GRID, "min_steps": [0, 700]}
    ref = replay(runs, SWEPT, grid=grid, engine="scan")
    fast = replay(runs, SWEPT, grid=grid, engine="sweep")
    assert_same(fast, ref)
    # The cases the fast scorer treats apart all occur: notes (the rule's best has no whole
    # checkpoint or is not finite), nothing selectable, undecidable runs, runs that failed.
    assert any(d.note and "no whole checkpoint" in d.note for d in fast.decisions)
    assert any(d.note and "is not finite" in d.note for d in fast.decisions)
    assert any(d.decidable and d.selected_step is None for d in fast.decisions)
    assert any(not d.decidable for d in fast.decisions)
    assert "train-only" in [e["run"] for e in fast.errors]


@pytest.mark.parametrize("seed", [3, 4])
def test_random_histories_every_rule_and_modes(seed):
    rng = np.random.default_rng(seed)
    runs = [random_history(rng, i) for i in range(15)] + edge_histories()
    for kw in ({}, {"mode": "max"}, {"metric": "eval_accuracy"}):
        assert_same(replay(runs, ["all"], **kw), replay(runs, ["all"], engine="scan", **kw))
        assert_same(replay(runs, SWEPT, grid={"patience": [1, 3]}, engine="sweep", **kw),
                    replay(runs, SWEPT, grid={"patience": [1, 3]}, engine="scan", **kw))


@needs_corpus
def test_replay_paths_keeps_unreadable_runs_in_place(tmp_path):
    from logsage.decide.engine import replay_paths

    paths = [str(REAL[0]), str(tmp_path / "missing"), str(REAL[1])]
    grid = {"patience": [1, 2, 3, 4]}
    fast = replay_paths(paths, ["hf", "keras"], grid=grid)
    ref = replay_paths(paths, ["hf", "keras"], grid=grid, engine="scan")
    assert_same(fast, ref)
    assert [d.run for d in fast.decisions[::8]] == paths
    assert [e["run"] for e in fast.errors] == [paths[1]]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), k=st.integers(1, 6))
def test_sweep_equals_scan_property(seed, k):
    rng = np.random.default_rng(seed)
    runs = [random_history(rng, i) for i in range(k)]
    grid = {"patience": [0, 1, 2, 4], "threshold": [0, 0.05], "min_delta": [0, 0.05], "min_evals": [0, 2]}
    assert_same(replay(runs, SWEPT, grid=grid, engine="sweep"), replay(runs, SWEPT, grid=grid, engine="scan"))


# ---------------------------------------------------------------------- the decisions themselves
def test_fast_decisions_are_ordinary_decisions():
    rng = np.random.default_rng(9)
    runs = [random_history(rng, i) for i in range(6)]
    fast = replay(runs, ["hf"], grid={"patience": [1, 2, 3, 4]}, engine="sweep").decisions
    ref = replay(runs, ["hf"], grid={"patience": [1, 2, 3, 4]}, engine="scan").decisions
    for a, b in zip(fast, ref):
        assert vars(a) == vars(b) and list(vars(a)) == list(vars(b)) == FIELDS
        assert repr(a) == repr(b) and a.to_dict() == b.to_dict()
        assert pickle.loads(pickle.dumps(a)) == b
        assert dataclasses.replace(a, rule="x") == dataclasses.replace(b, rule="x")
        with pytest.raises(dataclasses.FrozenInstanceError):
            a.rule = "x"
    # Each decision owns its parameters: changing one leaves the others alone.
    fast[0].params["patience"] = 99
    assert all(d.params["patience"] != 99 for d in fast[1:])


def test_summary_equals_summarize_over_the_decisions():
    rng = np.random.default_rng(5)
    runs = [random_history(rng, i) for i in range(20)]
    res = replay(runs, SWEPT, grid=GRID)
    assert res.summary == scoring.summarize(res.decisions)
    assert replay([], SWEPT, grid=GRID).summary == []
