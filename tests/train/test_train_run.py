"""The shared tiny `logsage train --save-all` run: what it leaves on disk, and that it reads back.

Uses the session fixture `tiny_run_dir` (tests/conftest.py): 10 steps, evaluations at
3, 6, 9 and 10 (transformers 5's extra final evaluation), eval batches of 3, 3 and 2.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES_DATA, TINY_RUN_EVAL_STEPS

pytestmark = pytest.mark.slow


def _log_history(run: Path) -> list[dict]:
    return json.loads((run / "trainer_state.json").read_text())["log_history"]


def _eval_steps_logged(run: Path) -> list[int]:
    return [e["step"] for e in _log_history(run) if "eval_loss" in e]


def test_a_checkpoint_exists_for_every_evaluation(tiny_run_dir):
    evals = _eval_steps_logged(tiny_run_dir)
    assert evals == list(TINY_RUN_EVAL_STEPS)  # includes v5's extra final evaluation at step 10
    dirs = sorted(int(m.group(1)) for p in tiny_run_dir.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))
    assert dirs == evals
    for step in evals:
        ck = tiny_run_dir / f"checkpoint-{step}"
        # peft's own files, directly in the checkpoint folder
        assert (ck / "adapter_config.json").is_file()
        assert (ck / "adapter_model.safetensors").stat().st_size > 0
        assert (ck / "trainer_state.json").is_file()
        assert (ck / "per_example_eval_loss.jsonl").is_file()
        state = json.loads((ck / "trainer_state.json").read_text())
        assert state["global_step"] == step
    adapter = json.loads((tiny_run_dir / "checkpoint-3" / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 32
    # all-linear: every projection of the Qwen2 blocks, and not the output head
    assert {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                              "down_proj"}


def test_checkpoint_adapter_loads_with_peft(tiny_run_dir, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(base, tiny_run_dir / "checkpoint-9")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.abs().max()) > 0 for p in lora_b)  # trained: B moved away from its zero init


def test_ingests_through_trainer_state_and_tensorboard_readers_alike(tiny_run_dir):
    import logsage

    ts = logsage.load_history(tiny_run_dir, format="trainer-state")
    tb = logsage.load_history(tiny_run_dir, format="tensorboard")
    a, b = ts.metric("eval_loss"), tb.metric("eval_loss")
    assert a.steps.tolist() == list(TINY_RUN_EVAL_STEPS)
    assert b.steps.tolist() == a.steps.tolist()
    np.testing.assert_allclose(b.values, a.values, rtol=1e-6)  # event files hold float32
    assert not np.array_equal(a.values, np.full_like(a.values, a.values[0]))  # the curve moves
    # the training loss is logged every step in both
    assert ts.train_loss().steps.tolist() == list(range(1, 11))
    assert tb.train_loss().steps.tolist() == list(range(1, 11))
    # the whole folder: checkpoint inventory, all whole adapters
    h = logsage.load_history(tiny_run_dir)
    assert [c.step for c in h.checkpoints] == list(TINY_RUN_EVAL_STEPS)
    assert all(c.kind == "adapter" and c.whole for c in h.checkpoints)
    assert h.max_steps == 10
    # TensorBoard events live in RUN_DIR/runs/ (one run folder)
    assert list((tiny_run_dir / "runs").glob("events.out.tfevents.*"))


def test_per_example_losses_recombine_to_the_logged_eval_loss(tiny_run_dir):
    from logsage.ingest.per_example import hf_eval_loss, read_per_example

    per_example = read_per_example(tiny_run_dir)
    logged = {e["step"]: e["eval_loss"] for e in _log_history(tiny_run_dir) if "eval_loss" in e}
    assert sorted(per_example) == sorted(logged)
    eval_ids = [json.loads(line)["id"] for line in Path(EXAMPLES_DATA, "tiny_alpaca_eval.jsonl").read_text().splitlines()]
    for step, pe in per_example.items():
        assert pe["id"].tolist() == eval_ids  # every eval example once, in order, by its record id
        assert pe["batch"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2]
        assert (pe["n_tokens"] > 0).all() and np.isfinite(pe["loss_sum"]).all()
        recombined = hf_eval_loss(pe)
        assert recombined == pytest.approx(logged[step], rel=1e-5)
        # The last batch is smaller, so weighting matters: a plain mean of batch means differs.
        unweighted = np.mean([pe["loss_sum"][pe["batch"] == b].sum() / pe["n_tokens"][pe["batch"] == b].sum()
                              for b in range(3)])
        assert abs(unweighted - logged[step]) / logged[step] > 1e-5


def test_per_example_losses_match_an_independent_forward_pass(tiny_run_dir, tiny_model_dir):
    """Re-run one checkpoint by hand (plain transformers + peft, batch of one) and compare example by example."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from logsage.ingest.per_example import read_per_example_file
    from logsage.train.data import load_examples, tokenize_examples

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                      tiny_run_dir / "checkpoint-6").eval()
    examples = tokenize_examples(tok, load_examples([Path(EXAMPLES_DATA, "tiny_alpaca_eval.jsonl")]), 2048)
    pe = read_per_example_file(tiny_run_dir / "checkpoint-6" / "per_example_eval_loss.jsonl")
    for k, ex in enumerate(examples):
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels]))
        # out.loss is this example's token mean (HF's own loss): loss_sum / n_tokens must equal it
        assert int(pe["n_tokens"][k]) == ex.n_target_tokens
        assert pe["loss_sum"][k] / pe["n_tokens"][k] == pytest.approx(float(out.loss), rel=1e-5)


