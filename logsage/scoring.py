"""Scores for stopping decisions: each decision against hindsight, and rules over many runs.

Per decision (`logsage.replay` calls these; all pure functions of arrays):

* `hindsight_best`: the best evaluation over the whole run (or over the evaluations
  that have a whole checkpoint), earliest on ties, never a non-finite value;
* `regret`: |selected value - best value| in the metric's units (>= 0, because the
  best is the best), and relative to |best value|;
* `steps_saved`: the run's step budget (max_steps, else the last logged step) minus
  the stop step; 0 when the rule never stops;
* `wall_saved`: wall-clock seconds saved, from the log's wall times when it has them,
  else from its `train_runtime` assuming a uniform speed over steps;
* `trend`: the least-squares slope of the metric (as logged, per evaluation) over
  the last `w` (5) evaluations up to and including the stop (or the last evaluation
  when it never stops), non-finite points dropped, with its two-sided p-value
  (`scipy.stats.linregress`); None with fewer than 3 finite points, and a p-value of
  None for a perfectly flat window (the test is undefined there);
* `overfit_gap`: mean eval loss minus mean train loss near the stop: the last `w`
  (5) finite values of the monitored eval loss at or before the stop step, minus the
  last `w` finite train-loss values logged at or before the stop step. Positive means
  the model does better on its training data than on held-out data. Only for a
  monitored metric that is a loss (a difference of a loss and an accuracy means
  nothing) and a run that logs a train loss.

Over runs, `summarize` groups decisions by (rule, parameters) - Prechelt's table for
the user's own runs - and marks the Pareto front of regret against compute saved.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any, Iterable, Sequence

import numpy as np

TREND_WINDOW = 5
GAP_WINDOW = 5


def hindsight_best(oriented: np.ndarray, eligible: np.ndarray | None = None,
                   upto: int | None = None) -> int | None:
    """Index of the lowest finite oriented value (earliest on ties), optionally among `eligible`
    evaluations and up to index `upto` inclusive; None when there is none."""
    ok = np.isfinite(oriented)
    if eligible is not None:
        ok &= eligible
    if upto is not None:
        ok[upto + 1:] = False
    if not ok.any():
        return None
    masked = np.where(ok, oriented, np.inf)
    return int(np.argmin(masked))  # argmin returns the first of equal minima


def regret(selected_value: float | None, best_value: float | None) -> tuple[float | None, float | None]:
    """(absolute, relative) regret of a selection against the hindsight best."""
    if selected_value is None or best_value is None:
        return None, None
    if not (math.isfinite(selected_value) and math.isfinite(best_value)):
        return None, None
    absolute = abs(selected_value - best_value)
    relative = absolute / abs(best_value) if best_value != 0 else None
    return absolute, relative


def steps_saved(stop_step: int | None, budget: int | None) -> tuple[int | None, float | None]:
    """(steps saved, fraction of the budget saved); a rule that never stops saves 0."""
    if budget is None or budget <= 0:
        return (0, None) if stop_step is None else (None, None)
    if stop_step is None:
        return 0, 0.0
    saved = max(int(budget) - int(stop_step), 0)
    return saved, saved / budget


def wall_saved(stop_index: int | None, n_saved_steps: int | None, *, wall_times: np.ndarray | None,
               end_wall_time: float | None, runtime_s: float | None, steps_run: int | None) -> float | None:
    """Seconds of training the stop saves.

    With wall times on the monitored series: the last wall time the log holds minus
    the wall time of the stopping evaluation. Otherwise, with the run's total
    `train_runtime`: its per-step rate (runtime / steps run) times the steps saved.
    """
    if stop_index is None:
        return 0.0 if (wall_times is not None or runtime_s) else None
    if wall_times is not None and end_wall_time is not None and stop_index < len(wall_times):
        at_stop = float(wall_times[stop_index])
        if math.isfinite(at_stop) and math.isfinite(end_wall_time):
            return max(end_wall_time - at_stop, 0.0)
    if runtime_s and steps_run and n_saved_steps is not None and math.isfinite(runtime_s):
        return float(runtime_s) / steps_run * n_saved_steps
    return None


def trend(raw_values: np.ndarray, upto: int, window: int = TREND_WINDOW) -> tuple[float | None, float | None]:
    """(slope per evaluation, p-value) over the last `window` evaluations up to index `upto`."""
    if upto < 0:
        return None, None
    lo = max(0, upto - window + 1)
    y = np.asarray(raw_values[lo: upto + 1], dtype=np.float64)
    x = np.arange(lo, upto + 1, dtype=np.float64)
    ok = np.isfinite(y)
    if ok.sum() < 3:
        return None, None
    x, y = x[ok], y[ok]
    if np.all(y == y[0]):
        return 0.0, None  # a flat window: slope 0, the test statistic is undefined
    from scipy import stats

    res = stats.linregress(x, y)
    slope = float(res.slope)
    p = float(res.pvalue)
    return (slope if math.isfinite(slope) else None), (p if math.isfinite(p) else None)


def overfit_gap(eval_steps: np.ndarray, eval_values: np.ndarray, train_steps: np.ndarray | None,
                train_values: np.ndarray | None, at_step: int, window: int = GAP_WINDOW) -> float | None:
    """Mean of the last `window` finite eval losses minus mean of the last `window` finite
    train losses, both taken at or before `at_step`."""
    if train_steps is None or train_values is None:
        return None
    ev = eval_values[(eval_steps <= at_step) & np.isfinite(eval_values)][-window:]
    tr = train_values[(train_steps <= at_step) & np.isfinite(train_values)][-window:]
    if ev.size == 0 or tr.size == 0:
        return None
    return float(ev.mean() - tr.mean())


# ---------------------------------------------------------------------- over runs
def params_key(rule: str, params: dict[str, Any]) -> str:
    """A stable key for one (rule, parameter set)."""
    return rule + json.dumps(params, sort_keys=True, default=str)


def _mean(xs: Sequence[float]) -> float | None:
    return float(statistics.fmean(xs)) if xs else None


def _median(xs: Sequence[float]) -> float | None:
    return float(statistics.median(xs)) if xs else None


def summarize(decisions: Iterable[Any]) -> list[dict[str, Any]]:
    """One row per (rule, parameter set) over all runs, in the order first seen.

    Each row: rule, params, n_runs (decisions), n_decided (decidable ones, which the
    means are over), n_stopped, mean/median regret, mean/median regret_rel, mean
    fraction_saved, stopped_before_best_rate, and `pareto`: True when no other row has
    a lower-or-equal regret and a higher-or-equal fraction saved with one of them strictly
    better. Regret is compared relative (mean_regret_rel) when every row has it, else
    absolute (mean_regret: only meaningful when all runs share a metric scale).
    """
    groups: dict[str, list[Any]] = {}
    for d in decisions:
        groups.setdefault(params_key(d.rule, d.params), []).append(d)
    rows = []
    for ds in groups.values():
        decided = [d for d in ds if d.decidable]
        reg = [d.regret for d in decided if d.regret is not None]
        rel = [d.regret_rel for d in decided if d.regret_rel is not None]
        frac = [d.fraction_saved for d in decided if d.fraction_saved is not None]
        before = [d.stopped_before_best for d in decided if d.stopped_before_best is not None]
        rows.append({
            "rule": ds[0].rule,
            "params": dict(ds[0].params),
            "n_runs": len(ds),
            "n_decided": len(decided),
            "n_stopped": sum(d.stop_step is not None for d in decided),
            "mean_regret": _mean(reg),
            "median_regret": _median(reg),
            "mean_regret_rel": _mean(rel) if len(rel) == len(reg) else None,
            "median_regret_rel": _median(rel) if len(rel) == len(reg) else None,
            "mean_fraction_saved": _mean(frac),
            "stopped_before_best_rate": _mean([float(b) for b in before]),
            "pareto": False,
        })
    mark_pareto(rows)
    return rows


def mark_pareto(rows: list[dict[str, Any]]) -> None:
    """Set `pareto` on the rows no other row dominates (lower regret, more compute saved).

    Sorted by regret (ascending), a row is dominated when a row of strictly lower regret
    saves at least as much, or a row of equal regret saves strictly more: O(n log n), so
    grids of thousands of parameter sets stay fast.
    """
    key = "mean_regret_rel" if rows and all(r["mean_regret_rel"] is not None for r in rows) else "mean_regret"
    for r in rows:
        r["pareto"] = False
    scored = [i for i, r in enumerate(rows) if r[key] is not None and r["mean_fraction_saved"] is not None]
    scored.sort(key=lambda i: (rows[i][key], -rows[i]["mean_fraction_saved"]))
    best_saved_lower = -math.inf  # most saved by any row of strictly lower regret
    k = 0
    while k < len(scored):
        regret_here = rows[scored[k]][key]
        group = []
        while k < len(scored) and rows[scored[k]][key] == regret_here:
            group.append(scored[k])
            k += 1
        group_max = rows[group[0]]["mean_fraction_saved"]
        for i in group:
            saved = rows[i]["mean_fraction_saved"]
            rows[i]["pareto"] = not (best_saved_lower >= saved or group_max > saved)
        best_saved_lower = max(best_saved_lower, group_max)
