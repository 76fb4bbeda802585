"""Tune: learn which stopping rule (and parameters) to use next time from a set of past runs.

    >>> from logsage.analysis.tune import tune
    >>> result = tune(histories, metric="eval_loss")                 # every rule x its default grid
    >>> result.recommendation                                         # {"rule", "params", "objective", ...}
    >>> result.leave_one_run_out["regret"]["median"]                  # the honest estimate
    >>> result.to_dict()                                              # what `logsage tune --json` prints

What it does, in order:

1. **Runs.** Each history is checked for the metric and for at least `MIN_EVALS`
   evaluations with a finite value; the others are listed in `excluded` with the
   reason and left out (never silently dropped).
2. **Candidates.** Every asked rule (default: every registered rule) expanded over its
   grid - the default grid in `DEFAULT_GRIDS` below, or the user's `grid` for the
   parameters it names - plus, when no rule was asked, the common defaults of
   `COMMON_DEFAULTS`, so that the search always contains them. The rules of
   `USER_VALUE_RULES` (threshold, multi) need a value only the user knows and are
   searched only when it is given; the whole search leaves them out with a note. One
   `replay` call scores every candidate on every run (the sweep engine makes the
   hf/patience grids cheap).
3. **Objective** (`parse_objective`). `min-regret:min_saved=0.2` (the default):
   minimise the median relative regret over runs, subject to a mean fraction of steps
   saved of at least 0.2; ties (many candidates have a median regret of 0) go to the
   lower mean regret - the safer rule - then to the larger mean saving.
   `max-saved:max_regret=0.01`: maximise the median fraction of steps saved, subject to
   a median relative regret of at most 0.01; ties go to the lower median regret, then
   the larger mean saving, then the lower mean regret. Exact ties keep the earlier
   candidate (rules in the order asked, grids in their order). When no
   candidate meets the constraint the one closest to it wins, flagged `feasible: false`.
   A candidate that cannot judge one of the runs (a rule that needs a training loss the
   run lacks...) is not eligible on that set of runs.
4. **Leave-one-run-out.** For each run: tune on all the others, score the chosen
   candidate on the run left out. The median and spread (quartiles, min, max) of those
   held-out regrets and savings are the honest estimate of what the recommendation will
   do on the next run; the in-sample figures beside them show how much tuning on few
   runs flatters itself. With fewer than 3 runs no honest estimate is possible and only
   the in-sample figures are given.
5. **Comparison** with common defaults on the same runs (their figures involve no
   tuning, so in-sample is honest for them), and cost (`logsage.analysis.cost`) per candidate.
   A rule that cannot judge some runs (PQ on a run without a train loss) is shown with
   its figures over the runs it can judge and says how many ("39/40 runs", `n_decided`
   of `n_runs`, and `not_judged` with the reasons); it is never blank.

Regret is relative to the run's best value in hindsight (|selected - best| / |best|),
so runs with different metrics and scales can be pooled; a decision that stopped but
kept no usable checkpoint counts as infinite regret.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from logsage.analysis.cost import CostModel, decision_cost
from logsage.core.errors import LogsageError, RuleConfigError, UsageError
from logsage.core.history import History, json_safe

# A run needs this many evaluations (with at least one finite value) to teach anything:
# with fewer, no rule can stop before the end and still have something to compare with.
MIN_EVALS = 3

DEFAULT_OBJECTIVE = "min-regret:min_saved=0.2"

# Each rule's default search grid (rule name -> parameter -> values). Parameters not
# named keep the rule's own default. The choices, rule by rule:
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    # HF EarlyStoppingCallback: the patience and threshold values the guides use
    # (patience 1-8; threshold 0, the HF default, 1e-4 and 1e-3 as in the blog recipes).
    "hf": {"patience": [1, 2, 3, 5, 8], "threshold": [0.0, 1e-4, 1e-3]},
    # Lightning and Keras: the same patience range with their min_delta spelled their way;
    # Keras' own default patience 0 is included.
    "lightning": {"patience": [1, 2, 3, 5, 8], "min_delta": [0.0, 1e-4, 1e-3]},
    "keras": {"patience": [0, 1, 2, 3, 5, 8], "min_delta": [0.0, 1e-4, 1e-3]},
    # Plain patience (no-improvement counting), the same range.
    "patience": {"patience": [1, 2, 3, 5, 8], "min_delta": [0.0, 1e-4, 1e-3]},
    # Smoothed patience: the guide's window 3 and a wider 5, each with patience 2-5.
    "smoothed": {"window": [3, 5], "patience": [2, 3, 5]},
    # Adaptive (late-tightening) patience: the initial patience the guides try.
    "adaptive": {"patience": [3, 5, 7]},
    # Prechelt's GL_alpha with the alphas of his study (1, 2, 3, 5 percent).
    "gl": {"alpha": [1.0, 2.0, 3.0, 5.0]},
    # UP_s: s = 1..4 successive increases (Prechelt's best trade-offs were UP3/UP4), compared
    # at every evaluation (k=1) or at the end of strips of 5 as in his study (k=5).
    "up": {"s": [1, 2, 3, 4], "k": [1, 5]},
    # PQ_alpha: quotient thresholds around Prechelt's 0.5-0.75.
    "pq": {"alpha": [0.5, 0.75, 1.0, 2.0]},
    # Trend (slope) rule: the window the slope is fitted over and the significance level.
    "slope": {"window": [3, 5, 8], "alpha": [0.05, 0.1]},
    # Divergence guard: non-finite values only (ratio 0, its default), or a value 1.5, 2 or 3
    # times worse than the best so far. Its absolute `bound` is in the metric's units: the user's.
    "divergence": {"ratio": [0.0, 1.5, 2.0, 3.0]},
    # Significance (an improvement must pass a paired test on per-example eval losses, which
    # `logsage train` writes): the usual levels 0.01-0.1 with patience 1-5. Runs without
    # per-example losses cannot be judged by it, so it is eligible only on runs that have them.
    "significance": {"alpha": [0.01, 0.05, 0.1], "patience": [1, 2, 3, 5]},
    # No early stop: nothing to vary; it is the baseline (saves nothing, loses nothing).
    "none": {},
}

# Rules with no default grid, searched only when the user gives their values (rule name ->
# the parameter they need): a target value in the metric's own units, or which metrics to
# combine and how, belong to the user's runs, and no default could be right for all runs.
# `--rule all` (and the default search) leaves them out and says so in `notes`;
# `--rule threshold:target=0.8`, `--rule threshold --grid target=0.8,0.9` or `--rule all
# --grid target=...` searches them. Every registered rule is in DEFAULT_GRIDS or here.
USER_VALUE_RULES: dict[str, str] = {  # rule -> an example of the value it needs
    "threshold": "target=0.8",
    "multi": "metrics=eval_loss:min:0.7;eval_accuracy:max:0.3",
}

# The defaults people actually run, compared with the recommendation in one table:
# (label, rule, parameters).
COMMON_DEFAULTS: list[tuple[str, str, dict[str, Any]]] = [
    ("HF patience 3, threshold 1e-4 (blog recipe)", "hf", {"patience": 3, "threshold": 1e-4}),
    ("HF defaults (patience 1)", "hf", {}),
    ("Keras defaults (patience 0)", "keras", {}),
    ("Lightning defaults (patience 3)", "lightning", {}),
    ("no early stop", "none", {}),
    ("Prechelt GL (defaults)", "gl", {}),
    ("Prechelt PQ (defaults)", "pq", {}),
    ("Prechelt UP (defaults)", "up", {}),
]


# ====================================================================== objective
@dataclass(frozen=True)
class Objective:
    """What "best rule" means: `kind` is "min-regret" or "max-saved", with its constraint."""

    kind: str
    min_saved: float | None = None  # min-regret: mean fraction of steps saved must reach this
    max_regret: float | None = None  # max-saved: median relative regret must not exceed this

    @property
    def spec(self) -> str:
        if self.kind == "min-regret":
            return self.kind + (f":min_saved={self.min_saved:g}" if self.min_saved is not None else "")
        return self.kind + (f":max_regret={self.max_regret:g}" if self.max_regret is not None else "")

    def describe(self) -> str:
        """The objective in words, printed with every answer."""
        if self.kind == "min-regret":
            text = "minimise the median relative regret"
            if self.min_saved is not None:
                text += f" subject to a mean fraction of steps saved >= {self.min_saved:g}"
            return text
        text = "maximise the median fraction of steps saved"
        if self.max_regret is not None:
            text += f" subject to a median relative regret <= {self.max_regret:g}"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "min_saved": self.min_saved, "max_regret": self.max_regret,
                "description": self.describe()}


def parse_objective(spec: str | Objective | None) -> Objective:
    """Parse "min-regret:min_saved=0.2" or "max-saved:max_regret=0.01" (None: the default).

    Raises:
        UsageError: an unknown objective or constraint, or a value out of range.
    """
    if isinstance(spec, Objective):
        return spec
    text = (spec or DEFAULT_OBJECTIVE).strip()
    kind, _, rest = text.partition(":")
    kind = kind.strip()
    allowed = {"min-regret": "min_saved", "max-saved": "max_regret"}
    if kind not in allowed:
        raise UsageError(f"unknown objective {kind!r}; use min-regret[:min_saved=F] or max-saved[:max_regret=F], "
                         f"e.g. {DEFAULT_OBJECTIVE}")
    values: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        k = k.strip()
        if not eq or k != allowed[kind]:
            raise UsageError(f"objective {kind} takes {allowed[kind]}=F, got {part!r} in {text!r}")
        try:
            f = float(v)
        except ValueError:
            raise UsageError(f"objective {kind}: {k} must be a number, got {v.strip()!r}") from None
        if not (math.isfinite(f) and f >= 0) or (k == "min_saved" and f > 1):
            raise UsageError(f"objective {kind}: {k} must be {'in [0, 1]' if k == 'min_saved' else '>= 0'}, got {f:g}")
        values[k] = f
    return Objective(kind, **values)


# ====================================================================== scores matrix
@dataclass
class _Matrix:
    """Per candidate (rows) and run (columns): the numbers the objective and the tables need."""

    regret_rel: np.ndarray  # inf: stopped with nothing usable kept; nan: cannot judge
    regret: np.ndarray
    saved: np.ndarray  # fraction of steps saved
    before: np.ndarray  # 1.0 stopped before the hindsight best, 0.0 not, nan unknown
    decided: np.ndarray  # bool
    hours: np.ndarray  # hours saved, nan unknown
    gpu_hours: np.ndarray
    money: np.ndarray


def _relative(d: Any) -> float:
    if not d.decidable:
        return math.nan
    if d.regret_rel is not None:
        return float(d.regret_rel)
    if d.regret is not None:
        return 0.0 if d.regret == 0 else math.inf  # a best value of 0 exactly
    return math.inf  # stopped, but kept no finite evaluation with a whole checkpoint


def _build_matrix(decisions: list[list[Any]], histories: list[History], cost: CostModel) -> _Matrix:
    n_c, n_r = len(decisions), len(histories)
    m = _Matrix(*(np.full((n_c, n_r), np.nan) for _ in range(2)), np.full((n_c, n_r), np.nan),
                np.full((n_c, n_r), np.nan), np.zeros((n_c, n_r), dtype=bool),
                *(np.full((n_c, n_r), np.nan) for _ in range(3)))
    for c, row in enumerate(decisions):
        for r, d in enumerate(row):
            m.decided[c, r] = bool(d.decidable)
            m.regret_rel[c, r] = _relative(d)
            if d.decidable:
                m.regret[c, r] = math.inf if d.regret is None else d.regret
                m.saved[c, r] = np.nan if d.fraction_saved is None else d.fraction_saved
                m.before[c, r] = np.nan if d.stopped_before_best is None else float(d.stopped_before_best)
            dc = decision_cost(d, histories[r], cost)
            for arr, v in ((m.hours, dc.hours_saved), (m.gpu_hours, dc.gpu_hours_saved), (m.money, dc.money_saved)):
                if v is not None:
                    arr[c, r] = v
    return m


def _stats(m: _Matrix, cols: np.ndarray) -> dict[str, np.ndarray]:
    """Per candidate over the runs in `cols`: eligibility and the objective's numbers."""
    rel = m.regret_rel[:, cols]
    sav = m.saved[:, cols]
    eligible = m.decided[:, cols].all(axis=1) & ~np.isnan(rel).any(axis=1) & ~np.isnan(sav).any(axis=1)
    with np.errstate(invalid="ignore"):
        med_rel = np.median(rel, axis=1)
        mean_rel = np.mean(rel, axis=1)
        med_sav = np.median(sav, axis=1)
        mean_sav = np.mean(sav, axis=1)
    return {"eligible": eligible, "median_regret_rel": med_rel, "mean_regret_rel": mean_rel,
            "median_saved": med_sav, "mean_saved": mean_sav}


