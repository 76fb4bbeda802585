"""The Trackio reader on project databases the real `trackio` writes (local mode, no network), read-only."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import logsage
from logsage.cli.main import cli
from logsage.core.errors import IngestError

_WRITER = textwrap.dedent("""
    import math, trackio
    trackio.init(project="proj", name="first", config={"lr": 1e-3})
    trackio.log({"train/loss": 9.0})
    trackio.finish()
    trackio.init(project="proj", name="second")
    for i in range(1, 31):
        d = {"train/loss": 1.0 / i}
        if i % 5 == 0:
            d["eval/loss"] = float("nan") if i == 10 else 0.5 + (i - 15) ** 2 / 100
        if i == 20:
            d["eval/acc"] = math.inf
        trackio.log(d)
    trackio.log({"caption": "text", "nested": {"a": 2.5}}, step=100)
    trackio.finish()
""")


@pytest.fixture(scope="module")
def trackio_db(tmp_path_factory) -> Path:
    pytest.importorskip("trackio", reason="the real Trackio writes these fixtures (pip install trackio)")
    tmp = tmp_path_factory.mktemp("trackio")
    env = {**os.environ, "TRACKIO_DIR": str(tmp / "store"), "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp / "hf"),
           "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", _WRITER], cwd=tmp, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return tmp / "store" / "proj.db"


def test_last_run_of_the_project_is_read_with_every_value(trackio_db):
    h = logsage.load_history(trackio_db)
    assert h.format == "trackio"
    assert h.meta["run_name"] == "second" and h.meta["trackio_runs"] == ["first", "second"]
    assert any("2 runs" in w and "'second'" in w and "first" in w for w in h.warnings)
    tl = h.metric("train/loss")
    assert tl.steps.tolist() == list(range(30))  # trackio counts log calls from 0
    assert tl.values.tolist() == [1.0 / i for i in range(1, 31)]
    ev = h.metric("eval/loss")
    assert ev.kind == "eval" and ev.steps.tolist() == [4, 9, 14, 19, 24, 29]
    expected = [math.nan if i == 10 else 0.5 + (i - 15) ** 2 / 100 for i in range(5, 31, 5)]
    np.testing.assert_array_equal(ev.values, np.array(expected))  # trackio's "NaN" string is NaN
    assert h.metric("eval/acc").values.tolist() == [math.inf]
    assert h.series["nested/a"].steps.tolist() == [100]
    assert tl.wall_times is not None and np.all(np.isfinite(tl.wall_times))
    assert any(c.kind == "dropped_record" and c.metric == "caption" and c.count == 1 for c in h.cleanups)
    assert h.primary_eval_metric() == "eval/loss"


def test_reading_is_read_only_and_never_imports_trackio(trackio_db):
    folder = trackio_db.parent
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    code = ("import sys, logsage; h = logsage.load_history(sys.argv[1]); "
            "assert 'trackio' not in sys.modules and 'gradio' not in sys.modules; print(len(h.metric('train/loss')))")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "30"
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert after == before  # nothing written, nothing created (no -wal/-shm beside a finished database)


def test_unreadable_row_is_counted(trackio_db, tmp_path):
    db = tmp_path / "proj.db"
    shutil.copy(trackio_db, db)
    con = sqlite3.connect(db)
    cols = {r[1] for r in con.execute("PRAGMA table_info(metrics)")}
    run_id = con.execute("SELECT run_id FROM metrics WHERE run_name = 'second' LIMIT 1").fetchone()[0]
    values = {"run_id": run_id, "timestamp": "2026-01-01T00:00:00+00:00", "run_name": "second", "step": 50,
              "metrics": "{not json"}
    names = [c for c in values if c in cols]
    con.execute(f"INSERT INTO metrics ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [values[c] for c in names])
    con.commit()
    con.close()
    h = logsage.load_history(db)
    assert len(h.metric("train/loss")) == 30
    (c,) = [c for c in h.cleanups if c.kind == "dropped_record" and c.metric is None]
    assert c.count == 1 and "id" in c.message


def test_other_sqlite_databases_are_not_claimed(tmp_path):
    db = tmp_path / "mlflow.db"  # MLflow's SQL store also has a `metrics` table, with other columns
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE metrics (key TEXT, value REAL, timestamp INTEGER, run_uuid TEXT, step INTEGER)")
    con.execute("INSERT INTO metrics VALUES ('loss', 1.0, 0, 'r', 1)")
    con.commit()
    con.close()
    with pytest.raises(IngestError, match="not a log format logsage recognises"):
        logsage.load_history(db)
    with pytest.raises(IngestError) as e:
        logsage.load_history(db, format="trackio")
    assert "\n" not in str(e.value) and str(db) in str(e.value) and "metrics table" in str(e.value)


def test_damaged_database_is_a_one_line_error(trackio_db, tmp_path):
    db = tmp_path / "proj.db"
    data = bytearray(trackio_db.read_bytes())
    data[100:] = b"\xff" * (len(data) - 100)  # header kept, every page destroyed
    db.write_bytes(bytes(data))
    r = CliRunner().invoke(cli, ["ingest", str(db), "--format", "trackio"])
    assert r.exit_code == 1, r.output
    line = r.output.strip().splitlines()[-1]
    assert str(db) in line and "Traceback" not in r.output


def test_database_of_trackio_before_0_24_without_run_id(tmp_path):
    """Trackio < 0.24 wrote no run_id column (the run is its name) and metrics as TEXT; schema as in its
    sqlite_storage.py of then (no writer of that version is installable next to the current one)."""
    db = tmp_path / "old.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE metrics (id INTEGER PRIMARY KEY AUTOINCREMENT, timestamp TEXT NOT NULL, "
                "run_name TEXT NOT NULL, step INTEGER NOT NULL, metrics TEXT NOT NULL)")
    rows = [("2025-01-01T00:00:0%d" % i, "r1" if i < 3 else "r2", i, json.dumps({"loss": 1.0 / (i + 1)}))
            for i in range(6)]
    con.executemany("INSERT INTO metrics (timestamp, run_name, step, metrics) VALUES (?, ?, ?, ?)", rows)
    con.commit()
    con.close()
    h = logsage.load_history(db)
    assert h.format == "trackio" and h.meta["trackio_runs"] == ["r1", "r2"]
    assert h.metric("loss").steps.tolist() == [3, 4, 5]
    assert h.metric("loss").values.tolist() == [1 / 4, 1 / 5, 1 / 6]
