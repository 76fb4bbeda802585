"""Scores for stopping decisions: each decision against hindsight, and rules over many runs.

Per decision (`logsage.decide.engine` calls these; all pure functions of arrays):

* `hindsight_best`: the best evaluation over the whole run (or over the evaluations
  that have a whole checkpoint), earliest on ties, never a non-finite value;
* `regret`: |selected value - best value| in the metric's units (>= 0, because the
  best is the best), and relative to |best value|;
* `scaled_regret`: |kept - best| / |first - best|, the share of the run's achievable
  improvement (from its first finite evaluation to its best) that the decision gives
  up: 0 = kept the best, 1 = no better than the start. Scale-free and bounded on real
  curves, so it can be averaged across runs with different metrics (the relative regret
  explodes when the best value is near 0); 0 when the curve never improved on its first
  value (nothing to give up);
* `steps_saved`: the run's step budget (max_steps, else the last logged step) minus
  the stop step; 0 when the rule never stops;
* `wall_saved`: wall-clock seconds saved, from the log's wall times when it has them,
  else from its `train_runtime` assuming a uniform speed over steps;
* `trend`: the least-squares slope of the metric (as logged, per evaluation) over
  the last `w` (5) evaluations up to and including the stop (or the last evaluation
  when it never stops), non-finite points dropped, with its two-sided p-value (the
  t-test of `scipy.stats.linregress`); None with fewer than 3 finite points, and a
  p-value of None for a perfectly flat window (the test is undefined there). It is
  computed in closed form, many windows at once (`trend_many` for one run,
  `trend_runs` for many): the same moments as `linregress` (`np.cov`'s, through the
  same BLAS product), the same t statistic and the same Student-t tail
  (`scipy.special.stdtr`, what `linregress` and `scipy.stats.t.sf` evaluate), so the
  results equal `linregress`'s bit for bit (`tests/decide/test_scoring.py` checks it) at a
  small fraction of the cost;
* `overfit_gap`: mean eval loss minus mean train loss near the stop: the last `w`
  (5) finite values of the monitored eval loss at or before the stop step, minus the
  last `w` finite train-loss values logged at or before the stop step. Positive means
  the model does better on its training data than on held-out data. Only for a
  monitored metric that is a loss (a difference of a loss and an accuracy means
  nothing) and a run that logs a train loss. `overfit_gap_many` / `overfit_gap_runs`
  answer many stops at once (same values, bit for bit);
* `prefix_best`: `hindsight_best(..., upto=t)` for every t at once.

Over runs, `summarize` groups decisions by (rule, parameters) - Prechelt's table for
the user's own runs - and marks the Pareto front of regret against compute saved;
`summarize_columns` computes the same rows from (runs x parameter sets) arrays, which
is how `logsage.decide.engine` summarizes a big grid.
"""

from __future__ import annotations

import json
import math
import operator
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


def scaled_regret(kept: np.ndarray | float, best: np.ndarray | float,
                  first: np.ndarray | float) -> np.ndarray:
    """|kept - best| / |first - best| elementwise (oriented or raw values alike); 0 where first == best."""
    kept, best, first = (np.asarray(a, dtype=np.float64) for a in (kept, best, first))
    span = np.abs(first - best)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(span > 0, np.abs(kept - best) / np.where(span > 0, span, 1.0), 0.0)


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


def prefix_best(oriented: np.ndarray, eligible: np.ndarray | None = None) -> np.ndarray:
    """`hindsight_best(oriented, eligible, upto=t)` for every t at once (-1 where None)."""
    ok = np.isfinite(oriented)
    if eligible is not None:
        ok &= eligible
    masked = np.where(ok, oriented, np.inf)
    n = masked.size
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    prev = np.concatenate([[np.inf], np.minimum.accumulate(masked)[:-1]])
    # A new strict minimum (earliest on ties); finite values only, so +inf never qualifies.
    new = ok & (masked < prev)
    return np.maximum.accumulate(np.where(new, np.arange(n, dtype=np.int64), -1))


_TINY = 1.0e-20  # linregress's guard against r = +-1 in the t statistic


def trend(raw_values: np.ndarray, upto: int, window: int = TREND_WINDOW) -> tuple[float | None, float | None]:
    """(slope per evaluation, p-value) over the last `window` evaluations up to index `upto`."""
    return trend_many(raw_values, [upto], window)[0]


def trend_many(raw_values: np.ndarray, horizons: Sequence[int] | np.ndarray,
               window: int = TREND_WINDOW) -> list[tuple[float | None, float | None]]:
    """`trend(raw_values, h, window)` for each h in `horizons`, in closed form (see `trend_runs`)."""
    return trend_runs([raw_values], [horizons], window)[0]


