"""CSV readers of issue 11: Lightning CSVLogger with train_loss / 1.x order, Keras CSVLogger
append=True sessions, Ultralytics YOLO results.csv, sentence-transformers evaluator CSVs,
OpenAI/Azure fine-tuning results, Bedrock metrics, DVCLive; and format detection on the real
corpora (../shared/real-runs, ../shared/real-runs-2, read in place).

Expected values come from the files (read here with the csv module) or from what the test
logged with the real writer, never from logsage.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import logsage
from logsage.cli.main import cli
from logsage.core.errors import IngestError, UsageError

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REAL2 = SHARED / "real-runs-2"
REAL1 = SHARED / "real-runs"
needs_corpus = pytest.mark.skipif(
    not REAL2.is_dir(), reason="the real-run corpus ../shared/real-runs-2 (logs copied from public repositories, "
    "kept outside the project) is not beside this checkout")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in csv.DictReader(f)]


def _json_run(*args: str) -> dict:
    res = CliRunner().invoke(cli, ["ingest", *args, "--json", "--no-cache"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)["runs"]


# ----------------------------------------------------------------------------- Lightning
@needs_corpus
@pytest.mark.parametrize("run", sorted(p.name for p in (REAL2 / "lightning_csv").iterdir()) if REAL2.is_dir() else [])
def test_real_lightning_files_with_train_loss_are_lightning_also_when_forced(run):
    f = REAL2 / "lightning_csv" / run / "metrics.csv"
    for fmt in (None, "lightning"):
        h = logsage.load_history(f.parent, format=fmt)
        assert h.format == "lightning"
        primary = h.primary_eval_metric()
        expected = sum(1 for r in _rows(f) if r.get(primary, ""))
        assert len(h.series[primary]) == expected > 0
    if "train_loss" in _rows(f)[0]:
        assert h.metric("train_loss").kind == "train"


@needs_corpus
def test_lightning_1x_column_order_step_before_epoch():
    f = REAL2 / "lightning_csv" / "yolov3-lightning-v4-classacc" / "metrics.csv"
    header = f.read_text().split("\n", 1)[0]
    assert header.startswith("lr-Adam,step,train_loss,epoch")
    h = logsage.load_history(f)
    assert h.format == "lightning" and h.primary_eval_metric() == "val_Class_Accuracy"


def test_hf_log_history_dump_named_metrics_csv_without_summary_is_not_lightning(tmp_path):
    # HF's log_history keys (loss, grad_norm, learning_rate, epoch, step): fractional epochs.
    f = tmp_path / "metrics.csv"
    f.write_text("loss,grad_norm,learning_rate,epoch,step\n0.9,1.0,1e-5,0.25,10\n0.8,1.0,1e-5,0.5,20\n")
    assert logsage.load_history(f).format == "wide"


# ----------------------------------------------------------------------------- Keras sessions
@needs_corpus
def test_real_keras_appended_file_is_split_into_sessions_last_by_default():
    f = REAL2 / "keras_csvlogger" / "brain-tumor-cnn-appended-4runs" / "training_log.csv"
    rows = _rows(f)
    starts = [i for i, r in enumerate(rows) if r["epoch"] == "0"]
    sessions = [rows[a:b] for a, b in zip(starts, starts[1:] + [len(rows)])]
    assert len(sessions) == 4
    h = logsage.load_history(f.parent)
    val = h.metric("val_loss")
    np.testing.assert_allclose(val.values, [float(r["val_loss"]) for r in sessions[-1]], rtol=1e-7)
    assert val.steps.tolist() == list(range(1, len(sessions[-1]) + 1))
    (note,) = [c for c in h.cleanups if c.kind == "sessions"]
    assert "4 training sessions" in note.message and "read session 4" in note.message
    assert note.count == len(rows) - len(sessions[-1])
    assert h.meta["sessions"] == 4 and h.meta["session"] == 4
    third = logsage.load_history(f.parent, session=3)
    np.testing.assert_allclose(third.metric("val_loss").values, [float(r["val_loss"]) for r in sessions[2]], rtol=1e-7)
    assert logsage.load_history(f, session=-4).meta["session"] == 1
    with pytest.raises(UsageError, match="holds 4 training session"):
        logsage.load_history(f, session=5)


@needs_corpus
def test_cli_session_all_reads_each_session_as_its_own_run():
    d = REAL2 / "keras_csvlogger" / "brain-tumor-cnn-appended-4runs"
    sizes = [len(s) for s in _split_sessions(_rows(d / "training_log.csv"))]
    runs = _json_run(str(d), "--session", "all")
    assert [r["eval_count"] for r in runs] == sizes
    assert runs[1]["path"].endswith("(session 2 of 4)")
    assert _json_run(str(d), "--session", "2")[0]["eval_count"] == sizes[1]
    bad = CliRunner().invoke(cli, ["ingest", str(d), "--session", "x"])
    assert bad.exit_code == 2


def _split_sessions(rows):
    out = []
    for r in rows:
        if r["epoch"] == "0" or not out:
            out.append([])
        out[-1].append(r)
    return out


def test_keras_append_true_written_by_keras_splits_at_the_second_fit(tmp_path):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    log = tmp_path / "training.log"
    fits = []
    for epochs in (3, 2):  # two fit() calls from epoch 0, both appending to one file
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
        model.compile(optimizer="sgd", loss="binary_crossentropy")
        fits.append(model.fit(x, y, validation_split=0.25, epochs=epochs, verbose=0,
                              callbacks=[keras.callbacks.CSVLogger(str(log), append=True)]).history)
    h = logsage.load_history(log)
    assert h.format == "keras" and h.meta["sessions"] == 2
    np.testing.assert_allclose(h.metric("val_loss").values, fits[1]["val_loss"], rtol=1e-6)
    first = logsage.load_history(log, session=1)
    np.testing.assert_allclose(first.metric("val_loss").values, fits[0]["val_loss"], rtol=1e-6)


# ----------------------------------------------------------------------------- YOLO
@needs_corpus
@pytest.mark.parametrize("run", ["wheat-weed-yolov8-102ep", "fire-smoke-yolov8-padded-25ep"])
def test_real_yolo_results_csv(run):
    f = REAL2 / "yolo_results_csv" / run / "results.csv"
    rows = _rows(f)
    h = logsage.load_history(f.parent)
    assert h.format == "yolo" and h.primary_eval_metric() == "metrics/mAP50-95(B)"
    m = h.series["metrics/mAP50-95(B)"]
    assert len(m) == len(rows) and m.steps[0] == 1 and m.kind == "eval"  # epochs completed, from 1
    np.testing.assert_allclose(m.values, [float(r["metrics/mAP50-95(B)"]) for r in rows])
    assert h.series["val/box_loss"].kind == "eval" and h.series["train/box_loss"].kind == "train"
    assert h.series["lr/pg0"].kind == "other"
    fitness = [0.1 * float(r["metrics/mAP50(B)"]) + 0.9 * float(r["metrics/mAP50-95(B)"]) for r in rows]
    np.testing.assert_allclose(h.series["fitness"].values, fitness, rtol=1e-12)
    assert any(c.kind == "format_choice" and "yolo" in c.message and "keras" in c.message for c in h.cleanups)
    res = CliRunner().invoke(cli, ["replay", str(f), "--metric", "fitness", "--rule", "hf", "--json", "--no-cache"])
    assert res.exit_code == 0 and json.loads(res.stdout)["decisions"][0]["mode"] == "max"
    assert json.loads(res.stdout)["decisions"][0]["best_step"] == 1 + int(np.argmax(fitness))


def _ultralytics_save_metrics(csv_path: Path, epoch: int, t: float, metrics: dict) -> None:
    """BaseTrainer.save_metrics of ultralytics 8.4.190, line for line (read from its installed source;
    ultralytics needs torchvision, which cannot be installed here without breaking transformers)."""
    keys, vals = list(metrics.keys()), list(metrics.values())
    n = len(metrics) + 2
    s = "" if csv_path.exists() else ("%s," * n % ("epoch", "time", *keys)).rstrip(",") + "\n"
    with open(csv_path, "a", encoding="utf-8") as f:
        f.write(s + ("%.6g," * n % (epoch + 1, t, *vals)).rstrip(",") + "\n")


def _yolov5_results(csv_path: Path, epoch: int, vals: list) -> None:
    """YOLOv5 train.py's callback writer (utils/loggers/__init__.py on_fit_epoch_end): padded %20s / %20.5g."""
    keys = ["train/box_loss", "train/obj_loss", "train/cls_loss", "metrics/precision", "metrics/recall",
            "metrics/mAP_0.5", "metrics/mAP_0.5:0.95", "val/box_loss", "val/obj_loss", "val/cls_loss",
            "x/lr0", "x/lr1", "x/lr2"]
    n = len(keys) + 1
    s = "" if csv_path.exists() else (("%20s," * n % tuple(["epoch"] + keys)).rstrip(",") + "\n")
    with open(csv_path, "a") as f:
        f.write(s + ("%20.5g," * n % tuple([epoch] + vals)).rstrip(",") + "\n")


