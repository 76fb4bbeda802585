"""Reader for Amazon Bedrock model-customization metrics (``training_artifacts/step_wise_training_metrics.csv``
and ``validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv``).

Bedrock documents the columns ``step_number`` (from 0), ``epoch_number``, ``training_loss``
and ``perplexity``; the validation file has ``validation_loss`` in place of
``training_loss``. ``training_loss`` is the train loss (canonical ``loss``) and the training
file's ``perplexity`` a training series; ``validation_loss`` the eval loss and the
validation file's ``perplexity`` is named ``validation_perplexity`` (an evaluation, min).

The step: ``step_number`` as written when it grows through the file. If it restarts when
``epoch_number`` advances (a per-epoch counter), each epoch's steps are laid after the
previous epoch's last step, said in a ``step_choice`` cleanup. Precision float64.
"""

from __future__ import annotations

from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.readers.base import ReadContext, ReadResult
from logsage.ingest.text import PointCollector, as_step, csv_files, header_of

FORMAT = "bedrock"
DESCRIPTION = "Amazon Bedrock step_wise_training_metrics.csv / validation_metrics.csv"
PRECISION = "float64"


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    cols = header_of(head, path)
    return cols[:2] == ["step_number", "epoch_number"] and bool({"training_loss", "validation_loss"} & set(cols))


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path, file, table in csv_files(paths, res):
        if table.header[:2] != ["step_number", "epoch_number"]:
            raise IngestError(f"{path}: header does not start with step_number,epoch_number; not a Bedrock "
                              "metrics file - pass --format to pick another reader")
        validation = "validation_loss" in table.header
        steps: list[int] = []
        rows: list[list[str]] = []
        offset, last, restarted = 0, None, False
        for lineno, cells in table.rows:
            step = as_step(cells[0].strip())
            if step is None or step < 0:
                raise IngestError(f"{path}:{lineno}: step_number {cells[0]!r} is not a non-negative integer; "
                                  "repair that row and read it again")
            if last is not None and step + offset <= last:
                offset = last + 1 - step  # a per-epoch counter restarted
                restarted = True
            last = step + offset
            steps.append(last)
            rows.append(cells)
        if restarted:
            res.cleanups.append(Cleanup("step_choice", f"{path.name}: step_number restarts with the epoch; each "
                                        "epoch's steps are laid after the previous epoch's last step", file=file))
        for i, col in enumerate(table.header[1:], 1):
            if not col:
                continue
            name = "validation_perplexity" if validation and col == "perplexity" else col
            if col == "training_loss":
                points.name_as(name, canonical="loss", kind="train")
            elif col == "epoch_number":
                points.name_as(name, canonical="epoch", kind="other")
            points.add_column(name, steps, [c[i].strip() for c in rows], file=file)
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res
