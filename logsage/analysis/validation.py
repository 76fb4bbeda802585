"""Leave-one-run-out for `tune`: tune on all runs but one, score the choice on the one left out, for every run.

Linear in the number of runs: the per-candidate figures of a fold (all runs but r) come
from the totals over all runs minus run r's column (means from running sums, the
eligibility from a count of the runs each candidate cannot judge), and the p90
tie-break from one sort per candidate: with the values sorted once, the order
statistics of the n - 1 remaining values are read off the sorted array shifted past
the left-out run's position. No per-fold copy of the matrix is made.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from logsage.analysis.objectives import Objective, choose
from logsage.analysis.scores import Scores, block


def fold_figures(sc: Scores) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per candidate x fold (the fold leaving run r out): (eligible, mean regret, p90 regret, mean saved).

    A candidate is eligible in a fold when it judged every training run (and has a saving
    on each); means are over the n - 1 training runs.
    """
    n_c, n = sc.shape
    usable = sc.decided & ~np.isnan(sc.saved)
    bad = (~usable).sum(axis=1)  # runs each candidate cannot judge
    eligible = (bad[:, None] - (~usable).astype(np.int64)) == 0
    reg = np.where(usable, sc.regret, 0.0)
    sav = np.where(usable, sc.saved, 0.0)
    m = max(n - 1, 1)
    mean_reg = (reg.sum(axis=1)[:, None] - reg) / m
    mean_sav = (sav.sum(axis=1)[:, None] - sav) / m
    p90 = _p90_without_each(np.where(usable, sc.regret, np.inf))
    return eligible, mean_reg, p90, mean_sav


def _p90_without_each(values: np.ndarray) -> np.ndarray:
    """p90 (numpy's linear interpolation) of each row without column r, for every r: one sort per row."""
    n_c, n = values.shape
    if n < 2:
        return np.full((n_c, n), np.nan)
    order = np.argsort(values, axis=1, kind="stable")
    srt = np.take_along_axis(values, order, axis=1)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n)[None, :].repeat(n_c, axis=0), axis=1)
    pos = 0.9 * (n - 2)
    lo = int(math.floor(pos))
    frac = pos - lo
    hi = min(lo + 1, n - 2)

    def remaining(i: int) -> np.ndarray:  # the i-th smallest of the n - 1 values left, for every fold
        return np.where(i < rank, srt[:, [i]], srt[:, [min(i + 1, n - 1)]])

    a, b = remaining(lo), remaining(hi)
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(a) | np.isinf(b), np.nan, a + frac * (b - a))


def leave_one_out(obj: Objective, sc: Scores, pairs: list[tuple[str, dict]], specs: list[str],
                  full_choice: int | None, baseline: int | None, n_candidates: int) -> dict[str, Any]:
    """Tune on all runs but one, score the choice on the one left out; for every run."""
    n = sc.shape[1]
    eligible, mean_reg, p90, mean_sav = fold_figures(sc)
    folds: list[dict[str, Any]] = []  # one JSON object per run
    for r in range(n):
        c, feasible = choose(obj, eligible[:, r], mean_reg[:, r], p90[:, r], mean_sav[:, r], baseline, n_candidates)
        run = sc.runs[r]
        if c is None:
            folds.append({"run": run, "rule": None, "params": None, "regret": None, "fraction_saved": None,
                          "note": "no candidate could judge every training run"})
            continue
        decided = bool(sc.decided[c, r])
        folds.append({
            "run": run, "rule": pairs[c][0], "params": pairs[c][1], "spec": specs[c],
            "feasible_on_training_runs": feasible, "same_as_recommendation": c == full_choice,
            "is_baseline": c == baseline,
            "regret": _num(sc.regret[c, r]), "regret_rel": _num(sc.regret_rel[c, r]),
            "regret_abs": _num(sc.regret_abs[c, r]),
            "fraction_saved": _num(sc.saved[c, r]), "stopped_before_best": None if np.isnan(sc.before[c, r])
            else bool(sc.before[c, r]),
            "decidable": decided,
            "hours_saved": _num(sc.hours[c, r]), "gpu_hours_saved": _num(sc.gpu_hours[c, r]),
            "money_saved": _num(sc.money[c, r]),
            **({} if decided else {"note": f"the chosen rule cannot judge this run: {sc.reasons.get((c, r), '')}"}),
        })
    before = [float(f["stopped_before_best"]) for f in folds if f.get("stopped_before_best") is not None]
    same = [f["same_as_recommendation"] for f in folds if "same_as_recommendation" in f]
    gpu = [f["gpu_hours_saved"] for f in folds if f.get("gpu_hours_saved") is not None]
    money = [f["money_saved"] for f in folds if f.get("money_saved") is not None]
    return {
        "available": True,
        "n_runs": n,
        "regret": {**block([f["regret"] for f in folds]),
                   "per_run": [{"run": f["run"], "value": f["regret"]} for f in folds]},
        "regret_rel": block([f.get("regret_rel") for f in folds]),
        "saved": {**block([f["fraction_saved"] for f in folds]),
                  "per_run": [{"run": f["run"], "value": f["fraction_saved"]} for f in folds]},
        "stopped_before_best_rate": float(np.mean(before)) if before else None,
        "agreement": float(np.mean(same)) if same else None,
        "gpu_hours_saved": float(sum(gpu)) if gpu else None,
        "money_saved": float(sum(money)) if money else None,
        "folds": folds,
    }


def _num(v: float) -> float | None:
    return None if v is None or math.isnan(v) else float(v)
