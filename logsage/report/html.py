"""Report: one self-contained HTML file (and optional PNGs) showing what each rule would have done.

    >>> from logsage.report.html import build_report
    >>> report = build_report(histories, rules=["hf:patience=3,threshold=1e-4", "gl"], with_tune=True)
    >>> report.write("report.html", png_dir="plots/")

Per run: the eval curve (and the train loss on its own right-hand axis) with each
rule's stop (dashed line) and selected checkpoint (ring) marked, the hindsight best
(star), the checkpoint inventory (a strip under the plot and a list: whole, broken,
evaluations without a checkpoint), and the scored decisions table (GPU-hours saved and,
given a price per GPU-hour, money saved per decision). For several runs:
the summary per rule and the regret-savings Pareto front. With a tune: the
recommendation, its leave-one-run-out validation and the comparison with defaults.

Self-contained means no reference to any other file or URL: styles, the small
script (sortable tables, click a legend entry to hide a rule) and the plots are
inline; a Content-Security-Policy meta tag makes the browser refuse anything else.

Both renderers draw the same figure description (`RunFigure`, `ParetoFigure`): the
HTML gets inline SVG (fast: no matplotlib, crisp at any zoom; a curve longer than
the plot is wide is drawn at pixel resolution, keeping each pixel column's minimum
and maximum, so no spike is lost), and `--png` gets matplotlib PNGs (Agg, imported
only then).
"""

from __future__ import annotations

import datetime as _dt
import html
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
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



def default_report_rules() -> list[str]:
    """Rules drawn when none is asked: the common defaults people run (declared with each rule, as
    `logsage.rules.base.common_defaults`), those that need no input beyond the metric itself."""
    from logsage.rules.base import common_defaults, get_rule

    return [c.spec for c in common_defaults() if not get_rule(c.rule).needs]


DEFAULT_REPORT_RULES = default_report_rules()


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
def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v: Any, spec: str = ".4g") -> str:
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


def _pct(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.1f}%"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About n round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9 and len(ticks) < 50:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if lo <= v <= hi:
                ticks.append(v)
    return ticks if len(ticks) >= 2 else _nice_ticks(lo, hi)


