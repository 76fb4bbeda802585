"""Tune: learn which stopping rule (and parameters) to use next time from a set of past runs.

    >>> from logsage.analysis.tune import tune
    >>> result = tune(histories, metric="eval_loss")                 # every rule x its default grid
    >>> result.recommendation                                         # {"rule", "params", "spec", "objective", ...}
    >>> result.leave_one_run_out["regret"]["mean"]                    # the honest estimate
    >>> result.to_dict()                                              # what `logsage tune --json` prints

What it does, in order:

1. **Runs.** Each history is checked for the metric and for at least `MIN_EVALS`
   evaluations with a finite value; the others are listed in `excluded` with the reason.
2. **Candidates.** Every asked rule (default: every registered rule) expanded over its
   declared default grid (`@rule(..., grid=...)` in its module) or the user's `grid`, plus
   the common defaults, the baseline and the learned default (`recommended`), so the search
   always contains them. Rules that need a value of the user's own (threshold, multi) are
   searched only when it is given; the whole search leaves them out with a note.
3. **Scores** (`logsage.analysis.scores`): every candidate on every run under the
   `--save-all` contract, with the scale-free regret |kept - best| / |first - best| (the
   share of the achievable improvement given up), the relative and absolute regret beside
   it, the fraction of steps saved, and what the checkpoints on disk allow reported apart.
4. **Objective** (`logsage.analysis.objectives`): by default the lowest mean regret among
   the rules that save at least as much as the baseline (HF patience 3, threshold 1e-4),
   or plainly the baseline when nothing beats it; an exchange rate or a constraint on
   request. The output names the objective that chose.
5. **Leave-one-run-out** (`logsage.analysis.validation`): tune on all runs but one, score
   the choice on the one left out, for every run, in time linear in the runs. With fewer
   than 3 runs only the in-sample figures are given.
6. **Comparison** (`logsage.analysis.comparison`) with the baseline, the learned default and
   the common defaults on the same runs (no tuning, so in-sample is honest for them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from shlex import quote as shell_quote  # a hint the user pastes: ';' must not split it
from typing import Any, Mapping, Sequence

import numpy as np

from logsage.analysis.comparison import comparison_rows, judged_text, partly_judged, run_message, without_run
from logsage.analysis.cost import CostModel
from logsage.analysis.objectives import (
    DEFAULT_BASELINE,
    DEFAULT_OBJECTIVE,
    Objective,
    choose,
    parse_objective,
)
from logsage.analysis.scores import Scores, block, score
from logsage.analysis.validation import leave_one_out
from logsage.core.errors import LogsageError, RuleConfigError
from logsage.core.history import History, json_safe
from logsage.rules.base import common_defaults, default_grids, has_param, rule_spec, user_value_rules

# A run needs this many evaluations (with at least one finite value) to teach anything.
MIN_EVALS = 3

# Each rule declares its default search grid, the value of the user's own it needs when no
# default fits every run (threshold's target, multi's metrics), and the common defaults people
# run with it (`@rule(..., grid=, needs_value=, common=)` in its module); these tables are
# derived from those declarations. Parameters a grid does not name keep the rule's own default.
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = default_grids()
USER_VALUE_RULES: dict[str, str] = user_value_rules()  # rule -> an example of the value it needs
# The defaults people actually run, compared with the recommendation in one table: (label, rule, parameters).
COMMON_DEFAULTS: list[tuple[str, str, dict[str, Any]]] = [(c.label, c.rule, dict(c.params))
                                                          for c in common_defaults()]
# The learned default (`--rule recommended`) is compared too, under this label.
LEARNED_LABEL = "learned default (--rule recommended)"


# ====================================================================== result
@dataclass
class TuneResult:
    """What `tune` found; `to_dict()` is the JSON `logsage tune --json` prints."""

    objective: Objective
    metric: str | None
    mode: str | None
    recommendation: dict[str, Any] | None
    in_sample: dict[str, Any] | None
    leave_one_run_out: dict[str, Any]
    comparison: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    excluded: list[dict[str, Any]]  # run, reason (str); "unreadable": True for a run no reader could read
    runs: list[str]
    cost: CostModel
    notes: list[str] = field(default_factory=list)
    histories: list[History] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "objective": self.objective.to_dict(),
            "metric": self.metric,
            "mode": self.mode,
            "runs": self.runs,
            "recommendation": self.recommendation,
            "in_sample": self.in_sample,
            "leave_one_run_out": self.leave_one_run_out,
            "comparison": self.comparison,
            "excluded": self.excluded,
            "cost": self.cost.to_dict(),
            "n_candidates": len(self.candidates),
            "candidates": self.candidates,
            "notes": self.notes,
        })


# ====================================================================== the search
def _check_runs(histories: Sequence[History], metric: str | None, mode: str | None, min_evals: int
                ) -> tuple[list[History], list[dict[str, Any]]]:
    """(usable runs, excluded runs with the reason)."""
    from logsage.core.objective import resolve_objective

    keep: list[History] = []
    excluded: list[dict[str, Any]] = []
    for h in histories:
        try:
            obj = resolve_objective(h, metric, mode)
        except LogsageError as e:
            excluded.append({"run": h.path, "reason": without_run(h.path, str(e))})
            continue
        s = h.series[obj.metric]
        n_finite = int(np.isfinite(s.values).sum())
        if len(s) < min_evals or n_finite == 0:
            what = f"{len(s)} evaluation(s)" + (f", {n_finite} finite" if n_finite < len(s) else "")
            excluded.append({"run": h.path, "reason": f"too short: {obj.metric} has {what}; tune needs at least "
                                                      f"{min_evals} with a finite value"})
            continue
        keep.append(h)
    return keep, excluded


def _candidate_pairs(rules: Sequence[str | tuple[str, Mapping[str, Any]]] | None,
                     grid: Mapping[str, Sequence[Any]] | None, notes: list[str]) -> list[tuple[str, dict]]:
    """(rule, full parameters) for every candidate, in search order, without duplicates."""
    from logsage.decide.engine import expand_rules
    from logsage.rules.base import get_rule, list_rules, parse_rule_spec
    from logsage.decide.scoring import params_key

    specs: list[tuple[str, dict, bool]] = []  # (rule, given parameters, brought in by `all`)
    for spec in (rules or ["all"]):
        name, given = (spec[0], dict(spec[1])) if isinstance(spec, tuple) else parse_rule_spec(str(spec))
        if name == "all":
            if given:
                raise RuleConfigError(f"'all' takes no parameters (got {spec!r}); use --grid to vary parameters")
            # the learned default is a pointer to another candidate: compared, not searched twice
            specs.extend((info.name, {}, True) for info in list_rules() if info.name != "recommended")
        else:
            get_rule(name)  # unknown names fail here, before any work
            specs.append((name, given, False))
    user_grid = {k: list(v) for k, v in (grid or {}).items()}
    for key, vals in user_grid.items():
        if not vals:
            raise RuleConfigError(f"grid parameter {key!r} has no values; write e.g. --grid {key}=1,2,3")
        if not any(has_param(get_rule(n), key) for n, _, _ in specs):
            raise RuleConfigError(f"grid parameter {key!r} is not a parameter of "
                                  f"{', '.join(sorted({n for n, _, _ in specs}))}; see `logsage rules`")
    pairs: list[tuple[str, dict]] = []
    seen: set[str] = set()

    def add(name: str, given: dict, g: dict) -> None:
        for info, params in expand_rules([(name, given)], g or None):
            key = params_key(info.name, params)
            if key not in seen:
                seen.add(key)
                pairs.append((info.name, params))

    for name, given, from_all in specs:
        info = get_rule(name)
        example = USER_VALUE_RULES.get(name)
        needed = example.partition("=")[0] if example else None
        if needed is not None and needed not in {info.aliases.get(k, k) for k in (*given, *user_grid)}:
            if not from_all:
                raise RuleConfigError(f"rule {name} needs {needed}=... to be tuned (no default fits every run); give "
                                      f"it, e.g. --rule {shell_quote(f'{name}:{example}')}, or search values with "
                                      f"--grid {needed}=...")
            note = (f"rule {name} not searched: it needs {needed}=..., a value of your own (no default fits "
                    f"every run); give it, e.g. --rule {shell_quote(f'{name}:{example}')}, or search values with "
                    f"--grid {needed}=...")
            if note not in notes:
                notes.append(note)
            continue
        if user_grid:
            g = {k: v for k, v in user_grid.items() if has_param(info, k)}
        else:
            given_names = {info.aliases.get(k, k) for k in given}
            g = {k: v for k, v in DEFAULT_GRIDS.get(name, {}).items()
                 if has_param(info, k) and info.aliases.get(k, k) not in given_names}
        add(name, given, g)
    if any(from_all for _, _, from_all in specs):
        # the whole search: make sure the common defaults are among the candidates
        for name, params in _default_pairs(notes):
            add(name, params, {})
    return pairs


def _default_pairs(notes: list[str] | None = None) -> list[tuple[str, dict]]:
    """The common defaults (rule, given parameters) whose rules are registered."""
    from logsage.rules.base import get_rule

    out = []
    for label, name, params in COMMON_DEFAULTS:
        try:
            get_rule(name)
        except RuleConfigError:
            if notes is not None:
                notes.append(f"common default {label!r} skipped: rule {name!r} is not available")
            continue
        out.append((name, dict(params)))
    return out


def _with_defaults(pairs: list[tuple[str, dict]], extra: Sequence[tuple[str, dict]] = ()) -> list[tuple[str, dict]]:
    """The candidates followed by the common defaults, the baseline and the learned default not among
    them (compared, never chosen)."""
    from logsage.decide.engine import expand_rules
    from logsage.decide.scoring import params_key

    seen = {params_key(n, p) for n, p in pairs}
    out = list(pairs)
    for name, params in [*_default_pairs(), *extra]:
        (info, full), = expand_rules([(name, params)])
        if params_key(info.name, full) not in seen:
            seen.add(params_key(info.name, full))
            out.append((info.name, full))
    return out

def _extra_pairs(baseline: str, notes: list[str]) -> list[tuple[str, dict]]:
    """The baseline and the learned default, as (rule, given parameters), compared but never searched."""
    from logsage.rules.base import get_rule, parse_rule_spec

    name, given = parse_rule_spec(baseline)
    get_rule(name)
    out = [(name, given)]
    try:
        get_rule("recommended")
        out.append(("recommended", {}))
    except RuleConfigError:  # pragma: no cover - the learned default ships with the package
        notes.append("the learned default (--rule recommended) is not available")
    return out


def _index(pairs: list[tuple[str, dict]], name: str, params: Mapping[str, Any]) -> int:
    from logsage.decide.engine import expand_rules
    from logsage.decide.scoring import params_key

    (info, full), = expand_rules([(name, dict(params))])
    key = params_key(info.name, full)
    return next(c for c, (n, p) in enumerate(pairs) if params_key(n, p) == key)


def _candidate_row(sc: Scores, specs: list[str], pairs: list[tuple[str, dict]], eligible: np.ndarray,
                   c: int) -> dict[str, Any]:
    from logsage.analysis.scores import summary

    row = {"rule": pairs[c][0], "params": pairs[c][1], "spec": specs[c], "eligible": bool(eligible[c]),
           **summary(sc, c)}
    row.pop("on_disk")
    return row


def _figures(sc: Scores, c: int) -> dict[str, Any]:
    """In-sample figures of candidate c over every run, with its decision on each run."""
    from logsage.analysis.scores import summary

    n = sc.shape[1]
    per_run: list[dict[str, Any]] = []
    for r in range(n):
        per_run.append({"run": sc.runs[r], "regret": _nan_none(sc.regret[c, r]),
                        "regret_rel": _nan_none(sc.regret_rel[c, r]), "regret_abs": _nan_none(sc.regret_abs[c, r]),
                        "fraction_saved": _nan_none(sc.saved[c, r]), "stop_step": _int_none(sc.stop_step[c, r]),
                        "kept_step": _int_none(sc.kept_step[c, r]),
                        "stopped_before_best": None if np.isnan(sc.before[c, r]) else bool(sc.before[c, r]),
                        "disk_regret": _nan_none(sc.disk_regret[c, r]),
                        "hours_saved": _nan_none(sc.hours[c, r]), "gpu_hours_saved": _nan_none(sc.gpu_hours[c, r]),
                        "money_saved": _nan_none(sc.money[c, r])})
    s = summary(sc, c)
    before = sc.before[c][~np.isnan(sc.before[c])]
    return {
        "n_runs": n,
        "regret": block([p["regret"] for p in per_run]),
        "regret_rel": block([p["regret_rel"] for p in per_run]),
        "saved": block([p["fraction_saved"] for p in per_run]),
        "stopped_before_best_rate": float(before.mean()) if before.size else None,
        "gpu_hours_saved": s["gpu_hours_saved"], "money_saved": s["money_saved"],
        "on_disk": s["on_disk"],
        "per_run": per_run,
    }


def _nan_none(v: float) -> float | None:
    return None if np.isnan(v) else float(v)


def _int_none(v: float) -> int | None:
    return None if np.isnan(v) else int(v)


def tune(histories: Sequence[History], *, rules: Sequence[str | tuple[str, Mapping[str, Any]]] | None = None,
         grid: Mapping[str, Sequence[Any]] | None = None, metric: str | None = None, mode: str | None = None,
         objective: str | Objective | None = None, baseline: str | None = None, cost: CostModel | None = None,
         min_evals: int = MIN_EVALS, progress: bool = False) -> TuneResult:
    """Search rules x parameter grids over past runs and recommend one by an explicit objective.

    Args:
        histories: past runs as `load_history` returns them.
        rules: rule specs to search ("hf", "hf:threshold=0", ("gl", {})...); default: every
            registered rule over its declared default grid, plus the common defaults.
            A spec's own parameters stay fixed; the rest of its default grid varies.
        grid: parameter -> values, replacing the default grids for every asked rule that
            has the parameter.
        metric, mode: the monitored metric and its direction (default: each run's eval loss).
        objective: see `logsage.analysis.objectives` (default `beat-baseline`).
        baseline: the rule spec the default objective must beat (default HF patience 3, threshold 1e-4).
        cost: GPUs / price / run hours for the cost columns (default: 1 GPU, no price).
        min_evals: runs with fewer evaluations are excluded (listed, with the reason).
        progress: a progress bar on stderr while the runs are replayed.

    Raises:
        RuleConfigError: an unknown rule, parameter or grid key, or a bad baseline.
        UsageError: a bad objective or mode.
    """
    from logsage.core.objective import check_mode

    if mode is not None:
        check_mode(mode)
    obj = parse_objective(objective, baseline)
    cost = cost or CostModel()
    notes: list[str] = []
    pairs = _candidate_pairs(rules, grid, notes)
    extra = _extra_pairs(obj.baseline, notes)
    included, excluded = _check_runs(histories, metric, mode, min_evals)
    runs = [h.path for h in included]
    empty_loo = {"available": False, "n_runs": len(included),
                 "reason": f"with {len(included)} usable run(s) no honest estimate is possible: "
                           "leave-one-run-out needs at least 3 runs; the figures above are in-sample only"}
    if not included:
        notes.append("no usable run: nothing to tune on (see `excluded`)")
        return TuneResult(obj, metric, mode, None, None, empty_loo, [], [], excluded, runs, cost, notes)

    n_candidates = len(pairs)
    pairs = _with_defaults(pairs, extra)
    specs = [rule_spec(n, p) for n, p in pairs]
    sc = score(included, pairs, metric=metric, mode=mode, cost=cost, progress=progress)
    metric_used = next(iter(sc.metrics)) if len(sc.metrics) == 1 else metric
    mode_used = next(iter(sc.modes)) if len(sc.modes) == 1 else mode
    base = _index(pairs, *extra[0])
    usable = sc.decided & ~np.isnan(sc.saved)
    eligible = usable.all(axis=1)
    with np.errstate(invalid="ignore"):
        mean_reg = np.where(usable, sc.regret, 0.0).sum(axis=1) / len(included)
        mean_sav = np.where(usable, sc.saved, 0.0).sum(axis=1) / len(included)
        p90 = np.array([np.percentile(sc.regret[c][usable[c]], 90) if usable[c].any() else np.nan
                        for c in range(len(pairs))])
    candidates = [_candidate_row(sc, specs, pairs, eligible, c) for c in range(n_candidates)]
    best, feasible = choose(obj, eligible, mean_reg, p90, mean_sav, base, n_candidates)
    recommendation = None
    in_sample = None
    if best is None:
        notes.append("no candidate could judge every run (each needs an input some run lacks); no recommendation")
    else:
        name, params = pairs[best]
        beats = bool(mean_reg[best] < mean_reg[base] - 1e-12) if eligible[base] else None
        recommendation = {"rule": name, "params": params, "spec": specs[best], "objective": obj.spec,
                          "chosen_by": obj.describe(), "feasible": feasible, "baseline": specs[base],
                          "beats_baseline": beats}
        if obj.kind == "beat-baseline" and not beats:
            recommendation["note"] = (f"nothing beats the baseline {specs[base]} on these runs: no rule saving at "
                                      "least as many steps loses less of the achievable improvement")
        elif not feasible:
            recommendation["note"] = "no candidate meets the constraint; this one comes closest"
        in_sample = _figures(sc, best)
    loo = (leave_one_out(obj, sc, pairs, specs, best, base, n_candidates) if len(included) >= 3 else empty_loo)
    rows = ([("recommended", best)] if best is not None else []) + [(f"baseline ({specs[base]})", base)]
    if len(extra) > 1:
        rows.append((LEARNED_LABEL, _index(pairs, *extra[1])))
    rows += [(label, _index(pairs, name, params)) for label, name, params in COMMON_DEFAULTS]
    comparison = comparison_rows(sc, specs, pairs, rows)
    for row in comparison:
        if LEARNED_LABEL in (row["label"], *row["also"]):
            from logsage.rules.recommended import learned, learned_spec

            row["learned"] = {"spec": learned_spec(), "tuned_on": learned().get("tuned_on"),
                              "leave_one_run_out": learned().get("leave_one_run_out")}
    return TuneResult(obj, metric_used, mode_used, recommendation, in_sample, loo, comparison, candidates,
                      excluded, runs, cost, notes, histories=list(included))


def tune_paths(paths: Sequence[str], *, format: str | None = None, use_cache: bool = True,
               cache_dir: str | None = None, **kwargs: Any) -> TuneResult:
    """Load each path as one run and `tune` them; a path that cannot be read is listed in
    `excluded` with its error (never an abort). Keyword arguments are `tune`'s.

    Rules, grid, baseline and objective are validated before any file is read.
    """
    from logsage.ingest import load_histories

    parse_objective(kwargs.get("objective"), kwargs.get("baseline"))
    _candidate_pairs(kwargs.get("rules"), kwargs.get("grid"), [])
    _extra_pairs(kwargs.get("baseline") or DEFAULT_BASELINE, [])
    histories, errors = load_histories(paths, format=format, use_cache=use_cache, cache_dir=cache_dir)
    unreadable = [{"run": e["run"], "reason": without_run(e["run"], e["error"]), "unreadable": True} for e in errors]
    result = tune(histories, **kwargs)
    if unreadable:
        order = {str(p): i for i, p in enumerate(paths)}
        result.excluded = sorted(result.excluded + unreadable, key=lambda e: order.get(e["run"], len(order)))
    return result


__all__ = ["COMMON_DEFAULTS", "DEFAULT_BASELINE", "DEFAULT_GRIDS", "DEFAULT_OBJECTIVE", "LEARNED_LABEL", "MIN_EVALS",
           "Objective", "TuneResult", "USER_VALUE_RULES", "judged_text", "parse_objective", "partly_judged",
           "run_message", "tune", "tune_paths", "without_run"]
