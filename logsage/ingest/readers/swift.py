"""Reader for ms-swift's `logging.jsonl` (ms-swift 2.x and 3.x), one JSON object per log call.

Quirks handled:

* the step is ``"global_step": 1`` (2.x) or only inside ``"global_step/max_steps": "10/438"``
  (3.x); the second number becomes ``meta["max_steps"]``;
* strings where numbers are expected: ``"percentage": "2.28%"`` (dropped: it is step/max_steps),
  ``"elapsed_time": "10m 52s"`` (becomes the points' wall times, in seconds since the run
  started, ``meta["wall_time_origin"] = "run_start"``,
  and ``meta["elapsed_seconds_last"]``), ``"remaining_time"`` (dropped);
* 2.x writes every record twice (two writers; the copies differ only in
  ``train_speed(iter/s)`` / ``eval_runtime``) and a resumed run re-logs steps with new
  values: the later write wins, both are recorded as ``duplicates`` cleanups;
* the train summary record (``train_runtime``, ``train_loss``...) goes to `summary`; the final
  summary line (``last_model_checkpoint``, ``best_model_checkpoint``, ``best_metric``,
  ``log_history``...) goes to `meta`. Its embedded ``log_history`` repeats the points of
  this file and is not read again.

Precision: ms-swift rounds every logged value to 8 decimal places (``9.987e-05`` for a
learning rate of 9.987144e-05), so the reader ranks as ``rounded`` and says so in a
``rounded`` cleanup; a trainer_state.json or event file of the same run wins for metrics
both hold.
"""

from __future__ import annotations

from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.text import (HF_SUMMARY_KEYS, PointCollector, add_progress_record, as_step, natural_key, read_jsonl,
                                  starts_json_object, whole_first_line)
from logsage.ingest.readers.base import ReadContext, ReadResult, to_float

FORMAT = "swift"
DESCRIPTION = "ms-swift logging.jsonl (2.x and 3.x)"
PRECISION = "rounded"

_STEP_OF_MAX = "global_step/max_steps"
# Fields consumed into the step, wall times or meta rather than becoming series.
_BOOKKEEPING = {_STEP_OF_MAX, "global_step", "percentage", "elapsed_time", "remaining_time"}
# Keys of the end-of-run line that ms-swift writes after training (2.x and 3.x).
_FINAL_KEYS = {"last_model_checkpoint", "best_model_checkpoint", "log_history", "model_info",
               "model_parameter_info"}
_FINAL_META = ("last_model_checkpoint", "best_model_checkpoint", "best_metric", "model_info",
               "model_parameter_info", "train_dataset", "val_dataset")


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() not in (".jsonl", ".json", ".log", ".txt"):
        return False
    if not starts_json_object(head):
        return False
    head = whole_first_line(head, path)  # a first evaluation of many datasets can outgrow 4 KiB
    if b'"current_steps"' in head:  # LLaMA-Factory's trainer_log.jsonl
        return False
    if b'"global_step/max_steps"' in head:
        return True
    if b'"global_step"' not in head:
        return False
    if b'"train_speed(iter/s)"' in head or b'"memory(GiB)"' in head:
        return True
    # ms-swift's own file name, whatever its first record is (an eval at step 0, a summary-only file);
    # a Trainer's trainer_state.json (one JSON document, not lines) is never called logging.jsonl.
    return path.name == "logging.jsonl"


def _step_of(rec: dict, res: ReadResult) -> int | None:
    pair = rec.get(_STEP_OF_MAX)
    if isinstance(pair, str) and "/" in pair:
        done, _, total = pair.partition("/")
        total_steps = as_step(total)
        if total_steps:
            res.meta["max_steps"] = total_steps
        return as_step(done)
    return as_step(rec.get("global_step"))


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path in sorted(paths, key=natural_key):
        file = str(path)
        res.files.append(file)
        records = read_jsonl(path, res_warnings=res.warnings, cleanups=res.cleanups)
        no_step = 0
        for lineno, rec in records:
            if _FINAL_KEYS & rec.keys():
                _read_final_line(rec, res)
                continue
            step = _step_of(rec, res)
            if step is None:
                no_step += 1
                continue
            if HF_SUMMARY_KEYS & rec.keys() and not any(k.startswith("eval_") for k in rec):
                for k, v in rec.items():
                    fv = to_float(v)
                    if k not in _BOOKKEEPING and k != "epoch" and fv is not None:
                        res.summary[k] = fv
                if "train_runtime" in res.summary:
                    res.meta["train_runtime"] = res.summary["train_runtime"]
                continue
            add_progress_record(points, res, step, rec, skip=_BOOKKEEPING, file=file)
        if no_step:
            res.cleanups.append(Cleanup("dropped_record", f"{no_step} record(s) without a global_step skipped",
                                        file=file, count=no_step))
    series, cleanups = points.build()
    if not series and not res.summary:
        raise IngestError(f"{paths[0]}: holds no logged values; check that it is ms-swift's logging.jsonl")
    res.series, res.cleanups = series, res.cleanups + cleanups
    res.cleanups.append(Cleanup(
        "rounded", "ms-swift rounds logged values to 8 decimal places; a trainer_state.json or event file "
        "of the same run wins for the metrics both hold", file="; ".join(res.files)))
    return res


def _read_final_line(rec: dict, res: ReadResult) -> None:
    for k in _FINAL_META:
        if rec.get(k) is not None:
            res.meta[k] = rec[k]
    train_time = rec.get("train_time")  # 2.x: {"train_runtime": ..., "n_train_samples": ...}
    if isinstance(train_time, dict) and to_float(train_time.get("train_runtime")) is not None:
        res.meta.setdefault("train_runtime", to_float(train_time["train_runtime"]))
    if as_step(rec.get("global_step")) is not None:
        res.meta["global_step"] = as_step(rec["global_step"])
    if isinstance(rec.get("log_history"), list):
        res.meta["summary_log_history_records"] = len(rec["log_history"])