class _Scale:
    """Data -> pixel mapping for one axis (linear, or log10 when the values span decades)."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool = False):
        self.log = log and lo > 0
        if self.log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            pad = abs(lo) * 0.05 or 1.0
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.p0, self.p1 = lo, hi, p0, p1

    def __call__(self, v: np.ndarray | float) -> np.ndarray | float:
        a = np.log10(v) if self.log else v
        return self.p0 + (np.asarray(a, dtype=float) - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        if self.log:
            return _log_ticks(10 ** self.lo, 10 ** self.hi)
        return _nice_ticks(self.lo, self.hi)


def _value_range(values: np.ndarray) -> tuple[float, float, bool] | None:
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


def _keep_index(px: np.ndarray, py: np.ndarray, width: float) -> np.ndarray:
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


def _decimate(px: np.ndarray, py: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """The points of a pixel-space curve worth drawing (see `_keep_index`)."""
    k = _keep_index(px, py, width)
    return px[k], py[k]


def _polyline_segments(px: np.ndarray, py: np.ndarray) -> list[str]:
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
def _run_message(run: str, message: str) -> str:
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
            tip = (f"{label}: {stop}; keeps step {_fmt(d.selected_step)} ({_fmt(d.selected_value)}); "
                   f"regret {_fmt(d.regret)}; {d.reason}")
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
    key = "mean_regret_rel" if summary and all(r.get("mean_regret_rel") is not None for r in summary) \
        else "mean_regret"
    pts = []
    for r in summary:
        reg, sav = r.get(key), r.get("mean_fraction_saved")
        if reg is None or sav is None or not (math.isfinite(reg) and math.isfinite(sav)):
            continue
        label = rule_spec(r["rule"], r["params"])
        pts.append(ParetoPoint(label, float(sav), float(reg), bool(r.get("pareto")), colors.get(label, PALETTE[0])))
    if not pts:
        return None
    return ParetoFigure("mean relative regret" if key == "mean_regret_rel" else "mean regret", pts)


# ====================================================================== SVG rendering
_W, _H = 900, 320
_ML, _MR, _MT, _MB = 62, 62, 14, 52  # margins: left/right axes labels, checkpoint strip at the bottom


def _axis_label(v: float) -> str:
    return f"{v:.4g}"


def svg_run(fig: RunFigure) -> str:
    """The run's plot as an inline SVG element (class run-plot, data-run = the run's path)."""
    x0, x1 = _ML, _W - _MR
    y0, y1 = _H - _MB, _MT  # pixel y grows downwards
    parts = [f'<svg class="run-plot" id="plot-{fig.index}" data-run="{_esc(fig.run)}" '
             f'viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" '
             f'aria-label="{_esc(fig.metric or "no metric")} of {_esc(fig.run)}">']
    steps_all = [a for a in (fig.eval_steps, fig.train_steps) if a is not None and len(a)]
    if not steps_all:
        parts.append(f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle" class="empty">'
                     'no evaluations to plot</text></svg>')
        return "".join(parts)
    smin = min(int(a.min()) for a in steps_all)
    smax = max(int(a.max()) for a in steps_all)
    for m in fig.markers:
        if m.stop_step is not None:
            smax = max(smax, m.stop_step)
    sx = _Scale(smin, smax if smax > smin else smin + 1, x0, x1)
    parts.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" class="frame"/>')
    # x axis ticks
    for t in sx.ticks():
        px = float(sx(t))
        parts.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}" class="tick"/>'
                     f'<text x="{px:.1f}" y="{y0 + 15}" text-anchor="middle">{int(round(t))}</text>')
    parts.append(f'<text x="{(x0 + x1) / 2}" y="{_H - 4}" text-anchor="middle" class="axis-title">step</text>')
    # train loss on the right axis
    if fig.train_values is not None and fig.train_steps is not None and len(fig.train_steps):
        rng = _value_range(fig.train_values)
        if rng:
            sy2 = _Scale(rng[0], rng[1], y0, y1, log=rng[2])
            px, py = _decimate(sx(fig.train_steps.astype(float)), sy2(_safe(fig.train_values, rng[2])), x1 - x0)
            for seg in _polyline_segments(px, py):
                parts.append(f'<polyline class="train" points="{seg}"/>')
            for t in sy2.ticks():
                py_t = float(sy2(t))
                parts.append(f'<text x="{x1 + 4}" y="{py_t + 3:.1f}" class="train-tick">{_axis_label(t)}</text>')
            parts.append(f'<text x="{_W - 6}" y="{(y0 + y1) / 2}" class="axis-title train-title" '
                         f'transform="rotate(90 {_W - 6} {(y0 + y1) / 2})" text-anchor="middle">'
                         f'{_esc(fig.train_name)} (train)</text>')
    # eval metric on the left axis
    rng = _value_range(fig.eval_values) if len(fig.eval_values) else None
    sy = None
    if rng:
        sy = _Scale(rng[0], rng[1], y0, y1, log=rng[2])
        for t in sy.ticks():
            py_t = float(sy(t))
            parts.append(f'<line x1="{x0}" y1="{py_t:.1f}" x2="{x1}" y2="{py_t:.1f}" class="grid"/>'
                         f'<text x="{x0 - 4}" y="{py_t + 3:.1f}" text-anchor="end">{_axis_label(t)}</text>')
        ex = sx(fig.eval_steps.astype(float))
        ey = sy(_safe(fig.eval_values, rng[2]))
        px, py = _decimate(ex, ey, x1 - x0)
        for seg in _polyline_segments(px, py):
            parts.append(f'<polyline class="eval" points="{seg}"/>')
        if len(fig.eval_steps) <= 120:  # dots stay readable; beyond that the line says it all
            parts.append('<g class="eval-dots">' + "".join(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2"/>' for x, y in zip(ex.tolist(), ey.tolist())
                if math.isfinite(y)) + "</g>")
        bad = ~np.isfinite(fig.eval_values)
        for st, v in zip(fig.eval_steps[bad].tolist(), fig.eval_values[bad].tolist()):
            parts.append(f'<text x="{float(sx(st)):.1f}" y="{y1 + 10}" text-anchor="middle" class="nonfinite">'
                         f'<title>step {st}: {_fmt(v)}</title>×</text>')
    parts.append(f'<text x="12" y="{(y0 + y1) / 2}" class="axis-title" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(y0 + y1) / 2})">{_esc(fig.metric or "")}</text>')
    # rules: stop lines and selected checkpoints
    for k, m in enumerate(fig.markers):
        g = [f'<g class="rule" data-rule="{_esc(m.label)}"><title>{_esc(m.tooltip)}</title>']
        if m.stop_step is not None:
            px = float(sx(m.stop_step)) + (k % 4) * 0.8  # a hair apart so equal stops stay visible
            g.append(f'<line x1="{px:.1f}" y1="{y1}" x2="{px:.1f}" y2="{y0}" stroke="{m.color}" class="stop"/>')
        if sy is not None and m.selected_step is not None and m.selected_value is not None \
                and math.isfinite(m.selected_value):
            g.append(f'<circle cx="{float(sx(m.selected_step)):.1f}" '
                     f'cy="{float(sy(_safe(np.array([m.selected_value]), sy.log)[0])):.1f}" '
                     f'r="{5 + 2 * (k % 3)}" stroke="{m.color}" class="selected"/>')
        g.append("</g>")
        parts.append("".join(g))
    if sy is not None and fig.best_step is not None and fig.best_value is not None:
        bx, by = float(sx(fig.best_step)), float(sy(_safe(np.array([fig.best_value]), sy.log)[0]))
        parts.append(f'<path class="best" d="{_star(bx, by, 7)}"><title>best in hindsight: '
                     f'{_fmt(fig.best_value)} at step {fig.best_step}</title></path>')
    # checkpoint inventory strip
    if fig.has_inventory:
        ys = y0 + 22
        parts.append(f'<text x="{x0 - 4}" y="{ys + 4}" text-anchor="end" class="strip-label">ckpt</text>')
        for st, state in fig.checkpoints.items():
            parts.append(f'<rect x="{float(sx(st)) - 2:.1f}" y="{ys - 3}" width="4" height="7" class="ck-{state}">'
                         f'<title>step {st}: {_CK_WORDS[state]}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


_CK_WORDS = {"whole": "whole checkpoint", "broken": "checkpoint not whole", "none": "no checkpoint"}


def _safe(values: np.ndarray, log: bool) -> np.ndarray:
    """Values ready for a (log) scale: non-positive values become NaN on a log axis."""
    v = np.asarray(values, dtype=float)
    if log:
        v = np.where(v > 0, v, np.nan)
    return v


def _star(cx: float, cy: float, r: float) -> str:
    pts = []
    for i in range(10):
        a = math.pi / 2 + i * math.pi / 5
        rr = r if i % 2 == 0 else r * 0.45
        pts.append(f"{cx + rr * math.cos(a):.1f},{cy - rr * math.sin(a):.1f}")
    return "M" + " L".join(pts) + " Z"


def _grouped(points: Sequence[ParetoPoint]) -> list[tuple[ParetoPoint, str]]:
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


def svg_pareto(fig: ParetoFigure) -> str:
    """Regret against compute saved, the Pareto front joined and labelled (class pareto-plot)."""
    w, h, ml, mr, mt, mb = 760, 340, 62, 20, 14, 40
    x0, x1, y0, y1 = ml, w - mr, h - mb, mt
    sav = np.array([p.saved for p in fig.points])
    reg = np.array([p.regret for p in fig.points])
    sx = _Scale(0.0, max(1.0, float(sav.max())), x0, x1)
    top = float(reg.max()) * 1.08 if float(reg.max()) > 0 else 1.0
    sy = _Scale(0.0, top, y0, y1)
    parts = [f'<svg class="pareto-plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
             f'aria-label="regret against fraction of steps saved">',
             f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" class="frame"/>']
    for t in sx.ticks():
        px = float(sx(t))
        parts.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}" class="tick"/>'
                     f'<text x="{px:.1f}" y="{y0 + 15}" text-anchor="middle">{100 * t:.0f}%</text>')
    for t in sy.ticks():
        py = float(sy(t))
        parts.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" class="grid"/>'
                     f'<text x="{x0 - 4}" y="{py + 3:.1f}" text-anchor="end">{_axis_label(t)}</text>')
    parts.append(f'<text x="{(x0 + x1) / 2}" y="{h - 6}" text-anchor="middle" class="axis-title">'
                 'mean fraction of steps saved</text>')
    parts.append(f'<text x="12" y="{(y0 + y1) / 2}" class="axis-title" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(y0 + y1) / 2})">{_esc(fig.regret_label)}</text>')
    front = sorted((p for p in fig.points if p.pareto), key=lambda p: p.saved)
    if len(front) > 1:
        pts = " ".join(f"{float(sx(p.saved)):.1f},{float(sy(p.regret)):.1f}" for p in front)
        parts.append(f'<polyline class="front" points="{pts}"/>')
    for p in fig.points:
        cls = "pt front-pt" if p.pareto else "pt"
        parts.append(f'<circle class="{cls}" cx="{float(sx(p.saved)):.1f}" cy="{float(sy(p.regret)):.1f}" '
                     f'r="{5 if p.pareto else 3.5}" fill="{p.color}"><title>{_esc(p.label)}: saved '
                     f'{_pct(p.saved)}, {_esc(fig.regret_label)} {_fmt(p.regret)}</title></circle>')
    for k, (p, names) in enumerate(_grouped(front)):
        px = float(sx(p.saved))
        right_half = px > (x0 + x1) / 2  # label towards the inside so it is never cut at the edge
        parts.append(f'<text class="front-label" x="{px - 7 if right_half else px + 7:.1f}" '
                     f'text-anchor="{"end" if right_half else "start"}" '
                     f'y="{float(sy(p.regret)) - 6 - 10 * (k % 2):.1f}">{_esc(names)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ====================================================================== PNG rendering
class _Canvas:
    """One matplotlib figure reused for every run plot: making figures and their ticks costs more
    than drawing the curves."""

    def __init__(self, plt: Any):
        self.plt = plt
        self.fig, self.ax = plt.subplots(figsize=(9.6, 3.4), dpi=100)
        self.ax2 = self.ax.twinx()
        self.fig.subplots_adjust(left=0.07, right=0.68, top=0.9, bottom=0.14)

    def close(self) -> None:
        self.plt.close(self.fig)


def png_run(fig: RunFigure, path: str | os.PathLike, *, canvas: _Canvas | None = None) -> None:
    """The same run plot as a PNG (matplotlib, Agg)."""
    own = canvas is None
    cv = canvas or _Canvas(_pyplot())
    ax, ax2 = cv.ax, cv.ax2
    ax.cla()
    ax2.cla()
    ax2.yaxis.tick_right()  # cla() puts a twin's ticks and label back on the left
    ax2.yaxis.set_label_position("right")
    try:
        rng = _value_range(fig.eval_values) if len(fig.eval_values) else None
        if rng:
            ax.plot(fig.eval_steps, fig.eval_values, color=EVAL_COLOR, lw=1.4, marker="o" if len(fig.eval_steps)
                    <= 120 else None, ms=2.5, label=fig.metric)
            ax.set_yscale("log" if rng[2] else "linear")
            ax.set_ylabel(fig.metric or "")
        has_train = fig.train_values is not None and fig.train_steps is not None and len(fig.train_steps) > 0
        ax2.set_visible(has_train)
        if has_train:
            trng = _value_range(fig.train_values)
            idx = _decimate_index(fig.train_steps, fig.train_values, 760)
            ax2.plot(fig.train_steps[idx], fig.train_values[idx], color=TRAIN_COLOR, lw=0.8)
            ax2.set_yscale("log" if trng and trng[2] else "linear")
            ax2.set_ylabel(f"{fig.train_name} (train)", color="#777777")
            ax.set_zorder(ax2.get_zorder() + 1)
            ax.patch.set_visible(False)
        for k, m in enumerate(fig.markers):
            if m.stop_step is not None:
                ax.axvline(m.stop_step, color=m.color, ls="--", lw=1.2, label=f"{m.label} stop")
            if m.selected_step is not None and m.selected_value is not None and math.isfinite(m.selected_value):
                ax.plot([m.selected_step], [m.selected_value], marker="o", ms=8 + 3 * (k % 3), mfc="none",
                        mec=m.color, mew=1.6, ls="none")
        if fig.best_step is not None and fig.best_value is not None:
            ax.plot([fig.best_step], [fig.best_value], marker="*", ms=12, color=BEST_COLOR, mec="#7a5c00",
                    ls="none", label="best in hindsight")
        if fig.has_inventory:
            xs = list(fig.checkpoints)
            cs = [{"whole": "#2ca02c", "broken": "#d62728", "none": "#cccccc"}[st] for st in fig.checkpoints.values()]
            ax.scatter(xs, [0.0] * len(xs), transform=ax.get_xaxis_transform(), marker="|", c=cs, s=60,
                       clip_on=False)
        for a in (ax, ax2):  # minor ticks and mathtext labels of log axes cost more than the curves
            a.minorticks_off()
            if a.get_yscale() == "log":
                a.yaxis.set_major_formatter(_plain_formatter())
        ax.set_xlabel("step")
        ax.set_title(fig.run, fontsize=9)
        # Outside the axes at a fixed place: it hides no data, and "best" placement is slow.
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.15, 1.0), frameon=False)
        cv.fig.savefig(path)
    finally:
        if own:
            cv.close()


def _plain_formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v:g}")


def _decimate_index(steps: np.ndarray, values: np.ndarray, width: int) -> np.ndarray:
    """`_keep_index` for a curve in data units drawn `width` pixels wide."""
    lo, hi = float(steps.min()), float(steps.max())
    px = (steps.astype(float) - lo) / ((hi - lo) or 1.0) * width
    return _keep_index(px, np.asarray(values, dtype=float), width)


def png_pareto(fig: ParetoFigure, path: str | os.PathLike, *, _mpl: Any = None) -> None:
    plt = _mpl or _pyplot()
    f, ax = plt.subplots(figsize=(7.6, 3.4), dpi=100)
    try:
        for p in fig.points:
            ax.plot([p.saved], [p.regret], "o", color=p.color, ms=7 if p.pareto else 4)
        front = sorted((p for p in fig.points if p.pareto), key=lambda p: p.saved)
        if front:
            ax.plot([p.saved for p in front], [p.regret for p in front], color="#444444", lw=1)
            for p, names in _grouped(front):
                ax.annotate(names, (p.saved, p.regret), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("mean fraction of steps saved")
        ax.set_ylabel(fig.regret_label)
        ax.set_title("regret against compute saved (Pareto front joined)", fontsize=9)
        f.subplots_adjust(left=0.09, right=0.97, top=0.9, bottom=0.15)
        f.savefig(path)
    finally:
        plt.close(f)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# ====================================================================== HTML
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1240px;
padding:18px 24px;color:#1d1d1d;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px;word-break:break-all}
h3{font-size:14px;margin:14px 0 4px}.meta,.dim{color:#666}.warn{color:#a15c00}
section.run{border-top:1px solid #ddd;padding-top:6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:12.5px}
th,td{border-bottom:1px solid #e6e6e6;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6;cursor:pointer;user-select:none;white-space:nowrap}td.num{text-align:right;white-space:nowrap;
font-variant-numeric:tabular-nums}tr.rec td{background:#eef7ee;font-weight:600}
svg{max-width:100%;height:auto;font:11px system-ui,sans-serif;display:block}
svg .frame{fill:#fff;stroke:#bbb}svg .grid{stroke:#eee}svg .tick{stroke:#999}
svg .eval{fill:none;stroke:#222;stroke-width:1.6}svg .eval-dots circle{fill:#222}
svg .train{fill:none;stroke:#a8a8a8;stroke-width:1}svg .train-tick{fill:#888}
svg .axis-title{fill:#444;font-size:12px}svg .stop{stroke-width:1.6;stroke-dasharray:5 3}
svg .selected{fill:none;stroke-width:2}svg .best{fill:#f2b705;stroke:#7a5c00;stroke-width:.8}
svg .nonfinite{fill:#c00;font-weight:700}svg .ck-whole{fill:#2ca02c}svg .ck-broken{fill:#d62728}
svg .ck-none{fill:#ddd}svg .strip-label{fill:#666;font-size:10px}svg .empty{fill:#999}
svg .front{fill:none;stroke:#444;stroke-width:1.2}svg .pt{stroke:#fff;stroke-width:.8}
svg .front-pt{stroke:#000;stroke-width:1.2}svg .front-label{font-size:10.5px;fill:#333}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:4px 0 2px;font-size:12.5px}
.legend span{cursor:pointer}.legend .sw{display:inline-block;width:12px;height:12px;border-radius:2px;
margin-right:4px;vertical-align:-1px}.legend .off{opacity:.35;text-decoration:line-through}
.hidden{display:none}.box{background:#f7f9fc;border:1px solid #dde3ec;border-radius:6px;padding:8px 12px}
details{margin:4px 0}.tw{overflow-x:auto;max-width:100%}td.reason{min-width:260px;font-size:11.5px;color:#333}summary{cursor:pointer;color:#444}code{background:#f3f3f3;padding:0 3px;border-radius:3px}
"""

