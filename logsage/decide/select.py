"""One run prepared for scoring, the checkpoint each outcome keeps, and the decisions' scores.

`prepare_run` gathers what every (rule, parameter set) of a run shares (`RunContext`);
`select_evaluation` is the selection rule of `logsage.decide.engine`'s docstring (also used
by `logsage.live`); `score_one` scores one outcome (the reference path) and `score_many` all
of one rule's outcomes on a run at once, as a `RunSegment` whose Decision objects are built
when first read (`logsage.decide.result`), with the summary's fields as vectorized columns.
"""

from __future__ import annotations

import functools
import math
import operator
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import dataclasses
import numpy as np

from logsage.core.errors import MetricNotFound
from logsage.core.history import History
from logsage.core.names import canonical_name, default_mode
from logsage.core.objective import Objective, orient, resolve_objective
from logsage.core.runfolder import checkpoint_name
from logsage.decide import scoring
from logsage.decide.result import BuiltSegment, Decision, RunSegment
from logsage.rules.base import Outcome, RuleInput

STAT_GETTER = operator.attrgetter(*scoring.STAT_FIELDS)  # what the summary reads of a decision
# The Decision fields that depend only on (stop, selected, decidable), in order: stop_step .. overfit_gap.
_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(Decision))[5:23]
assert _ROW_FIELDS[0] == "stop_step" and _ROW_FIELDS[-1] == "overfit_gap"
# Their values for one (stop, selected, decidable), in that order.
_Row = tuple[int | None, int | None, int | None, float | None, int | None, float | None, int | None, float | None,
             float | None, float | None, float | None, int | None, float | None, float | None, bool | None,
             float | None, float | None, float | None]
# (trend slope, its p-value, overfit gap) up to one evaluation.
_TrendGap = tuple[float | None, float | None, float | None]


# ====================================================================== one run
class _ExtraSeries(dict):
    """name -> (oriented values at the monitored steps, mode), resolved on first use.

    A multi-metric rule asks for its metrics by any name the run knows (source or
    canonical); a name the run lacks raises MetricNotFound (listing what exists), which
    makes that decision undecidable. Values are aligned by step: NaN where the other
    series has no point at a monitored step.
    """

    def __init__(self, history: History, steps: np.ndarray):
        super().__init__()
        self._history = history
        self._steps = steps

    def __missing__(self, name: str) -> tuple[np.ndarray, str]:
        src = self._history.resolve(name)
        s = self._history.series[src]
        aligned = np.full(self._steps.shape, np.nan)
        if len(s):
            pos = np.minimum(np.searchsorted(s.steps, self._steps), len(s) - 1)
            hit = s.steps[pos] == self._steps
            aligned[hit] = s.values[pos[hit]]
        mode = default_mode(src)
        value = (orient(aligned, mode), mode)
        self[name] = value
        return value

    def get(self, name, default=None):  # dict.get bypasses __missing__
        try:
            return self[name]
        except MetricNotFound:
            return default

    def __contains__(self, name: object) -> bool:
        return self.get(name) is not None


