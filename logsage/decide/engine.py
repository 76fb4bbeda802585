"""Replay: histories x stopping rules x parameter sets -> scored decisions (pure, no printing).

For every run, every rule asked and every parameter set: when would the run have
stopped, which checkpoint would it have kept, and how good was that? Histories and
rules in, a table of decisions out:

    >>> import logsage
    >>> from logsage.decide.engine import replay
    >>> runs = [logsage.load_history(p) for p in ("runs/a", "runs/b")]
    >>> result = replay(runs, ["hf:patience=3,threshold=1e-4", "patience"],
    ...                 grid={"patience": [1, 2, 3, 5]})
    >>> for d in result.decisions:
    ...     print(d.run, d.rule, d.params["patience"], d.stop_step, d.selected_step, d.regret)
    >>> result.summary            # one row per (rule, params) over all runs, Pareto front marked
    >>> result.to_dict()          # what `logsage replay --json` prints

`decide_values(values, "hf", {"patience": 2})` answers for one raw sequence (no
History needed); the conformance tests use it.

Semantics fixed here (and nowhere else):

* **Direction.** The objective (`logsage.core.objective`) orients the monitored metric
  lower-is-better (negated for `max`); rules never see the mode. Parameters are echoed
  exactly as given or defaulted, never negated or cast.
* **min_evals / min_steps** (every rule accepts them): "do not stop before". A stop is
  allowed at evaluation index i (0-based) when i + 1 >= min_evals and
  steps[i] >= min_steps; the rule keeps its state running before that and stops at the
  first allowed index where its condition holds (`RuleInput.not_before`).
* **Selection.** The checkpoint kept at the stop is the rule's own best (its restore
  target) when it is finite and - if the run has a checkpoint inventory - has a whole
  checkpoint. Otherwise the best finite evaluation at or before the stop that has one
  (earliest on ties), and `note` names the checkpoint and what is wrong with it. A run
  without an inventory (a bare log) selects over all evaluations. A non-finite value is
  never selected. A rule that never stops selects at the last evaluation.
* **Scores** come from `logsage.decide.scoring` (its docstring defines each one).
* **Problems** in one run never abort the others: a run that cannot be read or lacks
  the metric gets one undecidable decision per (rule, params) plus an entry in
  `errors`; a rule that cannot judge a run (too short, missing input) gives an
  undecidable decision with the reason. Bad rule names or parameters raise
  `RuleConfigError` before any run is touched.
* **Engines.** The `hf` and `patience` rules run through the vectorized sweep engine
  (`logsage.decide.sweep`, all runs in one batch) when a rule has many parameter sets; its
  results are identical to the per-evaluation reference scan in `logsage.rules`
  (property-tested). The decisions of one run and rule are scored together
  (`score_many`): per-run arrays built once, every score computed once per distinct
  stop or selection, trend and gap for every run's distinct stops in one vectorized
  pass. `engine="scan"` is the reference path - each rule's own scan and `score_one` per
  decision (`select.score_one`) - and `tests/decide/test_replay_fast.py` holds the two equal field for field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import itertools
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from logsage.core.errors import LogsageError, MetricNotFound, RuleConfigError
from logsage.core.history import History
from logsage.core.names import default_mode
from logsage.core.objective import check_mode, orient
from logsage.decide import scoring
from logsage.decide.result import BuiltSegment, Decision, Decisions, ReplayResult, RunBlock, RunSegment
from logsage.decide.select import (
    STAT_GETTER,
    RunContext,
    table_columns,
    fill_trend_and_gap,
    prepare_run,
    score_many,
    score_one,
)
from logsage.rules.base import (
    Outcome,
    RuleInfo,
    RuleInput,
    get_rule,
    has_param,
    list_rules,
    parse_rule_spec,
    resolve_params,
)

# A rule with at least this many parameter sets on one run goes through the sweep engine.
SWEEP_MIN_PARAM_SETS = 4

RuleSpec = str | tuple[str, Mapping[str, Any]]
# One run's segments: (the pair indices, their decisions) per rule, the decisions built when first read.
Segments = list[tuple[list[int], RunSegment | BuiltSegment]]
# One run's replay (see `_result`): its decisions (built, or (False, segments)), their summary
# columns when the scorer kept them, and its error entry.
PerRun = tuple[list[Decision] | tuple[bool, Segments], tuple[np.ndarray, dict[str, np.ndarray]] | None,
               dict | None]


# ====================================================================== low level
def not_before(steps: np.ndarray, min_evals: int = 0, min_steps: int = 0) -> int:
    """First evaluation index at which a stop is allowed (see the module docstring)."""
    nb = max(int(min_evals) - 1, 0)
    if min_steps and min_steps > 0:
        hit = np.flatnonzero(np.asarray(steps) >= min_steps)
        nb = max(nb, int(hit[0]) if hit.size else len(steps))
    return nb


def _rule_kwargs(info: RuleInfo, params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters the rule function itself declares (min_evals/min_steps go through not_before)."""
    names = {p.name for p in info.params}
    return {k: v for k, v in params.items() if k in names}


