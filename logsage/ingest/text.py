"""Helpers shared by the text-log readers (JSON lines, CSV, markdown): records in, Series out.

* `read_jsonl` / `read_csv` turn a file into records with their line numbers. A damaged
  *last* record (a crash mid-write) is dropped with a warning and a ``truncated``
  cleanup; damage anywhere else is an `IngestError` naming ``file:line`` and the fix.
* `PointCollector` gathers (metric, step, value) points in write order and builds the
  Series: a step written again with a different value keeps the later write and is
  counted (``duplicates``); a step written again with the *same* value (the epoch that
  a train and an eval record share, or a record a second writer copied) loses nothing
  and is merged; whole records written twice are counted per file; values that are
  not numbers (null, text) are counted (``dropped_record``), never silently skipped.
  `add_column` (a CSV column) and `add_fields` (a JSON record) are bulk fast paths that read
  exactly what `add_cell` / `add_field` read one value at a time.
* `parse_duration` reads the elapsed-time strings of ms-swift and LLaMA-Factory.

Empty cells and the markers below are *missing* (no point); the text ``nan``/``inf`` is a
value and is kept.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup, Series
from logsage.ingest.readers.base import open_regular, read_text, to_float

# Cells that mean "not logged here": blank (CSV writers' default), Keras CSVLogger's "NA",
# pandas/W&B spellings of None.
MISSING_CELLS = frozenset({"", "na", "n/a", "none", "null"})

# The Hugging Face Trainer's end-of-training record: a run summary, never curve points.
HF_SUMMARY_KEYS = frozenset({"train_runtime", "train_samples_per_second", "train_steps_per_second",
                             "train_loss", "total_flos", "total_pflos"})



def is_hf_summary_tag(tag: str) -> bool:
    """HF's end-of-training scalars as TensorBoard/W&B name them: ``train/train_runtime``, ``train/total_flos``
    (``train_train_runtime`` in a TensorBoard UI file name). A bare ``train_loss`` is a curve (Lightning's)."""
    for prefix in ("train/", "train_"):
        if tag.startswith(prefix) and tag[len(prefix):] in HF_SUMMARY_KEYS:
            return True
    return False


# Column names a step can come from, in preference order (lower-cased).
STEP_COLUMNS = ("step", "global_step")


def natural_key(path: Path) -> list:
    """Sort key that orders version_2 before version_10 and v1-... before v10-..."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def as_step(value: Any) -> int | None:
    """An integer step from a cell or field (``812``, ``812.0``, ``"812"``), else None."""
    if type(value) is int:
        return value
    if isinstance(value, str):
        try:  # fast path: the usual integer cell
            return int(value)
        except ValueError:
            pass
    v = to_float(value) if not isinstance(value, bool) else None
    if v is None or not math.isfinite(v) or v != int(v):
        return None
    return int(v)


def row_step(path: Any, lineno: int, cell: str, what: str = "step") -> int | None:
    """The integer step of a table row; None for a blank cell (the caller counts the row); a cell
    that is not an integer is a one-line error naming the file, the line and the fix."""
    step = as_step(cell)
    if step is None and cell.strip():
        raise IngestError(f"{path}:{lineno}: {what} {cell!r} is not an integer; repair that row and read it again")
    return step


def plain(obj: Any) -> Any:
    """YAML-loaded metadata made JSON-ready: dates and other objects become strings (for `--json`)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)


# ----------------------------------------------------------------------- durations
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_SWIFT_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*d)?\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*"
                             r"(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")
_TIMEDELTA = re.compile(r"^\s*(?:(-?\d+) days?, )?(\d+):(\d{2}):(\d{2}(?:\.\d+)?)\s*$")


def add_progress_record(points: "PointCollector", res: Any, step: int, rec: dict, *, skip: Any, file: str) -> None:
    """Add one JSON-lines record of a trainer that logs its progress (ms-swift, LLaMA-Factory).

    Its `elapsed_time` string ("10m 52s", "9 days, 18:32:24") becomes the wall time of its
    points, in seconds since the run started (`meta["wall_time_origin"] = "run_start"`).
    """
    elapsed = parse_duration(rec.get("elapsed_time"))
    if elapsed is not None:
        res.meta["elapsed_seconds_last"] = elapsed
        res.meta["wall_time_origin"] = "run_start"  # elapsed seconds, not seconds since the epoch
    points.note_record(step, rec.keys(), file=file)
    points.add_fields(step, [(k, v) for k, v in rec.items() if k not in skip], file=file, wall_time=elapsed)


