"""The shared vocabulary every stage speaks: `History`, metric names and directions, the objective, typed errors.

Nothing in `core` imports another logsage package; everything else may import `core`.
"""
