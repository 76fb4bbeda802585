"""`plot_run`: one run's curves with stopping decisions marked, as a PNG (matplotlib, imported lazily).

    >>> from logsage.report.plot import plot_run
    >>> plot_run(history, [d for d in result.decisions if d.run == history.path], "run.png")

The monitored eval metric is drawn against the global step with the training loss
on a second axis; each decision adds a dashed line at its stop and a ring on its
selected checkpoint; the hindsight best is a star; the checkpoint inventory is a
strip of ticks (whole / broken / none) under the axis. This is the same figure the
HTML report draws (`logsage.report.figures.run_figure` describes it once; the report renders
it as inline SVG, this module as PNG), so `replay --plot` and `report --png` agree.
"""

from __future__ import annotations

import os
from typing import Any, Sequence


def check_plot_target(path: str | os.PathLike) -> None:
    """Raise a one-line LogsageError when a PNG cannot be written to `path` (before any work is done)."""
    from pathlib import Path

    from logsage.core.errors import LogsageError

    folder = Path(path).parent
    if not folder.is_dir():
        raise LogsageError(f"{path}: folder {folder} does not exist; create it or choose another --plot path")
    from logsage.core.extras import require

    require("plots (replay --plot, report --png)", "matplotlib")


def plot_run(history: Any, decisions: Sequence[Any], out_png: str | os.PathLike, *,
             metric: str | None = None, title: str | None = None) -> str:
    """Draw `history`'s eval and train curves with each decision's stop and selection; write `out_png`.

    Args:
        history: a `History`.
        decisions: `Decision`s of this run (any number; undecidable ones get no marker).
        out_png: where to write the PNG (its folder must exist).
        metric: the eval series to draw (default: the decisions' metric, else the run's
            primary eval metric).
        title: the plot title (default: the run path).

    Returns:
        The path written, as a string.
    """
    from logsage.report.figures import rule_colors, run_figure
    from logsage.report.png import png_run
    from logsage.rules.base import rule_spec

    decisions = list(decisions)
    if metric is not None:
        decisions = [d for d in decisions if d.metric == metric] or decisions
    colors = rule_colors([rule_spec(d.rule, d.params) for d in decisions])
    fig = run_figure(history, decisions, 0, colors)
    if metric is not None and fig.metric != metric and metric in history.series:
        s = history.series[metric]
        fig.metric, fig.eval_steps, fig.eval_values = metric, s.steps, s.values
    if title is not None:
        fig.run = title
    png_run(fig, out_png)
    return str(out_png)
