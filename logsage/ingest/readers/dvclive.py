"""Reader for DVCLive's metric history (``dvclive/plots/metrics/**/<name>.tsv`` + ``dvclive/metrics.json``).

``Live.log_metric("train/loss", v)`` appends to ``plots/metrics/train/loss.tsv`` a row
``step<TAB>value`` under the header ``step<TAB>loss`` (dvclive 2.x adds a ``timestamp``
column first): the header names only the last part of the metric, so **the metric name is
the file's path under ``plots/metrics/`` without ``.tsv``** (``train/loss``, ``eval/loss``,
``val_acc``). The step is DVCLive's step (``Live.next_step()``; the HF/Lightning callbacks set it
to the global step; it starts at 0). ``metrics.json`` (the latest values, nested by the
``/`` parts) is the run summary. Kinds and directions follow the names (``eval/loss`` is
an eval loss). DVCLive writes Python floats: precision float64.
"""

from __future__ import annotations

import json
from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.readers.base import ReadContext, ReadResult, to_float
from logsage.ingest.text import PointCollector, find_column, natural_key, read_csv, row_step

FORMAT = "dvclive"
DESCRIPTION = "DVCLive dvclive/plots/metrics/**.tsv (metric name from the path) + metrics.json"
PRECISION = "float64"


def _metrics_root(path: Path) -> Path | None:
    """The ``plots/metrics`` folder above `path`, if any."""
    for parent in path.parents:
        if parent.name == "metrics" and parent.parent.name == "plots":
            return parent
    return None


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() == ".tsv":
        return _metrics_root(path) is not None and head.split(b"\n", 1)[0].rstrip(b"\r").split(b"\t")[:2] in (
            [b"step", path.stem.encode()], [b"timestamp", b"step"])
    return path.name == "metrics.json" and (path.parent / "plots" / "metrics").is_dir()


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path in sorted(paths, key=natural_key):
        file = str(path)
        res.files.append(file)
        if path.suffix.lower() == ".json":
            _read_summary(path, res)
            continue
        root = _metrics_root(path)
        name = path.relative_to(root).with_suffix("").as_posix() if root else path.stem
        table = read_csv(path, res_warnings=res.warnings, cleanups=res.cleanups, delimiter="\t")
        step_col = find_column(table.header, ("step",))
        value_col = len(table.header) - 1
        if step_col is None or value_col == step_col:
            raise IngestError(f"{path}: header {table.header!r} has no 'step' and value column; "
                              "not a DVCLive metric file - pass --format to pick another reader")
        steps, cells, no_step = [], [], 0
        for lineno, row in table.rows:
            step = row_step(path, lineno, row[step_col])
            if step is None:
                no_step += 1
                continue
            steps.append(step)
            cells.append(row[value_col])
        points.add_column(name, steps, cells, file=file)
        if no_step:
            res.cleanups.append(Cleanup("dropped_record", f"{name}: {no_step} row(s) without a step skipped",
                                        file=file, metric=name, count=no_step))
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res


def _read_summary(path: Path, res: ReadResult) -> None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        res.warnings.append(f"{path}: DVCLive summary not read ({e})")
        return

    def flat(obj, prefix=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield from flat(v, f"{prefix}{k}/")
        else:
            yield prefix[:-1], obj

    for k, v in flat(data):
        fv = to_float(v) if not isinstance(v, bool) else None
        if fv is not None and k != "step":
            res.summary[k] = fv