@dataclass
class RunContext:
    """Everything about one run that every (rule, params) shares."""

    history: History
    objective: Objective
    steps: np.ndarray
    raw: np.ndarray
    oriented: np.ndarray
    x: RuleInput  # not_before = 0; replaced per parameter set
    has_inventory: bool
    eligible: np.ndarray  # evaluations with a whole checkpoint (all True without an inventory)
    budget: int | None
    wall_times: np.ndarray | None
    end_wall_time: float | None
    runtime_s: float | None
    steps_run: int | None
    train_steps: np.ndarray | None
    train_values: np.ndarray | None
    is_loss: bool
    best_index: int | None
    best_saved_index: int | None
    first_index: int | None  # the first finite evaluation: where the achievable improvement starts
    cache: dict[int, _TrendGap] = field(default_factory=dict)  # horizon -> (trend slope, p-value, overfit gap)
    # For the many-decision scorer: per-run arrays built once, and the scores per distinct stop
    # and per distinct selection (many parameter sets share them).
    fast: dict = field(default_factory=dict)


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def prepare_run(history: History, metric: str | None, mode: str | None) -> RunContext:
    objective = resolve_objective(history, metric, mode)
    s = history.series[objective.metric]
    steps, raw = s.steps, s.values
    oriented = objective.orient(raw)
    tl = history.train_loss()
    train_steps = tl.steps if tl is not None else None
    train_values = tl.values if tl is not None else None
    budget = history.max_steps if history.max_steps else (s.last_step if len(s) else None)
    epochs_meta = _number(history.meta.get("num_train_epochs"))
    x = RuleInput(
        values=oriented, steps=steps, mode=objective.mode, metric=objective.metric, raw_values=raw,
        epochs=history.epoch_at(steps), train_steps=train_steps, train_values=train_values,
        budget_steps=history.stated_max_steps, budget_epochs=epochs_meta, extra=_ExtraSeries(history, steps),
        per_example=history.per_example, not_before=0,
    )
    has_inventory = bool(history.checkpoints)
    if has_inventory:
        whole = {c.step for c in history.checkpoints if c.whole}
        eligible = np.fromiter((int(t) in whole for t in steps), dtype=bool, count=len(steps))
    else:
        eligible = np.ones(len(steps), dtype=bool)
    wall = s.wall_times if s.wall_times is not None and len(s.wall_times) == len(steps) else None
    end_wall = None
    if wall is not None:
        # The end of training: the last wall time of any eval or train series (a test pass
        # logged after training would run anyway, so it is not counted as saved).
        ends = [float(np.nanmax(ser.wall_times)) for ser in history.series.values()
                if ser.kind in ("eval", "train") and ser.wall_times is not None and len(ser.wall_times)
                and np.isfinite(ser.wall_times).any()]
        end_wall = max(ends) if ends else None
    runtime = _number(history.meta.get("train_runtime")) or _number(history.summary.get("train_runtime"))
    steps_run = _number(history.meta.get("global_step"))
    steps_run = int(steps_run) if steps_run else budget
    return RunContext(
        history=history, objective=objective, steps=steps, raw=raw, oriented=oriented, x=x,
        has_inventory=has_inventory, eligible=eligible, budget=budget, wall_times=wall, end_wall_time=end_wall,
        runtime_s=runtime, steps_run=steps_run, train_steps=train_steps, train_values=train_values,
        # A gap is eval loss minus train loss: meaningless for an accuracy, or for the train loss itself.
        is_loss="loss" in canonical_name(objective.metric) and s is not tl,
        best_index=scoring.hindsight_best(oriented),
        best_saved_index=scoring.hindsight_best(oriented, eligible) if has_inventory else None,
        first_index=int(np.argmax(np.isfinite(oriented))) if np.isfinite(oriented).any() else None,
    )


def checkpoint_problem(ctx: RunContext, step: int) -> str:
    """Why the evaluation at `step` has no whole checkpoint, in words naming the folder."""
    c = ctx.history.checkpoint_at(step)
    if c is None:
        return f"{checkpoint_name(step)} is missing"
    name = os.path.basename(os.path.normpath(c.path)) or checkpoint_name(step)
    return f"{name}: {c.problem or 'not whole'}"


def select_evaluation(steps: np.ndarray, oriented: np.ndarray, eligible: np.ndarray | Any, has_inventory: bool,
                      stop_index: int | None, best_index: int | None,
                      checkpoint_problem: Any) -> tuple[int | None, str | None]:
    """(selected evaluation index, note) for a rule's stop and own best (see the module docstring).

    `eligible` is a bool array over the evaluations, or a callable giving it (built only when the
    rule's own best cannot be kept); `checkpoint_problem(step)` words why a step has no whole
    checkpoint. `logsage.live` selects with this too, so live advice keeps what replay keeps.
    """
    n = len(steps)
    if n == 0:
        return None, None
    horizon = stop_index if stop_index is not None else n - 1
    own = best_index
    if own is not None and 0 <= own <= horizon and math.isfinite(oriented[own]):
        if callable(eligible):
            if eligible(own):
                return own, None
        elif eligible[own]:
            return own, None
    mask = eligible(None) if callable(eligible) else eligible
    fallback = scoring.hindsight_best(oriented, mask, upto=horizon)
    if own is None or not (0 <= own <= horizon):
        return fallback, None
    own_step = int(steps[own])
    if not math.isfinite(oriented[own]):
        what = f"the rule's best (step {own_step}) is not finite"
    else:
        what = f"best step {own_step} has no whole checkpoint ({checkpoint_problem(own_step)})"
    if fallback is None:
        where = "with a whole checkpoint " if has_inventory else ""
        return None, f"{what}; no finite evaluation {where}at or before the stop, nothing selected"
    return fallback, f"{what}; selected step {int(steps[fallback])}"


