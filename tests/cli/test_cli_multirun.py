"""The multi-run rule (issue 9): ingest, replay, tune and report over several PATHS report every
run they could read and exit 1 when any PATH could not be read; 0 when all were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "real-runs" / "hf_trainer_state"
RUNS = [str(REAL / n) for n in ("gner-qe-roberta-large-num10-40ep", "gner-qe-roberta-large-num20-40ep",
                                "gner-qe-roberta-large-num30-40ep")]
pytestmark = pytest.mark.skipif(not Path(RUNS[0]).exists(), reason="needs ../shared/real-runs")


def _invoke(*args):
    return CliRunner().invoke(cli, list(args))


def _bad(tmp_path: Path) -> str:
    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "trainer_state.json").write_text('{"log_history": [')
    return str(bad)


@pytest.mark.parametrize("command", ["ingest", "replay", "tune", "report"])
def test_one_unreadable_run_exits_1_and_the_others_are_reported(tmp_path, command):
    bad = _bad(tmp_path)
    extra = {"replay": ["--rule", "hf"], "tune": ["--rule", "hf", "--grid", "patience=1,2"],
             "report": ["--out", str(tmp_path / "r.html")], "ingest": []}[command]
    r = _invoke(command, *RUNS, bad, *extra, "--json")
    assert r.exit_code == 1, r.output
    assert "1 of 4 run(s) could not be read" in r.stderr and bad in r.stderr
    assert "Traceback" not in r.output
    doc = json.loads(r.stdout)
    runs = {"ingest": lambda d: [x["path"] for x in d["runs"]], "replay": lambda d: [x["run"] for x in d["decisions"]],
            "tune": lambda d: d["runs"], "report": lambda d: d["runs"]}[command](doc)
    assert all(p in runs for p in RUNS), runs  # the readable runs are all there
    if command == "report":
        assert (tmp_path / "r.html").exists()


@pytest.mark.parametrize("command", ["ingest", "replay", "tune", "report"])
def test_all_readable_exits_0(tmp_path, command):
    extra = {"replay": ["--rule", "hf"], "tune": ["--rule", "hf", "--grid", "patience=1,2"],
             "report": ["--out", str(tmp_path / "r.html")], "ingest": []}[command]
    r = _invoke(command, *RUNS, *extra, "--json")
    assert r.exit_code == 0, r.output


@pytest.mark.parametrize("command", ["ingest", "replay", "tune", "report"])
def test_the_rule_is_in_the_help(command):
    r = _invoke(command, "--help")
    assert "Exit code 1 when any PATH could not be read" in " ".join(r.output.split())
