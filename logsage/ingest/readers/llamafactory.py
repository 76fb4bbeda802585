"""Reader for LLaMA-Factory's `trainer_log.jsonl` (its LogCallback: one JSON object per log/eval call).

Record kinds, all keyed by ``current_steps``: train lines (``loss``, ``lr`` or ``learning_rate``
depending on the version, ``epoch``, sometimes ``throughput``/``total_tokens``), eval lines
(``eval_loss``, at the same step as a train line), ``predict_*`` lines, and a bare progress
line at the end (``current_steps == total_steps``, no loss). Quirks handled:

* ``total_steps`` becomes ``meta["max_steps"]``; ``percentage`` and ``remaining_time`` are
  derived values and are dropped;
* ``elapsed_time`` is Python's ``str(timedelta)`` (``"0:00:32"``, ``"9 days, 18:32:24"``): it
  becomes the points' wall times in seconds since the run started (1 s resolution) and
  ``meta["elapsed_seconds_last"]`` (``meta["wall_time_origin"] = "run_start"``), so cost analysis
  can use it;
* ``eval_loss: null`` on rows (LLaMA-Factory#3071) and all-null final rows (#774) give no
  point and are counted in a ``dropped_record`` cleanup;
* lines re-logged after a resume: the later write wins, counted as ``duplicates``.

Values are float64 (train ``loss`` is rounded to 4 decimals by the trainer, as in
trainer_state.json).
"""

from __future__ import annotations

from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.text import PointCollector, add_progress_record, as_step, natural_key, read_jsonl, starts_json_object
from logsage.ingest.readers.base import ReadContext, ReadResult

FORMAT = "llamafactory"
DESCRIPTION = "LLaMA-Factory trainer_log.jsonl"
PRECISION = "float64"

_BOOKKEEPING = {"current_steps", "total_steps", "percentage", "elapsed_time", "remaining_time"}


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() not in (".jsonl", ".json", ".log", ".txt"):
        return False
    return starts_json_object(head) and b'"current_steps"' in head and b'"total_steps"' in head


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path in sorted(paths, key=natural_key):
        file = str(path)
        res.files.append(file)
        no_step = 0
        for _, rec in read_jsonl(path, res_warnings=res.warnings, cleanups=res.cleanups):
            step = as_step(rec.get("current_steps"))
            if step is None:
                no_step += 1
                continue
            total = as_step(rec.get("total_steps"))
            if total:
                res.meta["max_steps"] = total
            add_progress_record(points, res, step, rec, skip=_BOOKKEEPING, file=file)
        if no_step:
            res.cleanups.append(Cleanup("dropped_record", f"{no_step} record(s) without current_steps skipped",
                                        file=file, count=no_step))
    series, cleanups = points.build()
    if not series:
        raise IngestError(f"{paths[0]}: holds no logged values (only progress lines); "
                          "LLaMA-Factory writes loss lines every logging_steps - check the run's settings")
    res.series = series
    res.cleanups.extend(cleanups)
    return res