# Sortable tables (click a header) and legend entries that hide/show a rule's marks on its plot.
_JS = """
(function(){
  function cellValue(td){var v=td.getAttribute('data-v');if(v!==null&&v!==''){var f=parseFloat(v);
    if(!isNaN(f))return f;}return td.textContent.trim();}
  document.querySelectorAll('table.sortable th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var table=th.closest('table'),body=table.tBodies[0];if(!body)return;
      var rows=Array.prototype.slice.call(body.rows),asc=th.getAttribute('data-dir')!=='asc';
      rows.sort(function(a,b){var x=cellValue(a.cells[col]),y=cellValue(b.cells[col]);
        if(typeof x==='number'&&typeof y==='number')return asc?x-y:y-x;
        return asc?String(x).localeCompare(String(y)):String(y).localeCompare(String(x));});
      rows.forEach(function(r){body.appendChild(r);});th.setAttribute('data-dir',asc?'asc':'desc');
    });
  });
  document.querySelectorAll('.legend span[data-rule]').forEach(function(item){
    item.addEventListener('click',function(){
      var plot=document.getElementById(item.parentNode.getAttribute('data-plot'));if(!plot)return;
      var off=item.classList.toggle('off');
      plot.querySelectorAll('g.rule').forEach(function(g){
        if(g.getAttribute('data-rule')===item.getAttribute('data-rule'))g.classList.toggle('hidden',off);});
    });
  });
})();
"""

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "font-src data:; base-uri 'none'; form-action 'none'")


