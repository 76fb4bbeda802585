"""The replay stage (named `decide` so that `logsage.replay` stays the function): histories x stopping
rules -> scored `Decision`s (engine), the vectorized sweep, scoring, selection, the columnar result,
the live decision on a growing history, and pandas views."""

from logsage.decide.engine import Decision, ReplayResult, decide_values, expand_rules, replay, replay_paths

__all__ = ["Decision", "ReplayResult", "decide_values", "expand_rules", "replay", "replay_paths"]
