"""Reader for the console of a Hugging Face Trainer run (nohup/slurm ``*.out``, ``output.log``, ``train.log``).

The Trainer (and TRL, unsloth, which print through it) writes each log record to the
console as a Python dict: ``{'loss': 0.6914, 'grad_norm': 0.27, 'learning_rate': 9.6e-07,
'epoch': 0.02}`` (transformers 5 prints the values as strings, ``{'loss': '6.918', ...}``),
``{'eval_loss': ..., 'epoch': ...}`` and at the end ``{'train_runtime': ..., 'train_loss': ...}``,
between tqdm progress bars (carriage returns, ANSI cursor moves). Since transformers 5
``report_to`` defaults to ``"none"``, this is often the only full log of a run.

* Claimed only on its signature: at least two dict lines with an ``'epoch'`` key in the first
  256 KiB of a ``.out``/``.log``/``.txt``/``.err`` file.
* Lines are split at ``\\n`` and ``\\r`` and ANSI escapes removed; a dict is read with
  `ast.literal_eval` (never `eval`). A line that looks like a log record but does not parse
  is counted (``dropped_record``), as is a value that is not a number.
* The step. HF does not print it. When the training progress bar (``  17%|█▋  | 2/12 [...]``,
  the longest bar without a description running at the first train record) is in the file,
  a record's step is the count that bar shows right after the record: the Trainer prints
  through ``tqdm.write``, which redraws the bar at once with its current count, and the
  bar was set to ``global_step`` before the log (the bar drawn *before* the record can lag:
  tqdm redraws at most every 0.1 s), so this *is* the global step. It is
  used only when it grows strictly from one train record to the next; otherwise (bars
  collapsed to their last state, as W&B's ``output.log`` keeps them, or no bar at all:
  ``disable_tqdm``) the step is the **ordinal of the logging point**: each train record
  starts a new point, an eval record with the same epoch as the train record before it
  shares that point (HF logs both at the same ``global_step``), any other starts a new one.
  ``meta["step_unit"]`` says which (``"step"`` or ``"log_record"``) and a ``step_choice``
  cleanup says so; the ``epoch`` series is kept either way. Ordinal steps are not global
  steps: do not stitch them with a ``trainer_state.json``.
* ``train_runtime`` records are the run summary (`summary`), not points.

Values are printed rounded (4 significant digits in transformers 5): precision ``rounded``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.text import PointCollector, natural_key
from logsage.ingest.readers.base import ReadContext, ReadResult, to_float

FORMAT = "hf-console"
DESCRIPTION = "console of an HF Trainer / TRL / unsloth run (*.out, output.log: the printed log dicts)"
PRECISION = "rounded"

CONSOLE_SUFFIXES = (".out", ".log", ".txt", ".err")
SNIFF_BYTES = 256 * 1024
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_DICT_START = re.compile(r"\{'[A-Za-z_][\w/\-.@]*': ")
_HAS_EPOCH = re.compile(rb"\{'[^{}\n\r]*'epoch': ")
# A tqdm bar with no description: "  17%|█▋        | 2/12 [00:00<00:03,  2.55it/s]"
_BAR = re.compile(r"^\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)\s*\[")


def sniff(path: Path, head: bytes) -> bytes:
    """The first 256 KiB of a console log (for `claims`; a model's loading messages come first)."""
    if len(head) < 4096:
        return head
    try:
        with open(path, "rb") as f:
            return f.read(SNIFF_BYTES)
    except OSError:
        return head


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() not in CONSOLE_SUFFIXES:
        return False
    data = sniff(path, head)
    return b"'epoch': " in data and len(_HAS_EPOCH.findall(data)) >= 2


def console_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a console log, streamed; carriage-return segments are lines of their own,
    ANSI escapes removed."""
    try:
        f = open(path, encoding="utf-8", errors="replace", newline="")
    except OSError as e:
        raise IngestError(f"{path}: cannot be read ({e.strerror}); check the path and its permissions") from None
    with f:
        for lineno, line in enumerate(f, 1):
            for part in line.replace("\r\n", "\n").split("\r"):
                part = part.rstrip("\n")
                if part:
                    yield lineno, _ANSI.sub("", part) if "\x1b" in part else part


BAD_LINE = object()  # what a line parser returns for a record line it cannot read (counted, skipped)


def read_step_lines(paths: list[Path], *, format: str, precision: str,
                    parse: Callable[[str], Any], other: Sequence[str], canonical_other: Callable[[str], str],
                    what: str) -> ReadResult:
    """The reader of a console format with one `<step> <fields>` record per line (MLX-LM, torchtune):
    `parse(text)` gives (step, [(name, value)]) for a record, None for a line to ignore, or
    `BAD_LINE` for a record line it cannot read (counted in a `dropped_record` cleanup, named by
    line); `other` names bookkeeping fields (kind "other", canonical name `canonical_other(name)`).
    A file without one record is a one-line error naming `what` the format's lines look like."""
    res = ReadResult(format=format, precision=precision)
    points = PointCollector(format=format, precision=precision)
    for path in sorted(paths, key=natural_key):
        file = str(path)
        res.files.append(file)
        bad: list[int] = []
        n = 0
        for lineno, text in console_lines(path):
            got = parse(text)
            if got is None:
                continue
            if got is BAD_LINE:
                bad.append(lineno)
                continue
            step, fields = got
            n += 1
            for name, _ in fields:
                if name in other:
                    points.name_as(name, canonical=canonical_other(name), kind="other")
            points.add_fields(step, fields, file=file)
        if not n:
            raise IngestError(f"{path}: holds no {what} lines; pass --format to pick another reader")
        if bad:
            shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
            res.cleanups.append(Cleanup("dropped_record", f"{len(bad)} line(s) that are not {what} skipped "
                                        f"(line {shown})", file=file, count=len(bad)))
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path in sorted(paths, key=natural_key):
        res.files.append(str(path))
        _read_one(path, res, points)
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res


def _read_one(path: Path, res: ReadResult, points: PointCollector) -> None:
    import ast  # only when a console log is read

    file = str(path)
    records: list[list] = []  # [line, record, training bar count shown right after it]
    bad: list[int] = []
    train_total: int | None = None
    longest_bar = 0
    waiting: list[list] = []  # records printed since the last training-bar refresh
    for lineno, text in console_lines(path):
        bar = _BAR.match(text)
        if bar:
            n, total = int(bar[1]), int(bar[2])
            if train_total is None and records:
                train_total = max(total, longest_bar)
            longest_bar = max(longest_bar, total)
            if total == train_total:
                for r in waiting:  # tqdm.write refreshes the bar right after the message, with its current count
                    r[2] = n
                waiting = []
            continue
        m = _DICT_START.search(text)
        if m is None:
            continue
        end = text.find("}", m.start())
        try:
            rec = ast.literal_eval(text[m.start():end + 1]) if end > 0 else None
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            rec = None
        if not isinstance(rec, dict):
            if "'epoch'" in text or "{'loss'" in text or "{'eval_" in text:
                bad.append(lineno)
            continue
        if train_total is None and longest_bar and _kind(rec) == "train":
            train_total = longest_bar  # the training bar: the longest one running before the first train log
        entry = [lineno, rec, None]
        records.append(entry)
        waiting.append(entry)
    if not records:
        raise IngestError(f"{path}: holds no log dicts ({{'loss': ..., 'epoch': ...}}); "
                          "pass --format to pick another reader")
    train_bars = [b for _, rec, b in records if _kind(rec) == "train"]
    use_bar = bool(train_bars) and all(b is not None for b in train_bars) and all(
        b2 > b1 for b1, b2 in zip(train_bars, train_bars[1:]))
    if use_bar:
        res.meta["step_unit"] = "step"
        note = ("the step of each record is the training progress bar's count when it was printed "
                "(the Trainer's global step; HF does not print the step)")
    else:
        res.meta["step_unit"] = "log_record"
        note = ("HF does not print the step and the progress bar gives none here (collapsed or absent), so the step "
                "is the ordinal of the logging point (train record: next point; eval record with the same epoch "
                "as the train record before it: the same point); the epoch is kept as the 'epoch' series - these "
                "are not global steps")
    res.cleanups.append(Cleanup("step_choice", f"{path.name}: {note}", file=file))
    ordinal = 0
    prev: tuple[str, object] | None = None  # (kind, epoch) of the previous record
    for lineno, rec, bar in records:
        kind = _kind(rec)
        if kind == "summary":
            for k, v in rec.items():
                fv = to_float(v) if not isinstance(v, bool) else None
                if fv is not None and k != "epoch":
                    res.summary[k] = fv
            continue
        if use_bar:
            step = bar if bar is not None else ordinal
        else:
            epoch = to_float(rec.get("epoch"))  # '1.0' (transformers 5 prints strings) equals 1.0
            same_point = kind == "eval" and prev is not None and prev[0] == "train" and prev[1] == epoch
            if not same_point:
                ordinal += 1
            step = ordinal
            prev = (kind, epoch)
        points.note_record(step, rec.keys(), file=file)
        points.add_fields(step, list(rec.items()), file=file)
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (", ..." if len(bad) > 5 else "")
        res.cleanups.append(Cleanup("dropped_record", f"{len(bad)} line(s) that look like a log record but do not "
                                    f"parse as a Python dict skipped (line {shown})", file=file, count=len(bad)))


def _kind(rec: dict) -> str:
    if "train_runtime" in rec:
        return "summary"
    return "eval" if any(str(k).startswith("eval_") for k in rec) else "train"
