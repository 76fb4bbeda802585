"""The docs stay true: every command has help and is in the README, every rule is in the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import _COMMANDS, cli
from logsage.rules import list_rules
from corpus import REAL_RUNS, needs_corpus

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


def test_the_readme_formats_table_is_the_generated_one():
    from logsage.ingest import formats, formats_table_markdown

    section = README[README.index("## Formats"):README.index("## Rules")]
    start = section.index("| `--format` |")
    table = section[start:section.index("\n\n", start)] + "\n"
    assert table == formats_table_markdown(), "README's formats table is stale: paste formats_table_markdown()"
    assert all(f"| `{name}` |" in table for name in formats())


def test_readme_names_the_test_command_that_ci_runs():
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert 'pip install "torch==2.13.0" -e ".[test,train,report]" && python -m pytest -q' in README
    assert 'python -m pip install -q "torch==2.13.0" -e ".[test,train,report]"' in ci
    assert ci.rstrip().endswith("python -m pytest -q")


@needs_corpus
def test_example_script_runs_on_the_bundled_runs():
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    runs = sorted(str(p) for p in (REAL_RUNS / "hf_trainer_state").glob("gner-qe-roberta-large-num*"))
    out = subprocess.run([sys.executable, "examples/compare_rules.py", *runs], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert sum(" none " in line and "stop  never" in line for line in lines) == len(runs)  # the baseline never stops
    summary = [line for line in lines if line[:2] in ("* ", "  ") and "median regret" in line]
    assert len(summary) == 5  # one row per rule in the example
    none_row = next(line for line in summary if line[2:].startswith("none "))
    assert "median regret 0.0%" in none_row and "mean saved 0%" in none_row  # the baseline by definition


def test_readme_first_command_replays_the_bundled_runs():
    """The "Two commands" section's first command runs as written (no GPU, no download, no ../shared)."""
    import shlex
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    section = README[README.index("## Two commands"):README.index("## A tour")]
    first = re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()
    install, _, command = first.partition(" && ")
    assert install == "pip install -e ." and command.startswith("logsage replay examples/runs/* ")
    args = shlex.split(command)[2:]
    runs = sorted(str(p.relative_to(root)) for p in root.glob(args[0]))  # the shell's glob
    assert len(runs) >= 6
    out = subprocess.run([sys.executable, "-m", "logsage", "replay", *runs, *args[1:]], capture_output=True, text=True,
                         cwd=root, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("metric: ") == len(runs)  # one table per bundled run
    assert "summary over runs" in out.stdout and "../shared" not in out.stdout


def test_example_script_runs_on_the_bundled_example_runs():
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    runs = sorted(str(p) for p in (root / "examples" / "runs").iterdir())
    out = subprocess.run([sys.executable, "examples/compare_rules.py", *runs], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0, out.stderr
    assert sum(" none " in line and "stop  never" in line for line in out.stdout.splitlines()) == len(runs)


def test_the_screenshot_is_of_a_command_the_readme_runs():
    import re

    caption = re.search(r"!\[the page `(logsage report [^`]+)` writes", README)
    assert caption, "the screenshot's alt text names the command that made it"
    tour = README[README.index("## A tour"):]
    assert caption.group(1) in tour
    assert (Path(__file__).resolve().parent.parent / "docs" / "report-screenshot.png").is_file()


def test_the_readme_python_api_uses_only_public_names():
    import re

    import logsage

    section = README[README.index("## Python API"):README.index("## What a run is")]
    code = section[section.index("```python"):section.index("```", section.index("```python") + 9)]
    used = set(re.findall(r"\blogsage\.([A-Za-z_]+)", code))
    assert used and used <= set(logsage.__all__), used - set(logsage.__all__)
    assert "from logsage." not in code  # the stages come from `logsage` itself