def select_for(ctx: RunContext, outcome: Outcome) -> tuple[int | None, str | None]:
    """(selected evaluation index, note) for an outcome (see the module docstring)."""
    return select_evaluation(ctx.steps, ctx.oriented, ctx.eligible, ctx.has_inventory, outcome.stop_index,
                             outcome.best_index, functools.partial(checkpoint_problem, ctx))


def score_one(ctx: RunContext, rule: str, params: dict[str, Any], outcome: Outcome) -> Decision:
    """A Decision from a rule's outcome on a prepared run."""
    n = len(ctx.steps)
    stop = outcome.stop_index
    if stop is not None and not (0 <= stop < n):
        raise AssertionError(f"rule {rule} returned stop index {stop} outside 0..{n - 1}")
    sel, note = select_for(ctx, outcome) if outcome.decidable else (None, None)
    stop_step = int(ctx.steps[stop]) if stop is not None else None

    def at(i: int | None) -> tuple[int | None, float | None]:
        return (None, None) if i is None else (int(ctx.steps[i]), float(ctx.raw[i]))

    sel_step, sel_value = at(sel)
    best_step, best_value = at(ctx.best_index)
    bsaved_step, bsaved_value = at(ctx.best_saved_index)
    reg, reg_rel = scoring.regret(sel_value, best_value)
    reg_scaled = _scaled(ctx, reg)
    if outcome.decidable:
        saved, frac = scoring.steps_saved(stop_step, ctx.budget)
        wall = scoring.wall_saved(stop, saved, wall_times=ctx.wall_times, end_wall_time=ctx.end_wall_time,
                                  runtime_s=ctx.runtime_s, steps_run=ctx.steps_run)
        before = None if best_step is None else (stop_step is not None and stop_step < best_step)
    else:
        saved = frac = wall = before = None
    slope, p, gap = _trend_and_gap(ctx, stop if stop is not None else n - 1)
    return Decision(
        run=ctx.history.path, rule=rule, params=dict(params), metric=ctx.objective.metric, mode=ctx.objective.mode,
        stop_step=stop_step, stop_eval_index=stop, selected_step=sel_step, selected_value=sel_value,
        best_step=best_step, best_value=best_value, best_saved_step=bsaved_step, best_saved_value=bsaved_value,
        regret=reg, regret_rel=reg_rel, regret_scaled=reg_scaled, steps_saved=saved, fraction_saved=frac, wall_saved_s=wall,
        stopped_before_best=before, trend_slope=slope, trend_p=p, overfit_gap=gap,
        decidable=bool(outcome.decidable), reason=outcome.reason, note=note,
    )


def _trend_and_gap(ctx: RunContext, horizon: int) -> _TrendGap:
    """Trend slope, its p-value and the overfit gap up to evaluation `horizon` (cached per run:
    a grid of many parameter sets shares a handful of distinct stops)."""
    if horizon not in ctx.cache:
        slope, p = scoring.trend(ctx.raw, horizon)
        gap = None
        if ctx.is_loss and horizon >= 0:
            gap = scoring.overfit_gap(ctx.steps, ctx.raw, ctx.train_steps, ctx.train_values,
                                      int(ctx.steps[horizon]))
        ctx.cache[horizon] = (slope, p, gap)
    return ctx.cache[horizon]