def trend_runs(runs: Sequence[np.ndarray], horizons: Sequence[Sequence[int] | np.ndarray],
               window: int = TREND_WINDOW) -> list[list[tuple[float | None, float | None]]]:
    """`trend(runs[r], h, window)` for each run r and each h in `horizons[r]`, in one pass.

    Per window: x = the evaluation indices, y = the values, non-finite points dropped.
    The moments are `np.cov(x, y, bias=1)`'s (means, then the centred product through
    the same BLAS call, scaled by 1/n), r and the t statistic are `linregress`'s
    formulas (r clipped to [-1, 1], TINY in the denominator), and the two-sided p-value
    is 2 * stdtr(n - 2, -|t|), the Student-t tail that `linregress` and
    `scipy.stats.t.sf` evaluate. Windows are grouped by their number of finite points,
    each group one stacked matrix product, so the results are those of
    `scipy.stats.linregress` bit for bit.
    """
    lens = np.array([len(r) for r in runs], dtype=np.int64)
    hs = [np.asarray(h, dtype=np.int64).reshape(-1) for h in horizons]
    counts = np.array([h.size for h in hs], dtype=np.int64)
    total = int(counts.sum())
    flat: list[tuple[float | None, float | None]] = [(None, None)] * total
    if total and lens.sum():
        h = np.concatenate(hs)
        run = np.repeat(np.arange(len(runs)), counts)
        values = np.concatenate([np.asarray(r, dtype=np.float64).reshape(-1) for r in runs])
        offset = (np.cumsum(lens) - lens)[run]
        local = h[:, None] - (window - 1) + np.arange(window, dtype=np.int64)[None, :]  # (H, w), ascending
        inside = (local >= 0) & (h[:, None] >= 0) & (local < lens[run][:, None])
        yy = values[np.clip(offset[:, None] + local, 0, values.size - 1)]
        ok = inside & np.isfinite(yy)
        k = ok.sum(axis=1)
        first = yy[np.arange(total), np.argmax(ok, axis=1)]
        flat_window = ((yy == first[:, None]) | ~ok).all(axis=1)
        for i in np.flatnonzero((k >= 3) & flat_window).tolist():
            flat[i] = (0.0, None)  # a flat window: slope 0, the test statistic is undefined
        fit = (k >= 3) & ~flat_window
        if fit.any():
            from scipy import special

        for kk in np.unique(k[fit]).tolist():
            rows = np.flatnonzero(fit & (k == kk))
            # The finite points of each window, in order (a stable sort puts them first).
            cols = np.argsort(~ok[rows], axis=1, kind="stable")[:, :kk]
            X = np.empty((rows.size, 2, kk))
            X[:, 0, :] = np.take_along_axis(local[rows], cols, axis=1)
            X[:, 1, :] = np.take_along_axis(yy[rows], cols, axis=1)
            X -= X.mean(axis=2)[:, :, None]
            C = np.matmul(X, X.transpose(0, 2, 1))  # one syrk per window, as np.cov's dot
            C *= np.true_divide(1, kk)
            ssxm, ssxym, ssym = C[:, 0, 0], C[:, 0, 1], C[:, 1, 1]
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                degenerate = (ssxm == 0.0) | (ssym == 0.0)
                r = np.clip(ssxym / np.sqrt(ssxm * ssym), -1.0, 1.0)
                r = np.where(degenerate, np.where(ssxym == 0, np.nan, 0.0), r)
                slope = ssxym / ssxm
                df = kk - 2
                t = r * np.sqrt(df / ((1.0 - r + _TINY) * (1.0 + r + _TINY)))
                p = 2 * special.stdtr(df, -np.abs(t))
            for i, s_, p_ in zip(rows.tolist(), slope.tolist(), p.tolist()):
                flat[i] = (s_ if math.isfinite(s_) else None, p_ if math.isfinite(p_) else None)
    ends = np.cumsum(counts).tolist()
    return [flat[e - c: e] for e, c in zip(ends, counts.tolist())]


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


def overfit_gap_many(eval_steps: np.ndarray, eval_values: np.ndarray, train_steps: np.ndarray | None,
                     train_values: np.ndarray | None, horizons: Sequence[int] | np.ndarray,
                     window: int = GAP_WINDOW) -> list[float | None]:
    """`overfit_gap(..., at_step=eval_steps[h])` for each evaluation index h in `horizons` (None for h < 0)."""
    return overfit_gap_runs([(eval_steps, eval_values, train_steps, train_values)], [horizons], window)[0]


