"""Cost: the wall-clock hours, GPU-hours and money a stopping decision would have saved.

A decision saves the training between its stop and the end of the run. Its seconds
come, in this order, from

1. the decision's own `wall_saved_s`: replay computes it from the monitored series'
   wall times (TensorBoard events record one per point; LLaMA-Factory's and ms-swift's
   `elapsed_time` become the points' wall times at ingest) or, failing that, from the
   run's `train_runtime` at a uniform speed over steps;
2. `run_hours` given by the user (the wall-clock length of a whole run) times the
   fraction of steps saved, for logs that state no time at all.

GPU-hours are those hours times the GPUs the run used (`gpus`; logs rarely say, so
the default of 1 is reported as an assumption), and money is GPU-hours times the
price of one GPU-hour when the user gives it. Runs whose time is unknown stay
unknown (None), never zero, and the totals say how many runs they cover.

This follows the cost-benefit analysis of the practitioners' guides (seed-rules.md:
cost saving = training hours x GPU price x time saved) but reports savings next to
the regret instead of folding both into one made-up ratio.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from logsage.core.errors import UsageError
from logsage.core.history import History, json_safe

@dataclass(frozen=True)
class CostModel:
    """What the user told us about the hardware (everything optional).

    gpus: GPUs one run used (default 1, reported as assumed).
    gpu_hour_cost: price of one GPU-hour (any currency); None: no money figures.
    run_hours: wall-clock hours of a whole run, for logs that hold no times.
    """

    gpus: float | None = None
    gpu_hour_cost: float | None = None
    run_hours: float | None = None

    def __post_init__(self) -> None:
        for name in ("gpus", "gpu_hour_cost", "run_hours"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise UsageError(f"--{name.replace('_', '-')} must be a positive number, got {v!r}")

    @property
    def gpu_count(self) -> float:
        return float(self.gpus) if self.gpus is not None else 1.0

    def assumptions(self) -> list[str]:
        """The cost model in words, for the output (what was assumed, not only what was given)."""
        out = []
        if self.gpus is None:
            out.append("1 GPU per run (assumed; pass --gpus to change)")
        else:
            out.append(f"{self.gpus:g} GPU(s) per run")
        if self.gpu_hour_cost is None:
            out.append("no price given (pass --gpu-hour-cost for money saved)")
        else:
            out.append(f"{self.gpu_hour_cost:g} per GPU-hour")
        if self.run_hours is not None:
            out.append(f"{self.run_hours:g} h per run where the log holds no times")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"gpus": self.gpu_count, "gpus_assumed": self.gpus is None, "gpu_hour_cost": self.gpu_hour_cost,
                "run_hours": self.run_hours, "assumptions": self.assumptions()}


@dataclass(frozen=True)
class DecisionCost:
    """What one decision saves in time and money (None where unknown)."""

    run: str
    rule: str
    params: dict
    hours_saved: float | None
    gpu_hours_saved: float | None
    money_saved: float | None
    time_source: str | None  # "wall times", "train_runtime", "--run-hours"
    regret: float | None
    regret_rel: float | None
    fraction_saved: float | None

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dict(self.__dict__))


def time_source(history: History, metric: str | None) -> str | None:
    """Where replay's `wall_saved_s` came from for this run: "wall times", "train_runtime" or None."""
    s = history.series.get(metric) if metric else None
    if s is not None and s.wall_times is not None and len(s.wall_times) == len(s) \
            and np.isfinite(s.wall_times).any():
        return "wall times"
    for src in (history.meta, history.summary):
        v = src.get("train_runtime")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
            return "train_runtime"
    return None


