"""Console-log readers of issue 11: the dicts an HF Trainer prints (from a real tiny Trainer run and
the real W&B output.log in ../shared/real-runs-2), MLX-LM `Iter N:` lines and torchtune's
DiskLogger files (in the exact formats of their source: mlx_lm/tuner/trainer.py, torchtune's
DiskLogger.log_dict, which the tests write with the same f-strings)."""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np
import pytest

import logsage
from logsage.core.errors import IngestError
from logsage.ingest.readers import console_log, mlx_log, torchtune_log

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
WANDB_LOG = SHARED / "real-runs-2" / "wandb_run_dir" / "distilbert-sft-tlab-latest-run" / "files" / "output.log"


@pytest.fixture(scope="module")
def hf_console(tmp_path_factory, tiny_model_dir):
    """A real Trainer run (tiny Qwen2, tqdm on) whose stdout+stderr went to train.out, as under nohup."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    enc = tok([f"hello world {i} " * 4 for i in range(24)], truncation=True, max_length=16, padding="max_length")
    ds = [{"input_ids": torch.tensor(enc["input_ids"][i]), "attention_mask": torch.tensor(enc["attention_mask"][i]),
           "labels": torch.tensor(enc["input_ids"][i])} for i in range(24)]
    out = tmp_path_factory.mktemp("hf-console")
    args = TrainingArguments(str(out / "run"), per_device_train_batch_size=4, num_train_epochs=2, logging_steps=2,
                             eval_strategy="steps", eval_steps=4, disable_tqdm=False, report_to="none",
                             save_strategy="no", use_cpu=True, seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=ds, eval_dataset=ds[:8])
    log = out / "train.out"
    with open(log, "w") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        trainer.train()
    (out / "state").mkdir()
    trainer.state.save_to_json(str(out / "state" / "trainer_state.json"))
    return log, trainer.state.log_history


def test_hf_console_log_from_a_real_trainer_run(hf_console):
    log, history = hf_console
    text = log.read_text()
    assert "{'loss': " in text and "%|" in text  # the printed dicts between tqdm bars
    assert console_log.claims(log, log.read_bytes()[:4096])
    h = logsage.load_history(log)
    assert h.format == "hf-console" and h.meta["step_unit"] == "step"
    train = [r for r in history if "loss" in r]
    evals = [r for r in history if "eval_loss" in r]
    assert h.metric("loss").steps.tolist() == [r["step"] for r in train]  # the global steps, from the bar
    np.testing.assert_allclose(h.metric("loss").values, [r["loss"] for r in train], rtol=1e-3)  # printed rounded
    assert h.metric("eval_loss").steps.tolist() == [r["step"] for r in evals]
    np.testing.assert_allclose(h.metric("eval_loss").values, [r["eval_loss"] for r in evals], rtol=1e-3)
    assert "train_runtime" in h.summary and "train_runtime" not in h.series
    assert any(c.kind == "step_choice" and "progress bar" in c.message for c in h.cleanups)


def test_hf_console_with_carriage_returns_and_ansi_noise(hf_console, tmp_path):
    log, history = hf_console
    # A terminal capture: tqdm's redraws separated by \r instead of new lines.
    noisy = tmp_path / "slurm-123.out"
    noisy.write_text(log.read_text().replace("\n ", "\r ").replace("\n\n", "\n"))
    h = logsage.load_history(noisy)
    assert h.metric("eval_loss").steps.tolist() == [r["step"] for r in history if "eval_loss" in r]


def test_console_ordinals_are_never_merged_into_a_trainer_state(hf_console, tmp_path):
    log, history = hf_console
    run = tmp_path / "run"
    run.mkdir()
    (run / "trainer_state.json").write_text((log.parent / "state" / "trainer_state.json").read_text())
    # The same console with its progress bars gone (disable_tqdm): steps are record ordinals.
    (run / "output.log").write_text("\n".join(ln for ln in log.read_text().splitlines() if "%|" not in ln))
    h = logsage.load_history(run)
    assert h.format == "trainer-state+hf-console"
    assert h.metric("loss").steps.tolist() == [r["step"] for r in history if "loss" in r]
    assert any(c.kind == "source_choice" and "not added" in c.message for c in h.cleanups)


def test_hf_console_without_bars_uses_the_logging_point_ordinal(tmp_path):
    f = tmp_path / "output.log"
    f.write_text("loading...\n{'loss': 0.9, 'epoch': 0.5}\n{'eval_loss': 0.8, 'epoch': 0.5}\n"
                 "{'loss': '0.7', 'learning_rate': '1e-05', 'epoch': '1.0'}\n{'eval_loss': 0.75, 'epoch': 1.0}\n"
                 "{'loss': 0.6, 'epoch': 1.5, 'broken\n{'eval_loss': 0.7, 'epoch': 1.7}\n")
    h = logsage.load_history(f)
    assert h.meta["step_unit"] == "log_record"
    assert h.metric("loss").steps.tolist() == [1, 2]
    assert h.metric("eval_loss").steps.tolist() == [1, 2, 3]  # the last eval is at a point of its own
    assert h.metric("eval_loss").values.tolist() == [0.8, 0.75, 0.7]
    (bad,) = [c for c in h.cleanups if c.kind == "dropped_record" and "do not parse" in c.message]
    assert bad.count == 1 and "line 6" in bad.message


def test_a_log_with_one_dict_is_not_claimed(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("we got {'loss': 0.5, 'epoch': 1} once\n")
    assert not console_log.claims(f, f.read_bytes())


@pytest.mark.skipif(not WANDB_LOG.is_file(), reason="the real-run corpus ../shared/real-runs-2 (logs copied from "
                    "public repositories, kept outside the project) is not beside this checkout")
def test_real_wandb_output_log_collapsed_bars_fall_back_to_the_ordinal():
    lines = [ln for ln in WANDB_LOG.read_text().splitlines() if ln.startswith("{'loss'")]
    h = logsage.load_history(WANDB_LOG)
    assert h.format == "hf-console" and h.meta["step_unit"] == "log_record"
    loss = h.metric("loss")
    assert len(loss) == len(lines) == 25 and loss.steps.tolist() == list(range(1, 26))
    import ast

    assert loss.values.tolist() == [ast.literal_eval(ln)["loss"] for ln in lines]
    assert h.metric("epoch").values[0] == 0.02


# ----------------------------------------------------------------------------- MLX-LM
def _mlx_report(it, train_loss, learning_rate, it_sec, tokens_sec, trained_tokens, peak_mem):
    return (f"Iter {it}: Train loss {train_loss:.3f}, "
            f"Learning Rate {learning_rate:.3e}, "
            f"It/sec {it_sec:.3f}, "
            f"Tokens/sec {tokens_sec:.3f}, "
            f"Trained Tokens {trained_tokens}, "
            f"Peak mem {peak_mem:.3f} GB")


def _mlx_val(it, val_loss, val_time):
    return f"Iter {it}: Val loss {val_loss:.3f}, Val took {val_time:.3f}s"


def test_mlx_lm_console(tmp_path):
    lines = ["Loading pretrained model", "Trainable parameters: 0.047% (3.408M/7241.732M)", _mlx_val(1, 2.91, 3.1)]
    val = {1: 2.91}
    for it in range(10, 101, 10):
        lines.append(_mlx_report(it, 3.0 - it / 100, 1e-5, 0.51, 401.3, 784 * it, 5.21))
        if it % 50 == 0:
            val[it] = 2.5 - it / 200
            lines.append(_mlx_val(it, val[it], 3.0))
    lines.append("Iter 110: Train loss nan?, oops")
    f = tmp_path / "train.log"
    f.write_text("\n".join(lines) + "\n")
    assert mlx_log.claims(f, f.read_bytes()[:4096]) and not console_log.claims(f, f.read_bytes()[:4096])
    h = logsage.load_history(f)
    assert h.format == "mlx-lm" and h.primary_eval_metric() == "val_loss"
    assert h.metric("eval_loss").steps.tolist() == list(val) and h.metric("eval_loss").values.tolist() == list(val.values())
    assert h.metric("loss").steps.tolist() == list(range(10, 101, 10))
    assert h.series["tokens/sec"].kind == "other" and h.series["val_took"].kind == "other"
    assert [c.count for c in h.cleanups if c.kind == "dropped_record"] == [1]


# ----------------------------------------------------------------------------- torchtune
class _DiskLoggerFormat:
    """The write calls of torchtune's DiskLogger (training/metric_logging.py), to a file of that name."""

    def __init__(self, path: Path):
        self._file = open(path, "a")

    def log(self, name, data, step):
        self._file.write(f"Step {step} | {name}:{data}\n")

    def log_dict(self, payload, step):
        self._file.write(f"Step {step} | ")
        for name, data in payload.items():
            self._file.write(f"{name}:{data} ")
        self._file.write("\n")

    def close(self):
        self._file.close()