def test_yolo_files_in_the_writers_own_formats(tmp_path):
    seg = tmp_path / "seg" / "results.csv"
    seg.parent.mkdir()
    box = [0.30, 0.45, 0.41]
    for e, b in enumerate(box):
        _ultralytics_save_metrics(seg, e, 10.0 * (e + 1), {
            "train/box_loss": 1.2 - e / 10, "train/seg_loss": 2.0, "train/cls_loss": 1.0, "train/dfl_loss": 1.1,
            "metrics/precision(B)": 0.5, "metrics/recall(B)": 0.4, "metrics/mAP50(B)": b + 0.2,
            "metrics/mAP50-95(B)": b, "metrics/precision(M)": 0.5, "metrics/recall(M)": 0.4,
            "metrics/mAP50(M)": b + 0.1, "metrics/mAP50-95(M)": b - 0.05, "val/box_loss": 1.5,
            "val/seg_loss": 2.5, "val/cls_loss": 1.2, "val/dfl_loss": 1.3, "lr/pg0": 0.01, "lr/pg1": 0.01,
            "lr/pg2": 0.01})
    h = logsage.load_history(seg)
    assert h.format == "yolo" and h.series["metrics/mAP50-95(B)"].steps.tolist() == [1, 2, 3]
    expected = [0.1 * (b + 0.2) + 0.9 * b + 0.1 * (b + 0.1) + 0.9 * (b - 0.05) for b in box]
    np.testing.assert_allclose(h.series["fitness"].values, expected, rtol=1e-5)  # %.6g cells
    assert h.series["time"].kind == "other"

    v5 = tmp_path / "v5" / "results.csv"
    v5.parent.mkdir()
    for e in range(2):
        _yolov5_results(v5, e, [0.1, 0.05, 0.02, 0.6, 0.5, 0.55 + e / 10, 0.3 + e / 10, 0.09, 0.04, 0.01,
                                0.0033, 0.0033, 0.07])
    assert v5.read_text().startswith("               epoch,")
    h5 = logsage.load_history(v5)
    assert h5.format == "yolo" and h5.primary_eval_metric() == "metrics/mAP_0.5:0.95"
    assert h5.series["metrics/mAP_0.5:0.95"].steps.tolist() == [1, 2]  # 0-based epochs -> completed
    np.testing.assert_allclose(h5.series["fitness"].values, [0.1 * 0.55 + 0.9 * 0.3, 0.1 * 0.65 + 0.9 * 0.4])
    assert h5.series["x/lr0"].kind == "other"


