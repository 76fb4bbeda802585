"""Reader for TensorBoard scalars exported to CSV, in its two layouts.

* Long export (tbparse / pandas / `tensorboard.backend.event_processing`, often kept under
  the event file's name, ``events.out.tfevents....csv``): header ``wall_time,step,tag,value``
  (``wall_time`` optional), one row per scalar, every tag in one file.
* TensorBoard UI download, one file per tag: header ``Wall time,Step,Value``; the tag is in
  the file name, ``run-<run>-tag-<tag>.csv`` (the UI writes ``/`` in a tag as ``_``, e.g.
  ``run-.-tag-eval_loss.csv``). When the files of one folder come from several runs
  (Keras's ``train``/``validation``), series are named ``<run>/<tag>``.

Tags keep their written names (``eval/loss``, ``train/loss``). The Hugging Face Trainer's
end-of-training scalars (``train/train_runtime``, ``train/train_loss``, ``train/total_flos``...)
are a run summary (`summary`), not curves; a point written after that summary (by wall
time) at a step the summary covers is the final ``trainer.evaluate()`` and also goes to
the summary. A row with a blank tag or value is counted (``dropped_record``). Wall times are kept.
Values are float32 (TensorBoard's storage).
"""

from __future__ import annotations

import math
from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.text import (PointCollector, as_step, cell_value, csv_files, find_column, header_of,
                                 is_hf_summary_tag, post_training_eval_cleanup)
from logsage.ingest.readers.base import ReadContext, ReadResult

FORMAT = "tb-csv"
DESCRIPTION = "TensorBoard scalars exported to CSV (long wall_time,step,tag,value or the UI's per-tag files)"
PRECISION = "float32"

_UI_HEADER = ["wall time", "step", "value"]
_SAME_LOG_CALL_S = 0.5


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    cols = [c.lower() for c in header_of(head, path)]
    return {"step", "tag", "value"} <= set(cols) or cols == _UI_HEADER


def _ui_tag(path: Path) -> tuple[str, str]:
    """(run, tag) from a UI export's file name; the whole stem is the tag when the name has no ``-tag-``."""
    stem = path.stem
    if stem.startswith("run-") and "-tag-" in stem:
        run, _, tag = stem[len("run-"):].rpartition("-tag-")
        return run, tag
    return "", stem


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    rows: list[tuple[str, str, int, float | str, float | None]] = []  # (file, tag, step, value, wall time)
    blank: dict[str, int] = {}
    ui_runs = {_ui_tag(p)[0] for p in paths}
    for path, file, table in csv_files(paths, res):
        low = [h.lower() for h in table.header]
        step_col, value_col = find_column(table.header, ("step",)), find_column(table.header, ("value",))
        wall_col = find_column(table.header, ("wall_time", "wall time"))
        tag_col = find_column(table.header, ("tag",))
        if step_col is None or value_col is None or (tag_col is None and low != _UI_HEADER):
            raise IngestError(
                f"{path}: header {','.join(table.header)} is not a TensorBoard scalar export "
                "(wall_time,step,tag,value or Wall time,Step,Value); pass --format to pick another reader")
        run, ui_tag = _ui_tag(path)
        fixed_tag = None if tag_col is not None else (f"{run}/{ui_tag}" if len(ui_runs) > 1 else ui_tag)
        for lineno, cells in table.rows:
            step = as_step(cells[step_col])
            if step is None:
                raise IngestError(f"{path}:{lineno}: step {cells[step_col]!r} is not an integer; "
                                  "repair that row and read it again")
            wall = cell_value(cells[wall_col]) if wall_col is not None else None
            tag = fixed_tag if tag_col is None else cells[tag_col].strip()  # fixed_tag is set iff there is no tag column
            value = cell_value(cells[value_col])
            if not tag or value is None:  # one row is one scalar: a row without one is counted, not lost
                blank[file] = blank.get(file, 0) + 1
                continue
            rows.append((file, tag, step, value, wall if isinstance(wall, float) else None))
    for file, n in blank.items():
        res.cleanups.append(Cleanup("dropped_record", f"{n} row(s) with a blank tag or value skipped",
                                    file=file, count=n))
    _collect(rows, res)
    return res


def _collect(rows: list[tuple[str, str, int, float | str, float | None]], res: ReadResult) -> None:
    summary_tags = {r[1] for r in rows if is_hf_summary_tag(r[1])}
    summary_rows = [r for r in rows if r[1] in summary_tags]
    end_step = max((r[2] for r in summary_rows), default=None)
    end_wall = max((r[4] for r in summary_rows if r[4] is not None), default=None)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    late: dict[str, int] = {}
    for file, tag, step, value, wall in rows:
        after_end = late_call = False
        # end_wall is set only when there are summary rows, so end_step is set then too
        if (end_wall is not None and end_step is not None and wall is not None
                and wall > end_wall and step <= end_step):
            after_end = True
            # Scalars of the summary's own log call (its train/epoch) come microseconds after it.
            late_call = wall > end_wall + _SAME_LOG_CALL_S
        if after_end or tag in summary_tags:
            if isinstance(value, float):
                res.summary[tag] = value
            if late_call:
                late[file] = late.get(file, 0) + 1
            continue
        if isinstance(value, float):
            points.add(tag, step, value, file=file, wall_time=wall)
        else:  # text where a number belongs
            points.ignore(tag, file=file, example=value)
    for file, n in late.items():
        assert end_step is not None  # a record is late only after the summary's step
        res.cleanups.append(post_training_eval_cleanup(file, n, end_step))
    if "train/train_runtime" in res.summary and math.isfinite(res.summary["train/train_runtime"]):
        res.meta["train_runtime"] = res.summary["train/train_runtime"]
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