def _missing_input(info: RuleInfo, x: RuleInput, where: str) -> Outcome | None:
    """An undecidable outcome when the rule needs an input the run does not have."""
    if "train_loss" in info.needs and (x.train_values is None or len(x.train_values) == 0):
        return Outcome(None, None, f"{info.name} needs a training-loss series; {where} logs none", False)
    if "per_example" in info.needs and not x.per_example:
        return Outcome(None, None, f"{info.name} needs per-example eval losses (logged by `logsage train`); "
                                   f"{where} has none", False)
    return None


def run_rule(info: RuleInfo, x: RuleInput, params: Mapping[str, Any], *, where: str = "the run") -> Outcome:
    """One rule on one prepared input; a missing metric or input becomes an undecidable outcome."""
    missing = _missing_input(info, x, where)
    if missing is not None:
        return missing
    try:
        return info.func(x, **_rule_kwargs(info, params))
    except MetricNotFound as e:  # e.g. a multi-metric rule naming a series the run lacks
        return Outcome(None, None, str(e), False)


def decide_values(values: Sequence[float] | np.ndarray, rule: str, params: Mapping[str, Any] | None = None, *,
                  mode: str = "min", steps: Sequence[int] | np.ndarray | None = None,
                  train_steps: Sequence[int] | np.ndarray | None = None,
                  train_values: Sequence[float] | np.ndarray | None = None,
                  budget_steps: int | None = None,
                  extra: Mapping[str, Any] | None = None,
                  per_example: Mapping[int, Mapping[str, np.ndarray]] | None = None,
                  metric: str = "eval_loss", epochs: Sequence[float] | np.ndarray | None = None,
                  budget_epochs: float | None = None) -> Outcome:
    """One raw (as logged, not oriented) sequence through one rule.

    Args:
        values: the monitored metric at each evaluation, as logged; NaN/inf allowed.
        rule: a registered rule name (`logsage rules`).
        params: the rule's parameters (strings or Python values; unknown ones raise
            RuleConfigError); `min_evals` / `min_steps` are applied here.
        mode: "min" or "max": the values are negated for "max" before the rule sees them.
        steps: the global step of each evaluation (default 0..n-1).
        train_steps, train_values: the training-loss series (for Prechelt's PQ).
        budget_steps: the run's max_steps (for rules that use training progress).
        extra: other series for multi-metric rules, name -> values or (values, mode),
            raw and at the same steps; the mode defaults from the name.
        per_example: step -> per-example eval losses (the significance rule).

    Returns:
        The rule's `Outcome` (0-based stop_index / best_index into `values`).
    """
    info = get_rule(rule)
    resolved = resolve_params(info, dict(params or {}))
    raw = np.asarray(values, dtype=np.float64)
    st = np.arange(raw.size, dtype=np.int64) if steps is None else np.asarray(steps, dtype=np.int64)
    if st.shape != raw.shape:
        raise RuleConfigError(f"steps ({st.size}) and values ({raw.size}) differ in length")
    extra_oriented: dict[str, tuple[np.ndarray, str]] = {}
    for name, v in (extra or {}).items():
        if isinstance(v, tuple):
            arr, m = v
        else:
            arr, m = v, default_mode(name)
        extra_oriented[name] = (orient(arr, m), m)
    x = RuleInput(
        values=orient(raw, mode), steps=st, mode=check_mode(mode), metric=metric, raw_values=raw,
        epochs=None if epochs is None else np.asarray(epochs, dtype=np.float64),
        train_steps=None if train_steps is None else np.asarray(train_steps, dtype=np.int64),
        train_values=None if train_values is None else np.asarray(train_values, dtype=np.float64),
        budget_steps=budget_steps, budget_epochs=budget_epochs, extra=extra_oriented,
        per_example={step: dict(losses) for step, losses in (per_example or {}).items()},
        not_before=not_before(st, resolved["min_evals"], resolved["min_steps"]),
    )
    return run_rule(info, x, resolved, where="the sequence")


