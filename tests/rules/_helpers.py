"""Shared helpers for the rule tests: run a rule through the public replay API and check golden cases.

A golden case is optuna-style: (values, params, mode, expected_stop_index,
expected_best_index[, extra keyword arguments for decide_values]), 0-based.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from logsage.decide.engine import decide_values

NAN = math.nan
INF = math.inf


def decide(values, rule: str, params: dict[str, Any] | None = None, mode: str = "min", **kw):
    return decide_values(values, rule, params or {}, mode=mode, **kw)


def golden_params(golden: dict[str, list[tuple]]) -> list:
    """pytest parameters (rule, case) for every case of a GOLDEN table."""
    out = []
    for rule, cases in golden.items():
        for i, case in enumerate(cases):
            out.append(pytest.param(rule, case, id=f"{rule}-{i}"))
    return out


def check_golden(rule: str, case: tuple) -> None:
    values, params, mode, stop, best, *rest = case
    out = decide(values, rule, params, mode, **(rest[0] if rest else {}))
    assert out.decidable, out.reason
    assert (out.stop_index, out.best_index) == (stop, best), out.reason
    assert out.reason and "\n" not in out.reason