def _td(v: Any, kind: str = "num", spec: str = ".4g") -> str:
    """A table cell; numbers carry their raw value in data-v for sorting."""
    if kind == "pct":
        raw = "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v))
        return f'<td class="num" data-v="{raw}">{_pct(v)}</td>'
    if kind == "num":
        raw = "" if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) else repr(v)
        return f'<td class="num" data-v="{raw}">{_esc(_fmt(v, spec))}</td>'
    return f"<td>{_esc(_fmt(v))}</td>"


def _num_td(sort_value: Any, text: str) -> str:
    """A cell showing `text`, sorted by the number `sort_value`."""
    ok = isinstance(sort_value, (int, float)) and not isinstance(sort_value, bool) and math.isfinite(sort_value)
    return f'<td class="num" data-v="{repr(sort_value) if ok else ""}">{_esc(text)}</td>'


def _table(headers: Sequence[str], rows: Sequence[str], cls: str = "sortable") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    return (f'<div class="tw"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


@dataclass
class Report:
    """A rendered report: the HTML text and the figure descriptions (for PNGs)."""

    html: str
    run_figures: list[RunFigure]
    pareto: ParetoFigure | None
    errors: list[dict]

    def write(self, out: str | os.PathLike, *, png_dir: str | os.PathLike | None = None) -> list[str]:
        """Write the HTML (atomically) and, with png_dir, one PNG per run plus the Pareto plot.

        Returns the paths written.
        """
        out = Path(out)
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(self.html, encoding="utf-8")
        os.replace(tmp, out)
        written = [str(out)]
        if png_dir is not None:
            written += write_pngs(self, png_dir)
        return written


def write_pngs(report: Report, png_dir: str | os.PathLike) -> list[str]:
    """One PNG per run (`run-<i>-<name>.png`) and `pareto.png` for several runs."""
    d = Path(png_dir)
    d.mkdir(parents=True, exist_ok=True)
    plt = _pyplot()
    out = []
    canvas = _Canvas(plt)
    try:
        for fig in report.run_figures:
            name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(fig.run.rstrip("/\\")).name)[:60]
            p = d / f"run-{fig.index:02d}-{name or 'run'}.png"
            png_run(fig, p, canvas=canvas)
            out.append(str(p))
    finally:
        canvas.close()
    if report.pareto is not None:
        p = d / "pareto.png"
        png_pareto(report.pareto, p, _mpl=plt)
        out.append(str(p))
    return out


