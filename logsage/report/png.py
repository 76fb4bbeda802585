"""PNG rendering (matplotlib, Agg, imported only when a PNG is asked for) of `report.figures`' descriptions."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from logsage.report.figures import BEST_COLOR, CK_COLORS, CK_WORDS, EVAL_COLOR, ParetoFigure, RunFigure, TRAIN_COLOR, grouped_labels, keep_index, same_stops, value_range


# ====================================================================== PNG rendering
class Canvas:
    """One matplotlib figure reused for every run plot: making figures and their ticks costs more
    than drawing the curves."""

    def __init__(self, plt: Any):
        self.plt = plt
        self.fig, self.ax = plt.subplots(figsize=(11.0, 3.6), dpi=100)
        self.ax2 = self.ax.twinx()
        self.fig.subplots_adjust(left=0.07, right=0.66, top=0.9, bottom=0.14)

    def close(self) -> None:
        self.plt.close(self.fig)


def png_run(fig: RunFigure, path: str | os.PathLike, *, canvas: Canvas | None = None) -> None:
    """The same run plot as a PNG (matplotlib, Agg)."""
    own = canvas is None
    cv = canvas or Canvas(pyplot())
    ax, ax2 = cv.ax, cv.ax2
    ax.cla()
    ax2.cla()
    ax2.yaxis.tick_right()  # cla() puts a twin's ticks and label back on the left
    ax2.yaxis.set_label_position("right")
    try:
        rng = value_range(fig.eval_values) if len(fig.eval_values) else None
        if rng:
            ax.plot(fig.eval_steps, fig.eval_values, color=EVAL_COLOR, lw=1.4, marker="o" if len(fig.eval_steps)
                    <= 120 else None, ms=2.5, label=fig.metric)
            ax.set_yscale("log" if rng[2] else "linear")
            ax.set_ylabel(fig.metric or "")
        has_train = fig.train_values is not None and fig.train_steps is not None and len(fig.train_steps) > 0
        ax2.set_visible(has_train)
        if fig.train_values is not None and fig.train_steps is not None and has_train:
            trng = value_range(fig.train_values)
            idx = _decimate_index(fig.train_steps, fig.train_values, 760)
            ax2.plot(fig.train_steps[idx], fig.train_values[idx], color=TRAIN_COLOR, lw=0.8)
            ax2.set_yscale("log" if trng and trng[2] else "linear")
            ax2.set_ylabel(f"{fig.train_name} (train)", color="#777777")
            ax.set_zorder(ax2.get_zorder() + 1)
            ax.patch.set_visible(False)
        together = dict(same_stops(fig.markers))
        for k, m in enumerate(fig.markers):
            if m.stop_step is not None:
                names = together.get(m.stop_step, [m.label])
                if names[0] == m.label:  # coinciding lines hide each other: one entry names them all
                    ax.axvline(m.stop_step, color=m.color, ls="--", lw=1.2, label=f"{' = '.join(names)} stop")
            if m.selected_step is not None and m.selected_value is not None and math.isfinite(m.selected_value):
                ax.plot([m.selected_step], [m.selected_value], marker="o", ms=8 + 3 * (k % 3), mfc="none",
                        mec=m.color, mew=1.6, ls="none")
        if fig.best_step is not None and fig.best_value is not None:
            ax.plot([fig.best_step], [fig.best_value], marker="*", ms=12, color=BEST_COLOR, mec="#7a5c00",
                    ls="none", label="best in hindsight")
        if any(m.selected_step is not None for m in fig.markers):
            ax.plot([], [], marker="o", ms=8, mfc="none", mec="#555555", mew=1.6, ls="none",
                    label="ring: checkpoint kept")
        if fig.has_inventory:
            xs = list(fig.checkpoints)
            cs = [CK_COLORS[st] for st in fig.checkpoints.values()]
            ax.scatter(xs, [0.0] * len(xs), transform=ax.get_xaxis_transform(), marker="|", c=cs, s=60,
                       clip_on=False)
            for state in dict.fromkeys(fig.checkpoints.values()):
                ax.scatter([], [], marker="|", c=CK_COLORS[state], s=60, label=f"tick: {CK_WORDS[state]}")
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
    """`keep_index` for a curve in data units drawn `width` pixels wide."""
    lo, hi = float(steps.min()), float(steps.max())
    px = (steps.astype(float) - lo) / ((hi - lo) or 1.0) * width
    return keep_index(px, np.asarray(values, dtype=float), width)


def png_pareto(fig: ParetoFigure, path: str | os.PathLike, *, _mpl: Any = None) -> None:
    plt = _mpl or pyplot()
    f, ax = plt.subplots(figsize=(7.6, 3.4), dpi=100)
    try:
        for p in fig.points:
            ax.plot([p.saved], [p.regret], "o", color=p.color, ms=7 if p.pareto else 4)
        front = sorted((p for p in fig.points if p.pareto), key=lambda p: p.saved)
        if front:
            ax.plot([p.saved for p in front], [p.regret for p in front], color="#444444", lw=1)
            for p, names in grouped_labels(front):
                ax.annotate(names, (p.saved, p.regret), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel("mean fraction of steps saved")
        ax.set_ylabel(fig.regret_label)
        ax.set_title("regret against compute saved (Pareto front joined)", fontsize=9)
        f.subplots_adjust(left=0.09, right=0.97, top=0.9, bottom=0.15)
        f.savefig(path)
    finally:
        plt.close(f)


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt
