"""Readers against files written by the real writers: Lightning's CSVLogger, Keras's CSVLogger,
MLflow's file store, and tbparse's export of TensorBoard events written by torch's SummaryWriter.

Expected values are what the test logged (or, for Keras, the `History` that `fit` returns), so
each check is independent of logsage. The writers are imported once per module (they are slow
to import); each fixture writes a few rows only.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import logsage
from logsage.core.errors import IngestError


# ----------------------------------------------------------------------------- Lightning CSVLogger
@pytest.fixture(scope="module")
def lightning_logs(tmp_path_factory):
    """A run that crashed after step 39 and was resumed from its step-19 checkpoint (version_1)."""
    loggers = pytest.importorskip("pytorch_lightning.loggers")
    root = tmp_path_factory.mktemp("pl")
    first = loggers.CSVLogger(str(root), name="lightning_logs")
    first.log_hyperparams({"lr": 1e-3, "layers": 2})
    first.log_metrics({"train_loss_step": 2.0, "epoch": 0}, step=9)
    first.log_metrics({"val_loss": 1.5, "epoch": 0}, step=19)
    first.log_metrics({"train_loss_step": float("nan"), "epoch": 1}, step=29)  # a NaN loss is a value
    first.log_metrics({"val_loss": 1.6, "epoch": 1}, step=39)
    first.save()
    resumed = loggers.CSVLogger(str(root), name="lightning_logs")  # the next version_N
    resumed.log_hyperparams({"lr": 5e-4, "layers": 2})
    resumed.log_metrics({"train_loss_step": 1.2, "epoch": 1}, step=29)
    resumed.log_metrics({"val_loss": 1.3, "epoch": 1}, step=39)
    resumed.log_metrics({"train_loss_step": 1.1, "epoch": 2}, step=49)
    resumed.log_metrics({"val_loss": 1.25, "epoch": 2}, step=59)
    resumed.save()
    return root / "lightning_logs"


def test_lightning_csvlogger_one_version(lightning_logs):
    v0 = lightning_logs / "version_0"
    assert b"\r\n" in (v0 / "metrics.csv").read_bytes()  # the writer's CRLF
    h = logsage.load_history(v0)
    assert h.format == "lightning"
    assert h.metric("val_loss").steps.tolist() == [19, 39]
    assert h.metric("val_loss").values.tolist() == [1.5, 1.6]
    loss = h.metric("train_loss_step")
    assert loss.steps.tolist() == [9, 29] and math.isnan(loss.values[1])
    assert h.epoch_at([9, 39]).tolist() == [0.0, 1.0]
    assert h.meta["hparams"] == {"lr": 1e-3, "layers": 2}


def test_lightning_versions_are_one_resumed_run_later_wins(lightning_logs):
    h = logsage.load_history(lightning_logs)
    assert h.format == "lightning"
    val = h.metric("val_loss")
    assert val.steps.tolist() == [19, 39, 59]
    assert val.values.tolist() == [1.5, 1.3, 1.25]  # step 39 from version_1
    assert h.metric("train_loss_step").values.tolist() == [2.0, 1.2, 1.1]
    overlap = [c for c in h.cleanups if c.kind == "overlap"]
    assert len(overlap) == 1 and overlap[0].count == 2 and "version_1" in overlap[0].message
    assert h.meta["hparams"]["lr"] == 5e-4  # the latest version's
    assert not h.warnings


def test_lightning_version_restarting_at_step_zero_is_warned(tmp_path):
    for v, vals in (("version_0", ["0,9,1.0", "0,19,0.9"]), ("version_1", ["0,9,2.0"])):
        (tmp_path / v).mkdir()
        (tmp_path / v / "metrics.csv").write_text("epoch,step,train_loss_step\n" + "\n".join(vals) + "\n")
    h = logsage.load_history(tmp_path)
    assert any("separate run" in w for w in h.warnings)


# ----------------------------------------------------------------------------- Keras CSVLogger
@pytest.fixture(scope="module")
def keras_run(tmp_path_factory):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    rng = np.random.RandomState(0)
    x = rng.randn(64, 4).astype("float32")
    y = (x[:, 0] > 0).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile("sgd", "binary_crossentropy", metrics=["accuracy"])
    log = tmp_path_factory.mktemp("keras") / "training.log"
    history = model.fit(x, y, epochs=3, validation_data=(x[:16], y[:16]), verbose=0,
                        callbacks=[keras.callbacks.CSVLogger(str(log))])
    return log, history.history


def test_keras_csvlogger_rows_are_epochs(keras_run):
    log, fit_history = keras_run
    assert b"\r\n" in log.read_bytes()
    h = logsage.load_history(log)
    assert h.format == "keras"
    assert h.meta["step_unit"] == "epoch"
    val = h.metric("eval_loss")
    assert val.name == "val_loss" and val.kind == "eval"
    # step = epoch + 1 (epochs completed); the last step is the number of epochs logged
    rows = [line.split(",") for line in log.read_text().splitlines()[1:]]
    written_epochs = [int(r[0]) for r in rows]
    assert written_epochs == [0, 1, 2]
    assert val.steps.tolist() == [e + 1 for e in written_epochs] == [1, 2, 3]
    assert h.max_steps == len(fit_history["val_loss"]) == 3
    assert "max_steps" not in h.meta and h.stated_max_steps is None
    # the epoch series keeps the 0-based index as written
    assert h.series["epoch"].steps.tolist() == [1, 2, 3]
    assert h.series["epoch"].values.tolist() == written_epochs
    np.testing.assert_allclose(val.values, fit_history["val_loss"], rtol=1e-7)
    np.testing.assert_allclose(h.metric("loss").values, fit_history["loss"], rtol=1e-7)
    assert h.series["val_accuracy"].kind == "eval"
    assert h.primary_eval_metric() == "val_loss"


def test_keras_na_cells_are_missing(tmp_path):
    # Keras writes "NA" for a key missing in an epoch (e.g. validation every 2 epochs).
    f = tmp_path / "history.csv"
    f.write_bytes(b"epoch,loss,val_loss\r\n0,1.0,0.9\r\n1,0.8,NA\r\n2,0.7,0.75\r\n")
    h = logsage.load_history(f)
    assert h.format == "keras"
    assert h.metric("val_loss").steps.tolist() == [1, 3]  # epochs 0 and 2 completed
    assert h.metric("loss").steps.tolist() == [1, 2, 3]
    assert not [c for c in h.cleanups if c.kind == "dropped_record"]


def test_keras_steps_count_epochs_so_savings_use_the_epochs_logged(tmp_path):
    # 4 epochs (0..3 as written) are steps 1..4; Keras (patience 0) stops after the 3rd epoch
    # (index 2, .95 does not beat .9): 1 of 4 epochs saved, not 1 of 3.
    from logsage.decide.engine import replay

    f = tmp_path / "training.log"
    f.write_bytes(b"epoch,loss,val_loss\r\n0,1.2,1.0\r\n1,1.0,0.9\r\n2,0.9,0.95\r\n3,0.8,0.8\r\n")
    h = logsage.load_history(f)
    assert h.format == "keras" and h.max_steps == 4
    (d,) = replay([h], ["keras:patience=0"]).decisions
    assert d.metric == "val_loss"
    assert d.stop_step == 3 and d.stop_eval_index == 2
    assert d.steps_saved == 1 and d.fraction_saved == 0.25
    assert d.selected_step == 2 and d.selected_value == pytest.approx(0.9)  # Keras' best epoch 1


def test_keras_appended_restart_keeps_the_later_epoch_row(tmp_path):
    # CSVLogger(append=True) after a restart from epoch 1 writes no second header: epochs 1 and 2
    # follow again in the same file; steps stay epoch + 1.
    f = tmp_path / "training.log"
    f.write_bytes(b"epoch,loss,val_loss\r\n0,1.0,0.9\r\n1,0.8,0.85\r\n2,0.7,0.8\r\n"
                  b"1,0.75,0.84\r\n2,0.65,0.78\r\n3,0.6,0.7\r\n")
    h = logsage.load_history(f)
    assert h.format == "keras"
    val = h.metric("val_loss")
    assert val.steps.tolist() == [1, 2, 3, 4] and h.max_steps == 4
    np.testing.assert_allclose(val.values, [0.9, 0.84, 0.78, 0.7], rtol=1e-6)


def test_keras_negative_epoch_is_an_error(tmp_path):
    f = tmp_path / "history.csv"
    f.write_bytes(b"epoch,loss,val_loss\r\n0,1.0,0.9\r\n-1,0.8,0.85\r\n")
    with pytest.raises(IngestError, match=r"history\.csv:3: epoch '-1' is negative"):
        logsage.load_history(f, format="keras")


# ----------------------------------------------------------------------------- MLflow file store
@pytest.fixture(scope="module")
def mlruns(tmp_path_factory):
    """Two runs in one experiment, written by mlflow with a file: tracking URI.

    MLflow 3.x keeps the file store in maintenance mode and refuses it unless
    MLFLOW_ALLOW_FILE_STORE=true; it writes offline either way.
    """
    root = tmp_path_factory.mktemp("mlflow") / "mlruns"
    old_env = os.environ.get("MLFLOW_ALLOW_FILE_STORE")
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow = pytest.importorskip("mlflow")
    old_uri = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri("file:" + str(root))
        run_ids = []
        for name, evals in (("lora-a", [(100, 1.5), (200, 1.4), (300, float("nan")), (300, 1.45)]),
                            ("lora-b", [(100, 2.0)])):
            with mlflow.start_run(run_name=name) as run:
                mlflow.log_param("lora_r", 8)
                for step, value in evals:
                    mlflow.log_metric("eval_loss", value, step=step)
                mlflow.log_metric("train/loss", 2.5, step=50)  # a '/' makes a nested metric file
                run_ids.append((run.info.experiment_id, run.info.run_id))
    finally:
        mlflow.set_tracking_uri(old_uri)
        if old_env is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = old_env
    return root, run_ids


def test_mlflow_one_run_folder(mlruns):
    root, run_ids = mlruns
    exp, run_id = run_ids[0]
    run_dir = root / exp / run_id
    assert (run_dir / "metrics" / "train" / "loss").is_file()
    h = logsage.load_history(run_dir)
    assert h.format == "mlflow"
    ev = h.metric("eval_loss")
    assert ev.steps.tolist() == [100, 200, 300]
    assert ev.values.tolist() == [1.5, 1.4, 1.45]  # step 300 was logged twice: the later value
    assert [c.count for c in h.cleanups if c.kind == "duplicates"] == [1]
    assert h.metric("loss").name == "train/loss"
    assert h.meta["run_id"] == run_id and h.meta["run_name"] == "lora-a"
    assert h.meta["params"] == {"lora_r": "8"}
    start, end = h.meta["start_time"] / 1000, h.meta["end_time"] / 1000
    assert np.all((ev.wall_times >= start - 1) & (ev.wall_times <= end + 1))


def test_mlflow_folder_with_several_runs_is_an_error_listing_them(mlruns):
    root, run_ids = mlruns
    for path in (root, root / run_ids[0][0]):
        with pytest.raises(IngestError) as e:
            logsage.load_history(path)
        msg = str(e.value)
        assert all(rid in msg for _, rid in run_ids) and "pass one run's folder" in msg


def test_mlflow_metric_file_damaged_in_the_middle(mlruns, tmp_path):
    import shutil

    root, run_ids = mlruns
    exp, run_id = run_ids[1]
    run_dir = tmp_path / run_id
    shutil.copytree(root / exp / run_id, run_dir)
    metric = run_dir / "metrics" / "eval_loss"
    good = metric.read_text()
    metric.write_text("garbage here\n" + good)
    with pytest.raises(IngestError, match=r"eval_loss:1: expected '<timestamp> <value> <step>'"):
        logsage.load_history(run_dir)
    metric.write_text(good + "1700000000000 0.5")  # a crash mid-line: kept out, recorded
    h = logsage.load_history(run_dir)
    assert len(h.metric("eval_loss")) == 1
    assert [c.kind for c in h.cleanups if c.kind == "truncated"] == ["truncated"]


# ----------------------------------------------------------------------------- tbparse long CSV
def test_tbparse_export_of_real_event_file(tmp_path):
    tensorboard = pytest.importorskip("torch.utils.tensorboard")
    tbparse = pytest.importorskip("tbparse")
    w = tensorboard.SummaryWriter(str(tmp_path / "events"))
    for step in (10, 20, 30):
        w.add_scalar("train/loss", 1.0 / step, step)
    w.add_scalar("eval/loss", 0.5, 20)
    w.add_scalar("eval/loss", 0.25, 30)
    w.close()
    frame = tbparse.SummaryReader(str(tmp_path / "events"), extra_columns={"wall_time"}).scalars
    out = tmp_path / "export" / "scalars.csv"
    out.parent.mkdir()
    frame.to_csv(out, index=False)  # columns step,tag,value,wall_time (not the usual order)
    h = logsage.load_history(out.parent)
    assert h.format == "tb-csv"
    assert h.metric("eval_loss").values.tolist() == [0.5, 0.25]
    np.testing.assert_allclose(h.metric("loss").values, np.float32([0.1, 0.05, 1 / 30]), rtol=1e-7)
    # The wall times are the ones tbparse read from the event file, step for step.
    written = frame[frame["tag"] == "eval/loss"].sort_values("step")
    assert h.metric("eval_loss").steps.tolist() == written["step"].tolist() == [20, 30]
    np.testing.assert_allclose(h.metric("eval_loss").wall_times, written["wall_time"].to_numpy(), rtol=0, atol=1e-6)
