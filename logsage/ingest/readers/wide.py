"""Fallback reader for a generic wide log: a CSV or JSON-lines file with a step column and one column per metric.

Whatever the file is called (``train-metrics-*.csv``, a ``metrics.csv`` without Lightning's
``epoch`` column, ``log_history.jsonl``, or ``log_history.json`` holding a JSON list of
records), as long as a ``step``, ``global_step`` or ``Step`` column/key is there. It is asked last, so it never takes a file a more specific reader
claims. Typical writer: a script that dumps HF's ``log_history`` with pandas, one row per
log record (train, eval and summary rows mixed). Quirks handled:

* blank cells (and JSON nulls, which are counted) are missing; ``nan``/``inf`` are values kept;
* a row with ``train_runtime`` is the end-of-training summary: its values go to `summary`;
* rows after that summary at a step it covers are the final ``trainer.evaluate()`` (with
  ``load_best_model_at_end``, the best model re-evaluated: a different value at the last
  step). They are a run summary too, not a new point: the periodic evaluation stays the
  curve point, recorded as a ``duplicates`` cleanup. This keeps the curve equal to the one
  the same run's TensorBoard events hold;
* any other repeated step keeps its later write (a resume), recorded;
* a row without a step is counted and skipped; a column of text is counted and skipped; a column
  with no name in the header (a pandas index) is counted and skipped; two columns of one name
  are an `IngestError` (reading them as one metric would mix their values).

Precision float64 (what the dump holds).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.text import (STEP_COLUMNS, PointCollector, as_step, cell_value, find_column, first_json_object,
                                  header_of, natural_key, post_training_eval_cleanup, read_csv, read_jsonl,
                                  unnamed_cleanup)
from logsage.ingest.readers.base import ReadContext, ReadResult, loads_lenient, read_text, to_float

FORMAT = "wide"
DESCRIPTION = "generic wide CSV/JSONL with a step column and one column per metric (fallback)"
PRECISION = "float64"
FALLBACK = True  # claims any csv/jsonl with a step column; a more specific reader matching too is no news

_CSV = (".csv", ".tsv")
_JSONL = (".jsonl", ".ndjson")


def claims(path: Path, head: bytes) -> bool:
    suffix = path.suffix.lower()
    if suffix in _CSV:
        return any(c.lower() in STEP_COLUMNS for c in header_of(head, path))
    if suffix in _JSONL:
        obj = first_json_object(head)
        return obj is not None and any(k.lower() in STEP_COLUMNS for k in obj)
    if suffix == ".json":  # json.dump(trainer.state.log_history, f): a list of records
        start = head.lstrip()[:4096]
        return start.startswith(b"[") and re.search(rb'"(step|global_step|Step)"\s*:', start) is not None
    return False


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path in sorted(paths, key=natural_key):
        res.files.append(str(path))
        if path.suffix.lower() in _JSONL:
            records = read_jsonl(path, res_warnings=res.warnings, cleanups=res.cleanups)
            _read_records(path, records, res, points)
        elif path.suffix.lower() == ".json":
            _read_records(path, _json_list(path), res, points)
        else:
            _read_csv(path, res, points)
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res


def _json_list(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(record number, record) of a JSON array of log records."""
    data = loads_lenient(read_text(path), file=str(path))
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise IngestError(f"{path}: not a JSON list of log records; pass --format to pick another reader")
    if not data:
        raise IngestError(f"{path}: is an empty list of log records; nothing was logged yet")
    return list(enumerate(data, start=1))


