"""`logsage train` under `torchrun --nproc_per_node=2` on CPU (gloo): one run, written by rank 0 only.

The eval set (8 examples) divides evenly into eval steps of 2 processes x batch 2, so
the per-example losses gathered from both ranks must recombine to the logged eval_loss.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES_DATA

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_run(tmp_path, tiny_model_dir):
    from logsage.ingest.per_example import hf_eval_loss, read_per_example

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "logsage", "train", "--model", str(tiny_model_dir),
           "--data", str(Path(EXAMPLES_DATA, "tiny_alpaca.jsonl")),
           "--eval-data", str(Path(EXAMPLES_DATA, "tiny_alpaca_eval.jsonl")),
           "--output", str(out), "--save-all", "--max-steps", "4", "--eval-steps", "2", "--logging-steps", "1",
           "--per-device-train-batch-size", "2", "--per-device-eval-batch-size", "2", "--device", "cpu", "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)  # exactly one JSON document: rank 1 prints nothing
    assert doc["status"] == "completed" and doc["global_step"] == 4

    manifest = json.loads((out / "logsage_run.json").read_text())
    assert manifest["device"]["world_size"] == 2
    assert len(list((out / "runs").glob("events.out.tfevents.*"))) == 1  # one writer
    ck = out / "checkpoint-2"
    assert {p.name for p in ck.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}  # really 2 ranks
    assert not list(out.glob("**/*.tmp"))

    logged = {e["step"]: e["eval_loss"]
              for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "eval_loss" in e}
    per_example = read_per_example(out)
    assert sorted(per_example) == sorted(logged) == [2, 4]
    ids = [json.loads(x)["id"] for x in Path(EXAMPLES_DATA, "tiny_alpaca_eval.jsonl").read_text().splitlines()]
    for step, pe in per_example.items():
        assert sorted(pe["id"].tolist()) == sorted(ids)  # complete on rank 0, each example once
        assert pe["batch"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # a batch = one eval step across both ranks
        assert hf_eval_loss(pe) == pytest.approx(logged[step], rel=1e-5)