def parse_duration(text: Any) -> float | None:
    """Seconds from ``"10m 52s"``, ``"8h 8m 1s"``, ``"1d 2h 0m 3s"`` (ms-swift) or
    ``"0:00:32"``, ``"9 days, 18:32:24"`` (Python's `str(timedelta)`, LLaMA-Factory); else None."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    if not isinstance(text, str) or not text.strip():
        return None
    return _parse_duration_text(text)


@functools.lru_cache(maxsize=4096)  # logs repeat the same strings (1 s resolution, two writers)
def _parse_duration_text(text: str) -> float | None:
    m = _TIMEDELTA.match(text)
    if m:
        days = int(m[1] or 0)
        return days * 86400 + int(m[2]) * 3600 + int(m[3]) * 60 + float(m[4])
    m = _SWIFT_DURATION.match(text)
    if m and any(m.groups()):
        return sum(float(g) * u for g, u in zip(m.groups(), _UNIT_SECONDS.values()) if g)
    return None


# ----------------------------------------------------------------------- JSON lines
def read_jsonl(path: Path, *, res_warnings: list[str], cleanups: list[Cleanup],
               what: str = "record") -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every record of a JSON-lines log.

    Blank lines are ignored. An unparseable *last* line is a crash mid-write: everything
    before it is kept, with a warning and a ``truncated`` cleanup. Any other bad line
    raises `IngestError`.
    """
    text = read_text(path)
    lines = text.split("\n")
    numbered = [(i + 1, ln) for i, ln in enumerate(lines) if ln.strip()]
    if not numbered:
        raise IngestError(f"{path}: is empty; point logsage at the run's log once training has written to it")
    import json

    records: list[tuple[int, dict[str, Any]]] = []
    for idx, (lineno, line) in enumerate(numbered):
        try:
            obj = json.loads(line)
            bad = None if isinstance(obj, dict) else f"a JSON {type(obj).__name__}, not an object"
        except json.JSONDecodeError as e:
            obj, bad = None, e.msg
        except RecursionError:
            obj, bad = None, "nested too deeply"
        if bad is None:
            records.append((lineno, obj))
            continue
        if idx == len(numbered) - 1:
            msg = (f"{path}:{lineno}: last line is not a complete {what} ({bad}); "
                   f"kept the {len(records)} record(s) before it (the writer probably stopped mid-line)")
            res_warnings.append(msg)
            cleanups.append(Cleanup("truncated", msg, file=str(path), count=1))
            break
        raise IngestError(
            f"{path}:{lineno}: not valid JSON ({bad}); the log is damaged in the middle - "
            "delete or repair that line and read it again"
        )
    if not records:
        raise IngestError(f"{path}: holds no complete {what}; check that it is the run's log")
    return records


# ----------------------------------------------------------------------- CSV
@dataclass
class CsvTable:
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (line number, cells), every row as long as the header


def sniff_delimiter(header_line: str) -> str:
    for d in (",", "\t", ";"):
        if d in header_line:
            return d
    return ","


def csv_files(paths: list[Path], res: Any) -> Iterator[tuple[Path, str, CsvTable]]:
    """(path, its name as text, its table) for each file of a CSV reader, in natural order; each
    file is recorded in `res.files` and read with `read_csv` (its warnings and cleanups go to `res`)."""
    for path in sorted(paths, key=natural_key):
        file = str(path)
        res.files.append(file)
        yield path, file, read_csv(path, res_warnings=res.warnings, cleanups=res.cleanups)