# ====================================================================== rules x grid
def expand_rules(rules: Iterable[RuleSpec], grid: Mapping[str, Sequence[Any]] | None = None
                 ) -> list[tuple[RuleInfo, dict[str, Any]]]:
    """Validated (rule, every parameter) pairs for the asked specs and grid.

    "all" expands to every registered rule with its defaults. A grid key applies to
    every asked rule that has that parameter (its own, an alias, or min_evals /
    min_steps); a key no asked rule has, or one a spec already sets (which of the two
    values was meant?), is a RuleConfigError. Identical (rule, parameters) pairs are
    kept once.
    """
    asked: list[tuple[RuleInfo, dict[str, Any]]] = []
    for spec in rules:
        if isinstance(spec, tuple):
            name, given = spec[0], dict(spec[1])
        else:
            name, given = parse_rule_spec(str(spec))
        if name == "all":
            if given:
                raise RuleConfigError(f"'all' takes no parameters (got {spec!r}); use --grid to vary parameters")
            asked.extend((info, {}) for info in list_rules())
        else:
            asked.append((get_rule(name), given))
    if not asked:
        raise RuleConfigError("no rule asked; give --rule NAME (see `logsage rules`) or --rule all")
    grid = {k: list(v) for k, v in (grid or {}).items()}
    for key, vals in grid.items():
        if not vals:
            raise RuleConfigError(f"grid parameter {key!r} has no values; write e.g. --grid {key}=1,2,3")
        if not any(has_param(info, key) for info, _ in asked):
            names = sorted({info.name for info, _ in asked})
            raise RuleConfigError(f"grid parameter {key!r} is not a parameter of {', '.join(names)}; "
                                  "see `logsage rules` for each rule's parameters")
    out: list[tuple[RuleInfo, dict[str, Any]]] = []
    seen: set[str] = set()
    for info, given in asked:
        keys = [k for k in grid if has_param(info, k)]
        for combo in itertools.product(*(grid[k] for k in keys)):
            merged = dict(given)
            for k, v in zip(keys, combo):
                canonical = info.aliases.get(k, k)
                clash = [g for g in merged if info.aliases.get(g, g) == canonical]
                if clash:
                    raise RuleConfigError(f"rule {info.name} sets {clash[0]} and the grid sweeps {k}; "
                                          "drop one of them")
                merged[k] = v
            params = resolve_params(info, merged)
            key = scoring.params_key(info.name, params)
            if key not in seen:
                seen.add(key)
                out.append((info, params))
    return out


def describe_rules(name: str | None = None) -> list[dict[str, Any]]:
    """Every registered rule (or the one named) as a JSON-ready dict: name, summary, reference,
    exact (the library whose semantics it reproduces), needs, aliases and params (name, type,
    default, help, choices). What `logsage rules --json` prints."""
    infos = [get_rule(name)] if name else list_rules()
    return [{
        "name": info.name,
        "summary": info.summary,
        "reference": info.reference,
        "exact": info.exact,
        "needs": list(info.needs),
        "aliases": dict(info.aliases),
        "params": [{
            "name": p.name,
            "type": p.type.__name__,
            # A NaN default means "unset" (e.g. threshold's target): JSON null.
            "default": None if isinstance(p.default, float) and not math.isfinite(p.default) else p.default,
            "help": p.help,
            **({"choices": list(p.choices)} if p.choices else {}),
        } for p in info.params],
    } for info in infos]


