"""`logsage ingest` in the terminal: notes that lose nothing are counted in one line; the others are shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import cli
from corpus import REAL_RUNS  # the shared real-run corpus, read in place

REPO = Path(__file__).resolve().parents[2]
NAN_RUN = REAL_RUNS / "hf_trainer_state" / "gner-qe-roberta-large-lr5e-5-nan"


def _ingest(path, *extra):
    r = CliRunner().invoke(cli, ["ingest", str(path), *extra], terminal_width=200)
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.mark.slow
def test_a_fresh_logsage_train_run_prints_one_line_for_its_own_files(tiny_run_dir):
    text = _ingest(tiny_run_dir)
    cleanups = json.loads(_ingest(tiny_run_dir, "--json"))["runs"][0]["cleanups"]
    assert len(cleanups) >= 10  # trainer_state.json + events + every checkpoint's copy: all still recorded
    assert "source_choice:" not in text and "superseded" not in text
    assert f"{len(cleanups)} routine note(s)" in text


def test_notes_that_matter_are_still_printed():
    text = _ingest(NAN_RUN)
    assert "non_finite: eval_pearson" in text and "routine note" not in text