def read_csv(path: Path, *, res_warnings: list[str], cleanups: list[Cleanup],
             delimiter: str | None = None) -> CsvTable:
    """Header and rows of a CSV log (UTF-8, BOM and CRLF tolerated).

    A last row with the wrong number of cells in a file that does not end with a newline
    is a crash mid-write (kept out, warned, ``truncated`` cleanup); a wrong row anywhere
    else raises `IngestError` with its line number.
    """
    text = read_text(path)
    if not text.strip():
        raise IngestError(f"{path}: is empty; point logsage at the run's metrics file once it has been written")
    first_line = text.lstrip("\n").split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text), delimiter=delimiter or sniff_delimiter(first_line))
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    raw: list[tuple[int, list[str]]] = []
    try:
        for cells in reader:
            if not cells or not (cells[0].strip() or any(c.strip() for c in cells)):
                continue
            if header is None:
                header = [c.strip() for c in cells]
                continue
            raw.append((reader.line_num, cells))
    except csv.Error as e:
        raise IngestError(
            f"{path}:{reader.line_num}: not valid CSV ({e}); repair that line and read it again") from None
    if header is None:
        raise IngestError(f"{path}: holds no header row; point logsage at the run's metrics file")
    if not raw:
        res_warnings.append(f"{path}: has a header but no rows yet")
    for i, (lineno, cells) in enumerate(raw):
        if len(cells) == len(header):
            rows.append((lineno, cells))
            continue
        if i == len(raw) - 1 and not text.endswith("\n"):
            msg = (f"{path}:{lineno}: last row has {len(cells)} of {len(header)} cells; "
                   f"kept the {len(rows)} row(s) before it (the writer probably stopped mid-line)")
            res_warnings.append(msg)
            cleanups.append(Cleanup("truncated", msg, file=str(path), count=1))
            break
        raise IngestError(
            f"{path}:{lineno}: row has {len(cells)} cells but the header has {len(header)}; "
            "the file is damaged - repair that row and read it again"
        )
    return CsvTable(header, rows)


def cell_value(cell: str) -> float | None | str:
    """A CSV cell: a float (NaN/inf kept), None when missing, or the text itself when not a number."""
    if not cell:
        return None
    try:  # fast path: a plain number (float() accepts the same nan/inf spellings and surrounding blanks)
        return float(cell)
    except ValueError:
        pass
    s = cell.strip()
    if s.lower() in MISSING_CELLS:
        return None
    v = to_float(s)
    return s if v is None else v


def find_column(header: list[str], names: Iterable[str]) -> int | None:
    """Index of the first header cell equal (case-insensitively) to one of `names`, in `names` order."""
    low = [h.strip().lower() for h in header]
    for n in names:
        if n in low:
            return low.index(n)
    return None


_HEAD_BYTES = 4096
_MAX_HEADER_BYTES = 1 << 20


def whole_first_line(head: bytes, path: Path | None) -> bytes:
    """`head`, or the file's whole first line (up to 1 MiB) when it is longer than `head`.

    A CSV header or a first JSON record longer than the sniffed 4 KiB (hundreds of metric
    columns, an evaluation of many datasets) would be cut, hiding later keys such as
    Lightning's ``step`` or ms-swift's ``global_step``. For `claims`: never raises.
    """
    if path is None or len(head) < _HEAD_BYTES or b"\n" in head.lstrip(b"\r\n"):
        return head
    try:
        with open_regular(path) as f:  # never blocks, even on a FIFO swapped in after the walk
            line = f.readline(_MAX_HEADER_BYTES)
            while not line.strip(b"\r\n") and line:  # blank lines before the first
                line = f.readline(_MAX_HEADER_BYTES)
            return line or head
    except (OSError, IngestError):
        return head


def header_of(head: bytes, path: Path | None = None) -> list[str]:
    """The first CSV line of a file's first bytes, split into stripped cells (for `claims`);
    given `path`, the whole line even when it is longer than `head`."""
    head = whole_first_line(head, path)
    text = head.decode("utf-8-sig", errors="replace").lstrip("\r\n")
    line = text.split("\n", 1)[0].rstrip("\r")
    try:
        return [c.strip() for c in next(csv.reader([line], delimiter=sniff_delimiter(line)))]
    except (StopIteration, csv.Error):
        return []


def first_json_object(head: bytes) -> dict[str, Any] | None:
    """The first line of a JSON-lines file's first bytes, parsed, if it is a complete object (for `claims`)."""
    import json

    for line in head.decode("utf-8-sig", errors="replace").split("\n"):
        if line.strip():
            try:
                obj = json.loads(line)
            except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; "[[[[..." recurses
                return None
            return obj if isinstance(obj, dict) else None
    return None


def starts_json_object(head: bytes) -> bool:
    """Whether a file's first bytes open a JSON object (a UTF-8 BOM and blank lines allowed; for `claims`)."""
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"{")


