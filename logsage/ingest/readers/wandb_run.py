"""Reader for a W&B run folder's binary run file (``wandb/run-*/run-<id>.wandb``, ``wandb/latest-run/``,
an offline run), with no ``wandb`` import, no network and no account.

The history of a W&B run lives only in ``run-<id>.wandb`` (framing and fields in
`logsage.ingest.wandb_store`): one history record per ``wandb.log`` call, each item a key
(``nested_key`` joined with ``/`` for a nested dict) and its value as JSON (``NaN``,
``Infinity``, ``-Infinity`` as W&B writes them). Of the folder's other files,
``files/wandb-summary.json`` is the run summary (``History.summary``, never points),
``files/output.log`` is the console (another reader's), the rest is configuration.

Step: the user's step metric when ``wandb.define_metric(..., step_metric=S)`` names one for a
key (the Hugging Face integration does ``define_metric("*", step_metric="train/global_step")``),
its value in the same row, or the latest one before it as W&B's ``step_sync`` does; else
``_step`` (the number of the log call). Wall times: ``_timestamp``. A metric's ``goal`` from
``define_metric`` is kept in ``meta["wandb_goals"]``. Non-numeric values (media, tables,
histograms) are counted as skipped. The run's summary records (``run.summary``, where HF's
integration puts ``train_runtime``, ``train_loss``...) and ``files/wandb-summary.json`` go to
``summary``; evaluations logged after HF's end-of-training summary at a step the training
covered (the final ``trainer.evaluate()``) are summaries too, as in the W&B CSV reader. Several run files are sessions of one resumed run when they share its id (read in
order, a later write of a step wins); files of different runs are refused. Damage (a bad checksum, a truncated tail from a killed run) keeps every record
before it and after it that can be framed, with a warning and a ``truncated`` /
``dropped_record`` cleanup counting what was lost. W&B keeps float64.
"""

from __future__ import annotations

import fnmatch
import json
import math
from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.core.names import canonical_name, kind_of
from logsage.ingest import wandb_store as store
from logsage.ingest.readers.base import ReadContext, ReadResult, loads_lenient, to_float
from logsage.ingest.text import (HF_SUMMARY_KEYS, PointCollector, is_hf_summary_tag, natural_key,
                                  post_training_eval_cleanup)

FORMAT = "wandb-run"
DESCRIPTION = "W&B run folder: the history records of its binary run-<id>.wandb file (no wandb needed)"
PRECISION = "float64"

_INTERNAL = {"_step", "_runtime", "_timestamp"}


def claims(path: Path, head: bytes) -> bool:
    return path.suffix == ".wandb" and head.startswith(store.IDENT)


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    ids: dict[str, list[str]] = {}
    for path in sorted(paths, key=natural_key):  # a resumed run: one file per session, in run order
        res.files.append(str(path))
        run_id = _read_file(path, points, res)
        ids.setdefault(run_id or path.stem.removeprefix("run-"), []).append(path.parent.name)
        summary = path.parent / "files" / "wandb-summary.json"
        if summary.is_file():
            _read_summary(summary, res)
    if len(ids) > 1:  # sessions of one run (a resume) share its id; different ids are different runs
        shown = "; ".join(f"{i} in {', '.join(folders)}" for i, folders in ids.items())
        raise IngestError(f"{ctx.run_root or paths[0].parent}: holds {len(ids)} different W&B runs ({shown}); a path is "
                          "one run - pass each run folder (wandb/run-*/) as its own PATH")
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res


def _read_file(path: Path, points: PointCollector, res: ReadResult) -> str | None:
    """Add one run file's history to `points`; returns the run's id (None when the file does not say)."""
    run_id: str | None = None
    try:
        data = path.read_bytes()
    except OSError as e:
        raise IngestError(f"{path}: cannot be read ({e.strerror}); check the path and its permissions") from None
    damage = store.Damage()
    metrics: list[store.MetricDef] = []
    rows: list[store.HistoryRow] = []
    summary: dict[str, str] = {}
    train_end: int | None = None  # rows logged before HF's end-of-training summary
    bad_messages = 0
    try:
        for offset, record in store.scan(data, damage):
            try:
                kind, payload = store.record_kind(record)
                if payload is None:  # kind "other": nothing logsage reads
                    continue
                if kind == "history":
                    rows.append(store.history_row(payload))
                elif kind == "summary":
                    update = store.summary_update(payload)
                    summary.update(update)
                    if train_end is None and HF_SUMMARY_KEYS & update.keys():
                        train_end = len(rows)  # HF puts train_runtime... in run.summary, not the history
                elif kind == "metric":
                    metrics.append(store.metric_def(payload))
                elif kind == "run":
                    for k, v in store.run_info(payload).items():
                        res.meta.setdefault(f"wandb_{k}", v)
                        run_id = v if k == "run_id" else run_id
            except store.ProtoError as e:
                bad_messages += 1
                damage._mark(offset, f"record at byte {offset} is not a valid message ({e})")
    except store.NotAWandbFile as e:
        raise IngestError(f"{path}: not a W&B run file ({e}); give the run folder W&B wrote "
                          "(wandb/run-*/ or wandb/latest-run/), or pass --format for another log") from None
    _report_damage(path, data, damage, bad_messages, len(rows), res)
    _add_rows(path, rows, metrics, points, res, train_end)
    for key, text in summary.items():
        number = _number(_value(text))
        if number is not None and not key.startswith("_"):
            res.summary[key] = number
    for key in ("train/train_runtime", "train_runtime"):
        if key in res.summary:
            res.meta["train_runtime"] = res.summary[key]
    return run_id


