"""One declaration per rule: every table elsewhere (tune's grids and defaults, watch's counting
rules, sweep's vectorized forms, the report's rules, the common parameters' help) is derived
from what the rule declares in its own module, and says the same."""

from __future__ import annotations

import pytest

from logsage.rules.base import (
    COMMON_PARAM_HELP,
    COMMON_PARAMS,
    common_defaults,
    counting_rules,
    get_rule,
    list_rules,
    parse_grid,
    parse_rule_spec,
    resolve_params,
    rule_spec,
    sweep_forms,
)
from logsage.core.errors import RuleConfigError

ALL = [i.name for i in list_rules()]


@pytest.mark.parametrize("name", ALL)
def test_every_rule_declares_a_grid_or_a_value_of_the_users_and_a_real_reference(name):
    info = get_rule(name)
    assert (info.grid is None) != (info.needs_value is None)
    assert "seed-rules" not in info.reference and len(info.reference) > 15
    assert any(word in info.reference for word in ("19", "20", " 1.", " 2.", " 3.", " 4.", "x:", "x ")), \
        f"{name}: the reference names no version or year: {info.reference}"
    for key, values in (info.grid or {}).items():  # every grid value is a valid parameter value
        for v in values:
            resolve_params(info, {key: v})
    if info.needs_value:
        key, _, example = info.needs_value.partition("=")
        resolve_params(info, {key: example})


def test_the_derived_tables_are_the_declarations():
    from logsage.analysis.tune import COMMON_DEFAULTS, DEFAULT_GRIDS, USER_VALUE_RULES
    from logsage.decide import engine, sweep
    from logsage.report.html import DEFAULT_REPORT_RULES

    assert set(DEFAULT_GRIDS) | set(USER_VALUE_RULES) == set(ALL) and not set(DEFAULT_GRIDS) & set(USER_VALUE_RULES)
    assert [(label, rule) for label, rule, _ in COMMON_DEFAULTS] == [(c.label, c.rule) for c in common_defaults()]
    assert "HF patience 3, threshold 1e-4 (blog recipe)" in {c.label for c in common_defaults()}
    assert DEFAULT_REPORT_RULES == [c.spec for c in common_defaults() if not get_rule(c.rule).needs]
    assert {n for n in ALL if sweep.supports(n)} == set(sweep_forms()) >= {"hf", "patience"}
    # one table, in the rules: the engine keeps no copy of its own
    assert not hasattr(engine, "COMMON_PARAM_HELP") and set(COMMON_PARAM_HELP) == set(COMMON_PARAMS)
    assert counting_rules() == {"hf": "threshold", "lightning": "min_delta", "keras": "min_delta",
                                "patience": "min_delta"}


def test_rules_shows_the_declaration():
    from click.testing import CliRunner

    from logsage.cli.main import cli
    import json

    doc = json.loads(CliRunner().invoke(cli, ["rules", "--json"]).stdout)
    rows = {r["name"]: r for r in doc["rules"]}
    assert rows["hf"]["default_grid"]["patience"] == list(get_rule("hf").grid["patience"])
    assert rows["hf"]["vectorized"] and not rows["gl"]["vectorized"]
    assert rows["threshold"]["default_grid"] is None and rows["threshold"]["needs_value"] == "target=0.8"
    assert {"label": "HF patience 3, threshold 1e-4 (blog recipe)", "spec": "hf:patience=3,threshold=0.0001"} in \
        rows["hf"]["common_defaults"]


@pytest.mark.parametrize("name", ALL)
def test_the_one_spec_formatter_round_trips(name):
    info = get_rule(name)
    params = resolve_params(info, {} if info.needs_value is None else dict([info.needs_value.split("=", 1)]))
    spec = rule_spec(name, params)
    back_name, given = parse_rule_spec(spec)
    assert back_name == name and resolve_params(info, given) == params or _nan_equal(resolve_params(info, given), params)


def _nan_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(x == y or (x != x and y != y) for x, y in ((a[k], b[k]) for k in a))


def test_the_one_grid_parser_refuses_a_repeated_key_and_a_bad_item():
    assert parse_grid(["patience=1,2", "threshold=0"]) == {"patience": ["1", "2"], "threshold": ["0"]}
    with pytest.raises(RuleConfigError, match="--grid patience given twice"):
        parse_grid(["patience=1", "patience=2"])
    with pytest.raises(RuleConfigError, match="bad --grid"):
        parse_grid(["patience"])