def test_yolo_bad_epoch_names_the_line(tmp_path):
    f = tmp_path / "results.csv"
    f.write_text("epoch,train/box_loss,metrics/mAP50-95(B)\n1,0.5,0.2\nx,0.4,0.3\n")
    with pytest.raises(IngestError, match=r"results\.csv:3: epoch 'x'"):
        logsage.load_history(f)


# ----------------------------------------------------------------------------- sentence-transformers
@needs_corpus
def test_real_sentence_transformers_evaluator_csv_every_column_is_an_evaluation():
    f = REAL2 / "sentence_transformers_eval_csv" / "stsb-multi-mt-en-25ep" / "similarity_evaluation_sts-dev_results.csv"
    rows = _rows(f)
    h = logsage.load_history(f.parent)
    assert h.format == "sentence-transformers" and h.primary_eval_metric() == "cosine_spearman"
    for col in rows[0]:
        if col not in ("epoch", "steps"):
            assert h.series[col].kind == "eval" and len(h.series[col]) == len(rows)
    assert h.series["cosine_spearman"].steps.tolist() == [int(r["epoch"]) + 1 for r in rows]
    assert h.meta["step_unit"] == "epoch"


def test_sentence_transformers_csv_written_by_the_evaluator(tmp_path, tiny_model_dir):
    st = pytest.importorskip("sentence_transformers")
    from sentence_transformers import SentenceTransformer, models
    from sentence_transformers.sentence_transformer.evaluation import EmbeddingSimilarityEvaluator

    tr = models.Transformer(str(tiny_model_dir), max_seq_length=16)
    model = SentenceTransformer(modules=[tr, models.Pooling(getattr(tr, "get_embedding_dimension", tr.get_word_embedding_dimension)())], device="cpu")
    ev = EmbeddingSimilarityEvaluator(["a cat", "a dog", "the sun"], ["a kitten", "a puppy", "the moon"],
                                      [0.9, 0.8, 0.3], name="sts-dev")
    out = tmp_path / "eval"
    for epoch in range(3):
        ev(model, output_path=str(out), epoch=epoch, steps=-1)
    (f,) = out.iterdir()
    rows = _rows(f)
    h = logsage.load_history(tmp_path)
    assert h.format == "sentence-transformers", st.__version__
    name = h.primary_eval_metric()
    assert name in rows[0] and len(h.series[name]) == 3 and h.series[name].kind == "eval"
    assert h.series[name].n_non_finite == sum(math.isnan(float(r[name])) for r in rows)


