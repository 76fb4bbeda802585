"""Learn the shipped default rule (`--rule recommended`) on the public corpora and write it as package data.

    python benchmarks/learn_default.py ../shared/real-runs ../shared/real-runs-2

Every run folder of the corpora with at least 5 evaluations of an eval metric is used (read in
place); `logsage tune` searches every rule over its default grid with its default objective
(beat the HF patience 3 baseline), and the winner's parameters are written to
`logsage/data/recommended_rule.json` with its leave-one-run-out and in-sample figures and the
baseline's, next to the command that reproduces them. Run it again after changing a rule or a
grid; `tests/analysis/test_tune.py` checks that the shipped file is what tune chooses on the corpora.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MIN_EVALS = 5
OUT = Path(__file__).resolve().parent.parent / "logsage" / "data" / "recommended_rule.json"


def corpus_runs(roots: list[str]) -> list[str]:
    """Every run folder (or run file) two levels below each corpus root (<root>/<format>/<run>)."""
    return sorted(str(p) for root in roots for p in Path(root).glob("*/*") if p.name != "INDEX.md")


def learn(roots: list[str]) -> dict:
    from logsage.analysis.tune import tune_paths

    paths = corpus_runs(roots)
    res = tune_paths(paths, min_evals=MIN_EVALS)
    rec, loo, ins = res.recommendation, res.leave_one_run_out, res.in_sample
    base = next(r for r in res.comparison if r["label"].startswith("baseline"))
    return {
        "rule": rec["rule"],
        "params": {k: v for k, v in rec["params"].items() if k not in ("min_evals", "min_steps")},
        "spec": rec["spec"],
        "tuned_on": [str(r) for r in roots],
        "n_runs": len(res.runs),
        "command": "python benchmarks/learn_default.py " + " ".join(roots) + "  (= logsage tune <every run> "
                   f"--min-evals {MIN_EVALS})",
        "objective": rec["chosen_by"],
        "leave_one_run_out": {"n_runs": loo["n_runs"], "mean_regret": loo["regret"]["mean"],
                              "p90_regret": loo["regret"]["p90"], "mean_saved": loo["saved"]["mean"],
                              "agreement": loo["agreement"]},
        "in_sample": {"mean_regret": ins["regret"]["mean"], "p90_regret": ins["regret"]["p90"],
                      "mean_saved": ins["saved"]["mean"]},
        "baseline": {"spec": base["spec"], "mean_regret": base["mean_regret"], "p90_regret": base["p90_regret"],
                     "mean_saved": base["mean_fraction_saved"]},
    }


if __name__ == "__main__":
    roots = sys.argv[1:] or ["../shared/real-runs", "../shared/real-runs-2"]
    doc = learn(roots)
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