def rule_colors(labels: Sequence[str]) -> dict[str, str]:
    """One palette colour per distinct label, in first-seen order (stable across a report's plots)."""
    out: dict[str, str] = {}
    for label in labels:
        if label not in out:
            out[label] = PALETTE[len(out) % len(PALETTE)]
    return out


def render_html(histories: Sequence[History], replay_result: Any, *, title: str | None = None,
                tune_result: Any = None, cost: Any = None) -> Report:
    """The report for runs already replayed (decisions for every run in `replay_result`)."""
    from logsage import __version__
    from logsage.analysis.cost import CostModel, costs, totals

    cost = cost or CostModel()
    decisions = list(replay_result.decisions)
    labels = [rule_spec(d.rule, d.params) for d in decisions]
    colors = rule_colors(labels)
    # replay gives every run the same (rule, parameters) list, in the order of the runs: slicing
    # by position keeps two runs given under the same path apart.
    per = len(decisions) // len(histories) if histories and len(decisions) % len(histories) == 0 else 0
    if per:
        run_decisions = [decisions[i * per:(i + 1) * per] for i in range(len(histories))]
    else:
        run_decisions = [[d for d in decisions if d.run == h.path] for h in histories]
    per_cost = costs(decisions, histories, cost)
    cost_by_id = {id(d): c for d, c in zip(decisions, per_cost)}
    out: list[str] = []
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    title = title or ("logsage report: " + (histories[0].path if len(histories) == 1 else f"{len(histories)} runs"))
    metrics = sorted({d.metric for d in decisions if d.metric})
    out.append(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
               f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
               f'<meta name="viewport" content="width=device-width,initial-scale=1">'
               f'<title>{_esc(title)}</title><style>{_CSS}</style></head><body>')
    out.append(f"<header><h1>{_esc(title)}</h1><p class=\"meta\">logsage {__version__} · {now} · "
               f"{len(histories)} run(s) · metric: {_esc(', '.join(metrics) or '–')} · "
               f"rules: {_esc(', '.join(colors))}</p>"
               f"<p class=\"dim\">Regret = |kept checkpoint − best in hindsight| (relative: over |best|). "
               f"Saved = fraction of the run's steps after the stop. Cost: {_esc('; '.join(cost.assumptions()))}."
               f"</p></header>")
    if tune_result is not None:
        out.append(_tune_section(tune_result.to_dict()))
    if len(histories) > 1:
        pf = pareto_figure(replay_result.summary, colors)
        out.append(_summary_section(replay_result.summary, totals(per_cost), pf))
    else:
        pf = None
    for err in replay_result.errors:
        out.append(f'<p class="warn">{_esc(_run_message(err["run"], err["error"]))}</p>')
    figures = []
    out.append(_index_table(histories, run_decisions))
    for i, h in enumerate(histories):
        ds = run_decisions[i]
        fig = run_figure(h, ds, i, colors)
        figures.append(fig)
        out.append(_run_section(h, ds, fig, cost_by_id, priced=cost.gpu_hour_cost is not None))
    out.append(f"<script>{_JS}</script></body></html>")
    return Report("".join(out), figures, pf, list(replay_result.errors))


