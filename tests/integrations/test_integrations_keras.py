"""`LogsageEarlyStopping` in a real Keras 3 `fit` (torch backend): the stop equals Keras's own EarlyStopping for
`keras:` rules, and `logsage replay` on the CSVLogger file the run wrote, also after a restart."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
np = pytest.importorskip("numpy")

REPO = Path(__file__).resolve().parents[2]


def _data():
    rng = np.random.default_rng(0)
    w = rng.normal(size=8)
    x, xv = rng.normal(size=(24, 8)), rng.normal(size=(64, 8))
    return (x, x @ w + 1.5 * rng.normal(size=24)), (xv, xv @ w + 1.5 * rng.normal(size=64))


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.05), loss="mse")
    return model


def _fit(callbacks, *, log=None, epochs=80, initial_epoch=0, model=None):
    (x, y), val = _data()
    model = model or _model()
    extra = [keras.callbacks.CSVLogger(str(log), append=True)] if log else []
    model.fit(x, y, validation_data=val, batch_size=8, epochs=epochs, initial_epoch=initial_epoch, shuffle=False,
              callbacks=[*callbacks, *extra], verbose=0)
    return model


def _replay(path, rule):
    proc = subprocess.run([sys.executable, "-m", "logsage", "replay", str(path), "--rule", rule, "--metric",
                           "val_loss", "--json"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (d,) = json.loads(proc.stdout)["decisions"]
    return d


@pytest.mark.parametrize("patience", [1, 3])
def test_keras_rule_stops_where_keras_does_and_where_replay_does(tmp_path, patience):
    from logsage.integrations.keras import LogsageEarlyStopping

    ours = LogsageEarlyStopping(f"keras:patience={patience}", monitor="val_loss")
    _fit([ours], log=tmp_path / "training.log")
    theirs = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience)
    _fit([theirs])
    assert theirs.stopped_epoch > 0, "Keras never stopped: the test data must overfit"
    assert ours.stopped is not None and ours.stopped["epoch"] == theirs.stopped_epoch
    d = _replay(tmp_path / "training.log", f"keras:patience={patience}")
    assert d["stop_step"] == ours.stopped["step"] == theirs.stopped_epoch + 1  # step = epochs completed


def test_another_rule_stops_where_replay_does(tmp_path):
    from logsage.integrations.keras import LogsageEarlyStopping

    rule = "pq:alpha=0.5"  # Prechelt's PQ uses the training loss too
    ours = LogsageEarlyStopping(rule, monitor="val_loss")
    _fit([ours], log=tmp_path / "training.log")
    assert ours.stopped is not None
    assert _replay(tmp_path / "training.log", rule)["stop_step"] == ours.stopped["step"]


def test_the_rule_state_survives_a_restart_through_the_log(tmp_path):
    from logsage.integrations.keras import LogsageEarlyStopping

    rule = "keras:patience=3"
    whole = LogsageEarlyStopping(rule, monitor="val_loss")
    _fit([whole])
    stop = whole.stopped["epoch"]
    log = tmp_path / "training.log"
    model = _fit([LogsageEarlyStopping(rule, monitor="val_loss")], log=log, epochs=stop - 1)  # two epochs short
    again = LogsageEarlyStopping(rule, monitor="val_loss", log=log)  # a new process: only the log is left
    _fit([again], log=log, initial_epoch=stop - 1, model=model)
    assert again.stopped is not None and again.stopped["epoch"] == stop  # a fresh counter would stop later
    assert _replay(log, rule)["stop_step"] == again.stopped["step"]


def test_strict_names_the_logged_metrics():
    from logsage.core.errors import MetricNotFound
    from logsage.integrations.keras import LogsageEarlyStopping

    with pytest.raises(MetricNotFound, match=r"no 'val_los' .*val_loss.*did you mean 'val_loss'"):
        _fit([LogsageEarlyStopping("keras", monitor="val_los")], epochs=2)
