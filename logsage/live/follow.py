"""Followers: keep each file of a growing run read up to date, reading only what changed.

* JSON-lines logs (ms-swift, LLaMA-Factory, ...) keep a byte offset; complete new lines
  go through the format's own reader and are added to what was read before (a partial
  last line waits for its newline). A broken line in the middle of a chunk drops that
  line only, with a warning naming the file and line (as `load_history` names it);
* CSV logs keep their offset and header; a changed header (Lightning's CSVLogger
  rewrites the file when a new metric appears), a shorter file or a new inode (a file
  renamed over the log) means a rewrite, and the file is read again from the start;
* TensorBoard event files keep their offset; only complete new records are scanned,
  once, by `logsage.ingest.tfrecord.scan_bytes`. A TF2 writer names a tag's plugin on
  its first value only, so each chunk is scanned behind the file's own records that
  first carried each scalar tag (kept verbatim, their points dropped): the tags' state
  carries over without rescanning old records or forging any;
* `trainer_state.json` files are rewritten whole, and each holds the whole history up
  to its step: of the files that changed only the newest is read. HF writes them with
  sorted keys and a fixed indent, so when the new file's log_history starts with the
  bytes already read, only the entries after them are parsed (with the file's header
  and trailer, for its metadata); anything else is a full read;
* other rewritten files (model cards) are read again when size or mtime change.

Every follower counts `generation`: it goes up when points delivered before may have
changed (a rewrite, a full re-read), so a caller holding state derived from them knows
to rebuild it. Only regular files are read (a FIFO or a device named like a log is
skipped with a warning).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from logsage.core.errors import IngestError
from logsage.core.history import Series
from logsage.core.runfolder import checkpoint_step


def _ctx():
    from logsage.ingest.readers.base import ReadContext

    return ReadContext(use_cache=False)


class _Scratch:
    """A private temporary folder (removed with its owner): readers read files, so chunks are written here.

    Each scratch file is rewritten in place through a held descriptor (write, then cut to the
    new length): truncating a file to zero and refilling it makes ext4 flush it to disk
    (auto_da_alloc), about 6 ms a time - more than the whole poll.
    """

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="logsage-watch-"))
        self._fds: dict[str, int] = {}
        self._cleanup = weakref.finalize(self, _remove_scratch, str(self.dir), self._fds)

    def write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        fd = self._fds.get(name)
        if fd is None:
            fd = self._fds[name] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        view = memoryview(data)
        done = 0
        while done < len(view):
            done += os.pwrite(fd, view[done:], done)
        os.ftruncate(fd, len(view))
        return path

    def close(self) -> None:
        self._cleanup()


def _remove_scratch(folder: str, fds: dict[str, int]) -> None:
    for fd in fds.values():
        try:
            os.close(fd)
        except OSError:
            pass
    fds.clear()
    shutil.rmtree(folder, True)


def _regular(path: Path) -> os.stat_result | None:
    """The file's stat when it is a regular file (following links), else None."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


