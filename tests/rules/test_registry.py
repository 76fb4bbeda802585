"""The rule registry as a whole: documentation, golden coverage, parameter parsing, and
properties every rule must have (causality, min_evals, direction handled once)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from logsage.rules.base import get_rule, list_rules, resolve_params

from . import test_forecast_fixed_combined, test_library, test_multi, test_patience, test_prechelt, test_significance, test_threshold, test_trend
from ._helpers import decide

GOLDEN = {}
for _module in (test_forecast_fixed_combined, test_library, test_patience, test_multi, test_prechelt, test_trend, test_threshold,
                test_significance):
    GOLDEN.update(_module.GOLDEN)

ALL_RULES = [info.name for info in list_rules()]


def test_the_rule_set_is_complete():
    expected = {"hf", "lightning", "keras", "patience", "smoothed", "adaptive", "multi", "gl", "pq", "up", "slope",
                "threshold", "divergence", "none", "significance", "forecast", "fixed", "patience-trend", "recommended"}
    assert expected <= set(ALL_RULES)


@pytest.mark.parametrize("name", ALL_RULES)
def test_every_rule_is_documented_and_has_golden_cases(name):
    info = get_rule(name)
    assert info.reference.strip()
    assert info.summary.strip() and info.summary.endswith(".")
    for p in info.params:
        assert p.help.strip(), f"{name}.{p.name} has no help text (Args: section)"
    assert GOLDEN.get(name), f"rule {name} has no golden case"
    # the defaults are valid parameters
    assert set(resolve_params(info, {})) == {p.name for p in info.params} | {"min_evals", "min_steps"}


def test_library_rules_declare_what_they_reproduce():
    assert {n: get_rule(n).exact for n in ("hf", "lightning", "keras")} == {
        "hf": "transformers", "lightning": "lightning", "keras": "keras"}
    assert "train_loss" in get_rule("pq").needs and "per_example" in get_rule("significance").needs


def test_optional_float_parameters_parse_as_floats_or_none():
    info = get_rule("lightning")
    assert info.param("stopping_threshold").type is float
    assert resolve_params(info, {"stopping_threshold": "0.25"})["stopping_threshold"] == 0.25
    assert resolve_params(info, {"stopping_threshold": "None"})["stopping_threshold"] is None
    assert resolve_params(get_rule("hf"), {"early_stopping_patience": "4"})["patience"] == 4


# ---------------------------------------------------------------- properties over all rules
def _inputs(name: str, values: list[float]) -> tuple[dict, dict]:
    """Parameters and extra inputs that make `name` decidable on a positive series."""
    n = len(values)
    steps = [10 * (i + 1) for i in range(n)]
    kw: dict = {"steps": steps}
    params: dict = {}
    if name in ("adaptive", "fixed", "forecast", "recommended"):
        kw["budget_steps"] = 10 * n + 20
    elif name == "multi":
        params = {"metrics": "eval_loss:0.5;eval_accuracy:max:0.5", "patience": 2}
        kw["extra"] = {"eval_accuracy": [1.0 / (1.0 + v) if math.isfinite(v) else v for v in values]}
    elif name == "pq":
        params = {"k": 2}
        kw["train_steps"] = list(range(5, 10 * n + 5, 5))
        kw["train_values"] = [1.0 + 1.0 / (i + 1) for i in range(len(kw["train_steps"]))]
    elif name == "threshold":
        params = {"target": 0.5}
    elif name == "significance":
        rng = np.random.default_rng(0)
        noise = rng.normal(0, 0.05, (n, 12))
        kw["per_example"] = {s: {"id": np.arange(12), "loss_sum": (v if math.isfinite(v) else 9.0) + noise[i],
                                 "n_tokens": np.ones(12)} for i, (s, v) in enumerate(zip(steps, values))}
        params = {"patience": 1}
    return params, kw


def _prefix(kw: dict, m: int) -> dict:
    out = dict(kw)
    out["steps"] = kw["steps"][:m]
    if "extra" in kw:
        out["extra"] = {k: v[:m] for k, v in kw["extra"].items()}
    return out  # training loss and per-example data stay whole: a causal rule cannot use the future


values_strategy = st.lists(
    st.one_of(st.floats(0.05, 3.0), st.sampled_from([0.5, 0.5, 1.0, math.nan])), min_size=1, max_size=14)
# LOGSAGE_RULE_EXAMPLES=500 runs a deeper search locally; CI keeps the suite fast.
SETTINGS = settings(max_examples=int(os.environ.get("LOGSAGE_RULE_EXAMPLES", "40")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", ALL_RULES)
@SETTINGS
@given(values=values_strategy)
def test_decisions_are_causal(name, values):
    # A stop at index s on the whole series is a stop at s on every prefix that contains s,
    # and no stop on the shorter ones.
    params, kw = _inputs(name, values)
    full = decide(values, name, params, **kw)
    if not full.decidable:
        return
    for m in range(1, len(values) + 1):
        part = decide(values[:m], name, params, **_prefix(kw, m))
        expected = full.stop_index if full.stop_index is not None and full.stop_index < m else None
        assert part.stop_index == expected, (m, part.reason)


@pytest.mark.parametrize("name", ALL_RULES)
@SETTINGS
@given(values=values_strategy, min_evals=st.integers(0, 16))
def test_min_evals_only_delays_a_stop(name, values, min_evals):
    params, kw = _inputs(name, values)
    free = decide(values, name, params, **kw)
    held = decide(values, name, {**params, "min_evals": min_evals}, **kw)
    assert held.stop_index is None or held.stop_index >= min_evals - 1
    if free.stop_index is not None and free.stop_index >= min_evals - 1:
        assert held.stop_index == free.stop_index
    elif free.stop_index is None:
        assert held.stop_index is None


# Rules whose parameters are not in the metric's units and that judge values only by comparison.
SYMMETRIC = [n for n in ALL_RULES if n not in ("gl", "pq", "threshold", "multi")]


@pytest.mark.parametrize("name", SYMMETRIC)
@SETTINGS
@given(values=values_strategy)
def test_direction_is_handled_once(name, values):
    # Maximizing -v is the same problem as minimizing v.
    params, kw = _inputs(name, values)
    low = decide(values, name, params, mode="min", **kw)
    high = decide([-v for v in values], name, params, mode="max", **kw)
    assert (low.stop_index, low.best_index, low.decidable) == (high.stop_index, high.best_index, high.decidable)