def overfit_gap_runs(runs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]],
                     horizons: Sequence[Sequence[int] | np.ndarray],
                     window: int = GAP_WINDOW) -> list[list[float | None]]:
    """`overfit_gap_many` for many runs (eval steps, eval values, train steps, train values) at once.

    Assumes what a `Series` guarantees: each step array ascending. Each mean is taken
    over a contiguous row of the same length as the scalar version's slice, so the values
    are the same bit for bit.
    """
    hs = [np.asarray(h, dtype=np.int64).reshape(-1) for h in horizons]
    out: list[list[float | None]] = [[None] * h.size for h in hs]
    e_parts, t_parts, e_idx, t_idx, e_len, t_len, where = [], [], [], [], [], [], []
    e_off = t_off = 0
    for r, ((es, ev, ts, tv), h) in enumerate(zip(runs, hs)):
        if ts is None or tv is None or h.size == 0:
            continue
        es, ev = np.asarray(es), np.asarray(ev, dtype=np.float64)
        ts, tv = np.asarray(ts), np.asarray(tv, dtype=np.float64)
        if (es.size > 1 and (np.diff(es) < 0).any()) or (ts.size > 1 and (np.diff(ts) < 0).any()):
            out[r] = [None if i < 0 else overfit_gap(es, ev, ts, tv, int(es[i]), window)  # pragma: no cover
                      for i in h.tolist()]
            continue
        valid = np.flatnonzero(h >= 0)
        if valid.size == 0 or es.size == 0:
            continue
        at = es[h[valid]]
        e_fin, t_fin = np.isfinite(ev), np.isfinite(tv)
        e_cnt = np.searchsorted(es[e_fin], at, side="right")  # finite evals at or before the step
        t_cnt = np.searchsorted(ts[t_fin], at, side="right")
        e_parts.append(ev[e_fin])
        t_parts.append(tv[t_fin])
        e_m, t_m = np.minimum(e_cnt, window), np.minimum(t_cnt, window)
        e_idx.append(e_off + e_cnt - e_m)
        t_idx.append(t_off + t_cnt - t_m)
        e_len.append(e_m)
        t_len.append(t_m)
        where.append(np.stack([np.full(valid.size, r), valid], axis=1))
        e_off += e_parts[-1].size
        t_off += t_parts[-1].size
    if not where:
        return out
    e_vals, t_vals = np.concatenate(e_parts), np.concatenate(t_parts)
    e_start, t_start = np.concatenate(e_idx), np.concatenate(t_idx)
    e_m, t_m = np.concatenate(e_len), np.concatenate(t_len)
    at = np.concatenate(where)

    def means(vals: np.ndarray, start: np.ndarray, m: np.ndarray) -> np.ndarray:
        res = np.full(m.size, np.nan)
        for mm in np.unique(m[m > 0]).tolist():
            rows = np.flatnonzero(m == mm)
            res[rows] = vals[start[rows][:, None] + np.arange(mm)[None, :]].mean(axis=1)
        return res

    gap = means(e_vals, e_start, e_m) - means(t_vals, t_start, t_m)
    for j in np.flatnonzero((e_m > 0) & (t_m > 0)).tolist():
        r, i = at[j].tolist()
        out[r][i] = float(gap[j])
    return out


# ---------------------------------------------------------------------- over runs
def params_key(rule: str, params: dict[str, Any]) -> str:
    """A stable key for one (rule, parameter set)."""
    return rule + json.dumps(params, sort_keys=True, default=str)


def _mean(xs: Sequence[float]) -> float | None:
    return float(statistics.fmean(xs)) if xs else None


def _p90(sorted_xs: Sequence[float]) -> float | None:
    """The 90th percentile (linear interpolation, numpy's default) of values already sorted."""
    return float(np.percentile(sorted_xs, 90)) if len(sorted_xs) else None


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
    return summarize_groups(groups.values())


# What `summarize` reads of each decision, in this order.
STAT_FIELDS = ("decidable", "regret", "regret_rel", "regret_scaled", "fraction_saved", "stopped_before_best",
               "stop_step")


def summarize_groups(groups: Iterable[Sequence[Any]]) -> list[dict[str, Any]]:
    """`summarize` for decisions already grouped by (rule, parameters), groups in order."""
    fields = operator.attrgetter(*STAT_FIELDS)  # one C-level fetch of the six fields per decision
    return summarize_stats((ds[0].rule, ds[0].params, list(map(fields, ds))) for ds in groups if ds)