# ====================================================================== accumulated points
@dataclass
class _Points:
    """Points of one series in write order (later writes win when a Series is built)."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    template: Series | None = None
    kind: str = ""
    last_step: int = -1


class _Acc:
    """What a follower has read so far: points per series, metadata, summary."""

    def __init__(self) -> None:
        self.points: dict[str, _Points] = {}
        self.meta: dict[str, Any] = {}
        self.summary: dict[str, float] = {}
        self.cleanups: list = []

    def add_result(self, res: Any) -> None:
        for s in res.series:
            acc = self.points.setdefault(s.name, _Points(kind=s.kind))
            acc.template = acc.template or s
            acc.steps.extend(s.steps.tolist())
            acc.values.extend(s.values.tolist())
            acc.walls.extend(s.wall_times.tolist() if s.wall_times is not None else [math.nan] * len(s))
            if len(s):
                acc.last_step = max(acc.last_step, int(s.steps.max()))
        self.meta.update(res.meta)
        self.summary.update(res.summary)
        self.cleanups.extend(res.cleanups)

    def progress(self, kinds: tuple[str, ...]) -> tuple[tuple[tuple[str, int], ...], int, Any]:
        evals = tuple((name, len(p.steps)) for name, p in self.points.items() if p.kind in kinds)
        last = max((p.last_step for p in self.points.values()), default=-1)
        return evals, last, self.meta.get("max_steps")

    def result(self, reader: Any, files: list[str]) -> Any:
        from logsage.ingest.readers.base import ReadResult

        series = []
        for name, acc in self.points.items():
            if not acc.steps:
                continue
            walls = np.asarray(acc.walls, dtype=np.float64)
            t = acc.template
            s, _ = Series.from_points(name, acc.steps, acc.values,
                                      wall_times=None if np.isnan(walls).all() else walls,
                                      source=files[0] if files else "", format=reader.FORMAT,
                                      precision=t.precision if t else reader.PRECISION,
                                      **({"canonical": t.canonical, "kind": t.kind} if t else {}))
            series.append(s)
        return ReadResult(format=reader.FORMAT, files=list(files), series=series, meta=dict(self.meta),
                          summary=dict(self.summary), cleanups=list(self.cleanups), precision=reader.PRECISION)


# ====================================================================== followers
class Follower:
    """Keeps one file (or, for rewritten files, a group) read up to date; `result()` is a ReadResult."""

    def __init__(self, reader: Any, paths: list[Path]):
        self.reader = reader
        self.paths = paths
        self.warnings: list[str] = []
        self.generation = 0

    def refresh(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def result(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass

    def progress(self, kinds: tuple[str, ...] = ("eval",)) -> tuple[tuple[tuple[str, int], ...], int, Any]:
        """(points per series of the watched kinds, last step of any series, the stated step
        budget): a cheap summary that says whether a new evaluation arrived or the run ended."""
        res = self.result()
        if res is None:
            return (), -1, None
        evals = tuple((x.name, len(x)) for x in res.series if x.kind in kinds)
        last = max((x.last_step for x in res.series if len(x)), default=-1)
        return evals, last, res.meta.get("max_steps")

    def names(self) -> list[tuple[str, str]]:
        """(series name, canonical name) of every series read so far."""
        res = self.result()
        return [] if res is None else [(s.name, s.canonical) for s in res.series]

    def tail(self, name: str, start: int) -> tuple[list[int], list[float]] | None:
        """Points of `name` from the start-th in write order on, or None when this follower
        cannot say (then the caller rebuilds from `result()`)."""
        return None


class _AccFollower(Follower):
    """A follower whose points accumulate in write order (`tail` is exact)."""

    def __init__(self, reader: Any, paths: list[Path]):
        super().__init__(reader, paths)
        self.acc = _Acc()

    def progress(self, kinds: tuple[str, ...] = ("eval",)) -> tuple[tuple[tuple[str, int], ...], int, Any]:
        return self.acc.progress(kinds)  # from the lists: no Series is built until an evaluation arrives

    def names(self) -> list[tuple[str, str]]:
        from logsage.core.names import canonical_name

        return [(n, p.template.canonical if p.template else canonical_name(n)) for n, p in self.acc.points.items()
                if p.steps]

    def tail(self, name: str, start: int) -> tuple[list[int], list[float]] | None:
        p = self.acc.points.get(name)
        if p is None:
            return [], []
        return p.steps[start:], p.values[start:]


class Rewritten(Follower):
    """A file rewritten as a whole: read again when size or mtime change."""

    def __init__(self, reader: Any, paths: list[Path]):
        super().__init__(reader, paths)
        self._signature: tuple | None = None
        self._result = None

    def refresh(self) -> bool:
        sig = []
        for p in self.paths:
            st = _regular(p)
            if st is None:
                return False
            sig.append((str(p), st.st_size, st.st_mtime_ns, st.st_ino))
        if tuple(sig) == self._signature:
            return False
        try:
            self._result = self.reader.read(list(self.paths), ctx=_ctx())
        except (IngestError, ValueError):  # caught mid-write: try again at the next poll
            return False
        self._signature = tuple(sig)
        self.generation += 1
        return True

    def result(self) -> Any:
        return self._result


def state_file_step(p: Path) -> int | None:
    """N for a checkpoint-N/trainer_state.json, None for any other file."""
    return checkpoint_step(p.parent.name)


_LOG_HISTORY = b'"log_history": ['
_LOG_HISTORY_END = b"\n  ]"  # json.dumps(indent=2): the list's closing bracket at the top level's indent


class NewestState(_AccFollower):
    """The trainer_state.json files of one run (the root's and each checkpoint-N's).

    Each holds the whole history up to its step, so when files change only the newest
    is read: the changed checkpoint file with the largest N (older ones that changed with
    it are superseded) and the run root's file, whose step is known only by reading it.
    Of what was read, the file with the longest history wins, as in the offline reader
    (largest global_step, then most points, the root's file on a tie). A file whose
    log_history extends the one read before, byte for byte, is read by its new entries.
    """

    def __init__(self, reader: Any, paths: list[Path]):
        super().__init__(reader, paths)
        self._seen: dict[Path, tuple[int, int, int]] = {}  # path -> (size, mtime, inode) when read or superseded
        self._rank: tuple[int, int, bool] | None = None  # set with _has_result
        self._path: Path | None = None
        # The log_history entries read so far, as written: a view into the last file's bytes (no copy).
        self._entries: memoryview | None = None
        self._scratch = _Scratch()
        self._has_result = False
        self.n_reads = 0  # files read so far (what "reading only the newest" is checked by)
        self.n_full_parses = 0  # of those, read whole (the rest: only their new entries)

    def close(self) -> None:
        self._scratch.close()

    def refresh(self) -> bool:
        changed = []
        for p in self.paths:
            st = _regular(p)
            if st is None:
                continue  # removed (save_total_limit), not there yet, or not a regular file
            sig = (st.st_size, st.st_mtime_ns, st.st_ino)
            if self._seen.get(p) != sig:
                changed.append((p, sig))
        if not changed:
            return False
        ckpts = sorted(((step, p, sig) for p, sig in changed if (step := state_file_step(p)) is not None),
                       key=lambda t: t[0], reverse=True)
        others = [(p, sig) for p, sig in changed if state_file_step(p) is None]
        updated = False
        # The newest checkpoint file first; if it cannot be read yet (caught mid-write), the
        # next newest, so a run is never blind; files older than the one read are superseded.
        for k, (_, p, sig) in enumerate(ckpts):
            if self._read(p, sig):
                updated = True
                for _, q, qsig in ckpts[k + 1:]:
                    self._seen[q] = qsig
                break
            if self._has_result:
                break  # keep what was read before; the newest is tried again at the next poll
        for p, sig in others:
            updated |= self._read(p, sig)
        return updated

    def _read(self, p: Path, sig: tuple[int, int, int]) -> bool:
        """Read one file; keep it if it holds the longest history so far. True when kept."""
        try:
            data = p.read_bytes()
        except OSError:
            return False
        self.n_reads += 1
        tail = self._tail_entries(data)
        if tail is not None:
            res, entries = tail
            if res is None:  # nothing new in log_history: only the metadata may have changed
                self._seen[p] = sig
                return False
            self._seen[p] = sig
            self.acc.add_result(res)
            self.acc.meta["trainer_state_file"] = str(p)
            self._entries, self._path = entries, p
            self._rank = self._rank_of(res.meta.get("global_step"), p)
            return True
        try:
            res = self.reader.read([p], ctx=_ctx())
        except (IngestError, ValueError):  # caught mid-write: try again at the next poll
            return False
        self.n_full_parses += 1
        self._seen[p] = sig
        rank = self._rank_of(res.meta.get("global_step"), p, sum(len(x) for x in res.series))
        if not self._has_result or self._rank is None or p == self._path or rank > self._rank:
            self.acc = _Acc()
            self.acc.add_result(res)
            self._has_result, self._rank, self._path = True, rank, p
            self._entries = self._entries_of(data)
            self.generation += 1
            return True
        return False

    def _rank_of(self, step: Any, p: Path, n_points: int | None = None) -> tuple[int, int, bool]:
        if n_points is None:
            n_points = sum(len(x.steps) for x in self.acc.points.values())
        return (int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) and math.isfinite(step)
                else 0, n_points, state_file_step(p) is None)

    @staticmethod
    def _entries_of(data: bytes) -> memoryview | None:
        start = data.find(_LOG_HISTORY)
        end = data.rfind(_LOG_HISTORY_END)
        if start < 0 or end < start:
            return None
        return memoryview(data)[start + len(_LOG_HISTORY):end]

    def _tail_entries(self, data: bytes) -> tuple[Any, memoryview] | None:
        """(the new entries read with the file's header and trailer, or None when there are
        none; the entries now read) when `data` extends what was read; None otherwise."""
        old = self._entries
        if not self._has_result or old is None:
            return None
        start = data.find(_LOG_HISTORY)
        end = data.rfind(_LOG_HISTORY_END)
        if start < 0 or end < start:
            return None
        at = start + len(_LOG_HISTORY)
        if not data.startswith(old, at) or at + len(old) > end:
            return None
        new = data[at + len(old):end]
        if not new.strip():
            return (None, old) if at + len(old) == end else None
        if not new.startswith(b","):
            return None
        tmp = self._scratch.write("trainer_state.json", data[:at] + new[1:] + data[end:])
        try:
            res = self.reader.read([tmp], ctx=_ctx())
        except (IngestError, ValueError):
            return None
        # The reader's whole-file judgements (the training summary, a final evaluate() at an
        # evaluated step, a rewritten step) need the earlier entries: read those files whole.
        if res.summary or any(c.kind == "duplicates" for c in res.cleanups):
            return None
        for s in res.series:
            held = self.acc.points.get(s.name)
            if held is not None and len(s) and int(s.steps[0]) <= held.last_step:
                return None
        res.files = [str(self._path)]
        return res, memoryview(data)[at:end]

    def result(self) -> Any:
        if not self._has_result:
            return None
        return self.acc.result(self.reader, [str(self._path)])


_TMP_LINE = re.compile(r":(\d+):")


class Appended(_AccFollower):
    """An append-only file read from its last offset; complete units go through the format's reader."""

    def __init__(self, reader: Any, path: Path, kind: str):
        super().__init__(reader, [path])
        self.path = path
        self.kind = kind  # "lines" | "csv" | "records"
        self._scratch = _Scratch()
        self._reset()
        self._identity: tuple[int, int] | None = None
        self._stopped = False  # the file is damaged beyond resynchronising: nothing more is read

    def close(self) -> None:
        self._scratch.close()

    def _reset(self) -> None:
        self.offset, self.pending = 0, b""
        self.header: bytes | None = None  # csv: the header line, once read
        self.lines_done = 0  # complete lines consumed (the header included)
        self.first_records: dict[str, bytes] = {}  # tfrecord: scalar tag -> the record that first carried it
        self._prefix, self._prefix_points = b"", 0
        self.acc = _Acc()
        self.generation += 1

    def refresh(self) -> bool:
        st = _regular(self.path)
        if st is None:
            return False
        identity = (st.st_dev, st.st_ino)
        if self._identity is not None and identity != self._identity:
            self._reset()  # a new file renamed over the log: read it from the start
            self._stopped = False
        self._identity = identity
        size = st.st_size
        if size < self.offset:  # truncated: start again
            self._reset()
        if self.kind == "csv" and self.header is not None:
            with open(self.path, "rb") as f:
                first = f.readline()
            if first.rstrip(b"\r\n") != self.header.rstrip(b"\r\n"):
                self._reset()  # rewritten with a new header (Lightning adds a column)
        if size == self.offset or self._stopped:
            return False
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        self.offset += len(data)
        buf = self.pending + data
        if self.kind == "records":
            return self._scan_records(buf)
        cut = buf.rfind(b"\n") + 1
        self.pending = buf[cut:]
        chunk = buf[:cut]
        if self.kind == "csv" and self.header is None:
            nl = chunk.find(b"\n") + 1
            if nl == 0:
                return False
            self.header, chunk = chunk[:nl], chunk[nl:]
            self.lines_done = 1
        if not chunk.strip():
            self.lines_done += chunk.count(b"\n")
            return False
        before = self.lines_done
        self.lines_done += chunk.count(b"\n")
        return self._parse_chunk(chunk, before)

    def _parse_chunk(self, chunk: bytes, before: int) -> bool:
        """Read complete lines; a line the reader rejects is dropped alone (named), the rest is read."""
        lines = chunk.splitlines(keepends=True)
        numbers = list(range(before + 1, before + 1 + len(lines)))  # each line's number in the file
        head: list[bytes] = [self.header] if self.header else []
        tmp = self._scratch.dir / self.path.name
        for _ in range(len(lines) + 1):
            if not any(ln.strip() for ln in lines):
                return False
            self._scratch.write(self.path.name, b"".join(head + lines))
            try:
                res = self.reader.read([tmp], ctx=_ctx())
            except IngestError as e:
                msg = str(e)
                m = _TMP_LINE.search(msg[len(str(tmp)):]) if msg.startswith(str(tmp)) else None
                k = int(m.group(1)) - 1 - len(head) if m else -1
                if not (0 <= k < len(lines)):  # not about one line (e.g. a chunk of progress lines only)
                    self.warnings.append(self._real(msg, tmp, numbers, len(head)))
                    return False
                self.warnings.append(f"{self.path}:{numbers[k]}: {msg.split(': ', 1)[1] if ': ' in msg else msg}"
                                     .replace(str(tmp), str(self.path)) + " (watch dropped that line)")
                del lines[k], numbers[k]
                continue
            self.warnings.extend(self._real(w, tmp, numbers, len(head)) for w in res.warnings)
            self.acc.add_result(res)
            return True
        return False

    def _real(self, msg: str, tmp: Path, numbers: list[int], n_head: int) -> str:
        """A reader's message about the scratch file, with the log's path and line numbers."""
        if not msg.startswith(str(tmp)):
            return msg.replace(str(tmp), str(self.path))
        rest = msg[len(str(tmp)):]
        m = re.match(r":(\d+):", rest)
        if m:
            k = int(m.group(1)) - 1 - n_head
            line = numbers[k] if 0 <= k < len(numbers) else int(m.group(1))
            rest = f":{line}:" + rest[m.end():]
        return str(self.path) + rest.replace(str(tmp), str(self.path))

    # ------------------------------------------------------------------ TensorBoard records
    def _scan_records(self, buf: bytes) -> bool:
        """Scan the complete records of `buf` once, behind the records that first carried each
        scalar tag (so the kernel knows them as scalars); returns whether points were added."""
        from logsage.core.names import canonical_name, kind_of
        from logsage.ingest import tfrecord

        added = False
        pos = 0
        while pos < len(buf):
            chunk = buf[pos:]
            scan = tfrecord.scan_bytes(np.frombuffer(self._prefix + chunk, dtype=np.uint8))
            n_pre = len(self._prefix)
            stop = len(chunk)
            if scan.damage != tfrecord.DAMAGE_NONE:
                stop = scan.damage_offset - n_pre
            skip = self._prefix_points
            steps, values, walls, ids = (scan.steps[skip:], scan.values[skip:], scan.wall_times[skip:],
                                         scan.tag_ids[skip:])
            for i, tag in enumerate(scan.tags):
                sel = ids == i
                if not sel.any():
                    continue
                acc = self.acc.points.get(tag)
                if acc is None:
                    acc = self.acc.points[tag] = _Points(kind=kind_of(canonical_name(tag)))
                    self._remember_first_record(chunk, tag)
                tag_steps = steps[sel]
                acc.steps.extend(tag_steps.tolist())
                acc.values.extend(values[sel].tolist())
                acc.walls.extend(walls[sel].tolist())
                acc.last_step = max(acc.last_step, int(tag_steps.max()))
                added = True
            if scan.damage in (tfrecord.DAMAGE_NONE, tfrecord.DAMAGE_SHORT_HEADER, tfrecord.DAMAGE_SHORT_DATA):
                self.pending = chunk[stop:]  # a record still being written waits for the rest
                return added
            at = self.offset - len(buf) + pos + stop
            if scan.damage == tfrecord.DAMAGE_DATA_CRC:  # the length is sound: skip that record only
                self.warnings.append(f"{self.path}: the record at byte {at} fails its data checksum; "
                                     "watch skipped it and reads on")
                pos += stop + 12 + scan.damage_length + 4
                continue
            self.warnings.append(f"{self.path}: the record header at byte {at} fails its checksum; watch reads "
                                 "nothing after it (run `logsage ingest` on the file once it is complete)")
            self._stopped, self.pending = True, b""
            return added
        self.pending = b""
        return added

    def _remember_first_record(self, chunk: bytes, tag: str) -> None:
        """Keep the record of `chunk` that first carries a scalar value of `tag`, verbatim."""
        from logsage.ingest import tfrecord

        needle = tag.encode("utf-8")
        pos = 0
        while pos + 12 <= len(chunk):
            end = pos + 16 + int.from_bytes(chunk[pos:pos + 8], "little")
            if end > len(chunk):
                return
            if chunk.find(needle, pos, end) >= 0:
                record = chunk[pos:end]
                one = tfrecord.scan_bytes(np.frombuffer(record, dtype=np.uint8))
                if tag in one.tags and one.steps.size:
                    self.first_records[tag] = record
                    self._prefix = b"".join(self.first_records.values())
                    self._prefix_points = int(tfrecord.scan_bytes(np.frombuffer(self._prefix, dtype=np.uint8))
                                              .steps.size)
                    return
            pos = end

    def result(self) -> Any:
        return self.acc.result(self.reader, [str(self.path)])


class Inventory:
    """The checkpoint inventory of a run folder (`logsage.ingest.checkpoints.inventory`), kept
    up to date: a checkpoint is judged again only when its folder changed or it was not
    whole (it may still be being written); new folders are judged, removed ones dropped."""

    def __init__(self, root: Path):
        self.root = root
        self._known: dict[str, tuple[int, Any]] = {}  # folder name -> (folder mtime, Checkpoint)
        self.n_inspected = 0  # checkpoint folders judged so far

    def refresh(self) -> list[Any]:
        from logsage.ingest import checkpoints

        found: list[tuple[int, str, int]] = []
        try:
            with os.scandir(self.root) as entries:
                for e in entries:
                    step = checkpoint_step(e.name)  # None: not a checkpoint-N folder name
                    if step is not None and e.is_dir():
                        try:
                            mtime = e.stat().st_mtime_ns
                        except OSError:
                            continue
                        found.append((step, e.name, mtime))
        except OSError:
            return []
        found.sort()
        known: dict[str, tuple[int, Any]] = {}
        for step, name, mtime in found:
            held = self._known.get(name)
            if held is None or held[0] != mtime or not held[1].whole:
                # Paths are reported under the folder as the user gave it, as the offline inventory does.
                held = (mtime, checkpoints.inspect_checkpoint(self.root / name, step))
                self.n_inspected += 1
            known[name] = held
        self._known = known
        return checkpoints.mark_conflicts([c for _, c in known.values()])  # two folders, one step: neither


__all__ = ["Appended", "Follower", "Inventory", "NewestState", "Rewritten", "state_file_step"]