def _index_table(histories: Sequence[History], run_decisions: list[list[Any]]) -> str:
    if len(histories) < 2:
        return ""
    rows = []
    for i, h in enumerate(histories):
        ds = run_decisions[i]
        d0 = next((d for d in ds if d.best_step is not None), None)
        s = h.series.get(ds[0].metric) if ds and ds[0].metric else None
        rows.append(f'<tr><td><a href="#run-{i}">{_esc(h.path)}</a></td><td>{_esc(h.format)}</td>'
                    f'{_td(len(s) if s is not None else 0)}{_td(d0.best_step if d0 else None)}'
                    f'{_td(d0.best_value if d0 else None)}</tr>')
    return "<h2>Runs</h2>" + _table(["run", "format", "evaluations", "best step", "best value"], rows)


def _summary_section(summary: Sequence[dict], cost_rows: Sequence[dict], pf: ParetoFigure | None) -> str:
    from logsage.replay.scoring import params_key

    cost_by_key = {params_key(r["rule"], r["params"]): r for r in cost_rows}
    priced = any(c.get("money_saved") is not None for c in cost_rows)
    rows = []
    for r in summary:
        c = cost_by_key.get(params_key(r["rule"], r["params"]), {})
        rows.append("<tr>" + f"<td>{_esc(rule_spec(r['rule'], r['params']))}</td>"
                    + _num_td(r["n_decided"], f"{r['n_decided']}/{r['n_runs']}")
                    + _td(r["median_regret_rel"], "pct") + _td(r["mean_regret_rel"], "pct")
                    + _td(r["mean_regret"]) + _td(r["mean_fraction_saved"], "pct")
                    + _td(r["stopped_before_best_rate"], "pct") + _td(c.get("gpu_hours_saved"))
                    + (_td(c.get("money_saved"), spec=",.2f") if priced else "")
                    + f"<td>{'yes' if r.get('pareto') else ''}</td></tr>")
    table = _table(["rule", "runs judged", "median regret", "mean regret", "mean regret (units)", "mean saved",
                    "before best", "GPU-h saved", *(["money saved"] if priced else []), "Pareto"], rows)
    plot = (f"<h3>Regret against compute saved</h3>{svg_pareto(pf)}"
            "<p class=\"dim\">Each point is one rule with its parameters, averaged over the runs; the joined "
            "points are the Pareto front (no other rule saves more for less regret).</p>") if pf else ""
    return f'<section id="summary"><h2>Summary over runs</h2>{table}{plot}</section>'


