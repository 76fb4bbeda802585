"""What "the best rule" means for `tune`: the objectives, parsed from their spec, and the choice they make.

Every objective reads per-candidate figures over a set of runs (the arrays of
`Figures`): the mean and the 90th percentile of the scale-free regret (the share of a
run's achievable improvement the decision gives up, `logsage.decide.scoring.scaled_regret`),
the mean fraction of steps saved, and whether the candidate could judge every run.
Medians alone are never used: on real runs most rules lose nothing on most runs, so
a median regret is 0 for almost every rule and cannot tell them apart.

* `beat-baseline` (the default): among the candidates that save at least as much as the
  baseline (HF patience 3, threshold 1e-4 unless `baseline=` names another rule), the
  lowest mean regret; ties go to the lower p90, then the larger saving. The baseline
  itself is such a candidate, so when nothing beats it the answer is the baseline, and
  the output says so plainly.
* `exchange:rate=R`: maximise mean saved - R x mean regret, an explicit exchange rate
  between compute and quality (R = 5: losing 1% of the achievable improvement is worth
  5% of the step budget), as the practitioners' cost-benefit analysis does.
* `min-regret:min_saved=F`: the lowest mean regret among candidates with a mean saving >= F.
* `max-saved:max_regret=F`: the largest mean saving among candidates with a mean regret <= F.

When no candidate meets a constraint the closest wins, flagged `feasible: false`.
Exact ties keep the earlier candidate (rules in the order asked, grids in their order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from logsage.core.errors import UsageError

DEFAULT_BASELINE = "hf:patience=3,threshold=1e-4"
DEFAULT_OBJECTIVE = "beat-baseline"
DEFAULT_RATE = 5.0
_KEYS = {"beat-baseline": (), "exchange": ("rate",), "min-regret": ("min_saved",), "max-saved": ("max_regret",)}


@dataclass(frozen=True)
class Objective:
    """An objective: `kind` and its one number (rate, min_saved or max_regret, where the kind has one)."""

    kind: str
    value: float | None = None
    baseline: str = DEFAULT_BASELINE

    @property
    def spec(self) -> str:
        key = _KEYS[self.kind]
        return self.kind + (f":{key[0]}={self.value:g}" if key and self.value is not None else "")

    def describe(self) -> str:
        """The objective in words, printed with every answer (which objective chose)."""
        if self.kind == "beat-baseline":
            return (f"lowest mean scale-free regret among the rules that save at least as many steps as the baseline "
                    f"{self.baseline} (ties: lower p90 regret, then more saved)")
        if self.kind == "exchange":
            return (f"maximise mean fraction of steps saved - {self.value:g} x mean scale-free regret "
                    f"(exchange rate: 1% of the achievable improvement lost is worth {self.value:g}% of the budget)")
        if self.kind == "min-regret":
            return ("lowest mean scale-free regret" + (f" subject to a mean fraction of steps saved >= {self.value:g}"
                                                       if self.value is not None else ""))
        return ("largest mean fraction of steps saved" + (f" subject to a mean scale-free regret <= {self.value:g}"
                                                          if self.value is not None else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "value": self.value, "baseline": self.baseline,
                "description": self.describe()}


def parse_objective(spec: "str | Objective | None", baseline: str | None = None) -> Objective:
    """Parse "beat-baseline", "exchange:rate=5", "min-regret:min_saved=0.2" or "max-saved:max_regret=0.05".

    Raises:
        UsageError: an unknown objective or key, or a value out of range.
    """
    if isinstance(spec, Objective):
        return spec if baseline is None else Objective(spec.kind, spec.value, baseline)
    text = (spec or DEFAULT_OBJECTIVE).strip()
    kind, _, rest = text.partition(":")
    kind = kind.strip()
    if kind not in _KEYS:
        raise UsageError(f"unknown objective {kind!r}; use beat-baseline, exchange[:rate=R], "
                         "min-regret[:min_saved=F] or max-saved[:max_regret=F]")
    value: float | None = DEFAULT_RATE if kind == "exchange" else None
    for part in filter(None, (p.strip() for p in rest.split(","))):
        k, eq, v = part.partition("=")
        k = k.strip()
        if not eq or k not in _KEYS[kind]:
            takes = f"takes {_KEYS[kind][0]}=F" if _KEYS[kind] else "takes no value (name the baseline with --baseline)"
            raise UsageError(f"objective {kind} {takes}, got {part!r} in {text!r}")
        try:
            f = float(v)
        except ValueError:
            raise UsageError(f"objective {kind}: {k} must be a number, got {v.strip()!r}") from None
        if not (math.isfinite(f) and f >= 0) or (k == "min_saved" and f > 1):
            raise UsageError(f"objective {kind}: {k} must be {'in [0, 1]' if k == 'min_saved' else '>= 0'}, got {f:g}")
        value = f
    return Objective(kind, value, baseline or DEFAULT_BASELINE)


def choose(obj: Objective, eligible: np.ndarray, mean_regret: np.ndarray, p90_regret: np.ndarray,
           mean_saved: np.ndarray, baseline: int | None, n_choosable: int) -> tuple[int | None, bool]:
    """The index of the best candidate (among the first `n_choosable`) and whether it meets the constraint.

    All arrays are per candidate over the same runs; `baseline` indexes the baseline's row.
    """
    idx = np.flatnonzero(eligible[:n_choosable])
    if idx.size == 0:
        return None, False
    # Means reached by different summation orders (a fold's totals minus one run) agree to ~1e-16;
    # rounding makes exact ties ties whichever way they were summed.
    mean_regret, p90_regret, mean_saved = (np.round(a, 12) for a in (mean_regret, p90_regret, mean_saved))
    keys: tuple[np.ndarray, ...]  # sort keys, the last sorts first
    order = np.arange(eligible.size, dtype=float)
    with np.errstate(invalid="ignore"):
        if obj.kind == "beat-baseline":
            floor = mean_saved[baseline] if baseline is not None and eligible[baseline] else -math.inf
            violation = np.maximum(floor - mean_saved, 0.0)
            violation[violation < 1e-12] = 0.0  # the baseline's own figure, summed in another order
            keys = (order, -mean_saved, p90_regret, mean_regret, violation)
        elif obj.kind == "exchange":
            utility = mean_saved - float(obj.value if obj.value is not None else DEFAULT_RATE) * mean_regret
            violation = np.zeros(eligible.size)
            keys = (order, mean_regret, -utility, violation)
        elif obj.kind == "min-regret":
            bound = obj.value if obj.value is not None else -math.inf
            violation = np.maximum(bound - mean_saved, 0.0)
            keys = (order, -mean_saved, p90_regret, mean_regret, violation)
        else:
            bound = obj.value if obj.value is not None else math.inf
            violation = np.maximum(mean_regret - bound, 0.0)
            keys = (order, p90_regret, mean_regret, -mean_saved, violation)
    ranked = idx[np.lexsort(tuple(k[idx] for k in keys))]  # the LAST key sorts first
    best = int(ranked[0])
    return best, bool(violation[best] == 0)


__all__ = ["DEFAULT_BASELINE", "DEFAULT_OBJECTIVE", "DEFAULT_RATE", "Objective", "choose", "parse_objective"]
