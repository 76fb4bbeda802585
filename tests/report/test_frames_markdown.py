"""Notebook and CI views: History/replay/tune as pandas DataFrames, replay/tune as compact Markdown."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import cli
from corpus import REAL_RUNS  # the shared real-run corpus, read in place

pd = pytest.importorskip("pandas")

REPO = Path(__file__).resolve().parents[2]
RUNS = sorted(str(p) for p in (REAL_RUNS / "hf_trainer_state").glob("gner-qe-roberta-large-num*"))


@pytest.fixture(scope="module")
def runs():
    import logsage

    return [logsage.load_history(p) for p in RUNS]


def test_history_long_and_wide(runs):
    h = runs[0]
    long = h.to_pandas()
    assert list(long.columns) == ["step", "metric", "canonical", "kind", "value"]
    assert len(long) == sum(len(s) for s in h.series.values())  # every point, once
    ev = long[long.metric == h.primary_eval_metric()]
    s = h.metric(h.primary_eval_metric())
    assert ev.step.tolist() == s.steps.tolist() and ev.value.tolist() == s.values.tolist()
    wide = h.to_pandas("wide")
    assert wide.index.name == "step" and set(wide.columns) == set(h.series)
    assert sorted(set(long.step)) == wide.index.tolist()
    for name, series in h.series.items():
        col = wide[name].dropna()
        assert col.index.tolist() == series.steps[~pd.isna(series.values)].tolist()
    with pytest.raises(ValueError, match="'long' or 'wide'"):
        h.to_pandas("tall")


def test_replay_frames_match_the_decisions(runs):
    from logsage.decide.engine import replay

    result = replay(runs, ["hf:patience=3", "gl"])
    df = result.to_pandas()
    assert len(df) == len(result.decisions)
    for row, d in zip(df.itertuples(), result.decisions):
        assert (row.run, row.rule, row.stop_step) == (d.run, d.rule, d.stop_step)
        assert math.isclose(row.regret, d.regret)
    assert set(df.spec) == {"hf:patience=3", "gl"}
    summary = result.to_pandas("summary")
    assert len(summary) == len(result.summary) and summary.pareto.dtype == bool


def test_tune_frames(runs):
    from logsage.analysis.tune import tune
    from logsage.decide.frames import tune_frame

    result = tune(runs, metric="eval_loss")
    doc = result.to_dict()
    cand = tune_frame(result, "candidates")
    assert len(cand) == doc["n_candidates"] and "spec" in cand.columns
    comp = tune_frame(result, "comparison")
    assert comp.spec.iloc[0] == doc["recommendation"]["spec"]  # the recommended rule heads the comparison
    assert len(tune_frame(doc, "per_run")) == len(runs)
    assert len(tune_frame(result, "folds")) == len(runs)


def _lines_of_table(text: str, header_start: str) -> list[list[str]]:
    lines = text.splitlines()
    i = next(k for k, ln in enumerate(lines) if ln.startswith(header_start))
    rows = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split(" | ")])
    return rows


def test_replay_markdown_is_the_json_in_a_table():
    args = ["replay", *RUNS, "--rule", "hf:patience=3", "--rule", "gl"]
    doc = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    r = CliRunner().invoke(cli, [*args, "--markdown"])
    assert r.exit_code == 0, r.output
    md = r.stdout
    assert md.startswith("### logsage replay") and "\x1b" not in md  # no terminal colours
    rows = _lines_of_table(md, "| run | rule |")
    assert len(rows) == len(doc["decisions"])
    for row, d in zip(rows, doc["decisions"]):
        assert row[0] == d["run"] and row[2] == str(d["stop_step"])
    summary = _lines_of_table(md, "| rule | runs |")
    assert len(summary) == len(doc["summary"])
    assert len(md.splitlines()) < 30  # compact


def test_tune_markdown_names_the_recommendation():
    args = ["tune", *RUNS, "--metric", "eval_loss"]
    doc = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    r = CliRunner().invoke(cli, [*args, "--markdown"])
    assert r.exit_code == 0, r.output
    assert f"**Recommendation: `--rule {doc['recommendation']['spec']}`**" in r.stdout
    comparison = _lines_of_table(r.stdout, "|  | rule | runs |")
    assert [row[1] for row in comparison] == [f"`{c['spec']}`" for c in doc["comparison"]]


def test_markdown_and_json_are_exclusive():
    r = CliRunner().invoke(cli, ["replay", RUNS[0], "--rule", "hf", "--json", "--markdown"])
    assert r.exit_code == 2


def test_pandas_is_not_imported_by_replay_or_tune():
    code = ("import sys; from logsage.decide.engine import replay; from logsage.analysis.tune import tune; "
            "import logsage.decide.frames, logsage.report.markdown; print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr
