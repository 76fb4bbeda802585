"""Tune's score matrix: every candidate rule on every run, scored under the `--save-all` contract.

A stopping rule is judged as a stopping rule, not as a checkpoint selector: the run is
replayed as if every evaluation had been saved (`--save-all`), so the rule keeps its
own best (its restore target) and the score says only how good its stop was. What the
checkpoints actually on disk allow is scored beside it (`disk_regret`): the rule's best
when it has a whole checkpoint, else the best whole checkpoint at or before the stop
(`logsage.decide.engine`'s selection). A run whose disk holds no usable checkpoint at the
stop is counted and named there (`disk_missing`); it never changes the save-all figures.

Per (candidate, run), in (C, N) arrays: `regret` (scale-free, `scoring.scaled_regret`),
`regret_rel` (|kept - best| / |best|), `regret_abs` (metric units), `saved` (fraction of
steps), `before` (stopped before the hindsight best), hours / GPU-hours / money saved
(as `logsage.analysis.cost.decision_cost` computes them), and `decided`.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import sys
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from logsage.analysis.cost import CostModel
from logsage.core.history import History
from logsage.decide import scoring

DISK_BARE, DISK_OK, DISK_MISSING = 0, 1, 2  # a bare log (no inventory), a usable checkpoint, none usable
# Runs are replayed in chunks of about this many decisions, so memory stays flat with the number of runs.
CHUNK_DECISIONS = 60_000

_FIELDS = operator.attrgetter("decidable", "selected_step", "stop_eval_index", "fraction_saved", "wall_saved_s",
                              "stopped_before_best", "stop_step")


@dataclass
class Scores:
    """(candidates x runs) arrays; NaN where a figure is undefined (see the module docstring)."""

    runs: list[str]
    decided: np.ndarray
    regret: np.ndarray
    regret_rel: np.ndarray
    regret_abs: np.ndarray
    saved: np.ndarray
    before: np.ndarray
    hours: np.ndarray
    gpu_hours: np.ndarray
    money: np.ndarray
    disk_regret: np.ndarray
    disk_state: np.ndarray  # int8 per run x candidate: DISK_BARE / DISK_OK / DISK_MISSING
    stop_step: np.ndarray  # NaN: never stopped
    kept_step: np.ndarray  # the evaluation kept under save-all (NaN: none)
    reasons: dict[tuple[int, int], str] = field(default_factory=dict)  # (c, r) -> why undecidable
    metrics: set = field(default_factory=set)
    modes: set = field(default_factory=set)

    @property
    def shape(self) -> tuple[int, int]:
        return self.decided.shape


def save_all(h: History) -> History:
    """The run as if every evaluation had been saved (the checkpoint inventory dropped)."""
    return dataclasses.replace(h, checkpoints=[]) if h.checkpoints else h


def score(histories: Sequence[History], pairs: Sequence[tuple[str, dict]], *, metric: str | None,
          mode: str | None, cost: CostModel, progress: bool = False) -> Scores:
    """Replay every run through every (rule, params) under save-all and fill the score matrix."""
    from logsage.decide.engine import replay

    n_c, n_r = len(pairs), len(histories)
    nan = lambda: np.full((n_c, n_r), np.nan)  # noqa: E731
    sc = Scores([h.path for h in histories], np.zeros((n_c, n_r), dtype=bool), nan(), nan(), nan(), nan(), nan(),
                nan(), nan(), nan(), nan(), np.zeros((n_c, n_r), dtype=np.int8), nan(), nan())
    per_chunk = max(1, CHUNK_DECISIONS // max(n_c, 1))
    bar = _Progress(n_r) if progress else None
    for start in range(0, n_r, per_chunk):
        chunk = list(histories[start:start + per_chunk])
        result = replay([save_all(h) for h in chunk], list(pairs), metric=metric, mode=mode)
        for i, h in enumerate(chunk):
            _fill(sc, start + i, h, result.decisions[i * n_c:(i + 1) * n_c], cost)
        if bar is not None:
            bar.update(min(start + per_chunk, n_r))
    if bar is not None:
        bar.close()
    return sc


def _fill(sc: Scores, r: int, h: History, decisions: Sequence[Any], cost: CostModel) -> None:
    got = list(map(_FIELDS, decisions))
    decidable = np.array([g[0] for g in got], dtype=bool)
    sc.decided[:, r] = decidable
    for c in np.flatnonzero(~decidable).tolist():
        sc.reasons[(c, r)] = decisions[c].reason
    if not decidable.any():
        return
    d0 = decisions[int(np.argmax(decidable))]
    sc.metrics.add(d0.metric)
    sc.modes.add(d0.mode)
    s = h.series[d0.metric]
    raw = np.asarray(s.values, dtype=np.float64)
    oriented = -raw if d0.mode == "max" else raw
    finite = np.isfinite(oriented)
    first_i = int(np.argmax(finite))
    best_i = int(np.argmin(np.where(finite, oriented, np.inf)))
    first, best = oriented[first_i], oriented[best_i]
    n = oriented.size
    sel = np.array([-1 if g[1] is None else g[1] for g in got], dtype=np.int64)
    kept = np.where(sel >= 0, np.searchsorted(s.steps, sel), -1)
    kept = np.where((kept >= 0) & (kept < n), kept, -1)
    usable = kept >= 0
    value = np.where(usable, oriented[np.maximum(kept, 0)], np.nan)
    reg = np.where(usable, scoring.scaled_regret(value, best, first), 1.0)  # kept nothing usable: no better than start
    raw_kept = np.where(usable, raw[np.maximum(kept, 0)], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(raw_kept - raw[best_i]) / abs(raw[best_i]) if raw[best_i] != 0 else np.full(len(got), np.nan)
    cols = decidable
    sc.stop_step[cols, r] = np.array([np.nan if g[6] is None else g[6] for g in got], dtype=np.float64)[cols]
    sc.kept_step[cols, r] = np.where(usable, sel, np.nan)[cols]
    sc.regret[cols, r] = reg[cols]
    sc.regret_rel[cols, r] = rel[cols]
    sc.regret_abs[cols, r] = np.abs(raw_kept - raw[best_i])[cols]
    sc.saved[cols, r] = np.array([np.nan if g[3] is None else g[3] for g in got])[cols]
    sc.before[cols, r] = np.array([np.nan if g[5] is None else float(g[5]) for g in got])[cols]
    wall = np.array([np.nan if g[4] is None else g[4] for g in got], dtype=np.float64)
    seconds = np.where(np.isfinite(wall), wall, np.nan)
    if cost.run_hours is not None:  # logs without times: the user's run length x the fraction saved
        seconds = np.where(np.isnan(seconds), cost.run_hours * 3600.0 * sc.saved[:, r], seconds)
    hours = np.where(cols, seconds / 3600.0, np.nan)
    sc.hours[:, r] = hours
    sc.gpu_hours[:, r] = hours * cost.gpu_count
    if cost.gpu_hour_cost is not None:
        sc.money[:, r] = hours * cost.gpu_count * cost.gpu_hour_cost
    if not h.checkpoints:
        sc.disk_state[:, r] = DISK_BARE
        return
    whole = {c.step for c in h.checkpoints if c.whole}
    eligible = np.fromiter((int(t) in whole for t in s.steps), dtype=bool, count=n)
    upto = scoring.prefix_best(oriented, eligible)
    stop = np.array([n - 1 if g[2] is None else g[2] for g in got], dtype=np.int64)
    own = usable & eligible[np.maximum(kept, 0)]
    disk = np.where(own, kept, upto[np.clip(stop, 0, n - 1)] if n else -1)
    ok = cols & (disk >= 0)
    sc.disk_state[:, r] = np.where(ok, DISK_OK, np.where(cols, DISK_MISSING, DISK_BARE))
    sc.disk_regret[ok, r] = scoring.scaled_regret(oriented[disk[ok]], best, first)


class _Progress:
    """A one-line progress bar on stderr (never on stdout, which may carry JSON)."""

    def __init__(self, total: int):
        self.total = max(total, 1)
        self.last = -1

    def update(self, done: int) -> None:
        pct = int(100 * done / self.total)
        if pct != self.last:
            self.last = pct
            bar = "#" * (pct // 4)
            sys.stderr.write(f"\rtune: replaying runs [{bar:<25}] {done}/{self.total}")
            sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def summary(sc: Scores, c: int, cols: np.ndarray | None = None) -> dict[str, Any]:
    """One candidate's figures over the runs it can judge (among `cols`): mean and p90 of the scale-free
    regret, mean relative and absolute regret, mean/median saved, and the on-disk figure apart."""
    cols = np.arange(sc.shape[1]) if cols is None else cols
    dec = sc.decided[c, cols]
    reg = sc.regret[c, cols][dec]
    sav = sc.saved[c, cols][dec]
    sav = sav[~np.isnan(sav)]
    rel = sc.regret_rel[c, cols][dec]
    rel = rel[~np.isnan(rel)]
    before = sc.before[c, cols][dec]
    before = before[~np.isnan(before)]
    disk_ok = sc.disk_state[c, cols] == DISK_OK
    disk = sc.disk_regret[c, cols][disk_ok]
    missing = [sc.runs[int(cols[i])] for i in np.flatnonzero(sc.disk_state[c, cols] == DISK_MISSING).tolist()]

    def stat(f: Any, v: np.ndarray) -> float | None:
        return float(f(v)) if v.size else None

    return {
        "n_decided": int(dec.sum()), "n_runs": int(cols.size),
        "mean_regret": stat(np.mean, reg), "p90_regret": stat(lambda v: np.percentile(v, 90), reg),
        "median_regret": stat(np.median, reg),
        "mean_regret_rel": stat(np.mean, rel), "median_regret_rel": stat(np.median, rel),
        "n_regret_rel": int(rel.size),
        "mean_regret_abs": stat(np.nanmean, sc.regret_abs[c, cols][dec]) if dec.any() else None,
        "mean_fraction_saved": stat(np.mean, sav), "median_fraction_saved": stat(np.median, sav),
        "stopped_before_best_rate": stat(np.mean, before),
        "hours_saved": _sum_known(sc.hours[c, cols]), "gpu_hours_saved": _sum_known(sc.gpu_hours[c, cols]),
        "money_saved": _sum_known(sc.money[c, cols]), "n_priced": int((~np.isnan(sc.hours[c, cols])).sum()),
        "on_disk": {"n_runs": int(disk.size), "mean_regret": stat(np.mean, disk),
                    "p90_regret": stat(lambda v: np.percentile(v, 90), disk),
                    "n_missing": len(missing), "missing": missing,
                    "note": "the checkpoints on disk: the rule's best when saved, else the best saved at or before "
                            "the stop; runs with no usable checkpoint are counted in n_missing and left out"},
    }


def _sum_known(values: np.ndarray) -> float | None:
    known = values[~np.isnan(values)]
    return float(known.sum()) if known.size else None


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    finite = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if not finite.size:
        return {"q25": None, "q75": None, "p90": None, "min": None, "max": None}
    return {"q25": float(np.percentile(finite, 25)), "q75": float(np.percentile(finite, 75)),
            "p90": float(np.percentile(finite, 90)), "min": float(finite.min()), "max": float(finite.max())}


def block(values: Sequence[float | None]) -> dict[str, Any]:
    """{mean, p90, median, spread} of the known values (the headline is the mean and the p90)."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    sp = spread(finite)
    return {"mean": float(np.mean(finite)) if finite else None, "p90": sp["p90"],
            "median": float(np.median(finite)) if finite else None, "spread": sp, "n": len(finite)}
