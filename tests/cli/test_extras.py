"""A command whose extra is not installed says so in one line naming the extra, and exits 1.

Each case runs the real CLI in a fresh interpreter whose import system cannot find the
extra's modules (a meta-path blocker, as if they were not installed); `.ci/wheel-smoke`
checks the same on a real wheel in a clean virtual environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES_DATA
from corpus import REAL_RUNS  # the shared real-run corpus, read in place

REPO = Path(__file__).resolve().parents[2]
RUN = REAL_RUNS / "hf_trainer_state" / "gner-qe-roberta-large-num30-40ep"

_BLOCKED_CLI = """
import sys
BLOCKED = set(sys.argv[1].split(","))

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
from logsage.cli.main import cli
cli(sys.argv[2:], prog_name="logsage")
"""


def run_without(modules: list[str], args: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-c", _BLOCKED_CLI, ",".join(modules), *args], cwd=cwd or REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def assert_one_line_naming(proc: subprocess.CompletedProcess, extra: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"pip install 'logsage-replay[{extra}]'" in lines[0]


TRAIN_STACK = ["torch", "transformers", "peft", "accelerate", "safetensors"]


def test_train_without_the_train_extra(tmp_path):
    proc = run_without(TRAIN_STACK, ["train", "--config", str(REPO / "examples" / "train_tiny.yaml"),
                                     "--output", str(tmp_path / "run")])
    assert_one_line_naming(proc, "train")
    assert "logsage train" in proc.stderr
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_replay_plot_without_matplotlib(tmp_path):
    proc = run_without(["matplotlib"], ["replay", str(RUN), "--rule", "hf", "--plot", str(tmp_path / "p.png")])
    assert_one_line_naming(proc, "report")
    assert not (tmp_path / "p.png").exists()


def test_report_png_without_matplotlib(tmp_path):
    proc = run_without(["matplotlib"], ["report", str(RUN), "--out", str(tmp_path / "r.html"),
                                        "--png", str(tmp_path / "png")])
    assert_one_line_naming(proc, "report")


def test_analysis_commands_need_no_extra(tmp_path):
    blocked = [*TRAIN_STACK, "matplotlib", "pandas", "wandb", "tensorboard"]
    for args in (["ingest", str(RUN)], ["replay", str(RUN), "--rule", "hf:patience=3"], ["rules"],
                 ["report", str(RUN), "--out", str(tmp_path / "r.html")]):
        proc = run_without(blocked, args)
        assert proc.returncode == 0, (args, proc.stderr)


def test_a_missing_module_that_is_no_extra_keeps_its_traceback(tmp_path):
    # numpy is a core dependency: missing, it is a broken install, not a missing extra.
    proc = run_without(["numpy"], ["replay", str(RUN), "--rule", "hf"])
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "logsage-replay[" not in proc.stderr


@pytest.mark.slow
def test_select_reevaluation_without_the_train_extra(tiny_run_dir, tiny_model_dir):
    # --base names the model, so the only stderr line is the error (no "base outside the run" warning)
    proc = run_without(TRAIN_STACK, ["select", str(tiny_run_dir), "--rule", "hf:patience=2", "--base",
                                     str(tiny_model_dir),
                                     "--eval-data", os.path.join(EXAMPLES_DATA, "tiny_alpaca_eval.jsonl")])
    assert_one_line_naming(proc, "train")
    assert "logsage select" in proc.stderr


def test_the_docs_never_install_the_unrelated_logsage_from_pypi():
    import re

    texts = {p: p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}
    commands = [(p.name, m.group(1)) for p, t in texts.items() for m in re.finditer(r"pip install ([^`\n]+)", t)]
    assert commands
    for name, cmd in commands:
        cmd = re.split(r"&&|;|\|", cmd)[0]  # the pip command only, not what runs after it
        for arg in cmd.split():
            bare = arg.strip("'\"")
            assert not re.fullmatch(r"logsage(\[.*\])?(==.*)?", bare), f"{name}: `pip install {cmd}`"
    assert any("logsage-replay[train]" in cmd for _, cmd in commands)


def test_the_distribution_name_is_the_one_the_errors_name():
    import tomllib

    from logsage.core.extras import DISTRIBUTION

    doc = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert doc["project"]["name"] == DISTRIBUTION == "logsage-replay"
    from logsage.core.extras import EXTRA_OF_MODULE

    assert set(EXTRA_OF_MODULE.values()) <= set(doc["project"]["optional-dependencies"])


def test_the_hf_integration_without_transformers_names_the_extra():
    code = _BLOCKED_CLI.split("from logsage.cli.main")[0] + (
        "try:\n    import logsage.integrations.hf\nexcept ImportError as e:\n    print(type(e).__name__, e)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code, "transformers"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.stdout.startswith("MissingExtraError") and "logsage-replay[train]" in proc.stdout, proc.stdout
