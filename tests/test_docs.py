"""The docs stay true: every command has help and is in the README, every rule is in the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import _COMMANDS, cli
from logsage.rules import list_rules

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("name", list(_COMMANDS))
def test_every_command_has_help_with_an_example_and_is_in_the_readme(name):
    r = CliRunner().invoke(cli, [name, "--help"])
    assert r.exit_code == 0, r.output
    assert "Example" in r.output or "example" in r.output, f"{name} --help has no example"
    assert re.search(rf"logsage {name}\b", README), f"README never shows `logsage {name}`"


def test_every_rule_is_in_the_readme_table():
    table = README[README.index("## Rules"):README.index("## Python API")]
    for info in list_rules():
        assert f"`{info.name}`" in table, f"rule {info.name} missing from the README's rules table"
        assert info.reference and info.summary


def test_the_readme_rules_table_is_the_generated_one():
    from logsage.rules.base import rules_table_markdown

    section = README[README.index("## Rules"):README.index("## Python API")]
    start = section.index("| rule |")
    table = section[start:section.index("\n\n", start)] + "\n"
    assert table == rules_table_markdown(), "README's rules table is stale: paste rules_table_markdown()"


def test_readme_names_the_test_command_that_ci_runs():
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert 'pip install "torch==2.13.0" -e ".[test,train,report]" && python -m pytest -q' in README
    assert 'python -m pip install -q "torch==2.13.0" -e ".[test,train,report]"' in ci
    assert ci.rstrip().endswith("python -m pytest -q")


def test_example_script_runs_on_the_bundled_runs():
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    runs = sorted(str(p) for p in (root / "fixtures" / "real-runs" / "hf_trainer_state").glob("gner-qe-roberta-large-num*"))
    out = subprocess.run([sys.executable, "examples/compare_rules.py", *runs], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(" none " in line and "stop  never" in line for line in lines) == len(runs)  # the baseline never stops
    summary = [line for line in lines if line[:2] in ("* ", "  ") and "median regret" in line]
    assert len(summary) == 5  # one row per rule in the example
    none_row = next(line for line in summary if line[2:].startswith("none "))
    assert "median regret 0.0%" in none_row and "mean saved 0%" in none_row  # the baseline by definition
