"""Compare stopping rules on your own runs with the Python API (the library behind `logsage replay`).

    python examples/compare_rules.py examples/runs/*

For each run: where each rule would have stopped and what it would have cost against the
best checkpoint in hindsight; then the per-rule summary over all runs, Pareto front marked.
"""

from __future__ import annotations

import sys

from logsage.ingest import load_histories
from logsage.decide.engine import replay
from logsage.rules import rule_spec

RULES = [
    "hf:patience=3,threshold=1e-4",  # the common blog recipe
    "lightning",  # Lightning's defaults (patience 3)
    "smoothed:window=3,patience=3",  # patience on a moving average
    "up:s=3",  # Prechelt's successive increases
    "none",  # train to the end: the baseline
]


def main(paths: list[str]) -> int:
    histories, errors = load_histories(paths)
    for e in errors:
        print(f"skipped {e['run']}: {e['error']}", file=sys.stderr)
    if not histories:
        return 1
    result = replay(histories, RULES)
    for d in result.decisions:
        stop = "never" if d.stop_step is None else d.stop_step
        regret = "-" if d.regret_rel is None else f"{d.regret_rel:.1%}"
        saved = "-" if d.fraction_saved is None else f"{d.fraction_saved:.0%}"
        print(f"{d.run:70.70} {d.rule:10} stop {stop!s:>6}  keep {d.selected_step!s:>6}  regret {regret:>6}  saved {saved:>4}")
    print()
    for row in result.summary:
        mark = "*" if row.get("pareto") else " "
        print(f"{mark} {rule_spec(row['rule'], row['params']):32} median regret {row['median_regret_rel']:.1%}"
              f"  mean saved {row['mean_fraction_saved']:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