def test_manifest_records_what_ran(tiny_run_dir, tiny_model_dir):
    import hashlib

    m = json.loads((tiny_run_dir / "logsage_run.json").read_text())
    assert m["status"] == "completed"
    assert m["start_time"] and m["end_time"] and m["end_time"] >= m["start_time"]
    assert m["model"]["name"] == str(tiny_model_dir)
    assert m["model"]["local"] is True and m["model"]["revision"] is None
    train_file = Path(EXAMPLES_DATA, "tiny_alpaca.jsonl")
    (train,) = m["data"]["train"]
    assert train["sha256"] == hashlib.sha256(train_file.read_bytes()).hexdigest()
    assert train["examples"] == len(train_file.read_text().splitlines())
    assert m["data"]["eval"][0]["examples"] == 8
    for pkg in ("python", "torch", "transformers", "peft", "logsage"):
        assert m["versions"][pkg]
    import transformers

    assert m["versions"]["transformers"] == transformers.__version__
    assert m["device"]["type"] == "cpu" and m["device"]["device"] == "cpu"  # --device cpu
    assert m["config"]["save_all"] is True and m["config"]["eval_steps"] == 3
    assert m["config_origin"]["eval_steps"] == "command line"
    assert m["config_origin"]["lora_r"] == "default"
    assert m["global_step"] == 10 and m["early_stop"] is None


def _short_run_args(model_dir, out, *extra):
    """A 1-step, 1-evaluation LoRA run of the tiny model on CPU (the cheapest full pass through the recipe)."""
    return ["--model", str(model_dir), "--data", str(Path(EXAMPLES_DATA, "tiny_alpaca.jsonl")),
            "--eval-data", str(Path(EXAMPLES_DATA, "tiny_alpaca_eval.jsonl")), "--output", str(out), "--save-all",
            "--max-steps", "1", "--eval-steps", "1", "--per-device-train-batch-size", "4",
            "--per-device-eval-batch-size", "4", "--device", "cpu", *extra]


_PRETEND_GPU = {"is_available": lambda: True, "device_count": lambda: 1, "current_device": lambda: 0,
                "get_device_name": lambda i=None: "Pretend GPU"}


def _pretend_a_gpu_is_visible(monkeypatch):
    """torch.cuda says a GPU is there; returns a function that puts the real answers back."""
    import torch

    real = {name: getattr(torch.cuda, name) for name in _PRETEND_GPU}
    for name, fake in _PRETEND_GPU.items():
        monkeypatch.setattr(torch.cuda, name, fake)

    def stop_pretending():
        for name, fn in real.items():
            monkeypatch.setattr(torch.cuda, name, fn)

    return stop_pretending


def test_device_info_reports_the_device_given_not_a_visible_gpu(monkeypatch):
    from logsage.train.manifest import device_info

    _pretend_a_gpu_is_visible(monkeypatch)
    cpu = device_info("cpu")
    assert cpu["type"] == "cpu" and cpu["device"] == "cpu" and cpu["cuda_available"] is True
    assert "names" not in cpu and cpu["cpu_count"]
    gpu = device_info("cuda:0")
    assert gpu["type"] == "cuda" and gpu["device"] == "cuda:0" and gpu["name"] == "Pretend GPU" and gpu["count"] == 1