def _tune_section(doc: dict) -> str:
    rec = doc.get("recommendation")
    obj = doc["objective"]
    parts = ['<section id="tune"><h2>Recommendation (tune)</h2><div class="box">']
    parts.append(f"<p><b>Objective:</b> {_esc(obj['description'])} (<code>{_esc(obj['spec'])}</code>)</p>")
    if rec is None:
        parts.append(f"<p class=\"warn\">No recommendation: {_esc(' '.join(doc.get('notes', [])))}</p></div>")
        return "".join(parts) + "</section>"
    parts.append(f"<p><b>Use:</b> <code>--rule {_esc(rec['spec'])}</code>"
                 + (f" <span class=\"warn\">({_esc(rec['note'])})</span>" if rec.get("note") else "") + "</p>")
    ins, loo = doc["in_sample"], doc["leave_one_run_out"]
    priced = doc["cost"].get("gpu_hour_cost") is not None

    def fig(block: dict | None) -> str:
        if not block or block.get("mean") is None:
            return "–"
        sp = block.get("spread") or {}
        return (f"{_pct(block['mean'])} <span class=\"dim\">(p90 {_pct(block.get('p90'))}, "
                f"max {_pct(sp.get('max'))})</span>")

    ok = loo.get("available")
    rows = [f"<tr><td>regret: share of the achievable improvement lost (mean)</td><td>{fig(ins['regret'])}</td>"
            f"<td>{fig(loo['regret']) if ok else '–'}</td></tr>",
            f"<tr><td>relative regret (mean)</td><td>{fig(ins['regret_rel'])}</td>"
            f"<td>{fig(loo['regret_rel']) if ok else '–'}</td></tr>",
            f"<tr><td>fraction of steps saved (mean)</td><td>{fig(ins['saved'])}</td>"
            f"<td>{fig(loo['saved']) if ok else '–'}</td></tr>",
            f"<tr><td>stopped before the best</td><td>{_pct(ins['stopped_before_best_rate'])}</td>"
            f"<td>{_pct(loo.get('stopped_before_best_rate')) if ok else '–'}</td></tr>",
            f"<tr><td>GPU-hours saved (total)</td><td>{_esc(_fmt(ins.get('gpu_hours_saved')))}</td>"
            f"<td>{_esc(_fmt(loo.get('gpu_hours_saved'))) if ok else '–'}</td></tr>"]
    if priced:
        rows.append(f"<tr><td>money saved (total)</td><td>{_esc(_fmt(ins.get('money_saved'), ',.2f'))}</td>"
                    f"<td>{_esc(_fmt(loo.get('money_saved'), ',.2f')) if ok else '–'}</td></tr>")
    parts.append(_table(["", f"in-sample ({ins['n_runs']} runs)",
                         f"leave-one-run-out ({loo['n_runs']} folds)" if ok else "leave-one-run-out"], rows, cls=""))
    if ok:
        parts.append(f"<p>Leave-one-run-out (tune on the other runs, score on the one left out) is the honest "
                     f"estimate for the next run; it chose the recommended rule in {_pct(loo['agreement'])} of the "
                     f"folds.</p>")
        frows = [f"<tr><td>{_esc(f['run'])}</td><td>{_esc(f.get('spec') or '–')}</td>"
                 + _td(f.get("regret"), "pct") + _td(f.get("fraction_saved"), "pct")
                 + f"<td>{_esc(_fmt(f.get('stopped_before_best')))}</td>" + _td(f.get("gpu_hours_saved"))
                 + (_td(f.get("money_saved"), spec=",.2f") if priced else "") + "</tr>" for f in loo["folds"]]
        parts.append("<details><summary>per run</summary>" + _table(
            ["run left out", "rule chosen on the others", "regret", "saved", "stopped before best", "GPU-h saved",
             *(["money saved"] if priced else [])], frows)
            + "</details>")
    else:
        parts.append(f"<p class=\"warn\">{_esc(loo['reason'])}</p>")
    crow = []
    for r in doc["comparison"]:
        cls = ' class="rec"' if r["label"] == "recommended" else ""
        crow.append(f"<tr{cls}><td>{_esc(r['label'])}</td><td><code>{_esc(r['spec'])}</code></td>"
                    + _num_td(r["n_decided"], f"{r['n_decided']}/{r['n_runs']}")
                    + _td(r["mean_regret"], "pct") + _td(r["p90_regret"], "pct") + _td(r["mean_regret_rel"], "pct")
                    + _td(r["mean_fraction_saved"], "pct") + _td(r["stopped_before_best_rate"], "pct")
                    + _td(r["gpu_hours_saved"]) + (_td(r.get("money_saved"), spec=",.2f") if priced else "")
                    + _td((r.get("on_disk") or {}).get("mean_regret"), "pct") + "</tr>")
    parts.append("<h3>Compared with the baseline and common defaults (same runs, no tuning)</h3>" + _table(
        ["", "rule", "runs judged", "mean regret", "p90 regret", "mean relative regret", "mean saved",
         "stopped before best", "GPU-h saved", *(["money saved"] if priced else []), "on disk (mean regret)"], crow))
    from logsage.analysis.tune import partly_judged

    parts.extend(f'<p class="warn">{_esc(line)}</p>' for line in partly_judged(doc["comparison"]))
    if doc.get("excluded"):
        parts.append("<h3>Runs left out</h3><ul>" + "".join(
            f"<li>{_esc(_run_message(e['run'], e['reason']))}</li>" for e in doc["excluded"]) + "</ul>")
    parts.append("</div></section>")
    return "".join(parts)


def _inventory_html(h: History, fig: RunFigure) -> str:
    if not h.checkpoints:
        return "<p class=\"dim\">Checkpoints: none found (a bare log): selections are over all evaluations.</p>"
    whole = [c for c in h.checkpoints if c.whole]
    broken = [c for c in h.checkpoints if not c.whole]
    without = [s for s, st in fig.checkpoints.items() if st == "none"]
    items = [f"<li><b>whole</b> ({len(whole)}): "
             + (", ".join(f"checkpoint-{c.step} <span class=\"dim\">({_esc(c.kind)})</span>" for c in whole) or "none")
             + "</li>"]
    if broken:
        items.append(f"<li class=\"warn\"><b>not whole</b> ({len(broken)}): " + "; ".join(
            f"checkpoint-{c.step}: {_esc(c.problem or 'incomplete')}" for c in broken) + "</li>")
    if without:
        shown = ", ".join(str(s) for s in without[:30]) + (" …" if len(without) > 30 else "")
        items.append(f"<li><b>evaluations without a checkpoint</b> ({len(without)}): steps {shown}</li>")
    return "<h3>Checkpoint inventory</h3><ul>" + "".join(items) + "</ul>"


