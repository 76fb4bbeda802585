"""The live decision: does any of these rules stop at the latest evaluation of the series so far?

Framework-free: the drop-in callbacks (`logsage.integrations.hf`, `.lightning`, `.keras`)
and `logsage train` collect the monitored metric's history as the run logs it and ask
`first_stop`, which calls the very function `logsage replay` uses
(`logsage.decide.engine.decide_values`). No counters are kept anywhere: the decision is
a function of the logged history, so the live stop is by construction the stop an
offline replay of the finished log computes, and a resumed run whose history is
restored decides exactly as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from logsage.rules.base import get_rule, parse_rule_spec, resolve_params


@dataclass(frozen=True)
class LiveRule:
    spec: str
    name: str
    params: dict[str, Any]  # as given (strings), resolved by decide_values


def parse_live_rules(specs: str | Sequence[str]) -> list[LiveRule]:
    """Parse and validate rule specs now (a bad rule is an error before any model loads)."""
    rules = []
    for spec in [specs] if isinstance(specs, str) else list(specs):
        name, given = parse_rule_spec(spec)
        resolve_params(get_rule(name), given)  # raises RuleConfigError on a bad name, parameter or value
        rules.append(LiveRule(spec, name, dict(given)))
    if not rules:
        from logsage.core.errors import RuleConfigError

        raise RuleConfigError("no rule given; pass a rule spec such as 'hf:patience=3' (see `logsage rules`)")
    return rules


def wants_per_example(rules: Sequence[LiveRule]) -> bool:
    return any("per_example" in get_rule(r.name).needs for r in rules)


def first_stop(rules: Sequence[LiveRule], steps: Sequence[int] | np.ndarray, values: Sequence[float] | np.ndarray, *,
               mode: str, metric: str, train_steps: Sequence[int] | np.ndarray | None = None,
               train_values: Sequence[float] | np.ndarray | None = None, budget_steps: int | None = None,
               per_example: Mapping[int, Mapping[str, np.ndarray]] | None = None) -> dict[str, Any] | None:
    """The first rule that stops at (or before) the latest evaluation, as a dict; None to go on.

    The dict has `rule` (the spec), `step` (the latest evaluation's step, where training
    stops now), `rule_stop_step` (where the rule fired: earlier only when the history
    was restored from a segment that ran without the rule), `eval_index`, `best_step`
    (the evaluation the rule keeps) and `reason`.
    """
    from logsage.decide.engine import decide_values

    st = np.asarray(steps, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    if vals.size == 0:
        return None
    tr_s = None if train_steps is None or len(train_steps) == 0 else np.asarray(train_steps, dtype=np.int64)
    tr_v = None if tr_s is None else np.asarray(train_values, dtype=np.float64)
    last = vals.size - 1
    for r in rules:
        outcome = decide_values(
            vals, r.name, r.params, mode=mode, steps=st, train_steps=tr_s, train_values=tr_v,
            budget_steps=budget_steps if budget_steps and budget_steps > 0 else None,
            per_example={k: v for k, v in (per_example or {}).items() if k <= int(st[-1])} or None,
            metric=metric,
        )
        if outcome.stop_index is not None and outcome.stop_index <= last:
            late = outcome.stop_index < last
            return {
                "rule": r.spec,
                "step": int(st[last]),
                "rule_stop_step": int(st[outcome.stop_index]),
                "eval_index": int(last),
                "best_step": None if outcome.best_index is None else int(st[outcome.best_index]),
                "reason": outcome.reason + (
                    f" (the rule had already fired at step {int(st[outcome.stop_index])}, before this "
                    "segment of the run)" if late else ""),
            }
    return None


def closest_keys(name: str, keys: Sequence[str]) -> str:
    """", did you mean 'x'?" for the logged key closest to `name` (empty when none is close)."""
    import difflib

    near = difflib.get_close_matches(name, list(keys), n=1, cutoff=0.6)
    return f"; did you mean {near[0]!r}?" if near else ""
