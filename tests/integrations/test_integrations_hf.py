"""`LogsageCallback` in a plain transformers Trainer script (the tiny local Qwen2): the live stop is the replay's.

The run's own log (the Trainer's trainer_state.json and checkpoints) is read back with
`logsage replay`; the stop must be the same step, and a resumed run must stop where an
uninterrupted one does (the rule's state comes from the restored log_history).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import _OneTorchThread

pytestmark = pytest.mark.slow

RULE = "hf:patience=2,threshold=0.3"
REPO = Path(__file__).resolve().parents[2]


def _trainer(model_dir, out, *, max_steps, callbacks, **overrides):
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer,
                              TrainingArguments)

    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts = [f"Question {i}: what is {i} plus {i}? Answer: {2 * i}." for i in range(24)]
    train = [dict(tok(t)) for t in texts[:16]]
    evals = [dict(tok(t)) for t in texts[16:]]
    settings = dict(output_dir=str(out), eval_strategy="steps", eval_steps=1, save_strategy="steps", save_steps=1,
                    max_steps=max_steps, per_device_train_batch_size=4, per_device_eval_batch_size=4,
                    learning_rate=2e-2, lr_scheduler_type="constant", logging_steps=1, report_to=[],
                    use_cpu=True, seed=0, data_seed=0, save_only_model=False)
    settings.update(overrides)
    return Trainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=TrainingArguments(**settings),
                   train_dataset=train, eval_dataset=evals,
                   data_collator=DataCollatorForLanguageModeling(tok, mlm=False), callbacks=callbacks)


def _replay_stop(run_dir, rule=RULE) -> dict:
    proc = subprocess.run([sys.executable, "-m", "logsage", "replay", str(run_dir), "--rule", rule, "--json"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (d,) = json.loads(proc.stdout)["decisions"]
    return d


@pytest.fixture(scope="module")
def stopped_run(tiny_model_dir, tmp_path_factory):
    from logsage.integrations.hf import LogsageCallback

    out = tmp_path_factory.mktemp("hf-callback") / "run"
    cb = LogsageCallback(RULE, echo=lambda m: None)
    with _OneTorchThread():
        trainer = _trainer(tiny_model_dir, out, max_steps=40, callbacks=[cb])
        trainer.train()
    trainer.save_state()  # the run's trainer_state.json at the root, as scripts usually do
    return out, cb, trainer


def test_the_live_stop_is_the_replay_stop(stopped_run):
    out, cb, trainer = stopped_run
    assert cb.stopped is not None, "the rule never fired: make the test's rule stricter"
    assert trainer.state.global_step == cb.stopped["step"] < 40  # stopped early, right at the decision
    d = _replay_stop(out)
    assert d["stop_step"] == cb.stopped["step"]
    assert d["best_step"] == cb.stopped["best_step"]
    assert (out / f"checkpoint-{cb.stopped['step']}").is_dir()  # the stopping evaluation was saved
    assert (out / f"checkpoint-{d['selected_step']}").is_dir()  # and the checkpoint the rule keeps exists


def test_a_resumed_run_stops_where_the_uninterrupted_one_did(stopped_run, tiny_model_dir, tmp_path):
    from logsage.integrations.hf import LogsageCallback

    _, first, _ = stopped_run
    stop = first.stopped["step"]
    assert stop >= 3  # patience 2: at stop - 1 one evaluation without gain is already counted
    out = tmp_path / "run"
    with _OneTorchThread():
        _trainer(tiny_model_dir, out, max_steps=stop - 1, callbacks=[]).train()  # interrupted before the stop
        cb = LogsageCallback(RULE, echo=lambda m: None)
        resumed = _trainer(tiny_model_dir, out, max_steps=40, callbacks=[cb])
        resumed.train(resume_from_checkpoint=str(out / f"checkpoint-{stop - 1}"))
    assert cb.stopped is not None and cb.stopped["step"] == stop  # a fresh counter would stop later
    resumed.save_state()
    assert _replay_stop(out)["stop_step"] == stop


def test_a_mistyped_metric_raises_naming_the_logged_keys(tiny_model_dir, tmp_path):
    from logsage.core.errors import MetricNotFound
    from logsage.integrations.hf import LogsageCallback

    with _OneTorchThread(), pytest.raises(MetricNotFound, match=r"no 'eval_los' .*eval_loss.*did you mean 'eval_loss'"):
        _trainer(tiny_model_dir, tmp_path / "run", max_steps=5,
                 callbacks=[LogsageCallback(RULE, metric="eval_los")]).train()


def test_a_save_cadence_that_loses_the_kept_checkpoint_warns_once(tiny_model_dir, tmp_path):
    from logsage.integrations.hf import LogsageCallback

    with _OneTorchThread(), pytest.warns(UserWarning, match="some evaluations get no checkpoint") as caught:
        _trainer(tiny_model_dir, tmp_path / "run", max_steps=4, save_steps=2,
                 callbacks=[LogsageCallback(RULE, echo=lambda m: None)]).train()
    assert len([w for w in caught if "LogsageCallback" in str(w.message)]) == 1
