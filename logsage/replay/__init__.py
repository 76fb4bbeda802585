"""Replay: histories x stopping rules -> scored `Decision`s (engine), the vectorized sweep, and scoring."""

from logsage.replay.engine import Decision, ReplayResult, decide_values, expand_rules, replay, replay_paths

__all__ = ["Decision", "ReplayResult", "decide_values", "expand_rules", "replay", "replay_paths"]
