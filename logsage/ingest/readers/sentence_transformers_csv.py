"""Reader for sentence-transformers evaluator CSVs (``eval/<name>_results.csv``, ``<evaluator>_results.csv``).

Every evaluator (``EmbeddingSimilarityEvaluator``, ``InformationRetrievalEvaluator``,
``BinaryClassificationEvaluator``, ``MSEEvaluator``...) appends one row per evaluation to
``similarity_evaluation_sts-dev_results.csv`` and the like: ``epoch,steps,<metric>...``.
Every column but ``epoch``/``steps`` is an evaluation (``cosine_spearman`` -> canonical
``eval_cosine_spearman``; direction from the name: ``MSE`` min, correlations and
accuracies max). The primary metric is the evaluator's own: ``cosine_spearman`` /
``spearman_cosine`` when present, else the first metric column.

The step (the file has no global step in v2):

* v2 ``fit()`` writes ``steps = -1`` for the end-of-epoch evaluation: when every row does,
  step = ``epoch + 1`` (epochs completed, like Keras), ``meta["step_unit"] = "epoch"``;
* v3+ (the Trainer) writes the global step, which only grows: step = ``steps``;
* v2 with ``evaluation_steps`` writes the step *within* the epoch (it restarts each epoch)
  mixed with ``-1`` rows: no global step can be derived, so step = the row's ordinal
  (1, 2, ...), ``meta["step_unit"] = "evaluation"``, said in a ``step_choice`` cleanup.

Values are float64 (Python floats written by ``csv.writer``).
"""

from __future__ import annotations

from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.text import PointCollector, as_step, csv_files, header_of
from logsage.ingest.readers.base import ReadContext, ReadResult, to_float

FORMAT = "sentence-transformers"
DESCRIPTION = "sentence-transformers evaluator CSV (epoch,steps,<metrics>; every metric an evaluation)"
PRECISION = "float64"

_PRIMARY = ("cosine_spearman", "spearman_cosine")


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    cols = header_of(head, path)
    return len(cols) > 2 and cols[:2] == ["epoch", "steps"] and (
        path.name.endswith("_results.csv") or path.parent.name == "eval")


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    units = set()
    for path, file, table in csv_files(paths, res):
        if table.header[:2] != ["epoch", "steps"]:
            raise IngestError(f"{path}: header starts {','.join(table.header[:2])!r}, not 'epoch,steps'; not a "
                              "sentence-transformers evaluator file - pass --format to pick another reader")
        epochs: list[float] = []
        inner: list[int] = []
        rows: list[list[str]] = []
        for lineno, cells in table.rows:
            epoch, steps = to_float(cells[0]), as_step(cells[1])
            if epoch is None or steps is None:
                raise IngestError(f"{path}:{lineno}: epoch {cells[0]!r} / steps {cells[1]!r} are not numbers; "
                                  "repair that row and read it again")
            epochs.append(epoch)
            inner.append(steps)
            rows.append(cells)
        if all(s == -1 for s in inner) and all(e.is_integer() and e >= 0 for e in epochs):
            step_list, unit = [int(e) + 1 for e in epochs], "epoch"
        elif all(s >= 0 for s in inner) and all(b >= a for a, b in zip(inner, inner[1:])):
            step_list, unit = inner, "step"
        else:
            step_list, unit = list(range(1, len(rows) + 1)), "evaluation"
            res.cleanups.append(Cleanup(
                "step_choice", f"{path.name}: 'steps' restarts each epoch (sentence-transformers 2.x with "
                "evaluation_steps), so no global step can be derived; step = the evaluation's ordinal (1, 2, ...); "
                "the epoch column is kept", file=file))
        units.add(unit)
        names = [n for n in table.header[2:] if n]
        names.sort(key=lambda n: n not in _PRIMARY)
        for name in names:
            i = table.header.index(name)
            points.name_as(name, canonical="eval_" + name.strip().lower().replace(" ", "_"), kind="eval")
            points.add_column(name, step_list, [c[i] for c in rows], file=file)
        points.add_column("epoch", step_list, [c[0] for c in rows], file=file)
    res.meta["step_unit"] = units.pop() if len(units) == 1 else "mixed"
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res
