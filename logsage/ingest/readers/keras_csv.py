"""Reader for the Keras `CSVLogger` callback (Keras 2 and 3; `training.log`, `history.csv`, any name).

The writer puts a 0-based ``epoch`` column first, then the logged keys sorted
(``accuracy, loss, lr, val_accuracy, val_loss``), one row per epoch, CRLF line ends, and
``NA`` for a key missing in an epoch. There is no step column, so:

    for Keras, step = epoch + 1, the number of epochs completed when the row was written
    (rows 0, 1, 2... are steps 1, 2, 3..., as HF's global step counts completed steps),
    and ``meta["step_unit"]`` is ``"epoch"``. The last step is then the number of epochs
    logged, which is the budget replay measures savings against (a 4-epoch run stopped
    after its 3rd epoch saves 1 of 4). ``meta["max_steps"]`` is not set: the file does not
    state the planned number of epochs. The ``epoch`` series keeps the 0-based index as
    written (its value at step s is s - 1).

``val_*`` columns are the evaluation series (``val_loss`` is eval_loss by the alias
table). ``NA``/blank cells are missing; ``nan`` is a value and is kept. Several files of
one run (``append=True`` after a restart) are read in name order and a repeated epoch
keeps the later row, recorded. Keras logs float32 values.
"""

from __future__ import annotations

from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.text import (PointCollector, as_step, header_of, natural_key, read_csv, sniff_delimiter,
                                  unnamed_cleanup)
from logsage.ingest.readers.base import ReadContext, ReadResult

FORMAT = "keras"
DESCRIPTION = "Keras CSVLogger file (step = epoch index + 1, epochs completed)"
PRECISION = "float32"

# A header with any of these is another format's (Lightning, wide, W&B, TensorBoard CSV).
_NOT_KERAS = {"step", "global_step", "_step", "wall_time", "wall time", "tag", "current_steps"}


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() not in (".csv", ".log", ".txt", ".tsv"):
        return False
    cols = header_of(head, path)
    if len(cols) < 2 or cols[0] != "epoch" or {c.lower() for c in cols} & _NOT_KERAS:
        return False
    lines = head.decode("utf-8-sig", errors="replace").replace("\r", "").lstrip("\n").split("\n")
    first_row = next((ln for ln in lines[1:] if ln.strip()), None)
    # Keras writes the epoch index as an integer: "0,...", "1,...".
    return first_row is None or first_row.split(sniff_delimiter(lines[0]), 1)[0].strip().isdigit()


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    res.meta["step_unit"] = "epoch"
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path in sorted(paths, key=natural_key):
        file = str(path)
        res.files.append(file)
        table = read_csv(path, res_warnings=res.warnings, cleanups=res.cleanups)
        if not table.header or table.header[0] != "epoch":
            raise IngestError(f"{path}: first column is {table.header[0]!r}, not 'epoch'; "
                              "not a Keras CSVLogger file - pass --format wide for a csv with a step column")
        blank = 0
        steps: list[int] = []  # epoch + 1: epochs completed
        rows: list[list[str]] = []
        for lineno, cells in table.rows:
            epoch = as_step(cells[0])
            if epoch is None:
                if cells[0].strip():
                    raise IngestError(f"{path}:{lineno}: epoch {cells[0]!r} is not an integer; "
                                      "repair that row and read it again")
                blank += 1
                continue
            if epoch < 0:
                raise IngestError(f"{path}:{lineno}: epoch {cells[0]!r} is negative; Keras counts epochs "
                                  "from 0 - repair that row and read it again")
            steps.append(epoch + 1)
            rows.append(cells)
        points.note_rows(steps, lambda _: table.header, file=file)
        for i, name in enumerate(table.header):
            if name:  # the epoch column too: the `epoch` series holds the 0-based index as written
                points.add_column(name, steps, [cells[i] for cells in rows], file=file)
        unnamed = unnamed_cleanup(table, file=file)
        if unnamed is not None:
            res.cleanups.append(unnamed)
        if blank:
            res.cleanups.append(Cleanup("dropped_record", f"{blank} row(s) with a blank epoch skipped",
                                        file=file, count=blank))
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res