def test_sentence_transformers_within_epoch_steps_use_the_ordinal_and_say_so(tmp_path):
    f = tmp_path / "binary_classification_evaluation_results.csv"
    f.write_text("epoch,steps,cossim_accuracy,MSE\n0,100,0.5,0.3\n0,-1,0.6,0.2\n1,100,0.7,0.1\n1,-1,0.75,0.09\n")
    h = logsage.load_history(f)
    assert h.series["cossim_accuracy"].steps.tolist() == [1, 2, 3, 4] and h.meta["step_unit"] == "evaluation"
    assert any(c.kind == "step_choice" for c in h.cleanups)
    from logsage.core.objective import resolve_objective

    assert resolve_objective(h, "MSE").mode == "min"


# ----------------------------------------------------------------------------- OpenAI, Bedrock, DVCLive
def test_openai_results_full_valid_loss_is_the_eval_loss(tmp_path):
    f = tmp_path / "step_metrics.csv"
    f.write_text("step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,train_mean_token_accuracy,"
                 "full_valid_loss,full_valid_mean_token_accuracy\n"
                 "1,2.5,0.4,2.6,0.41,0.42,,\n2,2.0,0.5,,,0.52,1.9,0.55\n3,1.7,0.6,1.8,0.6,0.6,,\n"
                 "4,1.5,0.62,,,0.63,1.95,0.6\n")
    h = logsage.load_history(f)
    assert h.format == "openai-ft" and h.primary_eval_metric() == "full_valid_loss"
    assert h.metric("eval_loss").steps.tolist() == [2, 4]
    assert h.series["valid_loss"].canonical == "eval_batch_loss" and h.series["valid_loss"].kind == "eval"
    assert h.metric("loss").values.tolist() == [2.5, 2.0, 1.7, 1.5]


def test_bedrock_training_and_validation_metrics(tmp_path):
    (tmp_path / "step_wise_training_metrics.csv").write_text(
        "step_number,epoch_number,training_loss,perplexity\n0,0,2.0,7.4\n1,0,1.5,4.5\n2,1,1.2,3.3\n3,1,1.1,3.0\n")
    (tmp_path / "validation_metrics.csv").write_text(
        "step_number,epoch_number,validation_loss,perplexity\n1,0,1.6,4.9\n3,1,1.3,3.7\n")
    h = logsage.load_history(tmp_path)
    assert h.format == "bedrock" and h.primary_eval_metric() == "validation_loss"
    assert h.series["validation_perplexity"].kind == "eval" and h.series["perplexity"].kind == "train"
    assert h.metric("loss").steps.tolist() == [0, 1, 2, 3]


def test_dvclive_files_written_by_dvclive(tmp_path, monkeypatch):
    dvclive = pytest.importorskip("dvclive")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    losses = [1.0, 0.7, 0.6, 0.65]
    with dvclive.Live("dvclive", save_dvc_exp=False) as live:
        for i, v in enumerate(losses):
            live.log_metric("train/loss", 2 * v)
            live.log_metric("eval/loss", v)
            live.next_step()
    h = logsage.load_history(tmp_path / "dvclive")
    assert h.format == "dvclive"
    assert h.primary_eval_metric() == "eval/loss"  # the metric name is the path under plots/metrics
    assert h.series["eval/loss"].values.tolist() == losses and h.series["eval/loss"].steps.tolist() == [0, 1, 2, 3]
    assert h.series["train/loss"].kind == "train"
    assert h.summary["eval/loss"] == losses[-1]
    assert not h.warnings


