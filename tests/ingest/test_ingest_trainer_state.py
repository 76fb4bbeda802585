"""The trainer_state.json reader and the run-folder rules, on real files and on their quirky variants."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

import logsage
from logsage.core.errors import IngestError, MetricNotFound, UsageError
from corpus import REAL_RUNS, needs_corpus

REAL = REAL_RUNS / "hf_trainer_state"


def _state(name: str) -> dict:
    return json.loads((REAL / name / "trainer_state.json").read_text())


@needs_corpus
def test_bare_nan_tokens_are_read_as_nan_values():
    h = logsage.load_history(REAL / "gner-qe-roberta-large-lr5e-5-nan")
    pearson = h.series["eval_pearson"]
    assert len(pearson) == 25
    assert pearson.n_non_finite == 16
    assert any(c.kind == "non_finite" and c.metric == "eval_pearson" for c in h.cleanups)


@needs_corpus
def test_misnamed_trainer_state_is_detected_by_content():
    h = logsage.load_history(REAL / "quality-lrqa-multichoice-62evals-misnamed" / "__init__.py")
    assert h.format == "trainer-state"
    assert len(h.metric("eval_loss")) == 62


@needs_corpus
def test_file_and_folder_give_the_same_history():
    a = logsage.load_history(REAL / "whisper-large-v2-ja-38ep")
    b = logsage.load_history(REAL / "whisper-large-v2-ja-38ep" / "trainer_state.json")
    assert a.metric("eval_loss").values.tolist() == b.metric("eval_loss").values.tolist()
    assert a.path.endswith("whisper-large-v2-ja-38ep")


@needs_corpus
def test_final_summary_record_is_a_summary_not_a_point():
    h = logsage.load_history(REAL / "whisper-large-v2-ja-38ep")
    assert h.meta["train_runtime"] == pytest.approx(77350.9963)
    assert "train_runtime" not in h.series and "train_loss" not in h.series
    # all_results.json next to it is a run summary too
    assert h.summary["eval_wer"] == pytest.approx(json.loads((REAL / "whisper-large-v2-ja-38ep" / "all_results.json").read_text())["eval_wer"])
    assert len(h.metric("eval_loss")) == 5


@needs_corpus
def test_crlf_bom_windows_path_and_predict_records(tmp_path):
    state = _state("whisper-large-v2-ja-38ep")
    state["best_model_checkpoint"] = ".\\results\\checkpoint-3000"
    state["log_history"].append({"epoch": 38.17, "predict_loss": 0.5, "predict_wer": 0.7})  # no step
    text = json.dumps(state, indent=2).replace("\n", "\r\n")
    (tmp_path / "trainer_state.json").write_bytes(b"\xef\xbb\xbf" + text.encode())
    h = logsage.load_history(tmp_path)
    assert h.meta["best_model_checkpoint"] == ".\\results\\checkpoint-3000"
    assert len(h.metric("eval_loss")) == 5
    assert h.summary["predict_wer"] == 0.7
    assert "predict_loss" not in h.series
    assert any(c.kind == "dropped_record" and c.count == 1 for c in h.cleanups)


@needs_corpus
def test_checkpoint_folders_numeric_order_longest_history_wins(tmp_path):
    state = _state("gner-qe-deberta-v3-large-lr2e-5")
    evals = [r for r in state["log_history"] if "eval_loss" in r]
    # checkpoint-9 .. checkpoint-10: string order would pick checkpoint-9 as the newest.
    for n_evals, name in ((9, "checkpoint-9"), (10, "checkpoint-10")):
        cut_step = evals[n_evals - 1]["step"]
        st = dict(state, global_step=cut_step,
                  log_history=[r for r in state["log_history"] if r.get("step", 0) <= cut_step and "train_runtime" not in r])
        (tmp_path / name).mkdir()
        (tmp_path / name / "trainer_state.json").write_text(json.dumps(st))
    h = logsage.load_history(tmp_path)
    assert len(h.metric("eval_loss")) == 10
    assert h.meta["trainer_state_file"].endswith("checkpoint-10/trainer_state.json")
    assert any(c.kind == "skipped_file" and "checkpoint-9" in c.message for c in h.cleanups)
    assert [c.step for c in h.checkpoints] == [9, 10]
    assert all(c.kind == "other" and not c.whole for c in h.checkpoints)


@needs_corpus
def test_duplicate_steps_later_write_wins_and_is_recorded(tmp_path):
    state = _state("whisper-large-v2-ja-38ep")
    first_eval = next(r for r in state["log_history"] if "eval_loss" in r)
    # a resumed run re-evaluated that step (before the end-of-training summary record)
    state["log_history"].insert(-1, dict(first_eval, eval_loss=9.5))
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    h = logsage.load_history(tmp_path)
    s = h.metric("eval_loss")
    assert len(s) == 5
    assert s.values[0] == 9.5
    assert any(c.kind == "duplicates" and c.metric == "eval_loss" and c.count == 1 for c in h.cleanups)


@needs_corpus
def test_final_evaluate_after_the_summary_is_a_summary_not_a_point(tmp_path):
    state = _state("whisper-large-v2-ja-38ep")
    last_eval = [r for r in state["log_history"] if "eval_loss" in r][-1]
    state["log_history"].append(dict(last_eval, eval_loss=0.25))  # trainer.evaluate() of the best model
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    h = logsage.load_history(tmp_path)
    s = h.metric("eval_loss")
    assert len(s) == 5 and s.values[-1] == last_eval["eval_loss"]
    assert h.summary["eval_loss"] == 0.25


@needs_corpus
def test_metric_aliases_and_missing_metric_message():
    h = logsage.load_history(REAL / "whisper-large-v2-ja-38ep")
    assert h.resolve("eval/loss") == "eval_loss"
    assert h.resolve("val_loss") == "eval_loss"
    assert h.resolve("train/loss") == "loss"
    with pytest.raises(MetricNotFound) as e:
        h.resolve("eval_wre")
    msg = str(e.value)
    assert "eval_wer" in msg and "did you mean 'eval_wer'" in msg and "\n" not in msg


@needs_corpus
def test_broken_json_is_one_line_error_naming_the_file(tmp_path):
    text = (REAL / "whisper-large-v2-ja-38ep" / "trainer_state.json").read_text()
    p = tmp_path / "trainer_state.json"
    p.write_text(text[: len(text) // 2])
    with pytest.raises(IngestError) as e:
        logsage.load_history(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_lfs_pointer_is_reported(tmp_path):
    p = tmp_path / "trainer_state.json"
    p.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12345\n")
    with pytest.raises(IngestError, match="git lfs pull"):
        logsage.load_history(p)


def test_empty_folder_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(IngestError, match="no training log found"):
        logsage.load_history(tmp_path)
    with pytest.raises(IngestError, match="no such file"):
        logsage.load_history(tmp_path / "nope")
    with pytest.raises(UsageError, match="unknown format"):
        logsage.load_history(tmp_path, format="bogus")


@needs_corpus
def test_stray_non_log_file_is_listed_as_skipped(tmp_path):
    shutil.copy(REAL / "whisper-large-v2-ja-38ep" / "trainer_state.json", tmp_path)
    (tmp_path / "notes.txt").write_text("lr 1e-4 looked good\n")
    h = logsage.load_history(tmp_path)
    assert h.format == "trainer-state"
    assert any(c.kind == "skipped_file" and "notes.txt" in c.message for c in h.cleanups)


@needs_corpus
def test_summary_dict_is_strict_json(tmp_path):
    h = logsage.load_history(REAL / "gner-qe-roberta-large-lr5e-5-nan")
    doc = h.summary_dict()
    text = json.dumps(doc, allow_nan=False)  # raises on NaN
    assert doc["metrics"]["eval_loss"]["count"] == 25
    assert doc["metrics"]["eval_pearson"]["non_finite"] == 16
    assert json.loads(text)["eval_count"] == 25
    # That run's NaN are evaluations (counted, never printed): put NaN / inf where summary_dict
    # prints numbers, the trainer's best_metric (meta) and a final evaluate() (summary).
    state = _state("gner-qe-roberta-large-lr5e-5-nan")
    state["best_metric"] = math.nan
    last_eval = [r for r in state["log_history"] if "eval_loss" in r][-1]
    state["log_history"].append(dict(last_eval, eval_pearson=math.nan, eval_mse=-math.inf))
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    h = logsage.load_history(tmp_path)
    assert math.isnan(h.meta["best_metric"]) and math.isnan(h.summary["eval_pearson"])  # read as written
    doc = json.loads(json.dumps(h.summary_dict(), allow_nan=False))
    assert doc["meta"]["best_metric"] is None
    assert doc["summary"]["eval_pearson"] is None and doc["summary"]["eval_mse"] is None
    assert doc["summary"]["eval_loss"] == last_eval["eval_loss"]


@needs_corpus
def test_stitch_two_segments(tmp_path):
    state = _state("gner-qe-deberta-v3-large-lr2e-5")
    log = [r for r in state["log_history"] if "train_runtime" not in r]
    evals = [r["step"] for r in log if "eval_loss" in r]
    seam = evals[5]
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    # segment a ran past the seam (crash after the checkpoint), b resumed from the seam's checkpoint
    (a / "trainer_state.json").write_text(json.dumps(dict(state, log_history=[r for r in log if r["step"] <= evals[7]])))
    (b / "trainer_state.json").write_text(json.dumps(dict(state, log_history=[r for r in log if r["step"] > seam])))
    h = logsage.stitch_histories([logsage.load_history(a), logsage.load_history(b)])
    assert len(h.metric("eval_loss")) == len(evals)
    seams = [c for c in h.cleanups if c.kind == "seam"]
    assert len(seams) == 1 and seams[0].count > 0
    full = logsage.load_history(REAL / "gner-qe-deberta-v3-large-lr2e-5")
    assert h.metric("eval_loss").values.tolist() == full.metric("eval_loss").values.tolist()
    assert not any(math.isnan(v) for v in h.metric("eval_loss").values)


def test_deeply_nested_json_is_a_one_line_error(tmp_path):
    p = tmp_path / "trainer_state.json"
    p.write_text('{"log_history": ' + "[" * 100000 + "]" * 100000 + ', "global_step": 1}')
    with pytest.raises(IngestError, match="nested too deeply"):
        logsage.load_history(p)
