"""Plots of a run's curves with stopping decisions marked (PNG, matplotlib, imported lazily).

    >>> from logsage.plot import plot_run
    >>> plot_run(history, [d for d in result.decisions if d.run == history.path], "run.png")

The eval metric the decisions monitor is drawn against the global step, with the
training loss (on the same axis when the metric is a loss, else on a second axis).
Each decision adds a dashed vertical line at its stop and a marker on its selected
checkpoint, labelled with its rule and the parameters that differ from the defaults.
Non-finite evaluations are marked on the bottom edge so that a diverged run does not
look clean. Used by `logsage replay --plot` and by the HTML report.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import numpy as np


def _label(decision: Any) -> str:
    from logsage.rules import get_rule

    try:
        info = get_rule(decision.rule)
        defaults = {p.name: p.default for p in info.params}
    except Exception:  # an unknown rule name still gets a label
        defaults = {}
    defaults.update(min_evals=0, min_steps=0)

    def same(a: Any, b: Any) -> bool:
        both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
        return both_nan or a == b

    changed = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in decision.params.items()
               if k not in defaults or not same(defaults[k], v)]
    return decision.rule + (f" ({', '.join(changed)})" if changed else "")


def plot_run(history: Any, decisions: Sequence[Any], out_png: str | os.PathLike, *,
             metric: str | None = None, title: str | None = None) -> str:
    """Draw `history`'s eval and train curves with each decision's stop and selection; write `out_png`.

    Args:
        history: a `History`.
        decisions: `Decision`s of this run (any number; undecidable ones are skipped).
        out_png: where to write the PNG (its folder must exist).
        metric: the eval series to draw (default: the decisions' metric, else the run's
            primary eval metric).
        title: default: the run's path.

    Returns:
        The path written, as a string.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display needed; a no-op if a backend is already set
    import matplotlib.pyplot as plt

    name = metric or next((d.metric for d in decisions if d.metric), None) or history.primary_eval_metric()
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    try:
        if name is not None:
            s = history.metric(name)
            finite = np.isfinite(s.values)
            ax.plot(s.steps[finite], s.values[finite], "o-", ms=3, lw=1.5, color="C0", label=f"{s.name} (eval)")
            if (~finite).any():
                for step in s.steps[~finite]:
                    ax.axvline(step, color="red", lw=0.6, alpha=0.4)
                ax.plot([], [], color="red", lw=0.6, alpha=0.4, label="non-finite eval")
            ax.set_ylabel(s.name)
        train = history.train_loss()
        if train is not None and (name is None or train.name != name):
            is_loss = name is not None and "loss" in history.metric(name).canonical
            tax = ax if is_loss else ax.twinx()
            ok = np.isfinite(train.values)
            tax.plot(train.steps[ok], train.values[ok], "-", lw=0.8, alpha=0.6, color="C7",
                     label=f"{train.name} (train)")
            if not is_loss:
                tax.set_ylabel(train.name)
        for i, d in enumerate(x for x in decisions if getattr(x, "decidable", True)):
            color = f"C{(i % 8) + 1}"
            label = _label(d)
            if d.stop_step is not None:
                ax.axvline(d.stop_step, ls="--", lw=1.2, color=color, label=f"{label}: stop {d.stop_step}")
            if d.selected_step is not None and d.selected_value is not None and math.isfinite(d.selected_value):
                # Shrinking stars: several rules often keep the same checkpoint; all stay visible.
                ax.plot([d.selected_step], [d.selected_value], marker="*", ms=max(16 - 3 * i, 7), color=color, mec="black",
                        mew=0.6, ls="none", label=f"{label}: keeps {d.selected_step}")
        ax.set_xlabel("global step")
        ax.set_title(title or str(history.path), fontsize=10)
        handles, labels = [], []
        for a in fig.axes:
            h, lab = a.get_legend_handles_labels()
            handles += h
            labels += lab
        if handles:
            ax.legend(handles, labels, fontsize=7, loc="best", framealpha=0.8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_png)
    finally:
        plt.close(fig)
    return str(out_png)
