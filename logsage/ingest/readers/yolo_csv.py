"""Reader for Ultralytics YOLO ``results.csv`` (YOLOv5 ``runs/train/exp/``, YOLOv8+ ``runs/detect/train/``).

The writer (``BaseTrainer.save_metrics`` in ultralytics; ``train.py`` in YOLOv5) appends one
row per epoch: ``epoch[,time],train/<x>_loss...,metrics/...,val/<x>_loss...,lr/pg0...``
(YOLOv5: ``metrics/mAP_0.5``, ``metrics/mAP_0.5:0.95``, ``x/lr0``). Values are ``%.6g``
(rounded). Quirks handled:

* YOLOv5 and ultralytics 8.0.x right-align names and values with leading spaces
  (``"                  epoch"``) and end rows with a comma: names and cells are stripped and
  a trailing unnamed empty column is ignored;
* the epoch: 8.1+ writes ``epoch + 1`` (first row 1, with a ``time`` column), YOLOv5/8.0.x
  the 0-based index (first row 0). The step is the number of epochs completed (``epoch + 1``
  for a file whose first epoch is 0), like Keras; ``meta["step_unit"] = "epoch"``;
* kinds and directions: ``val/*_loss`` are evaluations (min), ``metrics/*`` (mAP50-95, mAP50,
  precision, recall, top-1/top-5 accuracy) evaluations (max), ``train/*`` training series,
  ``lr/pg*`` / ``x/lr*`` and ``time`` bookkeeping;
* the primary metric is ``metrics/mAP50-95(B)`` (or ``metrics/mAP_0.5:0.95``, or top-1 accuracy
  for classification), what YOLO reports as its headline;
* ``fitness``, a derived evaluation series (max): Ultralytics picks ``best.pt`` by the largest
  fitness, for each task ``0.1 * mAP50 + 0.9 * mAP50-95`` (YOLOv5 and ultralytics before 8.4),
  summed over the box/mask/pose groups present ((B), (M), (P)); for classification the mean of
  top-1 and top-5 accuracy. Ultralytics 8.4 weights mAP50-95 alone (``[0, 0, 0, 1]``), so there
  its fitness is ``metrics/mAP50-95(B)`` itself: pass ``--metric "metrics/mAP50-95(B)"`` to
  replay what a 8.4 run selected. Fitness is computed only at epochs where all its terms exist.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.core.names import canonical_name
from logsage.ingest.text import PointCollector, as_step, cell_value, csv_files, header_of
from logsage.ingest.readers.base import ReadContext, ReadResult

FORMAT = "yolo"
DESCRIPTION = "Ultralytics YOLO results.csv (YOLOv5, YOLOv8+; step = epochs completed; derived fitness)"
PRECISION = "rounded"

_MAP = re.compile(r"^metrics/mAP(50|_0\.5)(\([A-Z]\))?$")
_MAP_95 = re.compile(r"^metrics/mAP(50-95|_0\.5:0\.95)(\([A-Z]\))?$")
_PRIMARY = ("metrics/mAP50-95(B)", "metrics/mAP_0.5:0.95", "metrics/mAP50-95(M)", "metrics/mAP50-95(P)",
            "metrics/accuracy_top1")


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    cols = header_of(head, path)
    return (len(cols) > 2 and cols[0] == "epoch" and any(c.startswith("metrics/") for c in cols)
            and any(c.startswith("train/") and c.endswith("loss") for c in cols))


def _canonical_and_kind(name: str) -> tuple[str, str]:
    if name.startswith("val/"):
        return canonical_name(name), "eval"
    if name.startswith("metrics/"):
        return "eval_" + re.sub(r"[\s\-:]+", "_", name[len("metrics/"):]).lower(), "eval"
    if name.startswith(("lr/", "x/lr")) or name in ("time", "epoch"):
        return canonical_name(name), "other"
    return canonical_name(name), "train"


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    res.meta["step_unit"] = "epoch"
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path, file, table in csv_files(paths, res):
        header = table.header
        if not header or header[0] != "epoch":
            raise IngestError(f"{path}: first column is {header[0]!r}, not 'epoch'; not an Ultralytics "
                              "results.csv - pass --format to pick another reader")
        epochs: list[int] = []
        rows: list[list[str]] = []
        for lineno, cells in table.rows:
            epoch = as_step(cells[0].strip())
            if epoch is None or epoch < 0:
                raise IngestError(f"{path}:{lineno}: epoch {cells[0].strip()!r} is not a non-negative integer; "
                                  "repair that row and read it again")
            epochs.append(epoch)
            rows.append(cells)
        offset = 1 if epochs and epochs[0] == 0 else 0  # YOLOv5 / 8.0.x write the 0-based index
        steps = [e + offset for e in epochs]
        stray = 0
        columns = {}
        for i, name in enumerate(header):
            if not name:  # the trailing comma of YOLOv5 / 8.0.x rows
                stray += sum(1 for c in rows if c[i].strip())
                continue
            cells = [c[i].strip() for c in rows]
            columns[name] = cells
        order = sorted(columns, key=lambda n: (n not in _PRIMARY, _PRIMARY.index(n) if n in _PRIMARY else 0))
        for name in order:
            canonical, kind = _canonical_and_kind(name)
            points.name_as(name, canonical=canonical, kind=kind)
            points.add_column(name, steps, columns[name], file=file)
        if stray:
            res.cleanups.append(Cleanup("dropped_record", f"{stray} value(s) in a column with no name skipped",
                                        file=file, count=stray))
        _add_fitness(columns, steps, points, res, file)
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res


def _fitness_terms(columns: dict[str, list[str]]) -> list[tuple[float, str]]:
    """(weight, column) pairs of Ultralytics' fitness for the metric groups in this file."""
    if "metrics/accuracy_top1" in columns and "metrics/accuracy_top5" in columns:
        return [(0.5, "metrics/accuracy_top1"), (0.5, "metrics/accuracy_top5")]
    terms = []
    for name in columns:
        m = _MAP_95.match(name)
        if m:
            group = m[2] or ""
            fifty = next((n for n in columns if (mm := _MAP.match(n)) and (mm[2] or "") == group), None)
            if fifty is not None:
                terms += [(0.1, fifty), (0.9, name)]
    return terms


def _add_fitness(columns: dict[str, list[str]], steps: list[int], points: PointCollector, res: ReadResult,
                 file: str) -> None:
    terms = _fitness_terms(columns)
    if not terms:
        return
    values: list[str] = []
    missing = 0
    for r in range(len(steps)):
        cells = [cell_value(columns[c][r]) for _, c in terms]
        numbers = [v for v in cells if isinstance(v, float)]
        if len(numbers) != len(cells):
            values.append("")
            missing += 1
            continue
        total = math.fsum(w * v for (w, _), v in zip(terms, numbers))
        values.append(repr(total))
    points.name_as("fitness", canonical="eval_fitness", kind="eval")
    points.add_column("fitness", steps, values, file=file)
    formula = " + ".join(f"{w:g}*{c}" for w, c in terms)
    res.meta["fitness"] = formula
    note = f"fitness = {formula} (Ultralytics' best.pt criterion before 8.4; derived, higher is better)"
    if missing:
        note += f"; {missing} epoch(s) without all terms have no fitness"
    res.cleanups.append(Cleanup("derived", note, file=file, metric="fitness", count=missing or None))