def _fast(ctx: RunContext) -> dict[str, Any]:
    """Per-run arrays the many-decision scorer reads (built once per run)."""
    f = ctx.fast
    if not f:
        f["steps"] = ctx.steps.tolist()
        f["raw"] = ctx.raw.tolist()
        # hindsight_best(oriented, eligible, upto=t) for every t: the selection's fallback.
        f["prefix_best"] = scoring.prefix_best(ctx.oriented, ctx.eligible)
        f["selectable"] = np.isfinite(ctx.oriented) & ctx.eligible
    return f


def fill_trend_and_gap(ctxs: list[RunContext], horizons: list[Iterable[int]]) -> None:
    """`_trend_and_gap` for every run's horizons not yet cached, all runs in one vectorized pass."""
    todo = [[h for h in hs if h not in ctx.cache] for ctx, hs in zip(ctxs, horizons)]
    trends = scoring.trend_runs([ctx.raw for ctx in ctxs], todo)
    gaps = scoring.overfit_gap_runs([(ctx.steps, ctx.raw, ctx.train_steps, ctx.train_values) if ctx.is_loss
                                     else (ctx.steps, ctx.raw, None, None) for ctx in ctxs], todo)
    for ctx, hs, tr, gp in zip(ctxs, todo, trends, gaps):
        for h, (slope, p), gap in zip(hs, tr, gp):
            ctx.cache[h] = (slope, p, gap if h >= 0 else None)


def score_many(ctx: RunContext, rule: str, param_sets: list[dict[str, Any]], stop: np.ndarray,
                best: np.ndarray, decidable: np.ndarray, reasons: list[str] | Any
                ) -> tuple[RunSegment | BuiltSegment, np.ndarray, dict[str, np.ndarray]]:
    """`score_one` for many outcomes of one rule on one run (stop / best as index arrays, -1 for None).

    The same decisions as `score_one`, field for field (tests compare them): the selection is
    vectorized (the fallback is a prefix argmin computed once per run; a rule's own best
    that is not selectable goes through `select_for` for its note), and every score that
    depends only on the stop and the selection is computed once per distinct (stop,
    selected, decidable) on the run, trend and gap in one pass over the distinct stops.
    """
    n = len(ctx.steps)
    if n == 0:  # nothing to vectorize
        why_all = reasons() if callable(reasons) else reasons
        ds = BuiltSegment(score_one(ctx, rule, ps, Outcome(None if s < 0 else s, None if b < 0 else b, why, d))
                          for ps, s, b, d, why in zip(param_sets, stop.tolist(), best.tolist(), decidable.tolist(),
                                                      why_all))
        return ds, np.arange(len(ds)), table_columns(list(map(STAT_GETTER, ds)))
    f = _fast(ctx)
    horizon = np.where(stop >= 0, stop, n - 1)
    in_range = (best >= 0) & (best <= horizon)
    own_ok = in_range & f["selectable"][np.clip(best, 0, n - 1)]
    selected = np.where(decidable, np.where(own_ok, best, f["prefix_best"][horizon]), -1)
    notes: dict[int, str | None] = {}
    for k in np.flatnonzero(decidable & in_range & ~own_ok).tolist():  # the rule's best is not selectable
        s = int(stop[k])
        sel, notes[k] = select_for(ctx, Outcome(None if s < 0 else s, int(best[k]), "", True))
        selected[k] = -1 if sel is None else sel
    path, metric, mode = ctx.history.path, ctx.objective.metric, ctx.objective.mode
    code = ((stop + 1) * (n + 1) + (selected + 1)) * 2 + decidable  # one int per (stop, selected, decidable)
    keys, ids = np.unique(code, return_inverse=True)
    key_stop, key_sel, key_dec = keys // 2 // (n + 1) - 1, keys // 2 % (n + 1) - 1, (keys % 2).astype(bool)
    columns = _key_columns(ctx, key_stop, key_sel, key_dec)

    def protos() -> list[dict[str, Any]]:
        """Per distinct (stop, selected, decidable): a prototype Decision's attributes (built when the
        decisions are first read; the dataclass builds the first, the others copy its key order)."""
        fill_trend_and_gap([ctx], [sorted({s if s >= 0 else n - 1 for s in key_stop.tolist()})])
        row = _row_maker(ctx)
        out, base = [], None
        for s, sel, dec in zip(key_stop.tolist(), key_sel.tolist(), key_dec.tolist()):
            r = row(s, sel, dec)
            if base is None:
                base = proto = Decision(path, rule, {}, metric, mode, *r, dec, "", None).__dict__
            else:
                proto = base.copy()
                proto.update(zip(_ROW_FIELDS, r))
                proto["decidable"] = dec
            out.append(proto)
        return out

    steps_f = ctx.steps.astype(np.float64)
    raw = ctx.raw
    key_arrays = {
        "stop_eval_index": np.where(key_stop >= 0, key_stop, np.nan),
        "stop_step": np.where(key_stop >= 0, steps_f[np.clip(key_stop, 0, None)], np.nan),
        "selected_step": np.where(key_sel >= 0, steps_f[np.clip(key_sel, 0, None)], np.nan),
        "selected_value": np.where(key_sel >= 0, raw[np.clip(key_sel, 0, None)], np.nan),
        "regret": columns["regret"], "regret_rel": columns["regret_rel"], "regret_scaled": columns["regret_scaled"],
        "fraction_saved": columns["fraction_saved"],
    }
    seg = RunSegment(protos, ids.reshape(-1).astype(np.int64), param_sets, reasons, notes, key_arrays)
    seg.horizons = [s if s >= 0 else n - 1 for s in key_stop.tolist()]
    seg.ctx = ctx
    return seg, ids, columns


