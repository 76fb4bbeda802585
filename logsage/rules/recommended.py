"""The learned default: the rule `logsage tune` recommends on the public corpora, shipped as data.

`--rule recommended` is the rule (and parameters) that `tune` chose on the bundled public
runs (`logsage/data/recommended_rule.json`, written by `benchmarks/learn_default.py` with
the command, the corpora and the leave-one-run-out figures), so that a user with no past
runs of their own still gets the evidence-based choice. It decides exactly as that rule
does with those parameters; `logsage rules recommended` and tune's comparison show the
figures it was chosen on.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

from logsage.rules.base import Outcome, RuleInput, get_rule, resolve_params, rule

DATA = "recommended_rule.json"


@lru_cache(maxsize=1)
def learned() -> dict[str, Any]:
    """The shipped choice: {"rule", "params", "tuned_on", "command", "leave_one_run_out", "in_sample"}."""
    # one name per joinpath: Traversable.joinpath takes several only from Python 3.11 (we support 3.10)
    return json.loads(resources.files("logsage").joinpath("data").joinpath(DATA).read_text())


def learned_spec() -> str:
    from logsage.rules.base import rule_spec

    doc = learned()
    return rule_spec(doc["rule"], resolve_params(get_rule(doc["rule"]), doc["params"]))


def figures_text() -> str:
    doc = learned()
    loo = doc.get("leave_one_run_out") or {}
    if not loo:
        return "no figures recorded"
    return (f"leave-one-run-out on {loo.get('n_runs')} public runs: mean regret {100 * loo['mean_regret']:.1f}% "
            f"(p90 {100 * loo['p90_regret']:.1f}%) of the achievable improvement, "
            f"{100 * loo['mean_saved']:.1f}% of the steps saved")


@rule("recommended",
      reference="the forecast rule (Domhan, Springenberg & Hutter 2015) as logsage tune chose it on the public corpora "
                "shared/real-runs + real-runs-2 (logsage/data/recommended_rule.json)",
      grid={})
def recommended(x: RuleInput) -> Outcome:
    """Recommended: the rule and parameters tune learned on public fine-tuning runs (see `logsage rules recommended`).

    Decides exactly as the shipped rule with the shipped parameters (its reason says
    which), so it is as causal and direction-free as that rule.
    """
    doc = learned()
    info = get_rule(doc["rule"])
    params = resolve_params(info, doc["params"])
    out = info.func(x, **{p.name: params[p.name] for p in info.params})
    return Outcome(out.stop_index, out.best_index, f"recommended = {learned_spec()}: {out.reason}", out.decidable)