def _report_damage(path: Path, data: bytes, damage: store.Damage, bad_messages: int, n_rows: int,
                   res: ReadResult) -> None:
    file = str(path)
    if damage.truncated_at is not None:
        lost = len(data) - damage.truncated_at
        res.warnings.append(f"{path}: ends mid-record at byte {damage.truncated_at} (the run was killed, or the copy "
                            f"is incomplete); read the {n_rows} history record(s) before it")
        res.cleanups.append(Cleanup("truncated", f"last record cut off at byte {damage.truncated_at} "
                                    f"({lost} byte(s)) skipped", file=file, count=1))
    skipped = damage.bad_chunks + damage.orphan_fragments + bad_messages
    if skipped:
        where = "; ".join(damage.notes)
        res.warnings.append(f"{path}: {skipped} damaged record(s) skipped ({where}); the file is corrupt - "
                            "re-copy it from the run's machine if you can")
        res.cleanups.append(Cleanup("dropped_record", f"{skipped} damaged record(s) skipped (first at byte "
                                    f"{damage.first_offset})", file=file, count=skipped))


def _step_metric_of(key: str, metrics: list[store.MetricDef]) -> str | None:
    """The step metric W&B plots `key` against: an exact define_metric wins over a glob."""
    for m in metrics:
        if m.name == key and m.step_metric:
            return m.step_metric
    for m in metrics:
        if m.glob and m.step_metric and fnmatch.fnmatchcase(key, m.glob):
            return m.step_metric
    return None


def _value(text: str):
    try:
        return json.loads(text)  # accepts NaN / Infinity / -Infinity, as W&B writes them
    except ValueError:
        return text


def _add_rows(path: Path, rows: list[store.HistoryRow], metrics: list[store.MetricDef],
              points: PointCollector, res: ReadResult, train_end: int | None) -> None:
    file = str(path)
    goals = {m.name or m.glob: m.goal for m in metrics if m.goal}
    if goals:
        res.meta.setdefault("wandb_goals", {}).update(goals)
    step_metrics = {m.step_metric for m in metrics if m.step_metric}
    step_of: dict[str, str | None] = {}
    last_step_value: dict[str, int] = {}
    end_step: int | None = None
    no_step = late = 0
    last_call_step: int | None = None
    for index, row in enumerate(rows):
        if index == train_end and end_step is None:  # the training ended here: later evaluations are summaries
            end_step = max(last_step_value.values(), default=last_call_step)
        values = {k: _value(v) for k, v in row.items.items()}
        for s in step_metrics:  # step_sync: the latest value of each step metric
            st = _as_int(values.get(s))
            if st is not None:
                last_step_value[s] = st
        call_step = _as_int(values.get("_step"))
        if call_step is None:
            call_step = row.step
        last_call_step = call_step if call_step is not None else last_call_step
        wall = values.get("_timestamp")
        wall = float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) else None
        if isinstance(values.get("_runtime"), (int, float)):
            res.meta["wandb_runtime_last"] = float(values["_runtime"])
        summary_row = any(is_hf_summary_tag(k) for k in values)
        # An evaluation logged after the training's end (HF's final trainer.evaluate()): a summary row.
        eval_row = end_step is not None and any(kind_of(canonical_name(k)) == "eval" for k in values)
        late_row = False
        for key, value in values.items():
            if key in _INTERNAL or key in step_metrics:
                continue
            if key not in step_of:
                step_of[key] = _step_metric_of(key, metrics)
            sm = step_of[key]
            step = last_step_value.get(sm) if sm else call_step
            if step is None:
                no_step += 1
                continue
            v = _number(value)
            if v is None:
                points.ignore(key, file=file, example=value)
                continue
            if summary_row or (eval_row and end_step is not None and step <= end_step):  # (eval_row implies end_step)
                res.summary[key] = v
                late_row = late_row or not summary_row
                continue
            points.add(key, step, v, file=file, wall_time=wall)
        late += late_row
        if summary_row:
            end_step = max((last_step_value.get(s, -1) for s in step_metrics), default=call_step)
            if end_step is None or end_step < 0:
                end_step = call_step
    if no_step:
        res.cleanups.append(Cleanup("dropped_record", f"{no_step} value(s) logged before their step metric had a "
                                    "value skipped", file=file, count=no_step))
    if late and end_step is not None:
        res.cleanups.append(post_training_eval_cleanup(file, late, end_step))


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _read_summary(path: Path, res: ReadResult) -> None:
    """``files/wandb-summary.json``: the run's final values (a summary, never points of a curve)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        res.warnings.append(f"{path}: cannot be read ({e.strerror}); the run summary is left out")
        return
    if not text.strip():
        return
    doc = loads_lenient(text, file=str(path))
    if not isinstance(doc, dict):
        res.warnings.append(f"{path}: not a JSON object; the run summary is left out")
        return
    for key, value in doc.items():
        if key in _INTERNAL:
            continue
        v = to_float(value) if not isinstance(value, str) else None
        if v is not None:
            res.summary.setdefault(key, v)
