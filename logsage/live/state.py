"""Incremental rule states: a rule's answer on every prefix of a growing series, one evaluation at a time.

A rule is a causal function of the whole series (`logsage.rules.base`): its decision at
evaluation t reads values[:t + 1] only, and its first stop is final. So a follower that
keeps the rule's running state can answer "does it stop at t, and what is its best?" for
each new evaluation in O(1), and the answer is the one the rule gives on the prefix.

`state_for(rule, params)` gives such a state for the rules that have one (their update is
the rule's own loop body, kept next to a test that holds it equal to the rule on every
prefix: tests/live/test_watch_incremental.py); None for the others, which `logsage.live.watch`
replays on the prefix instead (exact, and O(prefix) per evaluation).
"""

from __future__ import annotations

import math
from typing import Any, Mapping


class HFState:
    """`logsage.rules.library.hf` one evaluation at a time (HF EarlyStoppingCallback + best_metric)."""

    def __init__(self, patience: int, threshold: float, min_evals: int = 0, min_steps: int = 0):
        self.patience, self.threshold = patience, threshold
        self.min_evals, self.min_steps = min_evals, min_steps
        self.t = -1
        self.best: float | None = None
        self.best_index: int | None = None
        self.counter = 0
        self.stop: int | None = None
        self.stop_best: int | None = None
        self._allowed = False  # steps only grow: once a stop is allowed it stays allowed

    def push(self, value: float, step: int) -> None:
        """Feed evaluation t + 1 (oriented value, its step)."""
        self.t += 1
        t = self.t
        if self.stop is not None:
            return
        v = value
        # The rule's loop body (rules/library.py: hf), in the same order of operations.
        if self.best is None or (v < self.best and abs(v - self.best) > self.threshold):
            self.counter = 0
        else:
            self.counter += 1
        if self.best is None:
            self.best = math.inf
        if v < self.best:
            self.best = v
            self.best_index = t
        if not self._allowed:
            self._allowed = t + 1 >= self.min_evals and (not self.min_steps or self.min_steps <= 0
                                                         or step >= self.min_steps)
        if self.counter >= self.patience and self._allowed:
            self.stop, self.stop_best = t, self.best_index

    def outcome(self) -> tuple[int | None, int | None, bool]:
        """(stop index, the rule's best, decidable) on the prefix fed so far."""
        if self.stop is not None:
            return self.stop, self.stop_best, True
        return None, self.best_index, True


def state_for(rule: str, params: Mapping[str, Any]) -> HFState | None:
    """An incremental state for `rule` with resolved `params`, or None when it has none."""
    if rule == "hf":
        return HFState(int(params["patience"]), float(params["threshold"]), int(params.get("min_evals") or 0),
                       int(params.get("min_steps") or 0))
    return None


__all__ = ["HFState", "state_for"]