def _unreplayable(path: str, pairs: list[tuple[RuleInfo, dict[str, Any]]], message: str,
                  metric: str | None, mode: str | None) -> list[Decision]:
    return [Decision(run=path, rule=info.name, params=dict(params), metric=metric, mode=mode,
                     stop_step=None, stop_eval_index=None, selected_step=None, selected_value=None,
                     best_step=None, best_value=None, best_saved_step=None, best_saved_value=None,
                     regret=None, regret_rel=None, regret_scaled=None, steps_saved=None, fraction_saved=None,
                     wall_saved_s=None,
                     stopped_before_best=None, trend_slope=None, trend_p=None, overfit_gap=None,
                     decidable=False, reason=message) for info, params in pairs]


def _outcomes(ctx: RunContext, info: RuleInfo, param_sets: list[dict[str, Any]]) -> list[Outcome]:
    """The rule's outcome for each parameter set on one run, by its reference scan."""
    out = []
    for params in param_sets:
        x = dataclasses.replace(ctx.x, not_before=not_before(ctx.steps, params["min_evals"], params["min_steps"]))
        out.append(run_rule(info, x, params, where=ctx.history.path))
    return out


def _check_engine(engine: str) -> None:
    if engine not in ("auto", "scan", "sweep"):
        raise RuleConfigError(f"engine must be auto, scan or sweep, got {engine!r}")


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection while decisions are built: they hold no cycles, and a big
    grid allocates enough objects to trigger full collections again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def replay(histories: Sequence[History], rules: Iterable[RuleSpec], *, metric: str | None = None,
           mode: str | None = None, grid: Mapping[str, Sequence[Any]] | None = None,
           engine: str = "auto") -> ReplayResult:
    """Replay each history through each rule and parameter set; score every decision.

    Args:
        histories: runs as `load_history` returns them.
        rules: specs like "hf:patience=3" or ("hf", {"patience": 3}); "all" is every rule
            with its defaults.
        metric: the monitored metric (source name or canonical alias); default: each run's
            primary eval metric.
        mode: "min" or "max"; default: from the metric's name.
        grid: parameter -> values, expanded as a cartesian product for every asked rule
            that has the parameter.
        engine: "auto" (sweep engine for hf/patience when a rule has many parameter sets),
            "scan" (the reference path: every rule's own scan and the per-decision
            scorer, one (run, parameter set) at a time) or "sweep" (always the sweep
            where supported); the results are identical.

    Raises:
        RuleConfigError: an unknown rule or parameter, or a value of the wrong type.
        UsageError: `mode` is not "min" or "max".
    """
    if mode is not None:
        check_mode(mode)
    _check_engine(engine)
    pairs = expand_rules(rules, grid)
    with _gc_paused():
        return _result(_replay_many(list(histories), pairs, metric, mode, engine), pairs, list(histories))