def _read_csv(path: Path, res: ReadResult, points: PointCollector) -> None:
    """A wide CSV, column by column (one pass over the rows to sort them, then each column in bulk)."""
    file = str(path)
    table = read_csv(path, res_warnings=res.warnings, cleanups=res.cleanups)
    header = table.header
    step_col = find_column(header, STEP_COLUMNS)
    if step_col is None:
        raise IngestError(f"{path}: no step column (header: {','.join(header)[:200]}); "
                          "add a 'step' column, or pass --format keras if the rows are epochs")
    seen: dict[str, int] = {}
    for i, h in enumerate(header):
        if h and h in seen:  # reading it as one metric would mix two columns' values
            raise IngestError(f"{path}: column {h!r} appears twice in the header (columns {seen[h] + 1} and {i + 1}); "
                              "rename or remove one and read it again")
        seen.setdefault(h, i)
    unnamed = unnamed_cleanup(table, file=file, skip=(step_col,))
    if unnamed is not None:
        res.cleanups.append(unnamed)
    runtime_col = seen.get("train_runtime")
    end_step: int | None = None
    no_step = late = 0
    steps: list[int] = []
    rows: list[list[str]] = []
    for lineno, cells in table.rows:
        raw = cells[step_col]
        step = as_step(raw)
        if step is None:
            if cell_value(raw) is not None:
                raise IngestError(f"{path}:{lineno}: step {raw.strip()!r} is not an integer; "
                                  "repair that record and read it again")
            no_step += 1
            continue
        if runtime_col is not None and cell_value(cells[runtime_col]) is not None:
            end_step = step
            _to_summary(dict(zip(header, cells)), header[step_col], res)
            continue
        if end_step is not None and step <= end_step:
            late += 1
            _to_summary(dict(zip(header, cells)), header[step_col], res)
            continue
        steps.append(step)
        rows.append(cells)
    columns = [(i, h) for i, h in enumerate(header) if i != step_col and h]
    points.note_rows(steps, lambda r: [h for i, h in columns if cell_value(rows[r][i]) is not None], file=file)
    for i, h in columns:
        points.add_column(h, steps, [cells[i] for cells in rows], file=file)
    _count(file, no_step, late, end_step, res)


def _read_records(path: Path, records: list[tuple[int, dict[str, Any]]], res: ReadResult,
                  points: PointCollector) -> None:
    """JSON records (lines of a .jsonl, items of a .json list); a JSON null is counted as skipped."""
    file = str(path)
    keys = list(dict.fromkeys(k for _, r in records for k in r))
    step_key = next((k for want in STEP_COLUMNS for k in keys if k.lower() == want), None)
    if step_key is None:
        raise IngestError(f"{path}: no record has a step key ('step' or 'global_step'); "
                          "add one, or pass --format to pick another reader")
    end_step: int | None = None
    no_step = late = 0
    for lineno, rec in records:
        raw_step = rec.get(step_key)
        step = as_step(raw_step)
        if step is None:
            if raw_step is not None:
                raise IngestError(f"{path}:{lineno}: step {raw_step!r} is not an integer; "
                                  "repair that record and read it again")
            no_step += 1
            continue
        if rec.get("train_runtime") is not None:
            end_step = step
            _to_summary(rec, step_key, res)
            continue
        if end_step is not None and step <= end_step:
            late += 1
            _to_summary(rec, step_key, res)
            continue
        points.note_record(step, [k for k, v in rec.items() if k != step_key and v is not None], file=file)
        points.add_fields(step, [(k, v) for k, v in rec.items() if k != step_key and k], file=file)
    _count(file, no_step, late, end_step, res)


def _count(file: str, no_step: int, late: int, end_step: int | None, res: ReadResult) -> None:
    if no_step:
        res.cleanups.append(Cleanup("dropped_record", f"{no_step} record(s) without a step skipped",
                                    file=file, count=no_step))
    if late and end_step is not None:  # records are late only after an end step was seen
        res.cleanups.append(post_training_eval_cleanup(file, late, end_step))


def _to_summary(rec: dict[str, Any], step_key: str, res: ReadResult) -> None:
    for k, v in rec.items():
        fv = to_float(v) if not isinstance(v, bool) else None
        if k not in (step_key, "epoch") and fv is not None:
            res.summary[k] = fv
    if "train_runtime" in res.summary:
        res.meta["train_runtime"] = res.summary["train_runtime"]
