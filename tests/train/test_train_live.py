"""Live early stopping during `logsage train` equals offline replay, and survives a resume.

The tiny model overfits the 20 example records within a few dozen steps at lr 3e-3
(the held-out eval loss falls, then rises), so a patience rule really stops early.
A constant learning rate makes the trajectory independent of --max-steps, which
lets a run be cut short with --max-steps and resumed to the same trajectory.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import EXAMPLES_DATA, train_tiny_cli

pytestmark = pytest.mark.slow

MAX_STEPS = 30
INTERRUPT_AT = 10  # a multiple of --eval-steps, before the reference run stops


def _args(model_dir, out, *extra):
    return ["--model", str(model_dir),
            "--data", str(Path(EXAMPLES_DATA, "tiny_alpaca.jsonl")),
            "--eval-data", str(Path(EXAMPLES_DATA, "tiny_alpaca_eval.jsonl")),
            "--output", str(out), "--save-all",
            "--per-device-train-batch-size", "4", "--per-device-eval-batch-size", "4",
            "--eval-steps", "2", "--logging-steps", "1", "--learning-rate", "3e-3", "--warmup-ratio", "0",
            "--lr-scheduler-type", "constant", "--seed", "0", "--device", "cpu", *extra]


def _evals(run: Path) -> tuple[list[int], list[float]]:
    log = json.loads((run / "trainer_state.json").read_text())["log_history"]
    ev = [(e["step"], e["eval_loss"]) for e in log if "eval_loss" in e]
    return [s for s, _ in ev], [v for _, v in ev]


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory, tiny_model_dir):
    """The uninterrupted reference run, stopped live by hf:patience=2."""
    out = tmp_path_factory.mktemp("live") / "hf"
    code, doc = train_tiny_cli(_args(tiny_model_dir, out, "--max-steps", str(MAX_STEPS), "--early-stop",
                                     "hf:patience=2"))
    assert code == 0, doc
    return out, doc


def _offline_stop(run: Path, spec: str) -> dict:
    """`logsage replay RUN --rule SPEC --json`: the offline decision from the run's own history."""
    from logsage.cli.main import cli

    r = CliRunner().invoke(cli, ["replay", str(run), "--rule", spec, "--json"])
    assert r.exit_code == 0, r.output
    (decision,) = json.loads(r.stdout)["decisions"]
    return decision


def test_live_hf_stop_equals_offline_replay(hf_run):
    run, doc = hf_run
    assert doc["status"] == "stopped early"
    stop = doc["early_stop"]["step"]
    assert stop == doc["global_step"] < MAX_STEPS  # it really stopped early
    steps, values = _evals(run)
    assert steps[-1] == stop  # the stopping evaluation is the last one
    assert (run / f"checkpoint-{stop}" / "adapter_model.safetensors").is_file()  # and it was saved
    assert (run / f"checkpoint-{stop}" / "per_example_eval_loss.jsonl").is_file()
    offline = _offline_stop(run, "hf:patience=2")
    assert offline["stop_step"] == stop
    # Independent check of HF's semantics on the logged sequence: the counter resets on a
    # strict improvement over the best so far, and the run stops when it reaches 2.
    best, wait, expected = np.inf, 0, None
    for s, v in zip(steps, values):
        if v < best:
            best, wait = v, 0
        else:
            wait += 1
        if wait >= 2:
            expected = s
            break
    assert expected == stop
    manifest = json.loads((run / "logsage_run.json").read_text())
    assert manifest["status"] == "stopped early" and manifest["early_stop"]["step"] == stop
    assert "hf:patience=2" in manifest["early_stop"]["rule"] and manifest["early_stop"]["reason"]


def test_live_significance_stop_equals_offline_replay(tmp_path, tiny_model_dir):
    """A second rule, the one that needs the per-example losses: live and offline agree too."""
    import logsage
    from logsage.decide.engine import replay

    out = tmp_path / "sig"
    spec = "significance:patience=2"
    code, doc = train_tiny_cli(_args(tiny_model_dir, out, "--max-steps", str(MAX_STEPS), "--early-stop", spec))
    assert code == 0, doc
    assert doc["status"] == "stopped early" and doc["global_step"] < MAX_STEPS
    h = logsage.load_history(out)
    # ingest itself reads the per-example losses of every checkpoint into the history
    assert h.per_example, "load_history did not fill History.per_example"
    assert sorted(h.per_example) == _evals(out)[0]
    for step, pe in h.per_example.items():
        assert len(pe["id"]) == 8 and (pe["n_tokens"] > 0).all(), step  # every eval example, with its tokens
    (decision,) = replay([h], [spec]).decisions
    assert decision.decidable, decision.reason
    assert decision.stop_step == doc["early_stop"]["step"] == doc["global_step"]


def test_resumed_run_stitches_and_stops_where_the_uninterrupted_one_does(hf_run, tmp_path, tiny_model_dir):
    import logsage

    ref, ref_doc = hf_run
    ref_steps, ref_values = _evals(ref)
    assert ref_doc["early_stop"]["step"] > INTERRUPT_AT
    out = tmp_path / "resumed"
    code, first = train_tiny_cli(_args(tiny_model_dir, out, "--max-steps", str(INTERRUPT_AT), "--early-stop",
                                       "hf:patience=2"))
    assert code == 0 and first["status"] == "completed" and first["global_step"] == INTERRUPT_AT
    code, second = train_tiny_cli(_args(tiny_model_dir, out, "--max-steps", str(MAX_STEPS), "--early-stop",
                                        "hf:patience=2", "--resume-from-checkpoint", "latest"))
    assert code == 0, second
    # the live rule's state came back with the log: same stop as without the interruption
    assert second["status"] == "stopped early"
    assert second["early_stop"]["step"] == ref_doc["early_stop"]["step"]
    steps, values = _evals(out)
    assert steps == ref_steps
    np.testing.assert_allclose(values, ref_values, rtol=1e-6)
    # ingest: one history, no duplicated steps, through both readers
    assert len(list((out / "runs").glob("events.out.tfevents.*"))) == 2  # one event file per segment
    for fmt in ("trainer-state", "tensorboard"):
        h = logsage.load_history(out, format=fmt)
        s = h.metric("eval_loss")
        assert s.steps.tolist() == ref_steps, fmt
        np.testing.assert_allclose(s.values, ref_values, rtol=1e-6)
        loss = h.train_loss()
        assert loss.steps.tolist() == list(range(1, ref_steps[-1] + 1)), fmt
    # a checkpoint (with per-example losses) for every evaluation of both segments
    for step in ref_steps:
        assert (out / f"checkpoint-{step}" / "per_example_eval_loss.jsonl").is_file()
    manifest = json.loads((out / "logsage_run.json").read_text())
    assert [seg["status"] for seg in manifest["segments"]] == ["completed", "stopped early"]
    assert manifest["segments"][1]["resumed_from"].endswith(f"checkpoint-{INTERRUPT_AT}")