def run_hours(history: History) -> float | None:
    """Wall-clock hours the whole run took, where the log says (train_runtime, else the span of the
    eval and train series' wall times)."""
    for src in (history.meta, history.summary):
        v = src.get("train_runtime")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
            return float(v) / 3600.0
    # Training only: eval and train series (a test pass logged afterwards is not training time).
    walls = [s.wall_times[np.isfinite(s.wall_times)] for s in history.series.values()
             if s.kind in ("eval", "train") and s.wall_times is not None and len(s.wall_times)]
    walls = [w for w in walls if w.size]
    if walls:
        span = max(float(w.max()) for w in walls) - min(float(w.min()) for w in walls)
        if span > 0:
            return span / 3600.0
    return None


def decision_cost(decision: Any, history: History | None, model: CostModel) -> DecisionCost:
    """Hours, GPU-hours and money one decision saves (see the module docstring for the sources)."""
    seconds: float | None = None
    source: str | None = None
    if decision.decidable:
        if decision.wall_saved_s is not None and math.isfinite(decision.wall_saved_s):
            seconds = float(decision.wall_saved_s)
            source = (time_source(history, decision.metric) if history is not None else None) or "log"
        elif model.run_hours is not None and decision.fraction_saved is not None:
            seconds = model.run_hours * 3600.0 * float(decision.fraction_saved)
            source = "--run-hours"
    hours = None if seconds is None else seconds / 3600.0
    gpu_hours = None if hours is None else hours * model.gpu_count
    money = None if gpu_hours is None or model.gpu_hour_cost is None else gpu_hours * model.gpu_hour_cost
    return DecisionCost(run=decision.run, rule=decision.rule, params=dict(decision.params), hours_saved=hours,
                        gpu_hours_saved=gpu_hours, money_saved=money, time_source=source,
                        regret=decision.regret, regret_rel=decision.regret_rel,
                        fraction_saved=decision.fraction_saved)


def costs(decisions: Sequence[Any], histories: Iterable[History], model: CostModel) -> list[DecisionCost]:
    """`decision_cost` for every decision (histories matched by their path)."""
    by_path = {h.path: h for h in histories}
    return [decision_cost(d, by_path.get(d.run), model) for d in decisions]


def _params_key(rule: str, params: dict) -> str:
    from logsage.decide.scoring import params_key

    return params_key(rule, params)


def totals(per_decision: Sequence[DecisionCost]) -> list[dict[str, Any]]:
    """Per (rule, parameters): hours, GPU-hours and money saved summed over the runs whose time is known.

    Each row also says over how many runs the sums are (`n_priced` of `n_runs`) and the
    median relative regret next to them, so savings are never shown without their cost.
    """
    groups: dict[str, list[DecisionCost]] = {}
    for c in per_decision:
        groups.setdefault(_params_key(c.rule, c.params), []).append(c)
    rows = []
    for cs in groups.values():
        priced = [c for c in cs if c.hours_saved is not None]
        money = [c.money_saved for c in priced if c.money_saved is not None]
        rel = [c.regret_rel for c in cs if c.regret_rel is not None]
        rows.append({
            "rule": cs[0].rule,
            "params": dict(cs[0].params),
            "n_runs": len(cs),
            "n_priced": len(priced),
            # (a priced decision has both: decision_cost derives GPU-hours from the hours)
            "hours_saved": sum(h for c in priced if (h := c.hours_saved) is not None) if priced else None,
            "gpu_hours_saved": sum(g for c in priced if (g := c.gpu_hours_saved) is not None) if priced else None,
            "money_saved": sum(money) if money else None,
            "median_regret_rel": float(np.median(rel)) if rel else None,
        })
    return rows


def cost_report(decisions: Sequence[Any], histories: Iterable[History], model: CostModel) -> dict[str, Any]:
    """JSON-ready cost section: the model's assumptions, per run and per (rule, parameters) in total."""
    per = costs(decisions, list(histories), model)
    return {"model": model.to_dict(), "per_run": [c.to_dict() for c in per], "per_rule": json_safe(totals(per))}


__all__ = ["CostModel", "DecisionCost", "cost_report", "costs", "decision_cost", "run_hours", "time_source",
           "totals"]
