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
table). ``NA``/blank cells are missing; ``nan`` is a value and is kept. Keras logs float32 values.

Sessions: ``CSVLogger(append=True)`` adds every later ``fit()`` to the same file with no new
header. A row whose epoch goes back to **0** starts a new training session (``fit()`` from
epoch 0: another training, whose epochs must never be merged with the earlier one's by
number). The file is split there; the **last** session is read by default and a
``sessions`` cleanup says how many there were, where each starts and which was read;
``load_history(..., session=N)`` (CLI ``--session N``; 1-based, negative from the end) reads
another, and ``--session all`` (`logsage.ingest.load_sessions`) reads each as its own run.
``meta["sessions"]`` holds the count and ``meta["session"]`` the one read. A restart at
epoch k > 0 (``fit(initial_epoch=k)``, a resume) continues the same session: a repeated
epoch keeps the later row, recorded. Several files of one run are read in name order, with
the same session choice applied to each.
"""

from __future__ import annotations

from pathlib import Path

from logsage.core.errors import IngestError, UsageError
from logsage.core.history import Cleanup
from logsage.ingest.text import PointCollector, csv_files, header_of, row_step, sniff_delimiter, unnamed_cleanup
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
    for path, file, table in csv_files(paths, res):
        if not table.header or table.header[0] != "epoch":
            raise IngestError(f"{path}: first column is {table.header[0]!r}, not 'epoch'; "
                              "not a Keras CSVLogger file - pass --format wide for a csv with a step column")
        blank = 0
        sessions: list[list[tuple[int, list[str]]]] = [[]]  # per session: (epoch, cells)
        starts: list[int] = []  # line number where each session starts
        for lineno, cells in table.rows:
            epoch = row_step(path, lineno, cells[0], "epoch")
            if epoch is None:
                blank += 1
                continue
            if epoch < 0:
                raise IngestError(f"{path}:{lineno}: epoch {cells[0]!r} is negative; Keras counts epochs "
                                  "from 0 - repair that row and read it again")
            if epoch == 0 and sessions[-1]:  # fit() from epoch 0 again: a new training session
                sessions.append([])
            if not sessions[-1]:
                starts.append(lineno)
            sessions[-1].append((epoch, cells))
        if len(sessions) > 1 and len(sessions[-1]) == 1 and not _ends_with_newline(path):
            # One row at epoch 0 on an unterminated last line: a write cut short (or a file cut
            # while copied), not a training session; the whole sessions before it stay readable.
            sessions.pop()
            starts.pop()
            res.cleanups.append(Cleanup(
                "truncated", f"{path.name}:{table.rows[-1][0]}: the last line has no line end and would start a new "
                "training session with one row; read as a write cut short and left out", file=file, count=1))
        chosen = _choose_session(path, sessions, starts, ctx.session, res)
        steps = [epoch + 1 for epoch, _ in chosen]  # epochs completed
        rows = [cells for _, cells in chosen]
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


def _ends_with_newline(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return True
            f.seek(-1, 2)
            return f.read(1) == b"\n"  # a CRLF line cut between its \r and \n is not ended either
    except OSError:
        return True


def _choose_session(path: Path, sessions: list[list], starts: list[int], wanted: int | None,
                    res: ReadResult) -> list:
    """The rows of the session to read (the last by default), recorded when the file holds several."""
    n = len(sessions)
    res.meta["sessions"] = max(res.meta.get("sessions", 0), n)
    if wanted is None:
        index = n - 1
    else:
        index = wanted - 1 if wanted > 0 else n + wanted
        if not 0 <= index < n or wanted == 0:
            raise UsageError(f"{path}: holds {n} training session(s); --session {wanted} is not one of them "
                             f"(give 1..{n}, -1 for the last, or all)")
    res.meta["session"] = index + 1
    if n > 1:
        where = ", ".join(f"{i + 1} at line {ln} ({len(rows)} epochs)"
                          for i, (ln, rows) in enumerate(zip(starts, sessions)))
        how = "the last, by default" if wanted is None else "as asked"
        left = sum(len(rows) for i, rows in enumerate(sessions) if i != index)
        res.cleanups.append(Cleanup(
            "sessions", f"{path.name} holds {n} training sessions (CSVLogger append=True; the epoch restarts "
            f"at 0): {where}; read session {index + 1} ({how}), the other {left} row(s) left out - pass "
            "--session N to read another, or --session all to read each as its own run",
            file=str(path), count=left))
    return sessions[index]
