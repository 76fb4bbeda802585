"""The README's demo, run for real: `logsage train --config examples/train_tiny.yaml --output DIR`.

tests/train/test_train_config.py only checks that the config resolves; this runs exactly that
config (only --output changes) through the installed `logsage` entry point, in a fresh
process with an empty logsage cache, so the tiny model is built from scratch as on a
fresh machine: no GPU (CUDA hidden), no download. It is the slowest train test (the
config's 20 steps and 5 evaluations plus a cold start); it is marked slow and still runs
with the rest of the suite, as CI runs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CONFIG = "examples/train_tiny.yaml"  # as the README writes it: relative to the repository root


def _logsage_command() -> list[str]:
    """The console script `logsage` of this interpreter's environment (`python -m logsage` if not installed)."""
    script = Path(sys.executable).with_name("logsage")
    if script.is_file():
        return [str(script)]
    found = shutil.which("logsage")
    return [found] if found else [sys.executable, "-m", "logsage"]


def test_readme_demo_config_trains_with_a_checkpoint_per_evaluation(tmp_path):
    out = tmp_path / "tiny"
    env = dict(os.environ)
    env["LOGSAGE_CACHE_DIR"] = str(tmp_path / "cache")  # empty: the tiny model is built, as on a fresh machine
    env["CUDA_VISIBLE_DEVICES"] = ""  # a machine without a GPU
    env["OMP_NUM_THREADS"] = "1"  # the tiny model trains faster on one thread of a small shared CPU
    proc = subprocess.run([*_logsage_command(), "train", "--config", CONFIG, "--output", str(out)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "cache" / "models" / "tiny-random-qwen2" / "model.safetensors").is_file()

    # the config's schedule: 20 steps, an evaluation every 4 steps, a checkpoint at each
    import yaml

    cfg = yaml.safe_load((REPO / CONFIG).read_text())
    expected = list(range(cfg["eval_steps"], cfg["max_steps"] + 1, cfg["eval_steps"]))
    assert expected == [4, 8, 12, 16, 20]
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    evals = [e["step"] for e in log if "eval_loss" in e]
    assert evals == expected
    dirs = sorted(int(m.group(1)) for p in out.iterdir() if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)))
    assert dirs == evals
    for step in evals:
        ck = out / f"checkpoint-{step}"
        assert (ck / "adapter_config.json").is_file()
        assert (ck / "adapter_model.safetensors").stat().st_size > 0
        assert (ck / "per_example_eval_loss.jsonl").is_file()
    manifest = json.loads((out / "logsage_run.json").read_text())
    assert manifest["status"] == "completed" and manifest["device"]["type"] == "cpu"
    assert manifest["config_origin"]["max_steps"] == f"config:{CONFIG}"

    # and the README's next line reads it back
    from logsage.cli.main import cli

    r = CliRunner().invoke(cli, ["replay", str(out), "--rule", "hf:patience=2", "--json"])
    assert r.exit_code == 0, r.output
    (decision,) = json.loads(r.stdout)["decisions"]
    assert decision["decidable"] and decision["stop_step"] in (*evals, None)  # None: the rule never fired
    assert decision["selected_step"] in evals
