"""Edge cases of the text-log readers on small files written in each tool's documented layout:
damaged and empty files, resumed runs, nulls, CRLF, both W&B layouts, the TensorBoard UI export,
JSON-lines wide logs. (Files produced by the real Lightning/Keras/MLflow/tbparse writers are in
test_ingest_writers.py; the real public runs in test_ingest_formats.py.)"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

import logsage
from logsage.core.errors import IngestError
from logsage.ingest.text import parse_duration


def _swift3(step: int, total: int = 40, **fields) -> str:
    """One ms-swift 3.x logging.jsonl line (key order and string fields as ms-swift writes them)."""
    rec = dict(fields)
    rec.update({"global_step/max_steps": f"{step}/{total}", "percentage": f"{100 * step / total:.2f}%",
                "elapsed_time": f"{step}s", "remaining_time": "1m 0s", "memory(GiB)": 16.4,
                "train_speed(iter/s)": 0.19})
    return json.dumps(rec)


def _write(path, lines, newline="\n", end=True):
    path.write_text(newline.join(lines) + (newline if end else ""), newline="")
    return path


# ----------------------------------------------------------------------------- durations
@pytest.mark.parametrize("text,seconds", [
    ("6s", 6), ("10m 52s", 652), ("8h 8m 1s", 29281), ("1d 2h 0m 3s", 93603),  # ms-swift
    ("0:00:32", 32), ("6:48:06", 24486), ("9 days, 18:32:24", 9 * 86400 + 66744), ("1 day, 0:00:01", 86401),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_other_text():
    assert parse_duration("soon") is None and parse_duration("") is None and parse_duration(None) is None


# ----------------------------------------------------------------------------- damaged / empty files
def test_truncated_last_line_keeps_everything_before(tmp_path):
    lines = [_swift3(10, loss=1.0), _swift3(20, eval_loss=0.9), _swift3(30, loss=0.8)]
    log = _write(tmp_path / "logging.jsonl", lines[:2] + [lines[2][:37]], end=False)  # crash mid-write
    h = logsage.load_history(log)
    assert h.format == "swift"
    assert h.metric("loss").steps.tolist() == [10]
    assert h.metric("eval_loss").values.tolist() == [0.9]
    trunc = [c for c in h.cleanups if c.kind == "truncated"]
    assert len(trunc) == 1 and "logging.jsonl:3" in trunc[0].message
    assert any("logging.jsonl:3" in w for w in h.warnings)


def test_garbage_in_the_middle_is_an_error_naming_the_line(tmp_path):
    log = _write(tmp_path / "logging.jsonl", [_swift3(10, loss=1.0), "{not json", _swift3(20, loss=0.9)])
    with pytest.raises(IngestError, match=r"logging\.jsonl:2: not valid JSON .*repair that line") as e:
        logsage.load_history(log)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("fmt,name", [("swift", "logging.jsonl"), ("llamafactory", "trainer_log.jsonl"),
                                      ("lightning", "metrics.csv"), ("keras", "training.log"),
                                      ("tb-csv", "scalars.csv"), ("wandb", "history.csv"),
                                      ("wide", "metrics.csv"), ("wide", "log.jsonl")])
def test_empty_file_is_an_error(tmp_path, fmt, name):
    f = tmp_path / name
    f.write_text("")
    with pytest.raises(IngestError, match="is empty"):
        logsage.load_history(f, format=fmt)
    with pytest.raises(IngestError):  # not detected as anything either
        logsage.load_history(f)


def test_csv_row_with_wrong_cell_count_in_the_middle_is_an_error(tmp_path):
    f = _write(tmp_path / "log.csv", ["step,loss,eval_loss", "1,0.5,", "2,0.4", "3,0.3,0.9"])
    with pytest.raises(IngestError, match=r"log\.csv:3: row has 2 cells but the header has 3"):
        logsage.load_history(f)


def test_csv_truncated_last_row_is_kept_out_and_recorded(tmp_path):
    f = _write(tmp_path / "log.csv", ["step,loss,eval_loss", "1,0.5,", "2,0.4,0.9", "3,0.3"], end=False)
    h = logsage.load_history(f)
    assert h.format == "wide"
    assert h.metric("loss").steps.tolist() == [1, 2]
    assert [c.count for c in h.cleanups if c.kind == "truncated"] == [1]


def test_wide_csv_without_step_column_forced_is_an_error(tmp_path):
    f = _write(tmp_path / "log.csv", ["iteration,loss", "1,0.5"])
    with pytest.raises(IngestError, match="no step column"):
        logsage.load_history(f, format="wide")


# ----------------------------------------------------------------------------- ms-swift
def test_swift_resumed_run_later_write_wins_and_is_recorded(tmp_path):
    # Checkpoint at 20, crash after 30, resume from 20: step 30 is logged again with other values.
    lines = [_swift3(10, loss=1.0), _swift3(20, loss=0.9), _swift3(20, eval_loss=0.95), _swift3(30, loss=0.8),
             _swift3(30, loss=0.7), _swift3(40, loss=0.6), _swift3(40, eval_loss=0.85)]
    h = logsage.load_history(_write(tmp_path / "logging.jsonl", lines))
    loss = h.metric("loss")
    assert loss.steps.tolist() == [10, 20, 30, 40]
    assert loss.values.tolist() == [1.0, 0.9, 0.7, 0.6]
    replaced = [c for c in h.cleanups if c.kind == "duplicates" and c.metric == "loss"]
    assert [c.count for c in replaced] == [1]
    assert h.max_steps == 40


def test_swift2_schema_is_detected(tmp_path):
    rec = {"loss": 5.04565144, "acc": 0.125, "grad_norm": 484.0, "learning_rate": 1.1e-07,
           "train_speed(iter/s)": 0.118134, "epoch": 0.0, "global_step": 1}
    h = logsage.load_history(_write(tmp_path / "logging.jsonl", [json.dumps(rec)] * 2))
    assert h.format == "swift"
    assert h.metric("loss").values.tolist() == [5.04565144]
    assert [c.count for c in h.cleanups if c.kind == "duplicates" and c.metric is None] == [1]


# ----------------------------------------------------------------------------- LLaMA-Factory
def test_llamafactory_null_rows_long_elapsed_and_learning_rate_key(tmp_path):
    rows = [
        {"current_steps": 10, "total_steps": 30, "loss": 2.4977, "learning_rate": 5.77e-07, "eval_loss": None,
         "epoch": 0.1, "percentage": 33.3, "elapsed_time": "0:00:24", "remaining_time": "0:00:48",
         "throughput": "0.00", "total_tokens": 0},
        {"current_steps": 20, "total_steps": 30, "eval_loss": 1.6, "epoch": 0.2, "percentage": 66.7,
         "elapsed_time": "1 day, 0:00:00", "remaining_time": "0:00:01"},
        {"current_steps": 20, "total_steps": 30, "predict_loss": 1.7, "epoch": 0.2, "percentage": 66.7,
         "elapsed_time": "1 day, 0:00:05", "remaining_time": "0:00:01"},
        {"current_steps": 30, "total_steps": 30, "loss": None, "eval_loss": None, "epoch": 0.3,
         "percentage": 100.0, "elapsed_time": "9 days, 18:32:24", "remaining_time": "0:00:00"},  # LLaMA-Factory#774
    ]
    h = logsage.load_history(_write(tmp_path / "trainer_log.jsonl", [json.dumps(r) for r in rows]))
    assert h.format == "llamafactory"
    assert h.metric("eval_loss").steps.tolist() == [20]
    assert h.metric("learning_rate").name == "learning_rate"
    assert h.metric("loss").steps.tolist() == [10]
    assert h.series["predict_loss"].kind == "test"
    assert h.meta["elapsed_seconds_last"] == 9 * 86400 + 18 * 3600 + 32 * 60 + 24
    assert h.metric("eval_loss").wall_times.tolist() == [86400.0]
    nulls = {c.metric: c.count for c in h.cleanups if c.kind == "dropped_record"}
    assert nulls == {"eval_loss": 2, "loss": 1}
    assert h.max_steps == 30


# ----------------------------------------------------------------------------- wide
def test_wide_jsonl_log_history_dump_with_nan_and_summary(tmp_path):
    records = [{"loss": 1.2, "learning_rate": 1e-4, "epoch": 0.5, "step": 5},
               {"eval_loss": 1.1, "eval_pearson": float("nan"), "epoch": 0.5, "step": 5},
               {"loss": 1.0, "epoch": 1.0, "step": 10},
               {"eval_loss": 1.05, "eval_pearson": 0.3, "epoch": 1.0, "step": 10},
               {"train_runtime": 12.5, "train_loss": 1.1, "total_flos": 1e12, "epoch": 1.0, "step": 10},
               {"eval_loss": 1.04, "eval_pearson": 0.31, "epoch": 1.0, "step": 10}]  # final evaluate()
    f = _write(tmp_path / "log_history.jsonl", [json.dumps(r) for r in records])  # Python writes bare NaN
    assert "NaN" in f.read_text()
    h = logsage.load_history(f)
    assert h.format == "wide"
    assert h.metric("eval_loss").values.tolist() == [1.1, 1.05]
    assert math.isnan(h.metric("eval_pearson").values[0])
    assert [c.count for c in h.cleanups if c.kind == "non_finite"] == [1]
    assert h.summary["train_runtime"] == 12.5 and h.summary["eval_loss"] == 1.04
    assert h.epoch_at([10])[0] == 1.0


def test_wide_json_list_of_log_history_records(tmp_path):
    records = [{"loss": 1.2, "epoch": 0.5, "step": 5}, {"eval_loss": 1.1, "epoch": 0.5, "step": 5},
               {"eval_loss": 1.0, "epoch": 1.0, "step": 10}]
    f = tmp_path / "log_history.json"
    f.write_text(json.dumps(records, indent=2))  # json.dump(trainer.state.log_history, f, indent=2)
    h = logsage.load_history(f)
    assert h.format == "wide"
    assert h.metric("eval_loss").steps.tolist() == [5, 10]


def test_metrics_csv_without_epoch_column_is_wide_and_with_it_lightning(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    generic = _write(tmp_path / "a" / "metrics.csv", ["step,loss,eval_loss", "10,1.0,", "10,,0.9"])
    lightning = _write(tmp_path / "b" / "metrics.csv", ["epoch,step,train_loss_step,val_loss", "0,9,1.0,",
                                                       "0,9,,0.9"], newline="\r\n")
    assert logsage.load_history(generic).format == "wide"
    h = logsage.load_history(lightning)
    assert h.format == "lightning" and h.metric("val_loss").values.tolist() == [0.9]


def test_wide_crlf_blank_cells_are_missing_nan_and_inf_are_kept(tmp_path):
    f = _write(tmp_path / "m.csv", ["Step,loss,eval_acc", "1,0.5,", "2,nan,inf", "3,,0.25"], newline="\r\n")
    h = logsage.load_history(f)
    assert h.metric("loss").steps.tolist() == [1, 2]
    assert np.isnan(h.metric("loss").values[1])
    assert h.metric("eval_acc").values.tolist() == [math.inf, 0.25]


# ----------------------------------------------------------------------------- TensorBoard UI export
def test_tensorboard_ui_per_tag_exports_in_one_folder(tmp_path):
    # TensorBoard's "download CSV" names files run-<run>-tag-<tag>.csv ('/' in a tag becomes '_').
    _write(tmp_path / "run-.-tag-eval_loss.csv", ["Wall time,Step,Value", "1700000000.5,100,0.9",
                                                 "1700000100.5,200,0.8"])
    _write(tmp_path / "run-.-tag-train_loss.csv", ["Wall time,Step,Value", "1700000000.1,100,1.2"])
    h = logsage.load_history(tmp_path)
    assert h.format == "tb-csv"
    ev = h.metric("eval_loss")
    assert ev.name == "eval_loss" and ev.values.tolist() == [pytest.approx(0.9), pytest.approx(0.8)]
    assert ev.wall_times.tolist() == [1700000000.5, 1700000100.5]
    assert h.series["eval_loss"].precision == "float32"


def test_tensorboard_ui_exports_of_two_runs_are_prefixed(tmp_path):
    # Keras's TensorBoard callback logs train/ and validation/ runs with the same tag names.
    _write(tmp_path / "run-train-tag-epoch_loss.csv", ["Wall time,Step,Value", "1.0,0,1.2", "2.0,1,1.1"])
    _write(tmp_path / "run-validation-tag-epoch_loss.csv", ["Wall time,Step,Value", "1.5,0,1.3", "2.5,1,1.25"])
    h = logsage.load_history(tmp_path)
    assert set(h.series) == {"train/epoch_loss", "validation/epoch_loss"}
    assert h.series["validation/epoch_loss"].kind == "eval"
    assert h.primary_eval_metric() == "validation/epoch_loss"


# ----------------------------------------------------------------------------- Weights & Biases
def _wandb_history_frame() -> pd.DataFrame:
    """What `run.history()` returns for an HF Trainer run (report_to="wandb"), as a DataFrame."""
    nan = float("nan")
    rows = [
        {"_step": 0, "_runtime": 10.0, "_timestamp": 1.7e9 + 10, "train/loss": 2.0, "train/learning_rate": 1e-4,
         "train/epoch": 0.5, "train/global_step": 50, "eval/loss": nan},
        {"_step": 1, "_runtime": 20.0, "_timestamp": 1.7e9 + 20, "eval/loss": 1.5, "train/epoch": 0.5,
         "train/global_step": 50},
        {"_step": 2, "_runtime": 30.0, "_timestamp": 1.7e9 + 30, "train/loss": 1.0, "train/epoch": 1.0,
         "train/global_step": 100},
        {"_step": 3, "_runtime": 40.0, "_timestamp": 1.7e9 + 40, "eval/loss": 1.4, "train/epoch": 1.0,
         "train/global_step": 100},
        {"_step": 4, "_runtime": 41.0, "_timestamp": 1.7e9 + 41, "train/train_runtime": 41.0,
         "train/train_loss": 1.5, "train/epoch": 1.0, "train/global_step": 100},
        {"_step": 5, "_runtime": 50.0, "_timestamp": 1.7e9 + 50, "eval/loss": 1.38, "train/epoch": 1.0,
         "train/global_step": 100},  # trainer.evaluate() after training (best model)
    ]
    return pd.DataFrame(rows)


def test_wandb_history_dump_uses_global_step_and_keeps_wall_times(tmp_path):
    f = tmp_path / "history.csv"
    _wandb_history_frame().to_csv(f)  # with pandas' unnamed index column, as people do
    h = logsage.load_history(f)
    assert h.format == "wandb"
    ev = h.metric("eval_loss")
    assert ev.name == "eval/loss"
    assert ev.steps.tolist() == [50, 100]  # train/global_step, not W&B's _step
    assert ev.values.tolist() == [1.5, 1.4]
    assert ev.wall_times.tolist() == [1.7e9 + 20, 1.7e9 + 40]
    assert h.summary["eval/loss"] == 1.38 and h.summary["train/train_runtime"] == 41.0
    assert h.meta["wandb_runtime_last"] == 50.0
    assert "" not in h.series and "Unnamed: 0" not in h.series


def test_wandb_history_without_global_step_uses_step(tmp_path):
    df = _wandb_history_frame().drop(columns=["train/global_step"]).iloc[:4]
    f = tmp_path / "history.csv"
    df.to_csv(f, index=False)
    h = logsage.load_history(f)
    assert h.metric("eval_loss").steps.tolist() == [1, 3]


def test_wandb_panel_export_drops_min_max_band(tmp_path):
    f = _write(tmp_path / "wandb_export_2025-03-01T10_00_00.csv", [
        '"Step","qwen-lora - eval/loss","qwen-lora - eval/loss__MIN","qwen-lora - eval/loss__MAX"',
        '"100","1.5","1.5","1.5"', '"200","1.4","1.4","1.4"', '"300","","",""'])
    h = logsage.load_history(f)
    assert h.format == "wandb"
    assert list(h.series) == ["eval/loss"]
    assert h.metric("eval_loss").steps.tolist() == [100, 200]
    assert h.meta["run_name"] == "qwen-lora"
    assert [c.count for c in h.cleanups if c.kind == "dropped_record"] == [2]


def test_wandb_panel_export_of_several_runs_is_an_error(tmp_path):
    f = _write(tmp_path / "wandb_export_x.csv", ['"Step","run-a - eval/loss","run-b - eval/loss"', '"1","1","2"'])
    with pytest.raises(IngestError, match=r"2 runs \(run-a, run-b\).*one run"):
        logsage.load_history(f)
