"""The GPU benchmark script runs end to end on CPU with a tiny config (the real run needs a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu" / "bench_qwen7b_lora.py"


def test_gpu_benchmark_runs_tiny_on_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    p = subprocess.run([sys.executable, str(SCRIPT), "--tiny", "--steps", "2", "--eval-steps", "1", "--examples", "20",
                        "--workdir", str(tmp_path), "--json"], capture_output=True, text=True, env=env, timeout=900,
                       cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    got = json.loads(p.stdout[p.stdout.index("{"):])
    assert got["config"] == "tiny" and got["steps"] == 2
    for kind in ("logsage", "hf+peft"):
        r = got[kind]
        assert r["tokens"] > 0 and r["tokens_per_s"] > 0, r
        assert r["n_eval"] == 2 and r["n_save"] == 2, r  # eval + save at steps 1 and 2 (--save-all)
        assert r["eval_save_s"] > 0 and r["train_s"] > 0
    m = got["merge"]
    assert m["checkpoint"] == "checkpoint-2" and m["seconds"] > 0 and m["peak_rss_gb"] > 0 and m["changed"] > 0
    # The merged folder is removed; the runs stay for inspection.
    assert not (tmp_path / "merged").exists() and (tmp_path / "run-logsage" / "checkpoint-2").is_dir()