def summarize_stats(groups: Iterable[tuple[str, dict[str, Any], Sequence[tuple]]]) -> list[dict[str, Any]]:
    """`summarize` from (rule, params, one `STAT_FIELDS` tuple per decision) groups, in order."""
    rows = []
    for rule, params, stats in groups:
        if not stats:
            continue
        decided = [c for c in stats if c[0]]
        _, reg_c, rel_c, scaled_c, frac_c, before_c, stop_c = zip(*decided) if decided else ((),) * 7
        scaled = [v for v in scaled_c if v is not None]
        reg = [v for v in reg_c if v is not None]
        rel = [v for v in rel_c if v is not None]
        frac = [v for v in frac_c if v is not None]
        before = [float(v) for v in before_c if v is not None]
        rows.append({
            "rule": rule,
            "params": dict(params),
            "n_runs": len(stats),
            "n_decided": len(decided),
            "n_stopped": sum(v is not None for v in stop_c),
            "mean_regret": _mean(reg),
            "median_regret": _median(reg),
            "mean_regret_rel": _mean(rel) if len(rel) == len(reg) else None,
            "median_regret_rel": _median(rel) if len(rel) == len(reg) else None,
            "mean_regret_scaled": _mean(scaled),
            "p90_regret_scaled": _p90(sorted(scaled)),
            "mean_fraction_saved": _mean(frac),
            "stopped_before_best_rate": _mean(before),
            "pareto": False,
        })
    mark_pareto(rows)
    return rows


def summarize_columns(heads: Sequence[tuple[str, dict[str, Any]]], decidable: np.ndarray, regret: np.ndarray,
                      regret_rel: np.ndarray, fraction_saved: np.ndarray, stopped_before_best: np.ndarray,
                      stopped: np.ndarray, regret_scaled: np.ndarray | None = None) -> list[dict[str, Any]]:
    """`summarize` for a rectangle of decisions: one row per (rule, params) in `heads`, from
    (runs x len(heads)) arrays - NaN where a decision's field is None, `stopped_before_best`
    as 0/1/NaN, `stopped` True where the decision has a stop step.

    The same rows as `summarize` on the same decisions: a mean is `math.fsum` of the values
    over their count, exactly what `statistics.fmean` computes (fsum is exact, so the
    order does not matter), and a median is read off the sorted values as
    `statistics.median` does.
    """
    dec = np.asarray(decidable, dtype=bool)
    n_runs = dec.shape[0]
    if n_runs == 0:
        return []
    n_decided = dec.sum(axis=0).tolist()
    n_stopped = (dec & stopped).sum(axis=0).tolist()

    def per_column(a: np.ndarray, median: bool) -> tuple[list[int], list[float | None], list[float | None]]:
        valid = dec & ~np.isnan(a)
        counts = valid.sum(axis=0).tolist()
        ordered = np.ascontiguousarray(np.sort(np.where(valid, a, np.nan), axis=0).T)  # NaN sort last
        means: list[float | None] = []
        medians: list[float | None] = []
        for row, m in zip(ordered, counts):
            if m == 0:
                means.append(None)
                medians.append(None)
                continue
            vals = row[:m].tolist()
            means.append(math.fsum(vals) / m)
            if median:
                medians.append(vals[m // 2] if m % 2 else (vals[m // 2 - 1] + vals[m // 2]) / 2)
        return counts, means, medians

    reg_n, reg_mean, reg_median = per_column(np.asarray(regret, dtype=np.float64), True)
    rel_n, rel_mean, rel_median = per_column(np.asarray(regret_rel, dtype=np.float64), True)
    _, frac_mean, _ = per_column(np.asarray(fraction_saved, dtype=np.float64), False)
    scaled_a = np.asarray(regret if regret_scaled is None else regret_scaled, dtype=np.float64)
    _, scaled_mean, _ = per_column(scaled_a, False)
    scaled_p90 = [_p90(sorted(col[dec[:, j] & ~np.isnan(col)].tolist())) for j, col in enumerate(scaled_a.T)]
    _, before_mean, _ = per_column(np.asarray(stopped_before_best, dtype=np.float64), False)
    rows = []
    for j, (rule, params) in enumerate(heads):
        same = rel_n[j] == reg_n[j]
        rows.append({
            "rule": rule,
            "params": dict(params),
            "n_runs": n_runs,
            "n_decided": n_decided[j],
            "n_stopped": n_stopped[j],
            "mean_regret": reg_mean[j],
            "median_regret": reg_median[j],
            "mean_regret_rel": rel_mean[j] if same else None,
            "median_regret_rel": rel_median[j] if same else None,
            "mean_regret_scaled": scaled_mean[j] if regret_scaled is not None else None,
            "p90_regret_scaled": scaled_p90[j] if regret_scaled is not None else None,
            "mean_fraction_saved": frac_mean[j],
            "stopped_before_best_rate": before_mean[j],
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
    # The scale-free regret when every row has it (it averages across runs of any scale), then the
    # relative, then the absolute (only meaningful when all runs share a metric scale).
    key = next((k for k in ("mean_regret_scaled", "mean_regret_rel")
                if rows and all(r.get(k) is not None for r in rows)), "mean_regret")
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