def _result(per_run: list[PerRun], pairs: list, histories: list[History]) -> ReplayResult:
    """The result from each run's (decisions - one per pair, in pair order: a list, or (False,
    [(pair indices, RunSegment), ...]) to be built when read -, their summary stats when the
    scorer kept them, error entry).

    Stats are (ids, columns): decision j of the run has row ids[j] of the columns (the
    `scoring.STAT_FIELDS` as arrays, `select.table_columns`; many decisions share one row).
    Every run holds one decision per pair and pairs are distinct (rule, parameters), so the
    summary's groups are the pairs, in order, and it is computed on (runs x pairs) arrays
    gathered from the columns.
    """
    blocks: list[tuple[bool, RunBlock]] = [ds if isinstance(ds, tuple) else (True, list(ds)) for ds, _, _ in per_run]

    def prepare() -> None:
        """Trend and gap at every run's distinct stops in one vectorized pass, before every decision is built."""
        by_ctx: dict[int, tuple[RunContext, set[int]]] = {}
        for built, block in blocks:
            if built:
                continue
            for _, seg in block:
                if isinstance(seg, RunSegment) and seg.ctx is not None:  # a BuiltSegment is scored already
                    by_ctx.setdefault(id(seg.ctx), (seg.ctx, set()))[1].update(seg.horizons)
        if by_ctx:
            fill_trend_and_gap([c for c, _ in by_ctx.values()], [sorted(h) for _, h in by_ctx.values()])

    decisions = Decisions(blocks, len(pairs), prepare)
    errors = [e for _, _, e in per_run if e]
    if not len(decisions):
        return ReplayResult(decisions=decisions, summary=[], errors=errors, histories=histories)
    parts: list[dict[str, np.ndarray]] = []
    ids = np.empty((len(per_run), len(pairs)), dtype=np.int64)
    offset = 0
    for r, (ds, stats, _) in enumerate(per_run):
        if stats is None:
            run_ids, cols = np.arange(len(ds)), table_columns(list(map(STAT_GETTER, ds)))
        else:
            run_ids, cols = stats
        ids[r] = run_ids + offset
        offset += len(cols["decidable"])
        parts.append(cols)
    col = {k: np.concatenate([c[k] for c in parts])[ids] for k in parts[0]}
    summary = scoring.summarize_columns(
        [(info.name, params) for info, params in pairs], col["decidable"], col["regret"], col["regret_rel"],
        col["fraction_saved"], col["stopped_before_best"], col["stopped"], regret_scaled=col["regret_scaled"])
    return ReplayResult(decisions=decisions, summary=summary, errors=errors, histories=histories)


def _replay_many(histories: list[History], pairs: list[tuple[RuleInfo, dict[str, Any]]], metric: str | None,
                 mode: str | None, engine: str) -> list[PerRun]:
    """(decisions in the order asked, their summary stats or None (see `_result`), error entry or
    None) for each run.

    "scan" takes the reference path run by run (`_replay_one`). Otherwise each rule with a
    sweep form and enough parameter sets is swept over all runs at once
    (`sweep.batch_outcomes`), other rules run their scans, and each run's decisions for one
    rule are scored together (`score_many`).
    """
    if engine == "scan":
        return [(ds, None, error) for ds, error in (_replay_one(h, pairs, metric, mode) for h in histories)]
    from logsage.decide import sweep
    results: list[PerRun | None] = [None] * len(histories)
    ctxs: dict[int, RunContext] = {}
    for i, history in enumerate(histories):
        try:
            ctxs[i] = prepare_run(history, metric, mode)
        except LogsageError as e:
            results[i] = (_unreplayable(history.path, pairs, str(e), metric, mode), None,
                          {"run": history.path, "error": str(e)})
    by_rule: dict[str, tuple[RuleInfo, list[int]]] = {}
    for j, (info, _) in enumerate(pairs):
        by_rule.setdefault(info.name, (info, []))[1].append(j)
    # 1. Every rule's outcomes on every run: (stop, best, decidable, reasons) per run.
    plans: list[tuple[RuleInfo, list[int], list[dict[str, Any]], dict[int, Any]]] = []
    for info, idx in by_rule.values():
        param_sets = [pairs[j][1] for j in idx]
        per_run: dict[int, Any] = {}
        use_sweep = engine == "sweep" or len(param_sets) >= SWEEP_MIN_PARAM_SETS
        if use_sweep and sweep.supports(info.name):
            runs = [i for i, ctx in ctxs.items() if _missing_input(info, ctx.x, ctx.history.path) is None]
            if runs:
                batch = sweep.batch_outcomes(info.name, [ctxs[i].x for i in runs], param_sets)
                for r, i in enumerate(runs):  # reasons are worded when the run is scored
                    per_run[i] = (batch.stop[r], batch.best[r], batch.decidable[r], functools.partial(batch.reasons, r))
        for i, ctx in ctxs.items():
            if i not in per_run:
                per_run[i] = _outcome_arrays(info.name, _outcomes(ctx, info, param_sets), len(ctx.steps))
        plans.append((info, idx, param_sets, per_run))
    # 3. Score: one run and one rule at a time (the Decision objects are built when first read).
    # Per run: its segments, the row of its summary columns for each pair, the columns per segment.
    slots: dict[int, tuple[Segments, np.ndarray, list[dict[str, np.ndarray]]]] = {
        i: ([], np.empty(len(pairs), dtype=np.int64), []) for i in ctxs}
    for info, idx, param_sets, per_run in plans:
        for i, (stop, best, decidable, reasons) in per_run.items():
            segs, ids, parts = slots[i]
            seg, row_ids, cols = score_many(ctxs[i], info.name, param_sets, stop, best, decidable, reasons)
            ids[idx] = row_ids + sum(len(c["decidable"]) for c in parts)
            parts.append(cols)
            segs.append((idx, seg))
    for i, (segs, ids, parts) in slots.items():
        results[i] = ((False, segs), (ids, {k: np.concatenate([c[k] for c in parts]) for k in parts[0]}), None)
    done = [r for r in results if r is not None]
    assert len(done) == len(results)  # every run was either prepared (and scored just above) or failed to prepare
    return done


