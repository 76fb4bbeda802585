"""The columnar replay result: columns equal the scan's decisions field by field, and no Decision
object is built until one is read."""

from __future__ import annotations

import numpy as np

from logsage.core.history import History, Series
from logsage.decide.engine import replay
from logsage.decide.result import Decisions


def _histories(n: int = 12) -> list[History]:
    rng = np.random.default_rng(3)
    out = []
    for i in range(n):
        k = int(rng.integers(3, 40))
        v = 1.0 / np.sqrt(np.arange(1, k + 1)) + rng.normal(0, 0.03, k)
        if i % 4 == 0:
            v[rng.integers(k)] = np.nan
        steps = np.arange(1, k + 1) * 20
        out.append(History(path=f"run-{i}", format="synthetic", series={"eval_loss": Series("eval_loss", steps, v)},
                           meta={"max_steps": int(steps[-1]) + 40 * (i % 3)}))
    return out


GRID = {"patience": [1, 2, 3, 5], "min_delta": [0.0, 1e-3, 1e-2], "threshold": [0.0, 1e-3, 1e-2]}


def test_columns_equal_the_scans_decisions_and_nothing_is_built_before_a_read():
    hs = _histories()
    fast = replay(hs, ["patience", "hf"], grid=GRID)
    ref = replay(hs, ["patience", "hf"], grid=GRID, engine="scan")
    assert isinstance(fast.decisions, Decisions)
    assert not any(built for built, _ in fast.decisions._blocks)  # the summary needed no object
    per_run = len(ref.decisions) // len(hs)

    def want(name):
        return np.array([[np.nan if (v := getattr(d, name)) is None else float(v)
                          for d in ref.decisions[r * per_run:(r + 1) * per_run]] for r in range(len(hs))])

    for name in ("stop_eval_index", "stop_step", "selected_step", "selected_value", "regret", "regret_rel",
                 "fraction_saved", "trend_p"):
        assert np.array_equal(fast.column(name), want(name), equal_nan=True), name
    assert np.array_equal(fast.stops(), np.nan_to_num(want("stop_eval_index"), nan=-1).astype(int))
    assert np.array_equal(fast.selections(), np.nan_to_num(want("selected_step"), nan=-1).astype(int))
    assert np.array_equal(fast.regrets(), want("regret"), equal_nan=True)
    assert fast.column("decidable").tolist() == [[d.decidable for d in ref.decisions[r * per_run:(r + 1) * per_run]]
                                                 for r in range(len(hs))]
    assert fast.summary == ref.summary
    # Reading the decisions builds them: equal to the scan's, field for field.
    assert fast.decisions == ref.decisions and list(fast.decisions) == list(ref.decisions)
    assert fast.decisions[-1] == ref.decisions[-1] and fast.decisions[3:7] == ref.decisions[3:7]
    assert fast.to_dict() == ref.to_dict()
