"""The bundled example runs (examples/runs/, made by examples/make_bundled_runs.py with the real writers):
logs only, small, ingested with the formats and counts their own files state, overfitting so that
rules disagree; and the generator still runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

import logsage
from logsage.decide.engine import replay

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "examples" / "runs"
EXPECTED_FORMAT = {"hf-qwen2-tiny": "trainer-state", "tb-mlp": "tensorboard", "lightning-mlp": "lightning"}


def _kind(run: Path) -> str:
    return next(k for k in EXPECTED_FORMAT if run.name.startswith(k))


def _eval_points(run: Path) -> tuple[str, int]:
    """(the eval series' name, its number of points), read from the files with the writers' own tools."""
    kind = _kind(run)
    if kind == "hf-qwen2-tiny":
        state = json.loads((run / "trainer_state.json").read_text())
        return "eval_loss", sum(1 for r in state["log_history"] if "eval_loss" in r)
    if kind == "lightning-mlp":
        with open(run / "version_0" / "metrics.csv", newline="") as f:
            return "val_loss", sum(1 for row in csv.DictReader(f) if row["val_loss"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run), size_guidance={"scalars": 0})
    acc.Reload()
    return "eval/loss", len(acc.Scalars("eval/loss"))


def test_bundled_runs_are_small_logs_only():
    files = [p for p in RUNS.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 2 * 1024 * 1024
    for p in files:
        assert p.name in ("trainer_state.json", "metrics.csv") or p.name.startswith("events.out.tfevents."), p
    assert {_kind(r) for r in RUNS.iterdir()} == set(EXPECTED_FORMAT)


@pytest.mark.parametrize("run", sorted(p.name for p in RUNS.iterdir()))
def test_bundled_run_ingests_with_its_format_and_count(run):
    h = logsage.load_history(RUNS / run)
    assert h.format == EXPECTED_FORMAT[_kind(RUNS / run)]
    name, n = _eval_points(RUNS / run)
    assert n >= 20 and len(h.metric(name)) == n and h.metric(name).kind == "eval"
    s = h.metric(name)
    best = int(s.values.argmin())
    assert best < len(s) - 1 and s.values[-1] > 1.01 * s.values[best]  # it overfits: ends > 1% worse than its best


def test_rules_disagree_on_the_bundled_runs():
    hs = [logsage.load_history(p) for p in sorted(RUNS.iterdir())]
    res = replay(hs, ["hf:patience=3,threshold=1e-4", "gl", "none"])
    stops = {}
    for d in res.decisions:
        stops.setdefault(d.run, set()).add(d.stop_step)
    assert all(len(s) >= 2 for s in stops.values())  # on every run at least two rules stop at different steps
    regrets = {d.rule: d.regret for d in res.decisions if d.run.endswith("lightning-mlp")}
    assert regrets["gl"] != regrets["hf"]


@pytest.mark.slow
def test_generator_quick_mode_writes_readable_logs(tmp_path):
    keep = tmp_path / "out" / "mine.txt"
    keep.parent.mkdir()
    keep.write_text("not the script's")
    out = subprocess.run([sys.executable, "examples/make_bundled_runs.py", "--quick", "--out", str(keep.parent)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    made = sorted(p for p in keep.parent.iterdir() if p.is_dir())
    assert {_kind(p) for p in made} == set(EXPECTED_FORMAT)
    for run in made:
        h = logsage.load_history(run)
        assert h.format == EXPECTED_FORMAT[_kind(run)]
        name, n = _eval_points(run)
        assert n >= 1 and len(h.metric(name)) == n
    assert keep.read_text() == "not the script's"  # only its own runs are replaced
