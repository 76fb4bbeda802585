"""Reader for Weights & Biases history exported to CSV, in its two layouts.

* ``run.history()`` / ``scan_history()`` dumped with pandas: ``_step``, ``_runtime``,
  ``_timestamp`` plus one column per logged key (``train/loss``, ``eval/loss``,
  ``train/global_step``...). The step is ``train/global_step`` when the file has it (the
  Hugging Face integration logs it with every call, and ``_step`` counts log calls, not
  optimizer steps), else ``_step``. Wall times: ``_timestamp`` (seconds since the epoch),
  else ``_runtime`` (seconds since the run started, ``meta["wall_time_origin"] = "run_start"``);
  ``meta["wandb_runtime_last"]`` keeps the last ``_runtime``. A pandas index column (no name) is
  not a metric (its values are counted in a ``dropped_record`` cleanup).
* A panel's "Export CSV" (``wandb_export_*.csv``): ``Step,"<run> - eval/loss",
  "<run> - eval/loss__MIN","<run> - eval/loss__MAX"``. The run name is stripped; the
  ``__MIN``/``__MAX`` companions (the panel's smoothing band) are dropped, recorded. A
  panel of several runs is several runs: an `IngestError` lists them.

HF's end-of-training scalars (``train/train_runtime``...) go to `summary`, and evaluations
logged after them at a step they cover (the final ``trainer.evaluate()``) too. W&B keeps
float64.
"""

from __future__ import annotations

from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.text import (PointCollector, as_step, cell_value, csv_files, find_column, header_of,
                                 is_hf_summary_tag, post_training_eval_cleanup, unnamed_cleanup)
from logsage.ingest.readers.base import ReadContext, ReadResult

FORMAT = "wandb"
DESCRIPTION = "Weights & Biases history CSV (run.history() dump or a panel's Export CSV)"
PRECISION = "float64"

_INTERNAL = ("_step", "_runtime", "_timestamp")
_PANEL_STEP = ("step", "train/global_step", "global_step", "_step")
_BAND = ("__MIN", "__MAX")


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    cols = header_of(head, path)
    if "_step" in cols or ("_runtime" in cols and "_timestamp" in cols):
        return True
    return any(" - " in c and c.endswith(_BAND) for c in cols) or (
        path.name.startswith("wandb_export") and any(" - " in c for c in cols))


def _is_panel(header: list[str]) -> bool:
    return "_step" not in header and any(" - " in c for c in header[1:])


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path, _, table in csv_files(paths, res):
        if _is_panel(table.header):
            _read_panel(path, table, points, res)
        else:
            _read_history(path, table, points, res)
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res


def _read_panel(path, table, points: PointCollector, res: ReadResult) -> None:
    file = str(path)
    if table.header[0].lower() not in _PANEL_STEP:
        raise IngestError(f"{path}: the panel's x-axis is {table.header[0]!r}; export it again with Step "
                          "(or train/global_step) as the x-axis")
    runs: dict[str, None] = {}
    columns: list[tuple[int, str]] = []
    bands = 0
    for i, col in enumerate(table.header[1:], start=1):
        if col.endswith(_BAND):
            bands += 1
            continue
        run, sep, metric = col.rpartition(" - ")
        runs.setdefault(run if sep else "", None)
        columns.append((i, metric if sep else col))
    if len(runs) > 1:
        raise IngestError(f"{path}: a panel export of {len(runs)} runs ({', '.join(runs)}); a path is one run - "
                          "export one run's panel, or its run.history()")
    if next(iter(runs), ""):
        res.meta["run_name"] = next(iter(runs))
    if bands:
        res.cleanups.append(Cleanup("dropped_record", f"{bands} __MIN/__MAX column(s) (the panel's smoothing band, "
                                    "not logged values) skipped", file=file, count=bands))
    no_step = 0
    for lineno, cells in table.rows:
        step = _step(path, lineno, cells[0])
        if step is None:
            no_step += sum(1 for i, _ in columns if cell_value(cells[i]) is not None)
            continue
        for i, name in columns:
            points.add_cell(name, step, cells[i], file=file)
    if no_step:
        res.cleanups.append(Cleanup("dropped_record", f"{no_step} value(s) in row(s) with a blank step skipped",
                                    file=file, count=no_step))


def _step(path, lineno: int, cell: str) -> int | None:
    step = as_step(cell)
    if step is None and cell_value(cell) is not None:
        raise IngestError(f"{path}:{lineno}: step {cell!r} is not an integer; repair that row and read it again")
    return step


def _read_history(path, table, points: PointCollector, res: ReadResult) -> None:
    file = str(path)
    header = table.header
    step_col = find_column(header, ("train/global_step",))
    step_name = "train/global_step"
    if step_col is None:
        step_col, step_name = find_column(header, ("_step",)), "_step"
    if step_col is None:
        raise IngestError(f"{path}: no _step or train/global_step column; export the run with run.history() "
                          "or scan_history(), or pass --format wide")
    wall_col = find_column(header, ("_timestamp",))
    runtime_col = find_column(header, ("_runtime",))
    if wall_col is None and runtime_col is not None:
        wall_col = runtime_col
        res.meta["wall_time_origin"] = "run_start"  # _runtime: seconds since the run started, not the epoch
    skip = {step_col, wall_col, runtime_col} | {find_column(header, (c,)) for c in _INTERNAL}
    metric_cols = [(i, h) for i, h in enumerate(header) if i not in skip and h]
    unnamed = unnamed_cleanup(table, file=file, skip={i for i in skip if i is not None})
    if unnamed is not None:
        res.cleanups.append(unnamed)
    summary_cols = [i for i, h in metric_cols if is_hf_summary_tag(h)]
    end_step: int | None = None
    no_step = late = 0
    steps: list[int] = []
    rows: list[list[str]] = []
    walls: list[float | None] = []
    for lineno, cells in table.rows:
        step = _step(path, lineno, cells[step_col])
        if step is None:
            no_step += 1
            continue
        wall = cell_value(cells[wall_col]) if wall_col is not None else None
        wall = wall if isinstance(wall, float) else None
        if runtime_col is not None:
            runtime = cell_value(cells[runtime_col])
            if isinstance(runtime, float):
                res.meta["wandb_runtime_last"] = runtime
        summary = any(cell_value(cells[i]) is not None for i in summary_cols)
        if summary:
            end_step = step
        if summary or (end_step is not None and step <= end_step):
            late += 0 if summary else 1
            for i, h in metric_cols:
                v = cell_value(cells[i])
                if isinstance(v, float):
                    res.summary[h] = v
            continue
        steps.append(step)
        rows.append(cells)
        walls.append(wall)
    points.note_rows(steps, lambda r: [h for i, h in metric_cols if cell_value(rows[r][i]) is not None], file=file)
    for i, h in metric_cols:  # text (a W&B media/table reference...) is counted as skipped
        points.add_column(h, steps, [cells[i] for cells in rows], file=file, walls=walls)
    if no_step:
        res.cleanups.append(Cleanup("dropped_record", f"{no_step} row(s) without {step_name} skipped",
                                    file=file, count=no_step))
    if late and end_step is not None:  # records are late only after an end step was seen
        res.cleanups.append(post_training_eval_cleanup(file, late, end_step))
    if "train/train_runtime" in res.summary:
        res.meta["train_runtime"] = res.summary["train/train_runtime"]
