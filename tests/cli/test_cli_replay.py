"""`logsage replay` and `logsage rules` on the bundled real runs: JSON, CSV, tables, plots, exit codes."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import cli
from corpus import REAL_RUNS, needs_corpus

ROOT = Path(__file__).resolve().parents[2]
REAL = REAL_RUNS
WHISPER = str(REAL / "hf_trainer_state" / "whisper-large-v2-ja-38ep")  # 5 evals, best at the first
NAN_RUN = str(REAL / "hf_trainer_state" / "gner-qe-roberta-large-lr5e-5-nan")  # 25 evals, best at the 3rd
F1_RUN = str(REAL / "hf_trainer_state" / "gner-llama3.2-3b-sft-f1only-6evals")  # eval_average_f1 (max)
TB_RUN = str(REAL / "tfevents" / "gner-qe-roberta-large-lr5e-5-nan")  # same run as NAN_RUN, as TB events


def strict_json(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))


def invoke(*args: str):
    return CliRunner().invoke(cli, ["replay", *args])


@needs_corpus
def test_json_one_decision_per_run_rule_and_parameter_set():
    r = invoke(WHISPER, NAN_RUN, "--rule", "hf", "--rule", "patience:min_delta=1e-4", "--grid", "patience=1,2,3",
               "--json")
    assert r.exit_code == 0, r.output
    doc = strict_json(r.stdout)
    assert len(doc["decisions"]) == 2 * 2 * 3 and doc["errors"] == []
    d = doc["decisions"][0]
    required = {"run", "rule", "params", "metric", "mode", "stop_step", "stop_eval_index", "selected_step",
                "selected_value", "best_step", "best_value", "regret", "steps_saved", "trend_slope", "trend_p",
                "overfit_gap", "decidable", "reason"}
    assert required <= set(d)
    assert d["run"] == WHISPER and d["metric"] == "eval_loss" and d["mode"] == "min"
    assert doc["decisions"][3]["params"] == {"patience": 1, "min_delta": 0.0001, "relative": False,
                                             "definition": "no-improvement", "min_evals": 0, "min_steps": 0}
    # The whisper run's eval loss is best at its first evaluation (0.321 at step 1000, SOURCE.txt).
    assert d["best_step"] == 1000 and d["best_value"] == pytest.approx(0.321, abs=1e-3)
    # HF patience 1 stops at the first evaluation that does not beat it: the second one.
    assert (d["stop_eval_index"], d["selected_step"], d["regret"]) == (1, 1000, 0.0)
    assert len(doc["summary"]) == 6 and any(row["pareto"] for row in doc["summary"])


@needs_corpus
def test_tfevents_and_trainer_state_of_the_same_run_agree():
    a = strict_json(invoke(NAN_RUN, "--rule", "hf:patience=3", "--json").stdout)["decisions"][0]
    b = strict_json(invoke(TB_RUN, "--rule", "hf:patience=3", "--json").stdout)["decisions"][0]
    assert a["metric"] == "eval_loss" and b["metric"] == "eval/loss"
    assert (a["stop_step"], a["selected_step"], a["best_step"]) == (b["stop_step"], b["selected_step"], b["best_step"])
    # INDEX.md: best at eval 3/25 (1.749).
    assert a["best_step"] == 1500 and a["best_value"] == pytest.approx(1.749, abs=1e-3)


@needs_corpus
def test_metric_alias_and_mode_are_printed():
    r = invoke(F1_RUN, "--rule", "hf")
    assert r.exit_code == 0, r.output
    assert "eval_average_f1" in r.stdout and "mode max" in r.stdout
    r = invoke(NAN_RUN, "--rule", "hf", "--metric", "eval/loss", "--json")  # canonical spelling of a TB name
    assert strict_json(r.stdout)["decisions"][0]["metric"] == "eval_loss"
    r = invoke(NAN_RUN, "--rule", "hf", "--metric", "eval_pearson", "--mode", "min", "--json")
    assert strict_json(r.stdout)["decisions"][0]["mode"] == "min"


@needs_corpus
def test_terminal_tables_with_summary_for_several_runs():
    r = invoke(WHISPER, NAN_RUN, "--rule", "hf", "--rule", "keras")
    assert r.exit_code == 0, r.output
    assert WHISPER in r.stdout and NAN_RUN in r.stdout
    assert "summary over runs" in r.stdout and "Pareto" in r.stdout
    assert "did not improve" in r.stdout  # the reasons are printed


@needs_corpus
def test_unknown_metric_is_one_line_exit_1_with_closest_match():
    r = invoke(WHISPER, "--rule", "hf", "--metric", "eval_wre")
    assert r.exit_code == 1
    assert r.stderr.count("\n") == 1
    assert "eval_wre" in r.stderr and "available: eval_loss, eval_wer" in r.stderr and "'eval_wer'" in r.stderr


@needs_corpus
@pytest.mark.parametrize("args,needle", [
    (["--rule", "nope"], "unknown rule 'nope'"),
    (["--rule", "hf:patiense=2"], "unknown parameter 'patiense'"),
    (["--rule", "hf:patience=two"], "patience must be int"),
    (["--rule", "hf", "--grid", "window=1,2"], "'window' is not a parameter of hf"),
    (["--rule", "hf", "--grid", "patience"], "bad --grid"),
    (["--rule", "hf", "--json", "--csv"], "exclusive"),
])
def test_usage_errors_exit_2(args, needle):
    r = invoke(WHISPER, *args)
    assert r.exit_code == 2, r.output
    assert needle in r.stderr and r.stderr.count("\n") == 1


@needs_corpus
def test_one_bad_run_does_not_abort_the_others(tmp_path):
    missing = str(tmp_path / "nope")
    r = invoke(WHISPER, missing, "--rule", "hf", "--json")
    assert r.exit_code == 1  # the multi-run rule: the readable run is reported, the exit code says one was not
    assert "1 of 2 run(s) could not be read" in r.stderr
    doc = strict_json(r.stdout)
    assert [d["run"] for d in doc["decisions"]] == [WHISPER, missing]
    assert doc["decisions"][1]["decidable"] is False
    assert doc["errors"] == [{"run": missing, "error": doc["decisions"][1]["reason"]}]
    assert missing in r.stderr  # the problem is also said on stderr


def test_exit_1_when_no_run_could_be_replayed(tmp_path):
    r = invoke(str(tmp_path / "a"), str(tmp_path / "b"), "--rule", "hf")
    assert r.exit_code == 1 and "none of the 2 runs could be replayed" in r.stderr


@needs_corpus
def test_csv_one_row_per_decision():
    r = invoke(WHISPER, "--rule", "hf", "--rule", "lightning", "--csv")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert [row["rule"] for row in rows] == ["hf", "lightning"]
    assert json.loads(rows[1]["params"])["patience"] == 3
    assert rows[0]["stop_step"] == "2000" and rows[0]["decidable"] == "True"


@needs_corpus
def test_rule_all_gives_every_rule(tmp_path):
    from logsage.rules import list_rules

    doc = strict_json(invoke(NAN_RUN, "--rule", "all", "--json").stdout)
    assert [d["rule"] for d in doc["decisions"]] == [r.name for r in list_rules()]


@needs_corpus
def test_plot_writes_a_png(tmp_path):
    out = tmp_path / "curves.png"
    r = invoke(NAN_RUN, "--rule", "hf:patience=3", "--rule", "gl", "--plot", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    r = invoke(NAN_RUN, WHISPER, "--rule", "hf", "--plot", str(out))
    assert (tmp_path / "curves-1.png").exists() and (tmp_path / "curves-2.png").exists()


def test_rules_lists_parameters_references_and_exactness():
    from logsage.rules import list_rules

    r = CliRunner().invoke(cli, ["rules", "--json"])
    assert r.exit_code == 0
    doc = strict_json(r.stdout)
    by_name = {x["name"]: x for x in doc["rules"]}
    assert list(by_name) == [x.name for x in list_rules()]
    hf = by_name["hf"]
    assert hf["exact"] == "transformers" and "EarlyStoppingCallback" in hf["reference"]
    assert [(p["name"], p["type"], p["default"]) for p in hf["params"]] == [("patience", "int", 1),
                                                                          ("threshold", "float", 0.0)]
    assert all(p["help"] for x in doc["rules"] for p in x["params"])
    assert {p["name"] for p in doc["common_params"]} == {"min_evals", "min_steps"}
    text = CliRunner().invoke(cli, ["rules"]).stdout
    assert all(x.name in text for x in list_rules()) and "exact: keras" in text
    one = CliRunner().invoke(cli, ["rules", "lightning"])
    assert "stopping_threshold" in one.stdout and "keras" not in one.stdout
    assert CliRunner().invoke(cli, ["rules", "nope"]).exit_code == 2


@needs_corpus
def test_subprocess_json_is_strict():
    out = subprocess.run([sys.executable, "-m", "logsage", "replay", TB_RUN, NAN_RUN, "--rule", "all",
                          "--grid", "patience=1,3", "--json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    doc = strict_json(out.stdout)
    assert {d["run"] for d in doc["decisions"]} == {TB_RUN, NAN_RUN}
    assert set(doc) == {"decisions", "summary", "errors"}


def _adapter(folder: Path, *, empty: bool = False) -> None:
    """A PEFT-style adapter checkpoint written with the real safetensors writer (numpy, no torch)."""
    import numpy as np
    from safetensors.numpy import save_file

    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
    shape = (0, 4) if empty else (2, 4)
    save_file({"base_model.model.q_proj.lora_A.weight": np.ones(shape, dtype=np.float32)},
              str(folder / "adapter_model.safetensors"))


@needs_corpus
def test_selection_respects_the_checkpoints_on_disk(tmp_path):
    # The whisper run's eval loss is best at step 1000 and rises after it (0.321, 0.358, 0.394, ...).
    run = tmp_path / "run"
    run.mkdir()
    (run / "trainer_state.json").write_text((Path(WHISPER) / "trainer_state.json").read_text())
    _adapter(run / "checkpoint-1000", empty=True)
    _adapter(run / "checkpoint-2000")
    _adapter(run / "checkpoint-4000")  # checkpoint-3000 was never kept
    _adapter(run / "checkpoint-5000")
    r = invoke(str(run), "--rule", "hf", "--rule", "hf:patience=3", "--json")
    assert r.exit_code == 0, r.output
    p1, p3 = strict_json(r.stdout)["decisions"]
    assert p1["best_step"] == 1000 and p1["best_saved_step"] == 2000
    assert (p1["stop_step"], p1["selected_step"]) == (2000, 2000)
    assert "checkpoint-1000: adapter_model.safetensors is empty" in p1["note"] and "selected step 2000" in p1["note"]
    assert (p3["stop_step"], p3["selected_step"]) == (4000, 2000)
    assert p3["regret"] == pytest.approx(0.35849 - 0.32100, abs=1e-4)
    text = invoke(str(run), "--rule", "hf").stdout
    assert "Note:" in text and "checkpoint-1000" in text


def test_an_80_column_terminal_shows_whole_params_and_a_column_legend(monkeypatch):
    import io

    from rich.console import Console

    import logsage.cli.replay as replay_cmd

    buf = io.StringIO()
    monkeypatch.setattr(replay_cmd, "console", lambda stderr=False: Console(file=buf, width=80, highlight=False,
                                                                            soft_wrap=True))
    run = str(Path(__file__).resolve().parents[3] / "shared" / "real-runs" / "hf_trainer_state"
              / "gner-qe-roberta-large-num30-40ep")
    res = CliRunner().invoke(cli, ["replay", run, "--rule", "hf:patience=3,threshold=1e-4", "--rule", "none"])
    assert res.exit_code == 0, res.output
    table = buf.getvalue()
    assert "…" not in table
    assert "patience=3," in table and "threshold=0.0001" in table
    legend = " ".join(table.split())
    assert replay_cmd.COLUMN_LEGEND in legend
    for column in ("regret:", "saved:", "trend/eval:", "gap:"):
        assert column in replay_cmd.COLUMN_LEGEND