def _run_section(h: History, ds: Sequence[Any], fig: RunFigure, cost_by_id: dict[int, Any], *,
                 priced: bool = False) -> str:
    s = h.series.get(fig.metric) if fig.metric else None
    facts = [f"format {h.format}", f"{len(s) if s is not None else 0} evaluations of {fig.metric or '–'}"]
    if h.max_steps:
        facts.append(f"budget {h.max_steps} steps")
    parts = [f'<section class="run" id="run-{fig.index}" data-run="{_esc(h.path)}">'
             f"<h2>{_esc(h.path)}</h2><p class=\"meta\">{_esc(' · '.join(facts))}</p>"]
    problems = {d.reason for d in ds if not d.decidable}
    if ds and len(problems) == 1 and not any(d.decidable for d in ds):
        from logsage.analysis.tune import without_run

        parts.append(f'<p class="warn">No rule can judge this run: {_esc(without_run(h.path, problems.pop()))}</p>')
    legend = "".join(f'<span data-rule="{_esc(m.label)}" title="click to hide or show">'
                     f'<i class="sw" style="background:{m.color}"></i>{_esc(m.label)}</span>' for m in fig.markers)
    parts.append(f'<div class="legend" data-plot="plot-{fig.index}">{legend}'
                 f'<span class="dim">— dashed: stop · ring: checkpoint kept · ★ best in hindsight'
                 f'{" · strip: green whole / red broken / grey no checkpoint" if fig.has_inventory else ""}'
                 f"</span></div>")
    parts.append(svg_run(fig))
    rows = []
    for d in ds:
        c = cost_by_id.get(id(d))
        kept = "–" if d.selected_step is None else f"{d.selected_step} ({_fmt(d.selected_value)})"
        regret = "–" if d.regret is None else f"{_fmt(d.regret)} ({_pct(d.regret_rel)})"
        trend = "–" if d.trend_slope is None else f"{d.trend_slope:+.3g}/eval (p {_fmt(d.trend_p, '.2g')})"
        rows.append("<tr>" + f"<td>{_esc(rule_spec(d.rule, d.params))}</td>" + _td(d.stop_step)
                    + _num_td(d.selected_step, kept) + _num_td(d.regret, regret) + _td(d.fraction_saved, "pct")
                    + _td(c.gpu_hours_saved if c else None)
                    + (_td(c.money_saved if c else None, spec=",.2f") if priced else "")
                    + f"<td>{_esc(_fmt(d.stopped_before_best))}</td>"
                    + _num_td(d.trend_slope, trend) + _td(d.overfit_gap)
                    + f"<td class=\"reason\">{_esc(d.reason)}"
                    + (f"<br><span class=\"warn\">{_esc(d.note)}</span>" if d.note else "")
                    + "</td></tr>")
    parts.append("<h3>Decisions</h3>" + _table(
        ["rule", "stop step", "kept step (value)", "regret (rel.)", "saved", "GPU-h saved",
         *(["money saved"] if priced else []), "before best", "trend at stop", "eval−train gap", "reason"], rows))
    parts.append(_inventory_html(h, fig))
    notes = [c.message for c in h.cleanups] + list(h.warnings)
    if notes:
        parts.append(f"<details><summary>{len(notes)} note(s) from reading the log</summary><ul>"
                     + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul></details>")
    parts.append("</section>")
    return "".join(parts)


# ====================================================================== entry points
def build_report(histories: Sequence[History], *, rules: Sequence[Any] | None = None, metric: str | None = None,
                 mode: str | None = None, with_tune: bool = False, objective: str | None = None,
                 cost: Any = None, title: str | None = None) -> Report:
    """Replay the runs through the rules (default `DEFAULT_REPORT_RULES`; with `with_tune`, the
    recommendation plus the common defaults) and render the report.

    Raises:
        RuleConfigError / UsageError: a bad rule, objective or mode (before any work).
    """
    from logsage.replay.engine import replay

    rule_specs: list[Any] = list(rules) if rules else list(DEFAULT_REPORT_RULES)
    tune_result = None
    if with_tune:
        from logsage.analysis.tune import tune

        tune_result = tune(histories, metric=metric, mode=mode, objective=objective, cost=cost)
        rec = tune_result.recommendation
        if rec is not None:  # drawn first, so it gets the first colour
            rule_specs = [(rec["rule"], rec["params"])] + rule_specs
    result = replay(histories, rule_specs, metric=metric, mode=mode)
    return render_html(histories, result, title=title, tune_result=tune_result, cost=cost)


def report_paths(paths: Sequence[str], out: str | os.PathLike, *, png_dir: str | os.PathLike | None = None,
                 format: str | None = None, use_cache: bool = True, cache_dir: str | None = None,
                 **kwargs: Any) -> dict[str, Any]:
    """Load each path as one run, build the report and write it (and the PNGs).

    Runs that cannot be read are listed in the report and the returned `errors`.
    Returns {"out", "written", "runs", "errors"}.
    """
    from logsage.core.errors import IngestError, UsageError
    from logsage.ingest import load_histories

    histories, errors = load_histories(paths, format=format, use_cache=use_cache, cache_dir=cache_dir)
    if not histories:
        if errors:
            raise IngestError("no run could be read: " + "; ".join(e["error"] for e in errors))
        raise UsageError("no run given; pass at least one run folder or log file")
    report = build_report(histories, **kwargs)
    if errors:  # unreadable runs are named at the top of the report, not silently missing
        note = "".join(f'<p class="warn">{_esc(_run_message(e["run"], e["error"]))}</p>' for e in errors)
        report.html = report.html.replace("</header>", "</header>" + note, 1)
    written = report.write(out, png_dir=png_dir)
    return {"out": str(out), "written": written, "runs": [h.path for h in histories],
            "errors": errors + list(report.errors)}


def referenced_urls(html_text: str) -> list[str]:
    """Every src/href/xlink:href (and CSS url()) value in the HTML that is not an in-page
    anchor or a data: URI - what must be empty for a self-contained report."""
    from html.parser import HTMLParser
    import re

    found: list[str] = []

    class _P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            for k, v in attrs:
                if k in ("src", "href", "xlink:href", "srcset", "poster", "data", "action") and v is not None:
                    if not (v.startswith("#") or v.startswith("data:")):
                        found.append(v)

    _P().feed(html_text)
    for m in re.finditer(r"url\(\s*['\"]?([^)'\"]+)", html_text):
        if not m.group(1).startswith(("data:", "#")):
            found.append(m.group(1))
    for m in re.finditer(r"@import\s+['\"]([^'\"]+)", html_text):
        found.append(m.group(1))
    return found


__all__ = ["DEFAULT_REPORT_RULES", "Marker", "ParetoFigure", "Report", "RunFigure", "build_report",
           "pareto_figure", "png_pareto", "png_run", "referenced_urls", "render_html", "report_paths",
           "run_figure", "svg_pareto", "svg_run", "write_pngs"]