def _row_maker(ctx: RunContext) -> Callable[[int, int, bool], _Row]:
    """row(stop, selected, decidable) -> the 17 fields from stop_step to overfit_gap, as `score_one`
    computes them (cached per distinct stop and per distinct selection on the run)."""
    f = _fast(ctx)
    n = len(ctx.steps)
    steps, raw = f["steps"], f["raw"]
    best_step, best_value = (None, None) if ctx.best_index is None else (steps[ctx.best_index], raw[ctx.best_index])
    bsaved = ((None, None) if ctx.best_saved_index is None
              else (steps[ctx.best_saved_index], raw[ctx.best_saved_index]))
    # (stop_step, stop_eval_index, steps_saved, fraction_saved, wall_saved_s, stopped_before_best, *trend_gap)
    by_stop: dict[tuple[int, bool], tuple[int | None, int | None, int | None, float | None, float | None,
                                          bool | None, float | None, float | None, float | None]]
    by_stop = f.setdefault("by_stop", {})
    # step, value, regret, relative regret, scale-free regret
    by_sel: dict[int, tuple[int | None, float | None, float | None, float | None, float | None]]
    by_sel = f.setdefault("by_sel", {})

    def row(s: int, sel: int, dec: bool) -> _Row:
        part = by_stop.get((s, dec))
        if part is None:
            stop_i = None if s < 0 else s
            stop_step = None if s < 0 else steps[s]
            if dec:
                saved, frac = scoring.steps_saved(stop_step, ctx.budget)
                wall = scoring.wall_saved(stop_i, saved, wall_times=ctx.wall_times, end_wall_time=ctx.end_wall_time,
                                          runtime_s=ctx.runtime_s, steps_run=ctx.steps_run)
                before = None if best_step is None else (stop_step is not None and stop_step < best_step)
            else:
                saved = frac = wall = before = None
            trend_gap = ctx.cache[s if s >= 0 else n - 1]
            part = by_stop[(s, dec)] = (stop_step, stop_i, saved, frac, wall, before, *trend_gap)
        chosen = by_sel.get(sel)
        if chosen is None:
            sel_step, sel_value = (None, None) if sel < 0 else (steps[sel], raw[sel])
            reg, rel = scoring.regret(sel_value, best_value)
            chosen = by_sel[sel] = (sel_step, sel_value, reg, rel, _scaled(ctx, reg))
        return (part[0], part[1], chosen[0], chosen[1], best_step, best_value, bsaved[0], bsaved[1],
                chosen[2], chosen[3], chosen[4], *part[2:])

    return row


