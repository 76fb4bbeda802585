"""What a report draws, described once: the run figure (eval and train curves, each rule's stop
and kept checkpoint, the hindsight best, the checkpoint strip) and the Pareto figure, plus the
scales, decimation and number formatting both renderers share.

`report.svg` draws these descriptions as inline SVG for the HTML page; `report.png` draws the
same descriptions with matplotlib. A curve longer than the plot is wide is decimated to pixel
resolution keeping each pixel column's minimum and maximum, so no spike is lost.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from logsage.core.history import History
from logsage.rules.base import rule_spec

# Colour-blind-friendly categorical palette for rules (Okabe-Ito, then tab10 extras).
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8c564b", "#7f7f7f",
           "#bcbd22", "#17becf", "#9467bd", "#d62728"]
EVAL_COLOR = "#222222"
TRAIN_COLOR = "#a0a0a0"
BEST_COLOR = "#f2b705"



# ====================================================================== figure descriptions
@dataclass
class Marker:
    """One rule's decision on one run, as drawn."""

    label: str  # the rule spec
    color: str
    stop_step: int | None
    selected_step: int | None
    selected_value: float | None
    tooltip: str


@dataclass
class RunFigure:
    """Everything a run's plot shows; both the SVG and the PNG renderers draw this."""

    run: str
    index: int
    metric: str | None
    eval_steps: np.ndarray
    eval_values: np.ndarray
    train_name: str | None = None
    train_steps: np.ndarray | None = None
    train_values: np.ndarray | None = None
    best_step: int | None = None
    best_value: float | None = None
    markers: list[Marker] = field(default_factory=list)
    # step -> "whole" | "broken" | "none" for every evaluation step (empty: the run has no inventory)
    checkpoints: dict[int, str] = field(default_factory=dict)

    @property
    def has_inventory(self) -> bool:
        return bool(self.checkpoints)


@dataclass
class ParetoPoint:
    label: str
    saved: float
    regret: float
    pareto: bool
    color: str


@dataclass
class ParetoFigure:
    regret_label: str
    points: list[ParetoPoint]


# ====================================================================== small helpers
def esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def fmt(v: Any, spec: str = ".4g") -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return format(v, spec)
    return str(v)


def pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.1f}%"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks: list[float] = []
    t = first
    while t <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(t, 12))
        t += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    ticks: list[float] = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if lo <= v <= hi:
                ticks.append(v)
    return ticks if len(ticks) >= 2 else nice_ticks(lo, hi)


class Scale:
    """Data -> pixel mapping for one axis (linear, or log10 when the values span decades)."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool = False):
        self.log = log and lo > 0
        if self.log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            pad = abs(lo) * 0.05 or 1.0
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1

    def __call__(self, v: np.ndarray | float) -> np.ndarray:
        """Pixel positions of `v`, always as an array (a 0-d array for a scalar: use float() on it)."""
        a = np.log10(v) if self.log else v
        return self.p0 + (np.asarray(a, dtype=float) - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        if self.log:
            return log_ticks(10 ** self.lo, 10 ** self.hi)
        return nice_ticks(self.lo, self.hi)


def value_range(values: np.ndarray) -> tuple[float, float, bool] | None:
    """(lo, hi, log) for the finite values; log when all are positive and span more than ~1.5 decades."""
    v = values[np.isfinite(values)]
    if v.size == 0:
        return None
    lo, hi = float(v.min()), float(v.max())
    log = lo > 0 and hi / lo > 30
    if not log:
        pad = (hi - lo) * 0.05 or (abs(hi) * 0.05 or 1.0)
        lo, hi = lo - pad, hi + pad
    else:
        lo, hi = lo / 1.15, hi * 1.15
    return lo, hi, log


def keep_index(px: np.ndarray, py: np.ndarray, width: float) -> np.ndarray:
    """Indices of the points worth drawing at `width` pixels: all of them when there are few,
    else each pixel column's first, last, lowest and highest point, plus every non-finite
    point (so gaps stay gaps): no spike disappears."""
    n = px.size
    if n <= 4 * width:
        return np.arange(n)
    cols = np.floor(px).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]])
    ends = np.r_[starts[1:], n]
    finite = np.isfinite(py)
    keep = set(np.flatnonzero(~finite).tolist())
    for s0, e0 in zip(starts.tolist(), ends.tolist()):
        keep.update((s0, e0 - 1))
        seg = py[s0:e0]
        if finite[s0:e0].any():
            keep.update((s0 + int(np.nanargmin(seg)), s0 + int(np.nanargmax(seg))))
    return np.fromiter(sorted(keep), dtype=np.int64)


def decimate(px: np.ndarray, py: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """The points of a pixel-space curve worth drawing (see `keep_index`)."""
    k = keep_index(px, py, width)
    return px[k], py[k]


def polyline_segments(px: np.ndarray, py: np.ndarray) -> list[str]:
    """SVG point lists, split at non-finite values (a gap in the curve, not a line to nowhere)."""
    ok = np.isfinite(py)
    out, current = [], []
    for x, y, good in zip(px.tolist(), py.tolist(), ok.tolist()):
        if good:
            current.append(f"{x:.1f},{y:.1f}")
        elif current:
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


# ====================================================================== building figures
def run_message(run: str, message: str) -> str:
    """"RUN: message" with the run's path said once (errors mostly start with it already)."""
    from logsage.analysis.tune import run_message

    return run_message(run, message)


