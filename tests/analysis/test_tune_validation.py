"""Leave-one-run-out in linear time gives exactly what re-tuning on each fold's copy of the matrix gives."""

from __future__ import annotations

import numpy as np
import pytest

from logsage.analysis.objectives import choose, parse_objective
from logsage.analysis.scores import Scores
from logsage.analysis.validation import fold_figures


def _random_scores(seed: int, n_c: int = 12, n: int = 9) -> Scores:
    rng = np.random.default_rng(seed)
    shape = (n_c, n)
    decided = rng.random(shape) > 0.08
    regret = np.where(decided, np.round(rng.random(shape) ** 3, 2), np.nan)  # rounded: ties happen
    saved = np.where(decided, np.round(rng.random(shape), 2), np.nan)
    nan = np.full(shape, np.nan)
    return Scores([f"run-{r}" for r in range(n)], decided, regret, nan, nan, saved, nan, nan, nan, nan, nan,
                  np.zeros(shape, dtype=np.int8), nan, nan)


def _brute_force(sc: Scores, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    cols = np.array([i for i in range(sc.shape[1]) if i != r])
    usable = sc.decided[:, cols] & ~np.isnan(sc.saved[:, cols])
    eligible = usable.all(axis=1)
    reg = np.where(usable, sc.regret[:, cols], 0.0)
    mean_reg = reg.sum(axis=1) / cols.size
    mean_sav = np.where(usable, sc.saved[:, cols], 0.0).sum(axis=1) / cols.size
    p90 = np.array([np.percentile(sc.regret[c, cols], 90) if usable[c].all() else np.nan
                    for c in range(sc.shape[0])])
    return eligible, mean_reg, p90, mean_sav


@pytest.mark.parametrize("seed", range(20))
def test_fold_figures_equal_a_per_fold_recomputation(seed):
    sc = _random_scores(seed)
    eligible, mean_reg, p90, mean_sav = fold_figures(sc)
    for r in range(sc.shape[1]):
        e, m, p, s = _brute_force(sc, r)
        assert (eligible[:, r] == e).all()
        np.testing.assert_allclose(mean_reg[e, r], m[e], rtol=0, atol=1e-12)
        np.testing.assert_allclose(mean_sav[e, r], s[e], rtol=0, atol=1e-12)
        np.testing.assert_allclose(p90[e, r], p[e], rtol=0, atol=1e-12)
        for spec in ("beat-baseline", "exchange:rate=3", "min-regret:min_saved=0.4", "max-saved:max_regret=0.2"):
            obj = parse_objective(spec)
            fast = choose(obj, eligible[:, r], mean_reg[:, r], p90[:, r], mean_sav[:, r], 0, sc.shape[0])
            slow = choose(obj, e, m, p, s, 0, sc.shape[0])
            assert fast == slow, (spec, r)
