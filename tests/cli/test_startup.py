"""Start-up of the analysis path: what a small `logsage replay` loads, and the BLAS thread choice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from corpus import REAL_RUNS

RUN = REAL_RUNS / "hf_trainer_state" / "zephyr-dpo-3ep"  # the shared real-run corpus, read in place
ROOT = Path(__file__).resolve().parents[2]


def _py(code: str, **env: str) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    e.update(env, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=e, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_replay_scores_without_scipy_until_a_decision_is_read():
    got = _py(f"""
import json, sys
from logsage.ingest import load_history
from logsage.decide.engine import replay
r = replay([load_history({str(RUN)!r}, use_cache=False)], ["hf"], grid={{"patience": [1, 2, 3, 4, 5]}})
before = sorted(m for m in sys.modules if m.split(".")[0] == "scipy")
stops = r.stops().tolist(); summary = len(r.summary)
first = r.decisions[0].trend_p
print(json.dumps({{"before": before, "stops": stops, "summary": summary,
                   "after": "scipy.special" in sys.modules}}))
""")
    assert got["before"] == [] and got["summary"] == 5 and len(got["stops"][0]) == 5
    assert got["after"]  # the trend p-value of a decision needs scipy.special.stdtr: loaded then, not before


def test_cli_analysis_commands_run_blas_on_one_thread_and_never_load_the_heavy_libraries():
    got = _py(f"""
import json, os, sys
from logsage.cli.main import cli
try:
    cli(["replay", {str(RUN)!r}, "--rule", "hf", "--json"])
except SystemExit:
    pass
heavy = sorted(m for m in ("torch", "transformers", "peft", "pandas", "wandb", "scipy.stats") if m in sys.modules)
print(json.dumps({{"blas": os.environ.get("OPENBLAS_NUM_THREADS"), "heavy": heavy}}))
""")
    assert got == {"blas": "1", "heavy": []}
    # A thread count the user chose is kept.
    got = _py(f"""
import json, os, sys
from logsage.cli.main import cli
try:
    cli(["replay", {str(RUN)!r}, "--rule", "hf", "--json"])
except SystemExit:
    pass
print(json.dumps({{"blas": os.environ.get("OPENBLAS_NUM_THREADS")}}))
""", OPENBLAS_NUM_THREADS="2")
    assert got == {"blas": "2"}