def _span(ctx: RunContext) -> float:
    """|first - best| in the metric's units: the run's achievable improvement (0 when it never improves)."""
    if ctx.first_index is None or ctx.best_index is None:
        return 0.0
    span = abs(float(ctx.raw[ctx.first_index]) - float(ctx.raw[ctx.best_index]))
    return span if math.isfinite(span) else 0.0


def _scaled(ctx: RunContext, regret: float | None) -> float | None:
    """`scoring.scaled_regret` of one decision: regret over the run's improvement (0 when it never improves)."""
    if regret is None:
        return None
    span = _span(ctx)
    return regret / span if span else 0.0


def _key_columns(ctx: RunContext, key_stop: np.ndarray, key_sel: np.ndarray, key_dec: np.ndarray
                 ) -> dict[str, np.ndarray]:
    """What the summary reads (`scoring.STAT_FIELDS`) for each distinct (stop, selected, decidable),
    as arrays - NaN for None - computed with the same IEEE operations as `scoring.regret` and
    `scoring.steps_saved` (so the values are the per-decision scorer's, bit for bit)."""
    steps = ctx.steps.astype(np.int64)
    has_stop = key_stop >= 0
    stop_step = np.where(has_stop, steps[np.clip(key_stop, 0, None)], 0)
    # regret: |selected - best| and over |best|, where both are finite (and best != 0 for the relative)
    best_value = None if ctx.best_index is None else float(ctx.raw[ctx.best_index])
    sel_value = np.where(key_sel >= 0, ctx.raw[np.clip(key_sel, 0, None)], np.nan)
    if best_value is None or not math.isfinite(best_value):
        regret = rel = np.full(key_sel.shape, np.nan)
    else:
        ok = np.isfinite(sel_value)
        with np.errstate(invalid="ignore"):
            regret = np.where(ok, np.abs(sel_value - best_value), np.nan)
            rel = regret / abs(best_value) if best_value != 0 else np.full(key_sel.shape, np.nan)
    # fraction of the budget saved (decidable only): 0 without a stop, max(budget - stop, 0) / budget
    budget = ctx.budget
    if budget is None or budget <= 0:
        frac = np.full(key_sel.shape, np.nan)
    else:
        frac = np.where(has_stop, np.maximum(int(budget) - stop_step, 0) / budget, 0.0)
    frac = np.where(key_dec, frac, np.nan)
    # stopped before the hindsight best (decidable only, when there is a best)
    if ctx.best_index is None:
        before = np.full(key_sel.shape, np.nan)
    else:
        best_step = int(steps[ctx.best_index])
        before = np.where(key_dec, (has_stop & (stop_step < best_step)).astype(np.float64), np.nan)
    span = _span(ctx)
    scaled = np.where(np.isnan(regret), np.nan, regret / span if span else 0.0)
    return {"decidable": key_dec, "regret": regret, "regret_rel": rel, "regret_scaled": scaled, "fraction_saved": frac,
            "stopped_before_best": before, "stopped": has_stop}


def table_columns(table: list[tuple]) -> dict[str, np.ndarray]:
    """`_key_columns` from STAT_FIELDS tuples (decisions scored one at a time)."""
    none_nan = lambda col: np.array([np.nan if v is None else float(v) for v in col], dtype=np.float64)  # noqa: E731
    dec, reg, rel, scaled, frac, before, stop_step = zip(*table) if table else ((),) * 7
    return {"decidable": np.array(dec, dtype=bool), "regret": none_nan(reg), "regret_rel": none_nan(rel),
            "regret_scaled": none_nan(scaled),
            "fraction_saved": none_nan(frac), "stopped_before_best": none_nan(before),
            "stopped": np.array([v is not None for v in stop_step], dtype=bool)}


__all__ = ["STAT_GETTER", "RunContext", "table_columns", "checkpoint_problem", "fill_trend_and_gap", "prepare_run", "score_many", "score_one",
           "select_evaluation", "select_for"]