# ----------------------------------------------------------------------------- detection on both corpora
_CSV_FORMATS = {  # corpus folder -> the format its CSV files must be read as
    "lightning_csv": "lightning", "keras_csvlogger": "keras", "yolo_results_csv": "yolo",
    "sentence_transformers_eval_csv": "sentence-transformers", "wide_metrics_csv": "wide",
    "tb_scalars_long_csv": "tb-csv",
}


def _real_csvs():
    out = []
    for root in (REAL1, REAL2):
        if root.is_dir():
            for f in sorted(root.glob("*/*/**/*.csv")):
                folder = f.relative_to(root).parts[0]
                out.append(pytest.param(f, _CSV_FORMATS.get(folder), id=str(f.relative_to(SHARED))))
    return out


@needs_corpus
@pytest.mark.parametrize("path,fmt", _real_csvs())
def test_every_real_csv_gets_its_own_format(path, fmt):
    assert fmt is not None, f"no expected format for {path}; add its corpus folder to _CSV_FORMATS"
    h = logsage.load_history(path)
    assert h.format == fmt
    choices = [c for c in h.cleanups if c.kind == "format_choice"]
    assert all(c.message.split(": read as ", 1)[1].startswith(fmt) for c in choices)


@needs_corpus
def test_corpus_csv_list_is_complete():
    found = {p.values[1] for p in _real_csvs()}
    assert {"lightning", "keras", "yolo", "sentence-transformers", "wide", "tb-csv"} <= found


@needs_corpus
def test_replay_session_picks_a_session_or_replays_each():
    d = REAL2 / "keras_csvlogger" / "brain-tumor-cnn-appended-4runs"
    sessions = _split_sessions(_rows(d / "training_log.csv"))
    res = CliRunner().invoke(cli, ["replay", str(d), "--rule", "hf:patience=1", "--session", "all", "--json",
                                   "--no-cache"])
    assert res.exit_code == 0, res.output
    decisions = json.loads(res.stdout)["decisions"]
    best = [1 + int(np.argmin([float(r["val_loss"]) for r in s])) for s in sessions]
    assert [dd["best_step"] for dd in decisions] == best
    one = CliRunner().invoke(cli, ["replay", str(d), "--rule", "hf:patience=1", "--session", "3", "--json",
                                   "--no-cache"])
    assert json.loads(one.stdout)["decisions"][0]["best_step"] == best[2]


@pytest.mark.parametrize("name,text,fmt,where", [
    ("step_metrics.csv", "step,train_loss,valid_loss\n1,2.0,2.1\nx,1.0,1.1\n", "openai-ft", "step_metrics.csv:3"),
    ("step_wise_training_metrics.csv", "step_number,epoch_number,training_loss,perplexity\n0,0,2.0,7\n-3,0,1,2\n",
     "bedrock", "step_wise_training_metrics.csv:3"),
    ("sts_results.csv", "epoch,steps,cosine_spearman\n0,-1,0.5\n1,abc,0.6\n", "sentence-transformers",
     "sts_results.csv:3"),
    ("training.log", "epoch,loss\n0,1.0\n1.5,0.9\n", "keras", "training.log:3"),
])
def test_bad_rows_are_one_line_errors_naming_file_and_line(tmp_path, name, text, fmt, where):
    f = tmp_path / name
    f.write_text(text)
    with pytest.raises(IngestError) as e:
        logsage.load_history(f, format=fmt)
    msg = str(e.value)
    assert where in msg and "\n" not in msg and ("repair" in msg or "pass --format" in msg)


def test_dvclive_bad_step_names_the_line(tmp_path):
    f = tmp_path / "dvclive" / "plots" / "metrics" / "eval" / "loss.tsv"
    f.parent.mkdir(parents=True)
    f.write_text("step\tloss\n0\t1.0\nbad\t0.9\n")
    with pytest.raises(IngestError, match=r"loss\.tsv:3: step 'bad'"):
        logsage.load_history(tmp_path / "dvclive")
