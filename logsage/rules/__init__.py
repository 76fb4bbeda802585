"""Stopping rules, one module per family, all registered in `logsage.rules.base.REGISTRY`.

See `base.py` for the contract every rule follows, and `logsage rules` for the list.
"""

from logsage.rules.base import (
    REGISTRY,
    Outcome,
    Param,
    RuleInfo,
    RuleInput,
    get_rule,
    list_rules,
    parse_rule_spec,
    resolve_params,
    rule,
    rule_spec,
)

__all__ = ["REGISTRY", "Outcome", "Param", "RuleInfo", "RuleInput", "get_rule", "list_rules",
           "parse_rule_spec", "resolve_params", "rule", "rule_spec"]