def _choose(obj: Objective, st: dict[str, np.ndarray], n_choosable: int) -> tuple[int | None, bool]:
    """Index of the best eligible candidate (among the first `n_choosable`) under the objective,
    and whether it meets the constraint."""
    idx = np.flatnonzero(st["eligible"][:n_choosable])
    if idx.size == 0:
        return None, False
    order = np.arange(len(st["eligible"]), dtype=float)  # earlier candidates win exact ties
    if obj.kind == "min-regret":
        bound = obj.min_saved if obj.min_saved is not None else -math.inf
        violation = np.maximum(bound - st["mean_saved"], 0.0)
        keys = (order, -st["mean_saved"], st["mean_regret_rel"], st["median_regret_rel"], violation)
    else:
        bound = obj.max_regret if obj.max_regret is not None else math.inf
        with np.errstate(invalid="ignore"):
            violation = np.where(np.isinf(st["median_regret_rel"]), math.inf,
                                 np.maximum(st["median_regret_rel"] - bound, 0.0))
        keys = (order, st["mean_regret_rel"], -st["mean_saved"], st["median_regret_rel"], -st["median_saved"],
                violation)
    # np.lexsort sorts by the LAST key first: constraint violation, then the primary score, then tie-breaks.
    ranked = idx[np.lexsort(tuple(k[idx] for k in keys))]
    best = int(ranked[0])
    return best, bool(violation[best] == 0)


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    if not finite:
        return {"q25": None, "q75": None, "min": None, "max": None}
    a = np.asarray(finite, dtype=float)
    with np.errstate(invalid="ignore"):
        return {"q25": float(np.percentile(a, 25)), "q75": float(np.percentile(a, 75)),
                "min": float(a.min()), "max": float(a.max())}


