"""What every log reader returns, and the helpers readers share.

A reader module (one per format, in this package) defines:

* ``FORMAT``: its name for ``--format`` (e.g. ``"trainer-state"``);
* ``DESCRIPTION``: one line for the README's formats table (``logsage.ingest.formats_table_markdown``);
* ``PRECISION``: ``"float64"``, ``"float32"`` or ``"rounded"``: when two sources in one
  run folder hold the same metric, the more precise one wins (recorded as a cleanup);
* ``claims(path: Path, head: bytes) -> bool``: whether this file is written in the
  format (by name and by its first 4 KiB, `head`); must be cheap and never raise;
* ``read(paths: list[Path], *, ctx: ReadContext) -> ReadResult``: read *all* files of
  this format found in one run (several event files of one run are ordered and merged
  by the reader itself). Broken input raises `IngestError` naming the file and the
  fix; damage that leaves usable data (a truncated last record) becomes a warning plus
  a `Cleanup`, never a silent drop.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup, Series

PRECISION_RANK = {"float64": 3, "float32": 2, "rounded": 1}


@dataclass
class ReadContext:
    """Options shared by all readers of one `load_history` call."""

    use_cache: bool = True
    cache_dir: Path | None = None
    run_root: Path | None = None  # the folder the user gave (None for a single file)
    # Which training session of a log that holds several (Keras CSVLogger(append=True)):
    # None = the last (the reader says so), an int = that one (1-based; negative from the end).
    session: int | None = None


@dataclass
class ReadResult:
    format: str
    files: list[str] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    cleanups: list[Cleanup] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    precision: str = "float64"


# --------------------------------------------------------------------- helpers
_NAN_TOKENS = re.compile(r"(?<![\w\"])(-?Infinity|NaN)(?![\w\"])")


def loads_lenient(text: str, *, file: str) -> Any:
    """Parse JSON that Python's `json.dumps` wrote: bare NaN / Infinity / -Infinity tokens are accepted.

    (Python's json module already accepts them; this wrapper turns failures into a
    one-line `IngestError` naming the file and position.)
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise IngestError(
            f"{file}: not valid JSON at line {e.lineno} column {e.colno} ({e.msg}); "
            "the file may be truncated or not a log - check it or pass --format"
        ) from None
    except RecursionError:
        raise IngestError(f"{file}: JSON nested too deeply to be a training log; check the file or pass --format") from None


def to_float(value: Any) -> float | None:
    """A number from a log cell: int/float, numeric strings ("0.5", "nan", "27.8%"), else None."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        s = value.strip().rstrip("%")
        if not s:
            return None
        low = s.lower()
        if low in ("nan", "-nan"):
            return math.nan
        if low in ("inf", "+inf", "infinity", "+infinity"):
            return math.inf
        if low in ("-inf", "-infinity"):
            return -math.inf
        try:
            return float(s)
        except ValueError:
            return None
    return None


# What one whole-file read of a JSON log may hold in memory (a 1M-record trainer_state.json
# is ~250 MB). A symlink to /dev/zero is refused as not a regular file; this bounds the rest.
MAX_JSON_BYTES_ENV = "LOGSAGE_MAX_JSON_BYTES"
_DEFAULT_MAX_JSON_BYTES = 4 << 30


def max_json_bytes() -> int:
    """The cap on one JSON log read: $LOGSAGE_MAX_JSON_BYTES (bytes) if set and valid, else 4 GiB."""
    raw = os.environ.get(MAX_JSON_BYTES_ENV, "")
    try:
        value = int(raw)
    except ValueError:
        return _DEFAULT_MAX_JSON_BYTES
    return value if value > 0 else _DEFAULT_MAX_JSON_BYTES


def file_kind(mode: int) -> str:
    """What a stat mode is, in words, for messages about files that are not regular."""
    for test, words in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                        (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                        (stat.S_ISDIR, "a folder")):
        if test(mode):
            return words
    return "not a regular file"


def open_regular(path: Path):
    """Open `path` for binary reading only if it is a regular file, without ever blocking.

    O_NONBLOCK keeps a FIFO from blocking the open (it is then refused by fstat); checking
    the opened descriptor, not the name, leaves no window for a swap between check and read.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise IngestError(f"{path}: cannot be read ({e.strerror or e}); check the path and its permissions") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IngestError(f"{path}: is {file_kind(st.st_mode)}, not a regular file; logsage reads only "
                              "regular files - give the log file itself")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: Path, *, max_bytes: int | None = None, what: str = "log") -> bytes:
    """The bytes of a regular file, or a one-line IngestError (not regular, unreadable, over `max_bytes`)."""
    with open_regular(path) as f:
        try:
            if max_bytes is None:
                data = f.read()
            else:  # sized by fstat (no cap-sized buffer); a file that grew while read is read on, to the cap
                size = os.fstat(f.fileno()).st_size
                data = f.read(min(size, max_bytes) + 1)
                if len(data) > size and len(data) <= max_bytes:
                    data += f.read(max_bytes + 1 - len(data))
        except OSError as e:
            raise IngestError(f"{path}: cannot be read ({e.strerror or e}); check the path and its permissions") from None
    if max_bytes is not None and len(data) > max_bytes:
        raise IngestError(
            f"{path}: larger than the {max_bytes:,} bytes one {what} read may use; if the file is a real log, "
            f"raise the cap with {MAX_JSON_BYTES_ENV}=<bytes>")
    if data.startswith(b"version https://git-lfs.github.com/spec/"):
        raise IngestError(
            f"{path}: is a Git LFS pointer, not the log itself; run `git lfs pull` in its repository first"
        )
    return data


def read_text(path: Path, *, max_bytes: int | None = None) -> str:
    """Read a text log (UTF-8, BOM and CRLF tolerated) or raise a one-line IngestError."""
    data = read_bytes(path, max_bytes=max_bytes)
    text = data.decode("utf-8-sig", errors="replace")
    return text.replace("\r\n", "\n")


def read_json_text(path: Path) -> str:
    """`read_text` for a whole-file JSON log, capped at `max_json_bytes()`."""
    return read_text(path, max_bytes=max_json_bytes())


def series_from_columns(
    columns: dict[str, tuple[np.ndarray, np.ndarray]],
    *,
    file: str,
    format: str,
    precision: str,
    wall_times: dict[str, list[float]] | None = None,
) -> tuple[list[Series], list[Cleanup]]:
    """Turn per-metric point arrays (steps, values; in write order) into Series, recording duplicates and non-finite values."""
    out: list[Series] = []
    cleanups: list[Cleanup] = []
    for name, (steps, values) in columns.items():
        wt = wall_times.get(name) if wall_times else None
        if (wt is None and isinstance(steps, np.ndarray) and steps.dtype == np.int64
                and (steps.size < 2 or bool((steps[1:] > steps[:-1]).all()))):
            # Already sorted, one write per step (the usual log): nothing to sort or replace.
            s, dups = Series(name, steps, values, source=file, format=format, precision=precision), 0
        else:
            s, dups = Series.from_points(
                name, steps, values, wall_times=wt, source=file, format=format, precision=precision
            )
        if dups:
            cleanups.append(
                Cleanup("duplicates", f"{name}: {dups} earlier write(s) of a repeated step replaced by the later one",
                        file=file, metric=name, count=dups)
            )
        nf = s.n_non_finite
        if nf:
            cleanups.append(
                Cleanup("non_finite", f"{name}: {nf} NaN/inf value(s) kept as evaluations", file=file, metric=name, count=nf)
            )
        out.append(s)
    return out, cleanups
