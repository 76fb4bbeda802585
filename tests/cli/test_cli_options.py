"""CLI edge cases found in review: ambiguous parameters, --plot targets, --stitch, --format messages, folders of runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from logsage.cli.main import cli
from corpus import REAL_RUNS, needs_corpus

REAL = REAL_RUNS
WHISPER = str(REAL / "hf_trainer_state" / "whisper-large-v2-ja-38ep")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@needs_corpus
def test_a_parameter_given_twice_or_by_alias_and_name_is_a_usage_error():
    r = invoke("replay", WHISPER, "--rule", "hf:patience=2,patience=3")
    assert r.exit_code == 2 and "given twice" in r.output
    r = invoke("replay", WHISPER, "--rule", "hf:early_stopping_patience=2,patience=3")
    assert r.exit_code == 2 and "set the same parameter" in r.output


@needs_corpus
def test_rule_parameter_swept_by_grid_is_a_usage_error():
    r = invoke("replay", WHISPER, "--rule", "hf:patience=3", "--grid", "patience=1,2")
    assert r.exit_code == 2 and "drop one of them" in r.output
    assert invoke("replay", WHISPER, "--rule", "hf:threshold=0.001", "--grid", "patience=1,2").exit_code == 0


@needs_corpus
def test_plot_into_a_missing_folder_fails_before_any_output(tmp_path):
    r = invoke("replay", WHISPER, "--rule", "hf", "--json", "--plot", str(tmp_path / "nope" / "p.png"))
    assert r.exit_code == 1
    assert "does not exist" in r.output and '"decisions"' not in r.output


@needs_corpus
def test_replay_stitch_gives_one_run(tmp_path):
    state = json.loads((Path(WHISPER) / "trainer_state.json").read_text())
    log = [x for x in state["log_history"] if "train_runtime" not in x]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "trainer_state.json").write_text(json.dumps(dict(state, log_history=[x for x in log if x["step"] <= 3000])))
    (b / "trainer_state.json").write_text(json.dumps(dict(state, log_history=[x for x in log if x["step"] > 2000])))
    # hf:patience=2 stops inside segment a (step 3000), so it alone cannot tell a stitch from segment a
    # read on its own; "none" trains to the end, which only segment b holds (evaluations 4000, 5000).
    for rule in ("hf:patience=2", "none"):
        r = invoke("replay", str(a), str(b), "--stitch", "--rule", rule, "--json")
        assert r.exit_code == 0, r.output
        (d,) = json.loads(r.stdout)["decisions"]
        whole = json.loads(invoke("replay", WHISPER, "--rule", rule, "--json").stdout)["decisions"][0]
        # Every figure of the whole run's decision, except wall_saved_s: the summary record with
        # train_runtime was left out of both segments.
        skip = {"run", "wall_saved_s"}
        assert {k: v for k, v in d.items() if k not in skip} == {k: v for k, v in whole.items() if k not in skip}
    assert d["stop_step"] is None and "trains to the end (5 evaluations)" in d["reason"]  # b's evaluations too


@needs_corpus
def test_forced_format_that_finds_nothing_says_so():
    r = invoke("ingest", str(REAL / "tfevents" / "gner-qe-roberta-base-ep20"), "--format", "swift")
    assert r.exit_code == 1 and "no swift log found" in r.output and "drop --format" in r.output


@needs_corpus
def test_folder_of_several_runs_warns(tmp_path):
    for name in ("whisper-large-v2-ja-38ep", "zephyr-dpo-3ep"):
        shutil.copytree(REAL / "hf_trainer_state" / name, tmp_path / name)
    r = CliRunner().invoke(cli, ["ingest", str(tmp_path), "--json"])
    assert r.exit_code == 0
    assert "2 different folders" in r.stderr and "pass each folder as its own PATH" in r.stderr


@needs_corpus
def test_adaptive_budget_is_only_the_stated_one(tmp_path):
    # Without max_steps in the log, adaptive cannot know the progress: it must say so
    # rather than take the last logged step (which a later evaluation would change).
    import logsage
    from logsage.decide.engine import replay

    state = json.loads((Path(WHISPER) / "trainer_state.json").read_text())
    state.pop("max_steps")
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    (d,) = replay([logsage.load_history(tmp_path)], ["adaptive"]).decisions
    assert d.decidable and "epochs" in d.reason  # num_train_epochs is a stated budget too
    state.pop("num_train_epochs")
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    (d,) = replay([logsage.load_history(tmp_path)], ["adaptive"]).decisions
    assert not d.decidable and "budget" in d.reason
