"""The streaming merge uses no more torch threads than idle cores, and gives the count back."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from logsage.ship.merge import write as merge  # noqa: E402


def test_busy_cores_mean_fewer_merge_threads_and_the_count_is_restored(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 64.0, 64.0))  # every core busy
        with merge.MergeThreads() as t:
            assert t.used == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # idle: the default is kept
        with merge.MergeThreads() as t:
            assert torch.get_num_threads() == min(2, merge.idle_cores(2)) == t.used
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