def _outcome_arrays(rule: str, outs: list[Outcome], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Outcomes as (stop, best, decidable) arrays (-1 for None) and their reasons."""
    for o in outs:
        if o.stop_index is not None and not (0 <= o.stop_index < n):
            raise AssertionError(f"rule {rule} returned stop index {o.stop_index} outside 0..{n - 1}")
    stop = np.array([-1 if o.stop_index is None else o.stop_index for o in outs], dtype=np.int64)
    best = np.array([-1 if o.best_index is None else o.best_index for o in outs], dtype=np.int64)
    decidable = np.array([bool(o.decidable) for o in outs], dtype=bool)
    return stop, best, decidable, [o.reason for o in outs]


def _replay_one(history: History, pairs: list[tuple[RuleInfo, dict[str, Any]]], metric: str | None,
                mode: str | None) -> tuple[list[Decision], dict | None]:
    """The reference path for one run: each rule's own scan per parameter set, `score_one` per decision."""
    try:
        ctx = prepare_run(history, metric, mode)
    except LogsageError as e:
        return _unreplayable(history.path, pairs, str(e), metric, mode), {"run": history.path, "error": str(e)}
    by_rule: dict[str, tuple[RuleInfo, list[int]]] = {}
    for i, (info, _) in enumerate(pairs):
        by_rule.setdefault(info.name, (info, []))[1].append(i)
    outcomes: dict[int, Outcome] = {}  # pair index -> its outcome (by_rule covers every pair)
    for info, idx in by_rule.values():
        for i, outcome in zip(idx, _outcomes(ctx, info, [pairs[i][1] for i in idx])):
            outcomes[i] = outcome
    return [score_one(ctx, info.name, params, outcomes[i]) for i, (info, params) in enumerate(pairs)], None


def replay_paths(paths: Sequence[str | os.PathLike], rules: Iterable[RuleSpec], *, metric: str | None = None,
                 mode: str | None = None, grid: Mapping[str, Sequence[Any]] | None = None,
                 format: str | None = None, use_cache: bool = True,
                 cache_dir: str | os.PathLike | None = None, engine: str = "auto") -> ReplayResult:
    """Load each path as one run (`load_history`) and `replay` them; a path that cannot be
    read becomes an entry in `errors` (and undecidable decisions), never an abort.

    Rules, grid and mode are validated before any file is read.
    """
    from logsage.ingest import load_histories

    if mode is not None:
        check_mode(mode)
    _check_engine(engine)
    pairs = expand_rules(rules, grid)  # fail fast on a bad rule, before reading anything
    histories, errors = load_histories(paths, format=format, use_cache=use_cache, cache_dir=cache_dir)
    # Back in the order the paths were given: each path is either the next error or the next history.
    pending_errors, next_history = list(errors), iter(histories)
    loaded: list[History | tuple[str, str]] = []
    for p in paths:
        if pending_errors and pending_errors[0]["run"] == str(p):
            e = pending_errors.pop(0)
            loaded.append((e["run"], e["error"]))
        else:
            loaded.append(next(next_history))
    with _gc_paused():
        replayed = iter(_replay_many(histories, pairs, metric, mode, engine))
        per_run = [next(replayed) if isinstance(h, History) else
                   (_unreplayable(h[0], pairs, h[1], metric, mode), None, {"run": h[0], "error": h[1]})
                   for h in loaded]
        return _result(per_run, pairs, histories)
