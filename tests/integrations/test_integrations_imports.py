"""Importing one integration imports its own framework and no other (nor pandas/matplotlib)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FRAMEWORKS = ["transformers", "lightning", "pytorch_lightning", "keras", "tensorflow", "pandas", "matplotlib", "wandb"]

_PROBE = """
import json, sys
__import__(sys.argv[1])
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in set(sys.argv[2].split(",")))))
"""


def _imported(module: str) -> set[str]:
    env = dict(os.environ, KERAS_BACKEND="torch")
    proc = subprocess.run([sys.executable, "-c", _PROBE, module, ",".join(FRAMEWORKS)], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return {m.split(".")[0] for m in json.loads(proc.stdout.strip().splitlines()[-1])}


def test_the_package_imports_no_framework():
    assert _imported("logsage.integrations") == set()


@pytest.mark.parametrize("integration, framework", [
    ("logsage.integrations.hf", "transformers"),
    ("logsage.integrations.lightning", "pytorch_lightning"),
    ("logsage.integrations.keras", "keras"),
])
def test_an_integration_imports_only_what_its_framework_does(integration, framework):
    if importlib.util.find_spec(framework) is None:
        pytest.skip(f"{framework} is not installed")
    assert _imported(integration) <= _imported(framework) | {framework}
