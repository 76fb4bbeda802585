"""HF Trainer's own W&B and Trackio integrations (report_to=["wandb", "trackio"], offline/local, no
network) on the tiny local Qwen2: what logsage reads from the .wandb run file and the Trackio
database equals the Trainer's own log_history, step for step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import logsage

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import torch
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer,
                              TrainingArguments, set_seed)
    from logsage.train.tiny import build_tiny_model
    torch.set_num_threads(1)
    out, data = Path(sys.argv[1]), sys.argv[2]
    model_dir = build_tiny_model(out / "model", seed=0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ds = [tok(f"{r['instruction']}\\n{r['input']}\\nThe answer is {r['output']}")
          for r in map(json.loads, open(data))]
    set_seed(0)
    args = TrainingArguments(output_dir=str(out / "trainer"), max_steps=12, per_device_train_batch_size=4,
                             eval_strategy="steps", eval_steps=4, logging_steps=2, save_strategy="no",
                             report_to=["wandb", "trackio"], use_cpu=True, disable_tqdm=True, seed=0, run_name="tiny")
    trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=args, train_dataset=ds[:16],
                      eval_dataset=ds[16:], data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    trainer.train()
    trainer.evaluate()  # the usual final evaluation, after the training summary
    (out / "log_history.json").write_text(json.dumps(trainer.state.log_history))
""")


@pytest.fixture(scope="module")
def hf_run(tmp_path_factory):
    pytest.importorskip("wandb", reason="HF's WandbCallback needs the real W&B client (pip install wandb)")
    pytest.importorskip("trackio", reason="HF's TrackioCallback needs the real Trackio (pip install trackio)")
    tmp = tmp_path_factory.mktemp("hf-trackers")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp / "wandb-dir"), "WANDB_SILENT": "true",
           "WANDB_CONFIG_DIR": str(tmp / "wandb-config"), "WANDB_CACHE_DIR": str(tmp / "wandb-cache"),
           "WANDB_DISABLE_GIT": "true", "TRACKIO_DIR": str(tmp / "trackio"), "HF_HUB_OFFLINE": "1",
           "HF_HOME": str(tmp / "hf"), "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(ROOT)}
    (tmp / "wandb-dir").mkdir()
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(tmp / "run"), str(ROOT / "examples/data/tiny_alpaca.jsonl")],
                         cwd=tmp, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    history = json.loads((tmp / "run" / "log_history.json").read_text())
    return tmp, history


def _periodic(history, key):
    """(steps, values) of `key` in log_history, without the final trainer.evaluate() (logged after the summary)."""
    end = next(i for i, r in enumerate(history) if "train_runtime" in r)
    rows = [r for r in history[:end] if key in r]
    return [r["step"] for r in rows], [r[key] for r in rows]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["wandb", "trackio"])
def test_hf_integration_logs_read_as_the_trainer_logged_them(hf_run, where):
    tmp, history = hf_run
    path = tmp / "wandb-dir" / "wandb" / "latest-run" if where == "wandb" else tmp / "trackio" / "huggingface.db"
    h = logsage.load_history(path)
    assert h.format == {"wandb": "wandb-run", "trackio": "trackio"}[where]
    for source, key in (("eval/loss", "eval_loss"), ("train/loss", "loss"), ("train/learning_rate", "learning_rate")):
        steps, values = _periodic(history, key)
        s = h.metric(source)
        assert s.steps.tolist() == steps, source  # the optimizer step (train/global_step), not the log-call count
        assert s.values.tolist() == values, source  # float64, exactly
    assert h.primary_eval_metric() == "eval/loss"


@pytest.mark.slow
def test_wandb_summary_records_and_the_final_evaluation_are_summaries(hf_run):
    tmp, history = hf_run
    h = logsage.load_history(tmp / "wandb-dir" / "wandb" / "latest-run")
    final = next(r for r in history if "train_runtime" in r)
    assert h.summary["train_runtime"] == final["train_runtime"] and h.meta["train_runtime"] == final["train_runtime"]
    assert h.summary["train_loss"] == pytest.approx(final["train_loss"])
    assert any(c.kind == "duplicates" and "after the training summary" in c.message and c.count == 1
               for c in h.cleanups)