def _median(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.median(finite)) if finite else None


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else None


def _sum_known(values: np.ndarray) -> float | None:
    known = values[~np.isnan(values)]
    return float(known.sum()) if known.size else None


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
    excluded: list[dict[str, str]]
    runs: list[str]
    cost: CostModel
    notes: list[str] = field(default_factory=list)
    # For the report: the replay over the included runs (recommendation + defaults among its decisions).
    replay_result: Any = field(default=None, repr=False)
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
                ) -> tuple[list[History], list[dict[str, str]]]:
    """(usable runs, excluded runs with the reason)."""
    from logsage.core.objective import resolve_objective

    keep, excluded = [], []
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
    from logsage.replay.engine import _has_param, expand_rules
    from logsage.rules.base import get_rule, list_rules, parse_rule_spec
    from logsage.replay.scoring import params_key

    specs: list[tuple[str, dict, bool]] = []  # (rule, given parameters, brought in by `all`)
    for spec in (rules or ["all"]):
        name, given = (spec[0], dict(spec[1])) if isinstance(spec, tuple) else parse_rule_spec(str(spec))
        if name == "all":
            if given:
                raise RuleConfigError(f"'all' takes no parameters (got {spec!r}); use --grid to vary parameters")
            specs.extend((info.name, {}, True) for info in list_rules())
        else:
            get_rule(name)  # unknown names fail here, before any work
            specs.append((name, given, False))
    user_grid = {k: list(v) for k, v in (grid or {}).items()}
    for key, vals in user_grid.items():
        if not vals:
            raise RuleConfigError(f"grid parameter {key!r} has no values; write e.g. --grid {key}=1,2,3")
        if not any(_has_param(get_rule(n), key) for n, _, _ in specs):
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
                                      f"it, e.g. --rule {name}:{example}, or search values with --grid {needed}=...")
            note = (f"rule {name} not searched: it needs {needed}=..., a value of your own (no default fits "
                    f"every run); give it, e.g. --rule {name}:{example}, or search values with --grid {needed}=...")
            if note not in notes:
                notes.append(note)
            continue
        if user_grid:
            g = {k: v for k, v in user_grid.items() if _has_param(info, k)}
        else:
            given_names = {info.aliases.get(k, k) for k in given}
            g = {k: v for k, v in DEFAULT_GRIDS.get(name, {}).items()
                 if _has_param(info, k) and info.aliases.get(k, k) not in given_names}
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


