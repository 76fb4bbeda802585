"""Inline SVG for the HTML report: the run plot and the Pareto plot, from `report.figures`' descriptions.

No matplotlib: fast, crisp at any zoom, and every label placed inside the SVG's box (the
browser test measures it at 1280 px).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from logsage.report.figures import CK_WORDS, ParetoFigure, RunFigure, Scale, decimate, esc, fmt, grouped_labels, pct, polyline_segments, value_range


# ====================================================================== SVG rendering
PLOT_W, PLOT_H = 1180, 330  # the page's content width (1240 - padding): charts use the whole row
PLOT_ML, PLOT_MR, PLOT_MT, PLOT_MB = 62, 78, 14, 52  # margins: left/right axes labels, checkpoint strip at the bottom


def _axis_label(v: float) -> str:
    return f"{v:.4g}"


def svg_run(fig: RunFigure) -> str:
    """The run's plot as an inline SVG element (class run-plot, data-run = the run's path)."""
    x0, x1 = PLOT_ML, PLOT_W - PLOT_MR
    y0, y1 = PLOT_H - PLOT_MB, PLOT_MT  # pixel y grows downwards
    parts = [f'<svg class="run-plot" id="plot-{fig.index}" data-run="{esc(fig.run)}" '
             f'viewBox="0 0 {PLOT_W} {PLOT_H}" width="{PLOT_W}" height="{PLOT_H}" role="img" '
             f'aria-label="{esc(fig.metric or "no metric")} of {esc(fig.run)}">']
    steps_all = [a for a in (fig.eval_steps, fig.train_steps) if a is not None and len(a)]
    if not steps_all:
        parts.append(f'<text x="{PLOT_W / 2}" y="{PLOT_H / 2}" text-anchor="middle" class="empty">'
                     'no evaluations to plot</text></svg>')
        return "".join(parts)
    smin = min(int(a.min()) for a in steps_all)
    smax = max(int(a.max()) for a in steps_all)
    for m in fig.markers:
        if m.stop_step is not None:
            smax = max(smax, m.stop_step)
    sx = Scale(smin, smax if smax > smin else smin + 1, x0, x1)
    parts.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" class="frame"/>')
    # x axis ticks
    for t in sx.ticks():
        px = float(sx(t))
        parts.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}" class="tick"/>'
                     f'<text x="{px:.1f}" y="{y0 + 15}" text-anchor="middle">{int(round(t))}</text>')
    parts.append(f'<text x="{(x0 + x1) / 2}" y="{PLOT_H - 4}" text-anchor="middle" class="axis-title">step</text>')
    # train loss on the right axis
    if fig.train_values is not None and fig.train_steps is not None and len(fig.train_steps):
        rng = value_range(fig.train_values)
        if rng:
            sy2 = Scale(rng[0], rng[1], y0, y1, log=rng[2])
            cx, cy = decimate(sx(fig.train_steps.astype(float)), sy2(for_scale(fig.train_values, rng[2])), x1 - x0)
            for seg in polyline_segments(cx, cy):
                parts.append(f'<polyline class="train" points="{seg}"/>')
            for t in sy2.ticks():
                py_t = float(sy2(t))
                parts.append(f'<text x="{x1 + 4}" y="{py_t + 3:.1f}" class="train-tick">{_axis_label(t)}</text>')
            # Rotated by +90 degrees the glyphs hang to the left of the anchor: 14 px in from the edge
            # keeps the whole title inside the SVG's box.
            tx = PLOT_W - 14
            parts.append(f'<text x="{tx}" y="{(y0 + y1) / 2}" class="axis-title train-title" '
                         f'transform="rotate(90 {tx} {(y0 + y1) / 2})" text-anchor="middle">'
                         f'{esc(fig.train_name)} (train)</text>')
    # eval metric on the left axis
    rng = value_range(fig.eval_values) if len(fig.eval_values) else None
    sy = None
    if rng:
        sy = Scale(rng[0], rng[1], y0, y1, log=rng[2])
        for t in sy.ticks():
            py_t = float(sy(t))
            parts.append(f'<line x1="{x0}" y1="{py_t:.1f}" x2="{x1}" y2="{py_t:.1f}" class="grid"/>'
                         f'<text x="{x0 - 4}" y="{py_t + 3:.1f}" text-anchor="end">{_axis_label(t)}</text>')
        ex = sx(fig.eval_steps.astype(float))
        ey = sy(for_scale(fig.eval_values, rng[2]))
        cx, cy = decimate(ex, ey, x1 - x0)
        for seg in polyline_segments(cx, cy):
            parts.append(f'<polyline class="eval" points="{seg}"/>')
        if len(fig.eval_steps) <= 120:  # dots stay readable; beyond that the line says it all
            parts.append('<g class="eval-dots">' + "".join(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2"/>' for x, y in zip(ex.tolist(), ey.tolist())
                if math.isfinite(y)) + "</g>")
        bad = ~np.isfinite(fig.eval_values)
        for st, v in zip(fig.eval_steps[bad].tolist(), fig.eval_values[bad].tolist()):
            parts.append(f'<text x="{float(sx(st)):.1f}" y="{y1 + 10}" text-anchor="middle" class="nonfinite">'
                         f'<title>step {st}: {fmt(v)}</title>×</text>')
    parts.append(f'<text x="12" y="{(y0 + y1) / 2}" class="axis-title" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(y0 + y1) / 2})">{esc(fig.metric or "")}</text>')
    # rules: stop lines and selected checkpoints
    for k, m in enumerate(fig.markers):
        g = [f'<g class="rule" data-rule="{esc(m.label)}"><title>{esc(m.tooltip)}</title>']
        if m.stop_step is not None:
            px = float(sx(m.stop_step)) + (k % 4) * 0.8  # a hair apart so equal stops stay visible
            g.append(f'<line x1="{px:.1f}" y1="{y1}" x2="{px:.1f}" y2="{y0}" stroke="{m.color}" class="stop"/>')
        if sy is not None and m.selected_step is not None and m.selected_value is not None \
                and math.isfinite(m.selected_value):
            g.append(f'<circle cx="{float(sx(m.selected_step)):.1f}" '
                     f'cy="{float(sy(for_scale(np.array([m.selected_value]), sy.log)[0])):.1f}" '
                     f'r="{5 + 2 * (k % 3)}" stroke="{m.color}" class="selected"/>')
        g.append("</g>")
        parts.append("".join(g))
    if sy is not None and fig.best_step is not None and fig.best_value is not None:
        bx, by = float(sx(fig.best_step)), float(sy(for_scale(np.array([fig.best_value]), sy.log)[0]))
        parts.append(f'<path class="best" d="{_star(bx, by, 7)}"><title>best in hindsight: '
                     f'{fmt(fig.best_value)} at step {fig.best_step}</title></path>')
    # checkpoint inventory strip
    if fig.has_inventory:
        ys = y0 + 22
        parts.append(f'<text x="{x0 - 4}" y="{ys + 4}" text-anchor="end" class="strip-label">ckpt</text>')
        for st, state in fig.checkpoints.items():
            parts.append(f'<rect x="{float(sx(st)) - 2:.1f}" y="{ys - 3}" width="4" height="7" class="ck-{state}">'
                         f'<title>step {st}: {CK_WORDS[state]}</title></rect>')
    parts.append("</svg>")
    return "".join(parts)


def for_scale(values: np.ndarray, log: bool) -> np.ndarray:
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


_LABEL_CHAR_W, _LABEL_H = 5.9, 12.0  # a 10.5 px label: average glyph width and line height


def _place_label(px: float, py: float, text: str, placed: Sequence[tuple[float, float, float, float]],
                 frame: tuple[float, float, float, float]) -> tuple[float, float, float, float] | None:
    """The box (left, top, right, bottom) of the first spot around (px, py) that stays inside
    `frame` (x0, x1, top, bottom) and overlaps no box in `placed`; None if there is none."""
    w, h = _LABEL_CHAR_W * len(text), _LABEL_H
    fx0, fx1, ftop, fbottom = frame
    for dy in (-8 - h, 6, -8 - 2 * h, 6 + h, -8 - 3 * h, 6 + 2 * h):
        for left in (px + 7, px - 7 - w):
            box = (left, py + dy, left + w, py + dy + h)
            inside = box[0] >= fx0 and box[2] <= fx1 and box[1] >= ftop - 12 and box[3] <= fbottom
            if inside and not any(box[0] < q[2] and q[0] < box[2] and box[1] < q[3] and q[1] < box[3]
                                  for q in placed):
                return box
    return None


def svg_pareto(fig: ParetoFigure) -> str:
    """Regret against compute saved, the Pareto front joined and labelled (class pareto-plot)."""
    w, h, ml, mr, mt, mb = PLOT_W, 360, 62, 20, 14, 40
    x0, x1, y0, y1 = ml, w - mr, h - mb, mt
    sav = np.array([p.saved for p in fig.points])
    reg = np.array([p.regret for p in fig.points])
    sx = Scale(0.0, max(1.0, float(sav.max())), x0, x1)
    top = float(reg.max()) * 1.08 if float(reg.max()) > 0 else 1.0
    sy = Scale(0.0, top, y0, y1)
    parts = [f'<svg class="pareto-plot" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
             f'aria-label="regret against fraction of steps saved">',
             f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" class="frame"/>']
    for t in sx.ticks():
        px = float(sx(t))
        # The corner's "0%" starts at the axis so it never runs into the y axis' "0".
        anchor = "start" if px <= x0 + 0.5 else "middle"
        parts.append(f'<line x1="{px:.1f}" y1="{y0}" x2="{px:.1f}" y2="{y0 + 4}" class="tick"/>'
                     f'<text x="{px:.1f}" y="{y0 + 15}" text-anchor="{anchor}">{100 * t:.0f}%</text>')
    for t in sy.ticks():
        py = float(sy(t))
        parts.append(f'<line x1="{x0}" y1="{py:.1f}" x2="{x1}" y2="{py:.1f}" class="grid"/>'
                     f'<text x="{x0 - 4}" y="{py + 3:.1f}" text-anchor="end">{_axis_label(t)}</text>')
    parts.append(f'<text x="{(x0 + x1) / 2}" y="{h - 6}" text-anchor="middle" class="axis-title">'
                 'mean fraction of steps saved</text>')
    parts.append(f'<text x="12" y="{(y0 + y1) / 2}" class="axis-title" text-anchor="middle" '
                 f'transform="rotate(-90 12 {(y0 + y1) / 2})">{esc(fig.regret_label)}</text>')
    front = sorted((p for p in fig.points if p.pareto), key=lambda p: p.saved)
    if len(front) > 1:
        pts = " ".join(f"{float(sx(p.saved)):.1f},{float(sy(p.regret)):.1f}" for p in front)
        parts.append(f'<polyline class="front" points="{pts}"/>')
    for p in fig.points:
        cls = "pt front-pt" if p.pareto else "pt"
        parts.append(f'<circle class="{cls}" cx="{float(sx(p.saved)):.1f}" cy="{float(sy(p.regret)):.1f}" '
                     f'r="{5 if p.pareto else 3.5}" fill="{p.color}"><title>{esc(p.label)}: saved '
                     f'{pct(p.saved)}, {esc(fig.regret_label)} {fmt(p.regret)}</title></circle>')
    placed: list[tuple[float, float, float, float]] = []
    on_front = {id(p) for p in front}
    # Front labels first (they matter most), then the others in grey; each takes the first
    # free spot around its point, so no two labels overlap.
    for p, names in grouped_labels(front) + grouped_labels([p for p in fig.points if id(p) not in on_front]):
        box = _place_label(float(sx(p.saved)), float(sy(p.regret)), names, placed, (x0, x1, y1, y0))
        if box is None:
            continue  # no free spot: the point's tooltip still names it
        placed.append(box)
        cls = "front-label" if id(p) in on_front else "front-label off-front"
        parts.append(f'<text class="{cls}" x="{box[0]:.1f}" y="{box[3] - 3:.1f}">{esc(names)}</text>')
    parts.append("</svg>")
    return "".join(parts)
