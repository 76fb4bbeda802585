"""Ingest of a run written by the real HF Trainer (the session's tiny Qwen2 LoRA run), and edge cases built from it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

import logsage

pytestmark = pytest.mark.slow


def test_trainer_run_folder_is_one_run_with_checkpoints_and_per_example(tiny_run_dir):
    h = logsage.load_history(tiny_run_dir)
    assert set(h.format.split("+")) == {"trainer-state", "tensorboard"}
    ev = h.metric("eval_loss")
    # the trainer_state.json (float64) wins over the events' eval/loss (float32), and says so
    assert ev.name == "eval_loss" and ev.precision == "float64"
    assert any(c.kind == "source_choice" and c.metric == "eval/loss" for c in h.cleanups)
    assert "eval/loss" not in h.series
    # a whole LoRA adapter checkpoint for every evaluation, in step order
    assert [c.step for c in h.checkpoints] == ev.steps.tolist()
    assert all(c.kind == "adapter" and c.whole for c in h.checkpoints)
    # per-example eval losses from every checkpoint, recombining to the logged eval loss
    from logsage.ingest.per_example import hf_eval_loss

    assert sorted(h.per_example) == ev.steps.tolist()
    for step, value in zip(ev.steps.tolist(), ev.values.tolist()):
        assert hf_eval_loss(h.per_example[step]) == pytest.approx(value, rel=1e-5)
    assert h.meta["manifest"].endswith("logsage_run.json")


def test_tensorboard_reader_alone_gives_the_same_eval_curve(tiny_run_dir):
    a = logsage.load_history(tiny_run_dir).metric("eval_loss")
    b = logsage.load_history(tiny_run_dir, format="tensorboard").metric("eval_loss")
    assert b.name == "eval/loss" and b.precision == "float32"
    assert a.steps.tolist() == b.steps.tolist()
    np.testing.assert_allclose(b.values, a.values.astype(np.float32), rtol=0, atol=0)


def test_broken_checkpoints_in_a_real_run(tiny_run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run_dir, run)
    ckpts = sorted((p for p in run.glob("checkpoint-*")), key=lambda p: int(p.name.split("-")[1]))
    empty, cut, gone = ckpts[0], ckpts[1], ckpts[2]
    save_file({}, str(empty / "adapter_model.safetensors"))
    data = (cut / "adapter_model.safetensors").read_bytes()
    (cut / "adapter_model.safetensors").write_bytes(data[: len(data) - 100])
    shutil.rmtree(gone)
    h = logsage.load_history(run)
    by_step = {c.step: c for c in h.checkpoints}
    assert not by_step[int(empty.name.split("-")[1])].whole and "empty" in by_step[int(empty.name.split("-")[1])].problem
    assert "cut short" in by_step[int(cut.name.split("-")[1])].problem
    assert int(gone.name.split("-")[1]) not in by_step
    # the eval curve itself is untouched: the root trainer_state.json holds it
    assert len(h.metric("eval_loss")) == len(ckpts)
