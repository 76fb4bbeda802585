"""Shared pytest fixtures (session-scoped where building them is expensive).

Several engineers add fixtures here; keep additions self-contained.
"""

from __future__ import annotations

import os

import pytest

# No test may reach the network: transformers / huggingface_hub stay offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# --- the shared real-run corpus (tests/corpus.py) -----------------------------------------


def pytest_configure(config):
    """With LOGSAGE_REQUIRE_CORPUS=1 (CI), a missing ../shared corpus fails the session instead of skipping."""
    import corpus

    if os.environ.get(corpus.REQUIRE_ENV) == "1" and corpus.missing():
        raise pytest.UsageError(
            f"{corpus.REQUIRE_ENV}=1 but the shared real-run corpus is missing: "
            + ", ".join(str(p) for p in corpus.missing())
            + "; CI must run with ../shared/ (real-runs/, real-runs-2/) beside the repository")


# --- training fixtures (logsage/train) ---------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2ForCausalLM + ChatML tokenizer on disk (logsage.train.tiny), built once."""
    from logsage.train.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2") / "model", seed=0)


EXAMPLES_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "data")


class _OneTorchThread:
    """Train the tiny model on one thread: on a small shared CPU, two threads are slower (contention)."""

    def __enter__(self):
        import torch

        self.saved = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.saved)


def train_tiny_cli(args: list[str]):
    """Run `logsage train ... --json` in-process on one torch thread; returns (exit code, parsed JSON or output)."""
    import json

    from click.testing import CliRunner

    from logsage.cli.main import cli

    with _OneTorchThread():
        result = CliRunner().invoke(cli, ["train", *args, "--json"], catch_exceptions=False)
    try:
        doc = json.loads(result.stdout)
    except ValueError:
        doc = result.output
    return result.exit_code, doc


# The shared trained run: 2 epochs over examples/data/tiny_alpaca.jsonl (20 examples, batch 4:
# 10 steps), evaluated every 3 steps on tiny_alpaca_eval.jsonl (8 examples, eval batch 3, so
# the batches hold 3, 3 and 2 examples). Evaluations at steps 3, 6, 9 and at 10 (the extra
# final evaluation transformers 5 adds when max_steps is not a multiple of eval_steps).
TINY_RUN_EVAL_STEPS = (3, 6, 9, 10)


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_model_dir):
    """A finished `logsage train --save-all` run of the tiny model (LoRA), shared by every test that needs one."""
    out = tmp_path_factory.mktemp("tiny-run") / "run"
    code, doc = train_tiny_cli([
        "--model", str(tiny_model_dir),
        "--data", os.path.join(EXAMPLES_DATA, "tiny_alpaca.jsonl"),
        "--eval-data", os.path.join(EXAMPLES_DATA, "tiny_alpaca_eval.jsonl"),
        "--output", str(out), "--save-all",
        "--num-train-epochs", "2", "--per-device-train-batch-size", "4", "--per-device-eval-batch-size", "3",
        "--eval-steps", "3", "--logging-steps", "1", "--learning-rate", "3e-3", "--warmup-ratio", "0",
        "--seed", "0", "--device", "cpu",
    ])
    assert code == 0, doc
    return out