def test_manifest_says_cpu_under_device_cpu_even_with_a_gpu_visible(tmp_path, tiny_model_dir, monkeypatch):
    """--device cpu on a GPU machine: the manifest records the device the Trainer used, not the visible GPU."""
    from conftest import train_tiny_cli
    from logsage.train import manifest

    # A GPU is "visible" while the run resolves its device, loads the model, builds the Trainer
    # and writes the manifest; after that the real answers come back, because a CPU-only torch
    # cannot do the CUDA calls (RNG state) that checkpointing makes when CUDA is available.
    stop_pretending = _pretend_a_gpu_is_visible(monkeypatch)
    real_start = manifest.start_manifest

    def start_then_stop_pretending(*args, **kwargs):
        try:
            return real_start(*args, **kwargs)
        finally:
            stop_pretending()

    monkeypatch.setattr(manifest, "start_manifest", start_then_stop_pretending)
    out = tmp_path / "cpu"
    code, doc = train_tiny_cli(_short_run_args(tiny_model_dir, out))
    assert code == 0, doc
    m = json.loads((out / "logsage_run.json").read_text())
    assert m["device"]["type"] == "cpu" and m["device"]["device"] == "cpu"
    assert m["device"]["cuda_available"] is True  # the GPU was visible, and unused
    assert "names" not in m["device"]


def test_a_local_model_never_causes_a_hub_request(tmp_path, tiny_model_dir, monkeypatch):
    """The whole run on a local folder, with hub access allowed but every socket connection refused and recorded.

    The suite runs with HF_HUB_OFFLINE=1 (conftest.py), which would hide a hub request;
    here offline mode is off (huggingface_hub reads the variable once, at import, so its
    constant is reset too), and a connection attempt is what gives a request away.
    """
    import socket

    import huggingface_hub
    import huggingface_hub.constants

    from conftest import train_tiny_cli

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    attempts: list[tuple[str, str]] = []

    def refuse(kind):
        def blocked(*args, **kwargs):
            attempts.append((kind, repr(args[1:] if kind.startswith("socket.") else args)[:200]))
            raise OSError(f"network blocked by the test ({kind})")

        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))

    out = tmp_path / "local"
    code, doc = train_tiny_cli(_short_run_args(tiny_model_dir, out))
    assert code == 0, doc
    assert doc["checkpoints"] == ["checkpoint-1"]
    assert attempts == [], f"a local model caused network access: {attempts}"
    m = json.loads((out / "logsage_run.json").read_text())
    assert m["model"]["local"] is True and m["model"]["revision"] is None

    # The trap works: with offline mode off, a real hub lookup is caught trying to connect.
    with pytest.raises(Exception):
        huggingface_hub.model_info("Qwen/Qwen2.5-7B-Instruct")
    assert attempts


def test_full_fine_tune_with_an_eval_split(tmp_path, tiny_model_dir):
    """--full keeps whole-model safetensors checkpoints; --eval-split holds out part of the training file."""
    import logsage
    from conftest import train_tiny_cli

    out = tmp_path / "full"
    code, doc = train_tiny_cli(["--model", str(tiny_model_dir), "--data", str(Path(EXAMPLES_DATA, "tiny_alpaca.jsonl")),
                                "--eval-split", "4", "--output", str(out), "--full", "--save-all", "--max-steps", "2",
                                "--eval-steps", "2", "--per-device-train-batch-size", "4",
                                "--per-device-eval-batch-size", "2", "--device", "cpu"])
    assert code == 0, doc
    assert doc["checkpoints"] == ["checkpoint-2"]
    ck = out / "checkpoint-2"
    assert (ck / "model.safetensors").is_file() and not (ck / "adapter_config.json").exists()
    (c,) = logsage.load_history(out).checkpoints
    assert c.kind == "full" and c.whole
    m = json.loads((out / "logsage_run.json").read_text())
    assert m["data"]["eval_split"] == 4 and m["data"]["eval_examples"] == 4 and m["data"]["train_examples"] == 16
    assert m["model"]["kind"] == "full"
    # the held-out ids are line numbers of the training file's records (their own "id" fields here)
    pe = [json.loads(x) for x in (ck / "per_example_eval_loss.jsonl").read_text().splitlines()]
    assert [r["id"] for r in pe] == m["data"]["eval_ids"]