def run_figure(history: History, decisions: Sequence[Any], index: int, colors: dict[str, str]) -> RunFigure:
    """The figure description for one run and its decisions (all on the same metric)."""
    metric = next((d.metric for d in decisions if d.metric), None) or history.primary_eval_metric()
    s = history.series.get(metric) if metric else None
    eval_steps = s.steps if s is not None else np.zeros(0, dtype=np.int64)
    eval_values = s.values if s is not None else np.zeros(0)
    tl = history.train_loss()
    fig = RunFigure(run=history.path, index=index, metric=metric, eval_steps=eval_steps, eval_values=eval_values,
                    train_name=tl.name if tl is not None else None,
                    train_steps=tl.steps if tl is not None else None,
                    train_values=tl.values if tl is not None else None)
    best = next((d for d in decisions if d.best_step is not None), None)
    if best is not None:
        fig.best_step, fig.best_value = best.best_step, best.best_value
    for d in decisions:
        label = rule_spec(d.rule, d.params)
        if not d.decidable:
            tip = f"{label}: cannot judge this run: {d.reason}"
        else:
            stop = f"stops at step {d.stop_step}" if d.stop_step is not None else "never stops"
            tip = (f"{label}: {stop}; keeps step {fmt(d.selected_step)} ({fmt(d.selected_value)}); "
                   f"regret {fmt(d.regret)}; {d.reason}")
        fig.markers.append(Marker(label, colors.get(label, PALETTE[0]), d.stop_step if d.decidable else None,
                                  d.selected_step if d.decidable else None,
                                  d.selected_value if d.decidable else None, tip))
    if history.checkpoints:
        status = {c.step: ("whole" if c.whole else "broken") for c in history.checkpoints}
        steps = set(eval_steps.tolist()) | set(status)
        fig.checkpoints = {int(t): status.get(int(t), "none") for t in sorted(steps)}
    return fig


def pareto_figure(summary: Sequence[dict], colors: dict[str, str]) -> ParetoFigure | None:
    """Regret against fraction saved for every (rule, parameters) row of a replay summary."""
    # The scale-free regret averages across runs of any scale; relative or absolute only without it.
    key = next((k for k in ("mean_regret_scaled", "mean_regret_rel")
                if summary and all(r.get(k) is not None for r in summary)), "mean_regret")
    pts = []
    for r in summary:
        reg, sav = r.get(key), r.get("mean_fraction_saved")
        if reg is None or sav is None or not (math.isfinite(reg) and math.isfinite(sav)):
            continue
        label = rule_spec(r["rule"], r["params"])
        pts.append(ParetoPoint(label, float(sav), float(reg), bool(r.get("pareto")), colors.get(label, PALETTE[0])))
    if not pts:
        return None
    label = {"mean_regret_scaled": "mean regret (share of the improvement lost)",
             "mean_regret_rel": "mean relative regret"}.get(key, "mean regret")
    return ParetoFigure(label, pts)



def rule_colors(labels: Sequence[str]) -> dict[str, str]:
    """One palette colour per distinct label, in first-seen order (stable across a report's plots)."""
    out: dict[str, str] = {}
    for label in labels:
        if label not in out:
            out[label] = PALETTE[len(out) % len(PALETTE)]
    return out


def same_stops(markers: Sequence[Marker]) -> list[tuple[int, list[str]]]:
    """Rules whose stop lines coincide (drawn on top of each other), by step: [(step, [labels])]."""
    by_step: dict[int, list[str]] = {}
    for m in markers:
        if m.stop_step is not None:
            by_step.setdefault(m.stop_step, []).append(m.label)
    return [(step, labels) for step, labels in sorted(by_step.items()) if len(labels) > 1]


CK_WORDS = {"whole": "whole checkpoint", "broken": "checkpoint not whole", "none": "no checkpoint"}
CK_COLORS = {"whole": "#2ca02c", "broken": "#d62728", "none": "#cccccc"}



def grouped_labels(points: Sequence[ParetoPoint]) -> list[tuple[ParetoPoint, str]]:
    """Points at the same place share one label ("lightning = hf:patience=3")."""
    out: list[tuple[ParetoPoint, list[str]]] = []
    for p in points:
        for q, names in out:
            if abs(q.saved - p.saved) < 1e-12 and abs(q.regret - p.regret) < 1e-12:
                names.append(p.label)
                break
        else:
            out.append((p, [p.label]))
    return [(p, " = ".join(names) if len(names) <= 3 else f"{names[0]} (+{len(names) - 1} equal)")
            for p, names in out]