def unnamed_cleanup(table: CsvTable, *, file: str, skip: Iterable[int] = ()) -> Cleanup | None:
    """A cleanup counting the values in columns whose header cell is blank (a pandas index, a stray
    delimiter): they are not read as a metric, but they are not dropped silently either."""
    skip = set(skip)
    cols = [i for i, h in enumerate(table.header) if not h and i not in skip]
    if not cols:
        return None
    n = sum(1 for _, cells in table.rows for i in cols if cells[i].strip())
    if not n:
        return None
    return Cleanup("dropped_record", f"{n} value(s) in {len(cols)} column(s) with no name in the header "
                   "(e.g. a pandas index) skipped", file=file, count=n)


# ----------------------------------------------------------------------- points → Series
@dataclass
class _Points:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    has_wall: bool = False


class PointCollector:
    """Points of every metric of one run in write order; builds Series and the cleanups that say what happened."""

    def __init__(self, *, format: str, precision: str):
        self.format = format
        self.precision = precision
        self._points: dict[str, _Points] = {}
        self._names: dict[str, tuple[str, str]] = {}  # name -> (canonical, kind) overrides
        self._ignored: dict[tuple[str, str], list] = {}  # (file, name) -> [count, example]
        self._records_seen: dict[str, set] = {}
        self._repeated_records: dict[str, int] = {}

    def name_as(self, name: str, *, canonical: str, kind: str) -> None:
        """Give `name` a canonical name and kind the alias table cannot know (model-card columns)."""
        self._names[name] = (canonical, kind)

    def add(self, name: str, step: int, value: float, *, file: str, wall_time: float | None = None) -> None:
        p = self._points.get(name)
        if p is None:
            p = self._points[name] = _Points()
        p.steps.append(step)
        p.values.append(value)
        if wall_time is None:
            p.walls.append(math.nan)
        else:
            p.walls.append(wall_time)
            if wall_time == wall_time:  # not NaN
                p.has_wall = True
        if not p.files or p.files[-1] != file:
            if file not in p.files:
                p.files.append(file)

    def add_column(self, name: str, steps: list[int], cells: Iterable[str], *, file: str,
                   walls: list[float | None] | None = None) -> None:
        """Add one CSV column in bulk: ``cells[i]`` at ``steps[i]``, as `add_cell` would one by one (blank/NA:
        no point; text that is not a number: counted as skipped). The fast path of the wide readers."""
        st: list[int] = []
        vals: list[float] = []
        ws: list[float] = []
        add_step, add_value = st.append, vals.append
        v: float | str | None
        for i, (step, c) in enumerate(zip(steps, cells)):
            if not c:
                continue
            try:
                v = float(c)
            except ValueError:
                v = cell_value(c)
                if v is None:
                    continue
                if not isinstance(v, float):
                    self.ignore(name, file=file, example=v)
                    continue
            add_step(step)
            add_value(v)
            if walls is not None:
                w = walls[i]
                ws.append(math.nan if w is None else w)
        if not st:
            return
        p = self._points.get(name)
        if p is None:
            p = self._points[name] = _Points()
        p.steps.extend(st)
        p.values.extend(vals)
        if walls is None:
            p.walls.extend([math.nan] * len(st))
        else:
            p.walls.extend(ws)
            if not p.has_wall and any(w == w for w in ws):
                p.has_wall = True
        if file not in p.files:
            p.files.append(file)

    def note_rows(self, steps: list[int], keys_of: Callable[[int], Iterable[str]], *, file: str) -> None:
        """`note_record` for rows in bulk; only rows whose step occurs more than once can repeat a record,
        so `keys_of(i)` (the fields set in row i) is asked for those alone."""
        counts: dict[int, int] = {}
        for s in steps:
            counts[s] = counts.get(s, 0) + 1
        for i, s in enumerate(steps):
            if counts[s] > 1:
                self.note_record(s, keys_of(i), file=file)

    def add_cell(self, name: str, step: int, cell: str, *, file: str, wall_time: float | None = None) -> bool:
        """Add a CSV cell: blank/NA is no point (sparse rows), text that is not a number is counted as skipped."""
        v = cell_value(cell)
        if isinstance(v, float):
            self.add(name, step, v, file=file, wall_time=wall_time)
            return True
        if v is not None:
            self.ignore(name, file=file, example=v)
        return False

    def add_fields(self, step: int, fields: Iterable[tuple[str, Any]], *, file: str,
                   wall_time: float | None = None) -> None:
        """Add the (name, value) fields of one JSON record, as `add_field` would one by one (the fast path)."""
        wall = math.nan if wall_time is None else wall_time
        timed = wall == wall
        points = self._points
        v: float | str | None
        for name, raw in fields:
            t = type(raw)
            if t is float or t is int:
                v = float(raw)
            elif t is str:
                v = cell_value(raw)
                if not isinstance(v, float):
                    self.ignore(name, file=file, example=raw)
                    continue
            else:  # bool, null, list, object, or a number type JSON never yields
                self.add_field(name, step, raw, file=file, wall_time=wall_time)
                continue
            p = points.get(name)
            if p is None:
                p = points[name] = _Points()
            p.steps.append(step)
            p.values.append(v)
            p.walls.append(wall)
            if timed:
                p.has_wall = True
            if not p.files or p.files[-1] != file:
                if file not in p.files:
                    p.files.append(file)

    def add_field(self, name: str, step: int, raw: Any, *, file: str, wall_time: float | None = None) -> bool:
        """Add a JSON field: numbers and numeric strings become points; null, text, lists... are counted as skipped."""
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            self.add(name, step, float(raw), file=file, wall_time=wall_time)
            return True
        v = cell_value(raw) if isinstance(raw, str) else None
        if isinstance(v, float):
            self.add(name, step, v, file=file, wall_time=wall_time)
            return True
        self.ignore(name, file=file, example=raw)
        return False

    def ignore(self, name: str, *, file: str, example: Any) -> None:
        slot = self._ignored.setdefault((file, name), [0, example])
        slot[0] += 1

    def note_record(self, step: int, keys: Iterable[str], *, file: str) -> None:
        """Count a record that repeats the step and the fields of an earlier one (a second writer, a resume)."""
        key = (step, frozenset(keys))
        seen = self._records_seen.setdefault(file, set())
        if key in seen:
            self._repeated_records[file] = self._repeated_records.get(file, 0) + 1
        else:
            seen.add(key)

    def steps_seen(self) -> set[int]:
        return {s for p in self._points.values() for s in p.steps}

    def build(self) -> tuple[list[Series], list[Cleanup]]:
        series: list[Series] = []
        cleanups: list[Cleanup] = []
        for file, n in self._repeated_records.items():
            cleanups.append(Cleanup(
                "duplicates", f"{n} record(s) repeat the step and fields of an earlier record "
                "(written twice, or re-logged after a resume); the later write was kept", file=file, count=n))
        for name, p in self._points.items():
            replaced = _rewrites_with_new_value(p.steps, p.values)
            walls = p.walls if p.has_wall else None
            source = "; ".join(p.files)
            canonical, kind = self._names.get(name, ("", ""))
            s, _ = Series.from_points(name, p.steps, p.values, wall_times=walls, source=source,
                                      format=self.format, precision=self.precision)
            if canonical:
                s.canonical, s.kind = canonical, kind
            if replaced:
                cleanups.append(Cleanup(
                    "duplicates", f"{name}: {replaced} value(s) at a step written again with a different value "
                    "were replaced by the later write", file=source, metric=name, count=replaced))
            if s.n_non_finite:
                cleanups.append(Cleanup(
                    "non_finite", f"{name}: {s.n_non_finite} NaN/inf value(s) kept as evaluations",
                    file=source, metric=name, count=s.n_non_finite))
            series.append(s)
        for (file, name), (n, example) in self._ignored.items():
            cleanups.append(Cleanup(
                "dropped_record", f"{name}: {n} value(s) that are not numbers (e.g. {example!r}) skipped",
                file=file, metric=name, count=n))
        return series, cleanups


def _rewrites_with_new_value(steps: list[int], values: list[float]) -> int:
    """How many writes of a step differ from the previous write of the same step (NaN equals NaN)."""
    if len(steps) < 2:
        return 0
    s = np.asarray(steps, dtype=np.int64)
    if bool((s[1:] > s[:-1]).all()):  # the usual case: every step written once, in order
        return 0
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    s, v = s[order], v[order]
    again = s[1:] == s[:-1]
    same = (v[1:] == v[:-1]) | (np.isnan(v[1:]) & np.isnan(v[:-1]))
    return int((again & ~same).sum())


def post_training_eval_cleanup(file: str, n_records: int, step: int) -> Cleanup:
    """The record of evaluations logged after the training summary (the final `trainer.evaluate()`)."""
    return Cleanup(
        "duplicates",
        f"{n_records} evaluation record(s) logged after the training summary at step {step} (a final "
        "trainer.evaluate(), e.g. of the best model) kept as run summary; the periodic evaluation at that "
        "step stays the curve point",
        file=file, count=n_records)