def test_torchtune_disklogger_file(tmp_path):
    import torch

    f = tmp_path / "logs" / "log_1733300000.txt"
    f.parent.mkdir()
    w = _DiskLoggerFormat(f)
    losses = [1.8392, 1.61, 1.5]
    for step, loss in enumerate(losses, 1):
        w.log_dict({"loss": loss, "lr": 2e-05, "tokens_per_second_per_gpu": 1204.5, "peak_memory_active": 9.1},
                   step=step)
    w.log("val_loss", torch.tensor(1.7), step=3)
    w.close()
    with open(f, "a") as fh:
        fh.write("Step x | garbage\n")
    h = logsage.load_history(f.parent.parent)
    assert h.format == "torchtune"
    assert h.metric("loss").values.tolist() == losses and h.metric("loss").steps.tolist() == [1, 2, 3]
    assert h.metric("eval_loss").values.tolist() == pytest.approx([1.7]) and h.primary_eval_metric() == "val_loss"
    assert h.series["tokens_per_second_per_gpu"].kind == "other"
    assert [c.count for c in h.cleanups if c.kind == "dropped_record"] == [1]


def test_torchtune_file_without_records_is_an_error(tmp_path):
    f = tmp_path / "log_1.txt"
    f.write_text("hello\n")
    with pytest.raises(IngestError, match=r"log_1\.txt: holds no 'Step N"):
        logsage.load_history(f, format="torchtune")


def test_no_reader_imports_heavy_libraries_at_import():
    import subprocess
    import sys

    code = ("import sys, logsage.ingest as i; i.reader_modules(); "
            "print([m for m in ('torch', 'pandas', 'wandb', 'transformers', 'dvclive') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
