"""Every real run under fixtures/real-runs/ ingests, with the format and the number of points
of its primary eval series that its SOURCE.txt / INDEX.md state (independent facts)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import logsage

from corpus import REAL_RUNS as REAL

# format folder -> the `History.format` logsage must detect
DETECTED = {
    "hf_trainer_state": "trainer-state",
    "tfevents": "tensorboard",
    "lightning_csv": "lightning",
    "llamafactory_trainer_log": "llamafactory",
    "msswift_logging_jsonl": "swift",
    "axolotl_model_card": "model-card",
    "tb_scalars_long_csv": "tb-csv",
    "wide_metrics_csv": "wide",
}


def _index_rows():
    """(format folder, run folder, primary eval series, #evals) from INDEX.md's 'All runs' table."""
    rows = []
    for line in (REAL / "INDEX.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 8 and cells[2] in DETECTED and cells[3].startswith("`"):
            run = cells[3].strip("`")
            series = cells[7].split(" (")[0]
            rows.append((cells[2], run, series, int(cells[8])))
    return rows


ROWS = _index_rows()


def test_index_parsed_and_fixtures_present():
    # INDEX.md lists 48 runs; at least the trainer_state and tfevents ones are copied here.
    assert len(ROWS) == 48
    assert sum(1 for r in ROWS if r[0] == "hf_trainer_state") == 20
    assert sum(1 for r in ROWS if r[0] == "tfevents") == 8
    for fmt, run, _, _ in ROWS:
        assert (REAL / run).is_dir(), f"fixture {run} missing"
        assert (REAL / run / "SOURCE.txt").exists(), run


@pytest.mark.parametrize("fmt,run,series,n_evals", ROWS, ids=[r[1] for r in ROWS])
def test_real_run_ingests_with_its_eval_count(fmt, run, series, n_evals):
    _needs_reader(fmt)
    h = logsage.load_history(REAL / run)
    assert DETECTED[fmt] in h.format.split("+")
    # The INDEX names the series as the source wrote it (or its description, e.g. "eval/average").
    name = h.resolve(series)
    assert len(h.series[name]) == n_evals
    assert h.series[name].kind == "eval"


def _needs_reader(fmt: str) -> None:
    assert DETECTED[fmt] in logsage.formats(), f"no reader for {fmt}"


def _source_first_best_last(run: str):
    text = (REAL / run / "SOURCE.txt").read_text()
    m = re.search(r"first / best / last: ([\d.e+-]+) / ([\d.e+-]+) \(eval #(\d+)\) / ([\d.e+-]+)", text)
    return None if m is None else (float(m[1]), float(m[2]), int(m[3]), float(m[4]))


@pytest.mark.parametrize("fmt,run,series,n_evals", [r for r in ROWS if _source_first_best_last(r[1])],
                         ids=[r[1] for r in ROWS if _source_first_best_last(r[1])])
def test_real_run_values_match_source(fmt, run, series, n_evals):
    _needs_reader(fmt)
    first, best, best_at, last = _source_first_best_last(run)
    h = logsage.load_history(REAL / run)
    s = h.metric(series)
    assert s.values[0] == pytest.approx(first, rel=1e-4)
    assert s.values[-1] == pytest.approx(last, rel=1e-4)
    assert s.values[best_at - 1] == pytest.approx(best, rel=1e-4)
