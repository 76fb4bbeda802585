"""Every run of the shared real-run corpus ingests, per run, as its INDEX.md says (independent facts,
counted by the collectors with plain Python and tensorboard's EventAccumulator):

* ``../shared/real-runs/``: the format, the number of points of the primary eval series, its kind,
  its direction, and where SOURCE.txt gives them its first / best / last values;
* ``../shared/real-runs-2/``: the format, the INDEX's point count for the primary metric (distinct
  steps where the INDEX gives both) and the direction (its ``dir`` column) - every run but the PEFT
  method-comparison JSON, which is no training log format.

The corpus is read in place (tests/corpus.py); without it these tests skip, and CI fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import logsage
from logsage.core.objective import resolve_objective
from corpus import REAL_RUNS as REAL, REAL_RUNS_2 as REAL2, needs_corpus, needs_corpus_2

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
    "keras_csvlogger": "keras",
    "wandb_run_dir": "wandb-run",
    "yolo_results_csv": "yolo",
    "sentence_transformers_eval_csv": "sentence-transformers",
}

# No training-log format (a results JSON of huggingface/peft's method comparison); left out on purpose.
NOT_A_LOG = {"peft_method_comparison_json"}


def _table(index: Path) -> list[list[str]]:
    """The cells of the 'All runs' table rows of an INDEX.md (one list per run)."""
    if not index.is_file():
        return []
    text = index.read_text()
    start = text.index("## All runs")
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("## "):
            break
        cells = [c.strip() for c in line.split("|")][1:-1]
        if len(cells) > 6 and cells[0].isdigit():
            rows.append(cells)
    return rows


def _rows_1():
    """(format folder, run folder, primary eval series, #evals) of real-runs/INDEX.md."""
    return [(c[1], c[2].strip("`"), c[6].split(" (")[0], int(c[7])) for c in _table(REAL / "INDEX.md")]


def _count(cell: str, run: str) -> int:
    """The INDEX's count: its distinct steps where it gives both (a series holds one point per step)."""
    m = re.fullmatch(r"(\d+)(?: \((\d+) distinct steps?\))?", cell)
    assert m, f"{run}: count cell {cell!r} not understood"
    if run.endswith("brain-tumor-cnn-appended-4runs"):
        # append=True: four sessions (5 + 4 + 10 + 5 rows, per the INDEX); the last one is read by default.
        return int(re.search(r"\(5 \+ 4 \+ 10 \+ (\d+) rows\)", _quirks[run]).group(1))
    return int(m[2] or m[1])


_quirks: dict[str, str] = {}


def _rows_2():
    """(format folder, run folder, primary metric, direction, count) of real-runs-2/INDEX.md."""
    rows = []
    for c in _table(REAL2 / "INDEX.md"):
        fmt = c[1].split(" ")[0]
        if fmt in NOT_A_LOG:
            continue
        run = c[2].strip("`")
        _quirks[run] = c[8]
        rows.append((fmt, run, c[5], c[6], _count(c[7], run)))
    return rows


ROWS = _rows_1()
ROWS_2 = _rows_2()


def _param(row, run: str):
    return pytest.param(*row, id=run)


@needs_corpus
def test_index_parsed_and_runs_present():
    assert len(ROWS) == 48
    assert sum(1 for r in ROWS if r[0] == "hf_trainer_state") == 20
    assert sum(1 for r in ROWS if r[0] == "tfevents") == 8
    for fmt, run, _, _ in ROWS:
        assert (REAL / run / "SOURCE.txt").exists(), run


@needs_corpus_2
def test_index_2_parsed_and_runs_present():
    assert len(ROWS_2) == 39  # 40 runs, the PEFT method-comparison JSON left out
    assert {r[0] for r in ROWS_2} <= set(DETECTED)
    for fmt, run, *_ in ROWS_2:
        assert (REAL2 / run / "SOURCE.txt").exists(), run


def _direction_1(series: str) -> str:
    # The first corpus's primary series are losses (min) or F1 scores (max, "higher=better").
    return "min" if "loss" in series.lower() else "max"


@needs_corpus
@pytest.mark.parametrize("fmt,run,series,n_evals", [_param(r, r[1]) for r in ROWS])
def test_real_run_ingests_with_its_eval_count(fmt, run, series, n_evals):
    h = logsage.load_history(REAL / run)
    assert DETECTED[fmt] in h.format.split("+")
    # The INDEX names the series as the source wrote it (or its description, e.g. "eval/average").
    name = h.resolve(series)
    assert len(h.series[name]) == n_evals
    assert h.series[name].kind == "eval"
    assert resolve_objective(h, series).mode == _direction_1(series)


@needs_corpus_2
@pytest.mark.parametrize("fmt,run,metric,direction,count", [_param(r, r[1]) for r in ROWS_2])
def test_real_run_2_ingests_with_its_format_count_and_direction(fmt, run, metric, direction, count):
    h = logsage.load_history(REAL2 / run)
    assert DETECTED[fmt] in h.format.split("+"), h.format
    name = h.resolve(metric)
    assert len(h.series[name]) == count
    assert resolve_objective(h, metric).mode == direction


def _source_first_best_last(run: str):
    path = REAL / run / "SOURCE.txt"
    if not path.is_file():
        return None
    m = re.search(r"first / best / last: ([\d.e+-]+) / ([\d.e+-]+) \(eval #(\d+)\) / ([\d.e+-]+)", path.read_text())
    return None if m is None else (float(m[1]), float(m[2]), int(m[3]), float(m[4]))


_WITH_VALUES = [r for r in ROWS if _source_first_best_last(r[1])]


@needs_corpus
@pytest.mark.parametrize("fmt,run,series,n_evals", _WITH_VALUES, ids=[r[1] for r in _WITH_VALUES])
def test_real_run_values_match_source(fmt, run, series, n_evals):
    first, best, best_at, last = _source_first_best_last(run)
    h = logsage.load_history(REAL / run)
    s = h.metric(series)
    assert s.values[0] == pytest.approx(first, rel=1e-4)
    assert s.values[-1] == pytest.approx(last, rel=1e-4)
    assert s.values[best_at - 1] == pytest.approx(best, rel=1e-4)
