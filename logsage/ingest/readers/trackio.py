"""Reader for Trackio's local store (Hugging Face's tracker, ``report_to="trackio"``): one SQLite file per
project, ``~/.cache/huggingface/trackio/<project>.db`` (``TRACKIO_DIR``), read with the standard
library's sqlite3, read-only (a ``mode=ro`` URI, so a run still writing is never disturbed, and no
file is created beside a finished database), with no trackio import.

The schema (trackio ``sqlite_storage.py``, schema version 2)::

    metrics(id INTEGER PRIMARY KEY, run_id TEXT, timestamp TEXT, run_name TEXT, step INTEGER,
            metrics TEXT|BLOB, ...)      -- one row per trackio.log(), metrics a JSON object

Databases written before trackio 0.24 have no ``run_id``: the run is its ``run_name``. Values
are JSON numbers; trackio writes NaN and infinities as the strings ``"NaN"``, ``"Infinity"``
and ``"-Infinity"``; a nested dict is flattened with ``/``; anything else (text, media) is
counted as skipped. Wall times: ``timestamp`` (ISO 8601). The step is ``train/global_step`` where a
row has it (the Hugging Face integration logs it with every call, and trackio's ``step`` column
counts log calls, not optimizer steps), else the ``step`` column.

A project database holds every run of the project, and a path is one run: the run logged
last is read and a warning names the others (``meta["trackio_runs"]`` lists them all, in
order). HF's end-of-training scalars (``train/train_runtime``...) go to ``summary``.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.readers.base import ReadContext, ReadResult
from logsage.ingest.text import PointCollector, is_hf_summary_tag

FORMAT = "trackio"
DESCRIPTION = "Trackio project database (<project>.db, SQLite; the last run logged, read-only)"
PRECISION = "float64"

_SQLITE_MAGIC = b"SQLite format 3\x00"
_NEEDED = {"run_name", "step", "metrics"}
_HF_STEP = "train/global_step"
_SPECIAL = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _connect(path: Path) -> sqlite3.Connection:
    # Read-only. Without a write-ahead log beside it the file is complete and `immutable` opens it
    # without creating the -shm/-wal files a WAL database otherwise gets on open; with one (a writer
    # is running, or crashed), plain read-only mode reads the log too.
    wal = path.with_name(path.name + "-wal")
    mode = "mode=ro" if wal.exists() else "mode=ro&immutable=1"
    return sqlite3.connect(f"file:{quote(str(path.resolve()))}?{mode}", uri=True)


def _metric_columns(con: sqlite3.Connection) -> set[str]:
    return {row[1] for row in con.execute("PRAGMA table_info(metrics)")}


def claims(path: Path, head: bytes) -> bool:
    # Only a SQLite file whose `metrics` table has trackio's columns (MLflow's and Optuna's
    # databases also have a `metrics` table, with other columns).
    if not head.startswith(_SQLITE_MAGIC):
        return False
    try:
        con = _connect(path)
        try:
            return _NEEDED <= _metric_columns(con)
        finally:
            con.close()
    except sqlite3.Error:
        return False


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    if len(paths) > 1:
        names = ", ".join(p.name for p in sorted(paths))
        raise IngestError(f"{paths[0].parent}: holds {len(paths)} Trackio project databases ({names}); a path is "
                          "one run - pass one <project>.db")
    path = paths[0]
    res = ReadResult(format=FORMAT, precision=PRECISION)
    res.files.append(str(path))
    try:
        con = _connect(path)
        try:
            cols = _metric_columns(con)
            if not _NEEDED <= cols:
                raise IngestError(f"{path}: a SQLite file without Trackio's metrics table (run_name, step, "
                                  "metrics); give the <project>.db Trackio wrote, or pass --format for another log")
            run_key = "run_id" if "run_id" in cols else "run_name"
            runs = con.execute(f"SELECT {run_key}, run_name, MAX(id) AS last FROM metrics "
                               f"GROUP BY {run_key} ORDER BY last").fetchall()
            if not runs:
                raise IngestError(f"{path}: a Trackio database with no logged metrics yet; read it again once "
                                  "the run has logged")
            run_id, run_name, _ = runs[-1]
            rows = con.execute(f"SELECT id, step, timestamp, metrics FROM metrics WHERE {run_key} = ? "
                               "ORDER BY id", (run_id,)).fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as e:
        raise IngestError(f"{path}: cannot be read as a Trackio database ({e}); the file may be damaged or "
                          "still locked by a writer - copy it and read the copy") from None
    res.meta["run_name"] = run_name
    res.meta["trackio_runs"] = [r[1] for r in runs]
    if len(runs) > 1:
        others = [r[1] for r in runs[:-1]]
        shown = ", ".join(others[:5]) + (f", ... ({len(others)} runs)" if len(others) > 5 else "")
        res.warnings.append(f"{path}: a Trackio project of {len(runs)} runs; read the last one logged, "
                            f"{run_name!r} (the others: {shown})")
    _add_rows(path, rows, res)
    return res


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def _wall(ts) -> float | None:
    try:
        return datetime.fromisoformat(str(ts)).timestamp()
    except ValueError:
        return None


def _add_rows(path: Path, rows: list, res: ReadResult) -> None:
    file = str(path)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    bad = 0
    first_bad: int | None = None
    for row_id, step, ts, blob in rows:
        text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else str(blob)
        try:
            doc = json.loads(text)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or not isinstance(step, int):
            bad += 1
            first_bad = row_id if first_bad is None else first_bad
            continue
        flat: dict = {}
        _flatten("", doc, flat)
        # HF's TrackioCallback logs the optimizer step with every call; trackio's own step counts calls.
        gs = flat.pop(_HF_STEP, None)
        if isinstance(gs, (int, float)) and not isinstance(gs, bool) and float(gs).is_integer():
            step = int(gs)
        wall = _wall(ts)
        summary_row = any(is_hf_summary_tag(k) for k in flat)
        for key, value in flat.items():
            if isinstance(value, str) and value in _SPECIAL:
                value = _SPECIAL[value]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                points.ignore(key, file=file, example=value)
                continue
            if summary_row:
                res.summary[key] = float(value)
                continue
            points.add(key, step, float(value), file=file, wall_time=wall)
    if bad:
        res.warnings.append(f"{path}: {bad} metrics row(s) that are not a JSON object with an integer step skipped "
                            f"(first: id {first_bad})")
        res.cleanups.append(Cleanup("dropped_record", f"{bad} unreadable metrics row(s) skipped (first: id "
                                    f"{first_bad})", file=file, count=bad))
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    if "train/train_runtime" in res.summary:
        res.meta["train_runtime"] = res.summary["train/train_runtime"]
