"""Reader for PyTorch Lightning's `CSVLogger` (`lightning_logs/version_N/metrics.csv` + `hparams.yaml`).

The writer (Lightning 1.x-2.x) keeps one header, the union of all logged keys with an
``epoch`` and a ``step`` column, and writes sparse rows: train-step rows, validation rows
and epoch-summary rows are separate lines that share ``epoch``/``step``. Quirks handled:

* a blank cell is *missing* (no point); the text ``nan`` is a NaN value and is kept;
* the header order is 2.x's sorted keys or 1.x's (``lr-Adam,step,train_loss,epoch``); a
  ``train_loss`` column is a Lightning curve, not HF's end-of-training summary key;
* ``epoch`` becomes a series (Lightning's 0-based epoch index, as written) so every step
  has an epoch; ``step`` is the global step;
* ``hparams.yaml`` beside the csv goes to ``meta["hparams"]`` when it parses (a warning
  otherwise: Lightning can write Python object tags that a safe loader refuses);
* several ``version_N`` folders given as one run are one resumed run: they are read in
  version order and a later version's values win for the steps it writes again, recorded
  as an ``overlap`` cleanup. A version that starts at or before the first step of the
  earlier ones looks like a separate run and gets a warning.

Lightning logs float32 tensors, so the precision is float32. CRLF line ends (the csv
module's default) are fine.
"""

from __future__ import annotations

from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.text import (HF_SUMMARY_KEYS, PointCollector, csv_files, find_column, header_of, plain, row_step,
                                 unnamed_cleanup)
from logsage.ingest.readers.base import ReadContext, ReadResult

FORMAT = "lightning"
DESCRIPTION = "PyTorch Lightning CSVLogger metrics.csv (+ hparams.yaml)"
PRECISION = "float32"


def claims(path: Path, head: bytes) -> bool:
    if path.name != "metrics.csv":
        return False
    cols = [c.lower() for c in header_of(head, path)]
    if "epoch" not in cols or "step" not in cols:
        return False
    # Column order is no evidence: 2.x sorts the keys ("epoch,...,step,..."), 1.x appends "step"
    # to each dict after the LearningRateMonitor's keys ("lr-Adam,step,train_loss,epoch"). What
    # marks a Hugging Face log_history dump saved as metrics.csv is (a) the Trainer's
    # end-of-training columns (train_runtime, total_flos...; a bare train_loss is what most
    # Lightning users log, so it is no evidence) and (b) fractional epochs (0.0095, HF's
    # state.epoch): Lightning writes the integer epoch index.
    if (HF_SUMMARY_KEYS - {"train_loss"}) & set(cols):
        return False
    return not _fractional_epoch(head, cols.index("epoch"))


def _fractional_epoch(head: bytes, col: int) -> bool:
    """Whether an epoch cell among the sniffed rows is not an integer (a log_history dump's epoch)."""
    lines = head.decode("utf-8-sig", errors="replace").replace("\r", "").split("\n")[1:-1]  # last may be cut
    for line in lines[:50]:
        cells = line.split(",")
        if col < len(cells) and cells[col].strip():
            try:
                if not float(cells[col]).is_integer():
                    return True
            except ValueError:
                return False
    return False


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    first_steps: list[tuple[str, int]] = []
    for path, file, table in csv_files(paths, res):
        step_col = find_column(table.header, ("step",))
        if step_col is None:
            raise IngestError(f"{path}: has no 'step' column (header: {','.join(table.header)}); "
                              "pass --format wide or keras if it is not a Lightning CSVLogger file")
        earlier = points.steps_seen()
        rewritten: set[int] = set()
        steps_here: list[int] = []
        rows: list[list[str]] = []
        no_step = 0
        columns = [(i, name) for i, name in enumerate(table.header) if i != step_col and name]
        unnamed = unnamed_cleanup(table, file=file, skip=(step_col,))
        if unnamed is not None:
            res.cleanups.append(unnamed)
        for lineno, cells in table.rows:
            step = row_step(path, lineno, cells[step_col])
            if step is None:
                no_step += 1
                continue
            steps_here.append(step)
            rows.append(cells)
            if step in earlier:
                rewritten.add(step)
        for i, name in columns:
            points.add_column(name, steps_here, [cells[i] for cells in rows], file=file)
        if no_step:
            res.cleanups.append(Cleanup("dropped_record", f"{no_step} row(s) with a blank step skipped",
                                        file=file, count=no_step))
        if rewritten:
            res.cleanups.append(Cleanup(
                "overlap", f"{path.parent.name}/{path.name} writes {len(rewritten)} step(s) that an earlier "
                "version already wrote; the later version's values win", file=file, count=len(rewritten)))
        if steps_here:
            if first_steps and min(steps_here) <= min(s for _, s in first_steps):
                res.warnings.append(
                    f"{path}: starts at step {min(steps_here)}, not after the earlier version(s) - it looks like a "
                    "separate run rather than a resume; give one version_N folder to read it alone")
            first_steps.append((file, min(steps_here)))
        _read_hparams(path.parent / "hparams.yaml", res)
    series, cleanups = points.build()
    res.series = series
    res.cleanups.extend(cleanups)
    return res


def _read_hparams(path: Path, res: ReadResult) -> None:
    if not path.is_file():
        return
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8", errors="replace"))
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        res.warnings.append(f"{path}: not read as metadata ({first})")
        return
    if isinstance(data, dict):
        res.meta["hparams"] = plain(data)  # the latest version's hyper-parameters win
        res.files.append(str(path))
