"""Cost: hours, GPU-hours and money saved per decision, from wall times, runtimes or the user's figures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from logsage.analysis.cost import CostModel, cost_report, costs, decision_cost, run_hours, time_source, totals
from logsage.core.errors import UsageError
from logsage.core.history import History, Series
from logsage.decide.engine import replay
from corpus import REAL_RUNS, needs_corpus

REAL = REAL_RUNS

STEPS = np.arange(100, 1001, 100)
# hf:patience=1 stops at the first evaluation that does not improve: index 2, step 300.
VALUES = np.array([1.0, 0.9, 0.95, 0.97, 0.99, 1.0, 1.01, 1.02, 1.03, 1.04])


def _run(*, wall=None, meta=None, summary=None, path="run-a") -> History:
    h = History(path=path, format="test")
    h.series["eval_loss"] = Series("eval_loss", STEPS, VALUES, wall_times=wall)
    h.meta.update({"max_steps": 1000, **(meta or {})})
    h.summary.update(summary or {})
    return h


def _decision(h: History, rule: str = "hf:patience=1"):
    d = replay([h], [rule]).decisions[0]
    assert d.stop_step == (300 if rule.startswith("hf") else None)
    return d


def test_wall_times_give_hours_gpu_hours_and_money():
    # 36 s per step: the 700 steps after the stop at step 300 took 25,200 s = 7 h.
    h = _run(wall=1_000.0 + 36.0 * STEPS)
    c = decision_cost(_decision(h), h, CostModel(gpus=4, gpu_hour_cost=2.0))
    assert c.time_source == "wall times"
    assert c.hours_saved == pytest.approx(7.0)
    assert c.gpu_hours_saved == pytest.approx(28.0)
    assert c.money_saved == pytest.approx(56.0)


def test_train_runtime_assumes_a_uniform_speed():
    # 3600 s over 1000 steps; 700 steps saved -> 2520 s = 0.7 h.
    h = _run(summary={"train_runtime": 3600.0}, meta={"global_step": 1000})
    c = decision_cost(_decision(h), h, CostModel())
    assert c.time_source == "train_runtime"
    assert c.hours_saved == pytest.approx(0.7)
    assert c.gpu_hours_saved == pytest.approx(0.7)  # 1 GPU assumed
    assert c.money_saved is None  # no price given: no money figure, not zero
    assert run_hours(h) == pytest.approx(1.0)


def test_run_hours_is_the_fallback_and_unknown_stays_unknown():
    h = _run()
    d = _decision(h)
    assert time_source(h, d.metric) is None
    unknown = decision_cost(d, h, CostModel(gpu_hour_cost=3.0))
    assert unknown.hours_saved is None and unknown.money_saved is None
    given = decision_cost(d, h, CostModel(run_hours=10.0, gpu_hour_cost=3.0))
    assert given.time_source == "--run-hours"
    assert given.hours_saved == pytest.approx(10.0 * 0.7)
    assert given.money_saved == pytest.approx(21.0)


def test_a_rule_that_never_stops_saves_zero_not_unknown():
    h = _run(wall=36.0 * STEPS)
    c = decision_cost(_decision(h, "none"), h, CostModel())
    assert c.hours_saved == 0.0


def test_totals_sum_only_runs_with_known_time_and_say_how_many():
    timed = _run(wall=36.0 * STEPS, path="timed")
    bare = _run(path="bare")
    res = replay([timed, bare], ["hf:patience=1", "none"])
    per = costs(res.decisions, [timed, bare], CostModel(gpus=2))
    rows = {r["rule"]: r for r in totals(per)}
    assert rows["hf"]["n_runs"] == 2 and rows["hf"]["n_priced"] == 1
    assert rows["hf"]["gpu_hours_saved"] == pytest.approx(2 * 7.0)
    assert rows["none"]["gpu_hours_saved"] == 0.0
    doc = cost_report(res.decisions, [timed, bare], CostModel())
    json.dumps(doc, allow_nan=False)  # strict JSON
    assert "1 GPU per run (assumed; pass --gpus to change)" in doc["model"]["assumptions"]


@pytest.mark.parametrize("field,value", [("gpus", 0), ("gpu_hour_cost", -1.0), ("run_hours", math.inf)])
def test_bad_cost_figures_are_usage_errors(field, value):
    with pytest.raises(UsageError, match=field.replace("_", "-")):
        CostModel(**{field: value})


@needs_corpus
def test_real_event_file_wall_times():
    """On a real TensorBoard run, hours saved = the end of training (the last wall time of an eval or
    train series; the test pass logged afterwards would run anyway) - the wall time of the stopping eval."""
    from logsage.ingest import load_history

    h = load_history(REAL / "tfevents" / "lightning-seq2seq-translit-v15")
    d = replay([h], ["hf:patience=1"]).decisions[0]
    assert d.stop_step is not None
    s = h.series[d.metric]
    at_stop = float(s.wall_times[d.stop_eval_index])
    end = max(float(np.nanmax(x.wall_times)) for x in h.series.values()
              if x.wall_times is not None and x.kind in ("eval", "train"))
    assert any(x.kind == "test" for x in h.series.values())  # the case this definition is about
    c = decision_cost(d, h, CostModel(gpus=8, gpu_hour_cost=1.5))
    assert c.time_source == "wall times"
    assert c.hours_saved == pytest.approx((end - at_stop) / 3600.0)
    assert c.money_saved == pytest.approx(c.hours_saved * 8 * 1.5)


@needs_corpus
def test_tune_cli_reports_gpu_hours_and_money_consistently():
    from logsage.cli.main import cli

    runs = [str(REAL / "tfevents" / n) for n in ("lightning-seq2seq-translit-v15", "lightning-seq2seq-translit-v13",
                                                 "lightning-seq2seq-translit-v10")]
    res = CliRunner().invoke(cli, ["tune", *runs, "--rule", "hf", "--gpus", "2", "--gpu-hour-cost", "3", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["cost"]["gpus"] == 2 and doc["cost"]["gpus_assumed"] is False
    for row in doc["comparison"] + doc["candidates"]:
        if row["rule"] != "hf":
            continue
        assert row["n_priced"] == 3
        assert row["money_saved"] == pytest.approx(row["gpu_hours_saved"] * 3)
        assert row["gpu_hours_saved"] == pytest.approx(row["hours_saved"] * 2)


@needs_corpus
def test_tune_terminal_per_run_table_has_gpu_hours_and_money():
    """The leave-one-run-out table of `logsage tune` (terminal) shows each left-out run's GPU-hours
    and money saved, the same figures as the JSON's folds."""
    from logsage.cli.main import cli

    runs = [str(REAL / "tfevents" / n) for n in ("lightning-seq2seq-translit-v15", "lightning-seq2seq-translit-v13",
                                                 "lightning-seq2seq-translit-v10")]
    args = ["tune", *runs, "--rule", "hf", "--gpus", "8", "--gpu-hour-cost", "2.5"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    folds = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)["leave_one_run_out"]["folds"]
    lines = res.stdout.splitlines()
    start = lines.index("Leave-one-run-out, per run")
    header = [c.strip() for c in lines[start + 1].split("┃")]
    g, m = header.index("GPU-h saved"), header.index("money saved")
    table = [[c.strip() for c in ln.split("│")] for ln in lines[start + 3:start + 3 + len(folds)]]
    for row, fold in zip(table, folds):
        assert fold["money_saved"] == pytest.approx(fold["gpu_hours_saved"] * 2.5)
        assert row[g] == f"{fold['gpu_hours_saved']:.4g}" and row[m] == f"{fold['money_saved']:,.2f}", row
    assert any(f["money_saved"] > 0 for f in folds)