def _with_defaults(pairs: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The candidates followed by the common defaults not among them (compared, never chosen)."""
    from logsage.replay.engine import expand_rules
    from logsage.replay.scoring import params_key

    seen = {params_key(n, p) for n, p in pairs}
    out = list(pairs)
    for name, params in _default_pairs():
        (info, full), = expand_rules([(name, params)])
        if params_key(info.name, full) not in seen:
            seen.add(params_key(info.name, full))
            out.append((info.name, full))
    return out


def tune(histories: Sequence[History], *, rules: Sequence[str | tuple[str, Mapping[str, Any]]] | None = None,
         grid: Mapping[str, Sequence[Any]] | None = None, metric: str | None = None, mode: str | None = None,
         objective: str | Objective | None = None, cost: CostModel | None = None,
         min_evals: int = MIN_EVALS) -> TuneResult:
    """Search rules x parameter grids over past runs and recommend one by an explicit objective.

    Args:
        histories: past runs as `load_history` returns them.
        rules: rule specs to search ("hf", "hf:threshold=0", ("gl", {})...); default: every
            registered rule, each over its `DEFAULT_GRIDS` entry, plus `COMMON_DEFAULTS`.
            A spec's own parameters stay fixed; the rest of its default grid varies.
        grid: parameter -> values, replacing the default grids for every asked rule that
            has the parameter.
        metric: the monitored metric (default: each run's primary eval metric).
        mode: "min" or "max" (default: from the metric's name).
        objective: see `parse_objective` (default `DEFAULT_OBJECTIVE`).
        cost: GPUs / price / run hours for the cost columns (default: 1 GPU, no price).
        min_evals: runs with fewer evaluations are excluded (listed, with the reason).

    Raises:
        RuleConfigError: an unknown rule, parameter or grid key.
        UsageError: a bad objective or mode.
    """
    from logsage.core.objective import check_mode
    from logsage.replay.engine import replay

    if mode is not None:
        check_mode(mode)
    obj = parse_objective(objective)
    cost = cost or CostModel()
    notes: list[str] = []
    pairs = _candidate_pairs(rules, grid, notes)
    included, excluded = _check_runs(histories, metric, mode, min_evals)
    runs = [h.path for h in included]
    empty_loo = {"available": False, "n_runs": len(included),
                 "reason": f"with {len(included)} usable run(s) no honest estimate is possible: "
                           "leave-one-run-out needs at least 3 runs; the figures above are in-sample only"}
    if not included:
        notes.append("no usable run: nothing to tune on (see `excluded`)")
        return TuneResult(obj, metric, mode, None, None, empty_loo, [], [], excluded, runs, cost, notes)

    n_candidates = len(pairs)
    pairs = _with_defaults(pairs)
    result = replay(included, pairs, metric=metric, mode=mode)
    per_run = len(pairs)
    if len(result.decisions) != per_run * len(included):  # pragma: no cover - replay's contract
        raise LogsageError("internal error: replay returned an unexpected number of decisions")
    by_candidate = [[result.decisions[r * per_run + c] for r in range(len(included))] for c in range(per_run)]
    m = _build_matrix(by_candidate, included, cost)
    all_cols = np.arange(len(included))
    st = _stats(m, all_cols)
    # The metric and mode actually monitored (one name when every run resolved to the same one).
    metrics = {d.metric for d in result.decisions if d.metric}
    modes = {d.mode for d in result.decisions if d.mode}
    metric_used = metrics.pop() if len(metrics) == 1 else metric
    mode_used = modes.pop() if len(modes) == 1 else mode

    candidates = [_candidate_row(name, params, m, st, c) for c, (name, params) in enumerate(pairs[:n_candidates])]
    best, feasible = _choose(obj, st, n_candidates)
    recommendation = None
    in_sample = None
    if best is None:
        notes.append("no candidate could judge every run (each needs an input some run lacks); no recommendation")
    else:
        name, params = pairs[best]
        recommendation = {"rule": name, "params": params, "objective": obj.spec,
                          "objective_description": obj.describe(), "feasible": feasible,
                          "spec": rule_spec(name, params)}
        if not feasible:
            recommendation["note"] = ("no candidate meets the constraint; this one comes closest "
                                      f"({_constraint_text(obj, st, best)})")
        in_sample = _figures(best, all_cols, m, by_candidate)
    loo = _leave_one_out(obj, m, pairs, by_candidate, best, n_candidates) if len(included) >= 3 else empty_loo
    comparison = _comparison(pairs, best, m, st, obj, by_candidate)
    return TuneResult(obj, metric_used, mode_used, recommendation, in_sample, loo, comparison, candidates,
                      excluded, runs, cost, notes, replay_result=result, histories=list(included))


def tune_paths(paths: Sequence[str], *, format: str | None = None, use_cache: bool = True,
               cache_dir: str | None = None, **kwargs: Any) -> TuneResult:
    """Load each path as one run and `tune` them; a path that cannot be read is listed in
    `excluded` with its error (never an abort). Keyword arguments are `tune`'s.

    Rules, grid and objective are validated before any file is read.
    """
    from logsage.ingest import load_histories

    parse_objective(kwargs.get("objective"))
    _candidate_pairs(kwargs.get("rules"), kwargs.get("grid"), [])
    histories, errors = load_histories(paths, format=format, use_cache=use_cache, cache_dir=cache_dir)
    unreadable = [{"run": e["run"], "reason": without_run(e["run"], e["error"]), "unreadable": True} for e in errors]
    result = tune(histories, **kwargs)
    if unreadable:
        order = {str(p): i for i, p in enumerate(paths)}
        result.excluded = sorted(result.excluded + unreadable, key=lambda e: order.get(e["run"], len(order)))
    return result


def without_run(run: str, message: str) -> str:
    """`message` without its mention of the run's path, for a line that names the run already:
    a leading "RUN: " (most errors start so) or a later " in RUN" ("metric 'x' not found in RUN")."""
    run = str(run)
    if message.startswith(run + ": "):
        return message[len(run) + 2:]
    for mention in (f" in {run}", f" in '{run}'"):
        at = message.find(mention)
        if at >= 0 and message[at + len(mention):at + len(mention) + 1] in ("", ";", ",", ":", ")", " ", "\n"):
            return message[:at] + message[at + len(mention):]
    return message


def run_message(run: str, message: str) -> str:
    """"RUN: message" with the run's path said once (see `without_run`); a message that still
    names the run ("...; RUN logs none") is given alone."""
    rest = without_run(run, message)
    return rest if str(run) in rest else f"{run}: {rest}"


def judged_text(row: Mapping[str, Any]) -> str:
    """"39/40 runs": how many runs a comparison or candidate row's figures are over."""
    return f"{row['n_decided']}/{row['n_runs']} runs"


def partly_judged(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per comparison row whose rule could not judge every run: over how many runs its
    figures are, and which runs it left out and why (never a silent blank row)."""
    out = []
    for row in rows:
        if row["n_decided"] == row["n_runs"]:
            continue
        missing = row.get("not_judged") or []
        why = "; ".join(run_message(m["run"], m["reason"]) for m in missing[:3])
        more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        name = f"{row['label'].split(' (')[0]} ({row['spec']})"
        head = (f"{name} could judge none of the runs" if row["n_decided"] == 0 else
                f"{name}: figures over the {judged_text(row)} it can judge")
        out.append(f"{head}; not judged: {why}{more}")
    return out


def rule_spec(name: str, params: dict) -> str:
    """The `--rule` spec that reproduces a (rule, parameters) pair: its non-default parameters only,
    e.g. "hf:patience=3,threshold=0.0001"."""
    from logsage.rules.base import COMMON_PARAMS, get_rule

    info = get_rule(name)
    defaults = {p.name: p.default for p in info.params}
    defaults.update({k: v[1] for k, v in COMMON_PARAMS.items()})
    changed = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
               if k in defaults and defaults[k] != v]
    return name + (":" + ",".join(changed) if changed else "")


def _constraint_text(obj: Objective, st: dict[str, np.ndarray], c: int) -> str:
    if obj.kind == "min-regret":
        return f"mean fraction saved {st['mean_saved'][c]:.3g} < {obj.min_saved:g}"
    return f"median relative regret {st['median_regret_rel'][c]:.3g} > {obj.max_regret:g}"


def _judged(values: np.ndarray, decided: np.ndarray) -> np.ndarray:
    """The values of the runs a candidate could judge (and that have a number)."""
    v = values[decided]
    return v[~np.isnan(v)]


def _candidate_row(name: str, params: dict, m: _Matrix, st: dict[str, np.ndarray], c: int) -> dict[str, Any]:
    """A candidate's figures over the runs it can judge: `n_decided` of `n_runs` says how many (a rule
    that needs an input some runs lack is scored on the others, never shown blank)."""
    before = m.before[c][~np.isnan(m.before[c])]
    rel = _judged(m.regret_rel[c], m.decided[c])
    sav = _judged(m.saved[c], m.decided[c])

    def stat(f: Any, v: np.ndarray) -> float | None:
        return float(f(v)) if v.size else None

    return {
        "rule": name, "params": params, "spec": rule_spec(name, params), "eligible": bool(st["eligible"][c]),
        "n_decided": int(m.decided[c].sum()), "n_runs": int(m.decided.shape[1]),
        "median_regret_rel": stat(np.median, rel), "mean_regret_rel": stat(np.mean, rel),
        "median_fraction_saved": stat(np.median, sav), "mean_fraction_saved": stat(np.mean, sav),
        "stopped_before_best_rate": float(before.mean()) if before.size else None,
        "hours_saved": _sum_known(m.hours[c]), "gpu_hours_saved": _sum_known(m.gpu_hours[c]),
        "money_saved": _sum_known(m.money[c]), "n_priced": int((~np.isnan(m.hours[c])).sum()),
    }


def _figures(c: int, cols: np.ndarray, m: _Matrix, by_candidate: list[list[Any]]) -> dict[str, Any]:
    """In-sample figures of candidate c over the runs in cols, with its decision on each run."""
    rel = [float(m.regret_rel[c, r]) for r in cols]
    sav = [float(m.saved[c, r]) for r in cols]
    per_run = []
    for r in cols:
        d = by_candidate[c][r]
        per_run.append({"run": d.run, "regret_rel": rel[len(per_run)], "regret": d.regret,
                        "fraction_saved": d.fraction_saved, "steps_saved": d.steps_saved, "stop_step": d.stop_step,
                        "selected_step": d.selected_step, "best_step": d.best_step,
                        "stopped_before_best": d.stopped_before_best,
                        "hours_saved": _nan_none(m.hours[c, r]), "gpu_hours_saved": _nan_none(m.gpu_hours[c, r]),
                        "money_saved": _nan_none(m.money[c, r])})
    before = [v for v in m.before[c, cols] if not math.isnan(v)]
    return {
        "n_runs": len(cols),
        "regret": {"median": _median(rel), "mean": _mean(rel), "spread": _spread(rel)},
        "saved": {"median": _median(sav), "mean": _mean(sav), "spread": _spread(sav)},
        "stopped_before_best_rate": float(np.mean(before)) if before else None,
        "gpu_hours_saved": _sum_known(m.gpu_hours[c, cols]), "money_saved": _sum_known(m.money[c, cols]),
        "per_run": per_run,
    }


def _nan_none(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


def _leave_one_out(obj: Objective, m: _Matrix, pairs: list[tuple[str, dict]], by_candidate: list[list[Any]],
                   full_choice: int | None, n_candidates: int) -> dict[str, Any]:
    """Tune on all runs but one, score the choice on the one left out; for every run."""
    n = m.decided.shape[1]
    folds = []
    for r in range(n):
        train = np.array([i for i in range(n) if i != r])
        c, feasible = _choose(obj, _stats(m, train), n_candidates)
        if c is None:
            folds.append({"run": by_candidate[0][r].run, "rule": None, "params": None, "regret_rel": None,
                          "fraction_saved": None, "note": "no candidate could judge every training run"})
            continue
        d = by_candidate[c][r]
        rel = float(m.regret_rel[c, r])
        folds.append({
            "run": d.run, "rule": pairs[c][0], "params": pairs[c][1], "spec": rule_spec(*pairs[c]),
            "feasible_on_training_runs": feasible,
            "same_as_recommendation": c == full_choice,
            "regret_rel": None if math.isnan(rel) else rel, "regret": d.regret,
            "fraction_saved": d.fraction_saved, "stopped_before_best": d.stopped_before_best,
            "decidable": bool(d.decidable),
            "hours_saved": _nan_none(m.hours[c, r]), "gpu_hours_saved": _nan_none(m.gpu_hours[c, r]),
            "money_saved": _nan_none(m.money[c, r]),
            **({} if d.decidable else {"note": f"the chosen rule cannot judge this run: {d.reason}"}),
        })
    rel = [f["regret_rel"] for f in folds]
    sav = [f["fraction_saved"] for f in folds]
    before = [float(f["stopped_before_best"]) for f in folds if f.get("stopped_before_best") is not None]
    same = [f["same_as_recommendation"] for f in folds if "same_as_recommendation" in f]
    gpu = [f["gpu_hours_saved"] for f in folds if f.get("gpu_hours_saved") is not None]
    money = [f["money_saved"] for f in folds if f.get("money_saved") is not None]
    return {
        "available": True,
        "n_runs": n,
        "regret": {"median": _median(rel), "mean": _mean(rel), "spread": _spread(rel),
                   "per_run": [{"run": f["run"], "value": f["regret_rel"]} for f in folds]},
        "saved": {"median": _median(sav), "mean": _mean(sav), "spread": _spread(sav),
                  "per_run": [{"run": f["run"], "value": f["fraction_saved"]} for f in folds]},
        "stopped_before_best_rate": float(np.mean(before)) if before else None,
        "agreement": float(np.mean(same)) if same else None,
        "gpu_hours_saved": float(sum(gpu)) if gpu else None,
        "money_saved": float(sum(money)) if money else None,
        "folds": folds,
    }


def _comparison(pairs: list[tuple[str, dict]], best: int | None, m: _Matrix, st: dict[str, np.ndarray],
                obj: Objective, by_candidate: list[list[Any]]) -> list[dict[str, Any]]:
    """The recommendation and the common defaults, side by side on the same runs; a rule that cannot
    judge some runs is scored on the others, and `not_judged` names those runs and why."""
    from logsage.replay.engine import expand_rules
    from logsage.replay.scoring import params_key

    index = {params_key(n, p): c for c, (n, p) in enumerate(pairs)}
    rows = [("recommended", best)] if best is not None else []
    for label, name, params in COMMON_DEFAULTS:
        if name not in {n for n, _ in _default_pairs()}:
            continue
        (info, full), = expand_rules([(name, params)])
        rows.append((label, index[params_key(info.name, full)]))
    out = []
    for label, c in rows:
        row = _candidate_row(pairs[c][0], pairs[c][1], m, st, c)
        row["label"] = label
        row["meets_constraint"] = _meets(obj, st, c)
        row["not_judged"] = [{"run": d.run, "reason": d.reason} for d in by_candidate[c] if not d.decidable]
        out.append(row)
    return out


def _meets(obj: Objective, st: dict[str, np.ndarray], c: int) -> bool:
    if not st["eligible"][c]:
        return False
    if obj.kind == "min-regret":
        return obj.min_saved is None or bool(st["mean_saved"][c] >= obj.min_saved)
    return obj.max_regret is None or bool(st["median_regret_rel"][c] <= obj.max_regret)


__all__ = ["COMMON_DEFAULTS", "DEFAULT_GRIDS", "DEFAULT_OBJECTIVE", "MIN_EVALS", "Objective", "TuneResult",
           "USER_VALUE_RULES", "judged_text", "parse_objective", "partly_judged", "rule_spec", "run_message", "tune",
           "tune_paths", "without_run"]
