"""Watch: follow a run's growing log and give a stopping rule's advice at each new evaluation.

For runs logsage did not launch (ms-swift `logging.jsonl`, LLaMA-Factory
`trainer_log.jsonl`, Lightning `metrics.csv`, a plain HF script's `trainer_state.json`
or TensorBoard events), so that a person can stop by hand, with evidence:

    >>> from logsage.live.watch import watch
    >>> for advice in watch("output/qwen-lora", "hf:patience=3", interval=5):
    ...     print(advice.message)      # "would stop now; best checkpoint-1200 (eval_loss 0.81)"

Reading only what was appended:

* JSON-lines logs (ms-swift, LLaMA-Factory, ...) keep a byte offset; complete new lines
  are parsed by the format's own reader and added to what was read before (a partial
  last line waits for its newline);
* CSV logs keep their offset and header; a changed header (Lightning's CSVLogger
  rewrites the file when a new metric appears) or a shorter file means a rewrite, and
  the file is read again from the start;
* TensorBoard event files keep their offset; only complete new records are scanned,
  once. The scan keeps no state between calls, and a TF2 writer puts a tag's metadata
  (which plugin owns it) on its first value only, so each chunk is scanned behind a
  small synthetic record that names every tag already known to be a scalar (its one
  point is dropped): the tags' state carries over without rescanning old records;
* `trainer_state.json` files are rewritten as a whole, and each holds the whole history
  up to its step: a plain HF script writes a new `checkpoint-N/trainer_state.json` at
  every save, so only the newest that changed (the largest N, or the run root's file)
  is read, never all of them again; other rewritten files (model cards) are read again
  when their size or modification time changes.

In a run folder new files (a new event file after a restart, checkpoint folders) are
picked up at each poll (a checkpoint folder whose trainer_state.json was found is not
listed again), and the checkpoint inventory is refreshed when an evaluation arrives:
new checkpoint folders are judged, folders that disappeared are dropped, and a
checkpoint judged before is judged again only when its folder changed (or it was not
whole: it may still be being written), so "best checkpoint-N" names a folder that is
on disk and whole at that moment (a save that lands just after its evaluation is seen
at the next one) without reading every checkpoint's header at every evaluation.

The advice is computed by `logsage.replay.engine.replay` on the history cut at each new
evaluation - the same path as an offline replay, so the evaluation at which watch
says "would stop now" is the one at which `logsage replay` says the rule stops.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from logsage.core.errors import IngestError, LogsageError, UsageError
from logsage.core.history import History, Series, json_safe
from logsage.core.runfolder import RUN_MANIFEST, checkpoint_step

# How each reader's files grow.
_LINE_FORMATS = {"swift", "llamafactory", "mlflow"}
_CSV_FORMATS = {"lightning", "keras", "tb-csv", "wandb", "wide"}
_RECORD_FORMATS = {"tensorboard"}


@dataclass(frozen=True)
class Advice:
    """The rule's advice at one evaluation.

    action: "continue", "stop" (the rule stops at this evaluation), "stopped" (it stopped
    at an earlier one; stop_step says where) or "undecidable" (it cannot judge yet).
    """

    eval_index: int  # 0-based index of the evaluation
    step: int
    value: float
    metric: str
    action: str
    message: str
    selected_step: int | None
    selected_value: float | None
    stop_step: int | None
    reason: str
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dict(self.__dict__))


# ====================================================================== file followers
@dataclass
class _Points:
    """Accumulated points of one series from an append-only file (later writes win at build)."""

    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    template: Series | None = None
    kind: str = ""
    last_step: int = -1


class _Follower:
    """Keeps one file (or, for rewritten files, a group) read up to date; `result()` is a ReadResult."""

    def __init__(self, reader: Any, paths: list[Path]):
        self.reader = reader
        self.paths = paths
        self.warnings: list[str] = []

    def refresh(self) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def result(self) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def progress(self, kinds: tuple[str, ...] = ("eval",)) -> tuple[tuple[tuple[str, int], ...], int, Any]:
        """(points per series of the watched kinds, last step of any series, the stated step
        budget): a cheap summary that says whether a new evaluation arrived or the run ended."""
        res = self.result()
        if res is None:
            return (), -1, None
        evals = tuple((x.name, len(x)) for x in res.series if x.kind in kinds)
        last = max((x.last_step for x in res.series if len(x)), default=-1)
        return evals, last, res.meta.get("max_steps")


def _ctx():
    from logsage.ingest.readers.base import ReadContext

    return ReadContext(use_cache=False)


class _Rewritten(_Follower):
    """A file rewritten as a whole: read again when size or mtime change."""

    def __init__(self, reader: Any, paths: list[Path]):
        super().__init__(reader, paths)
        self._signature: tuple | None = None
        self._result = None

    def refresh(self) -> bool:
        sig = []
        for p in self.paths:
            try:
                st = p.stat()
            except OSError:
                return False
            sig.append((str(p), st.st_size, st.st_mtime_ns))
        if tuple(sig) == self._signature:
            return False
        try:
            self._result = self.reader.read(list(self.paths), ctx=_ctx())
        except (IngestError, ValueError):  # caught mid-write: try again at the next poll
            return False
        self._signature = tuple(sig)
        return True

    def result(self) -> Any:
        return self._result


class _NewestState(_Rewritten):
    """The trainer_state.json files of one run (the root's and each checkpoint-N's).

    Each holds the whole history up to its step, so when files change only the newest
    is read: the changed checkpoint file with the largest N (older ones that changed with
    it are superseded) and the run root's file, whose step is known only by reading it.
    Of what was read, the file with the longest history wins, as in the offline reader
    (largest global_step, then most points, the root's file on a tie).
    """

    def __init__(self, reader: Any, paths: list[Path]):
        super().__init__(reader, paths)
        self._seen: dict[Path, tuple[int, int]] = {}  # path -> (size, mtime) when read or superseded
        self._rank: tuple | None = None
        self._path: Path | None = None
        self.n_reads = 0  # files read so far (what "reading only the newest" is checked by)

    def refresh(self) -> bool:
        changed = []
        for p in self.paths:
            try:
                st = p.stat()
            except OSError:
                continue  # removed (save_total_limit) or not there yet
            sig = (st.st_size, st.st_mtime_ns)
            if self._seen.get(p) != sig:
                changed.append((p, sig))
        if not changed:
            return False
        ckpts = sorted(((_ckpt_step(p), p, sig) for p, sig in changed if _ckpt_step(p) is not None),
                       key=lambda t: t[0], reverse=True)
        others = [(p, sig) for p, sig in changed if _ckpt_step(p) is None]
        updated = False
        # The newest checkpoint file first; if it cannot be read yet (caught mid-write), the
        # next newest, so a run is never blind; files older than the one read are superseded.
        for k, (_, p, sig) in enumerate(ckpts):
            if self._read(p, sig):
                updated = True
                for _, q, qsig in ckpts[k + 1:]:
                    self._seen[q] = qsig
                break
            if self._result is not None:
                break  # keep what was read before; the newest is tried again at the next poll
        for p, sig in others:
            updated |= self._read(p, sig)
        return updated

    def _read(self, p: Path, sig: tuple[int, int]) -> bool:
        """Read one file; keep its result if it holds the longest history so far."""
        try:
            res = self.reader.read([p], ctx=_ctx())
        except (IngestError, ValueError):  # caught mid-write: try again at the next poll
            return False
        finally:
            self.n_reads += 1
        self._seen[p] = sig
        step = res.meta.get("global_step")
        rank = (int(step) if isinstance(step, (int, float)) and not isinstance(step, bool) else 0,
                sum(len(x) for x in res.series), _ckpt_step(p) is None)
        if self._result is None or p == self._path or rank > self._rank:
            self._result, self._rank, self._path = res, rank, p
            return True
        return False


def _ckpt_step(p: Path) -> int | None:
    """N for a checkpoint-N/trainer_state.json, None for any other file."""
    name = p.parent.name
    return checkpoint_step(name)


class _Appended(_Follower):
    """An append-only file read from its last offset; complete units go through the format's reader."""

    def __init__(self, reader: Any, path: Path, kind: str):
        super().__init__(reader, [path])
        self.path = path
        self.kind = kind  # "lines" | "csv" | "records"
        self.offset = 0
        self.pending = b""
        self.header: bytes | None = None
        self.scalar_tags: list[str] = []  # tfrecord: tags known to hold scalars, in order of appearance
        self.points: dict[str, _Points] = {}
        self.meta: dict[str, Any] = {}
        self.summary: dict[str, float] = {}
        # The format's reader reads files: each chunk of complete lines goes through one here.
        self._tmpdir = Path(tempfile.mkdtemp(prefix="logsage-watch-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self._tmpdir), True)

    def close(self) -> None:
        self._cleanup()

    def _reset(self) -> None:
        self.offset, self.pending, self.header = 0, b"", None
        self.scalar_tags = []
        self.points, self.meta, self.summary = {}, {}, {}

    def refresh(self) -> bool:
        try:
            size = self.path.stat().st_size
        except OSError:
            return False
        if size < self.offset:  # truncated or replaced: start again
            self._reset()
        if self.kind == "csv" and self.header is not None:
            with open(self.path, "rb") as f:
                first = f.readline()
            if first.rstrip(b"\r\n") != self.header.rstrip(b"\r\n"):
                self._reset()  # rewritten with a new header (Lightning adds a column)
        if size == self.offset:
            return False
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        self.offset += len(data)
        buf = self.pending + data
        if self.kind == "records":
            complete = _complete_records(buf)
            self.pending = buf[complete:]
            if complete == 0:
                return False
            self._scan_records(buf[:complete])
            return True
        cut = buf.rfind(b"\n") + 1
        self.pending = buf[cut:]
        chunk = buf[:cut]
        if self.kind == "csv" and self.header is None:
            nl = chunk.find(b"\n") + 1
            if nl == 0:
                return False
            self.header, chunk = chunk[:nl], chunk[nl:]
        if not chunk.strip():
            return False
        self._parse_chunk(chunk)
        return True

    def _parse_chunk(self, chunk: bytes) -> None:
        tmp = self._tmpdir / self.path.name
        tmp.write_bytes((self.header or b"") + chunk)
        try:
            res = self.reader.read([tmp], ctx=_ctx())
        except IngestError as e:  # e.g. a chunk of progress lines only
            self.warnings.append(str(e).replace(str(tmp), str(self.path)))
            return
        for s in res.series:
            acc = self.points.setdefault(s.name, _Points(kind=s.kind))
            acc.template = acc.template or s
            acc.steps.extend(s.steps.tolist())
            acc.values.extend(s.values.tolist())
            walls = s.wall_times.tolist() if s.wall_times is not None else [math.nan] * len(s)
            acc.walls.extend(walls)
            if len(s):
                acc.last_step = max(acc.last_step, int(s.steps.max()))
        self.meta.update(res.meta)
        self.summary.update(res.summary)

    def _scan_records(self, chunk: bytes) -> None:
        """Scan complete new records once, behind a preamble that carries the tags' plugin state."""
        from logsage.ingest.tfrecord import scan_bytes

        from logsage.core.names import canonical_name, kind_of

        pre = _scalars_preamble(self.scalar_tags)
        scan = scan_bytes(np.frombuffer(pre + chunk, dtype=np.uint8))
        skip = len(self.scalar_tags) if pre else 0  # the preamble's points come first, one per tag
        steps, values, walls, ids = scan.steps[skip:], scan.values[skip:], scan.wall_times[skip:], scan.tag_ids[skip:]
        for i, tag in enumerate(scan.tags):
            sel = ids == i
            if not sel.any():
                continue
            acc = self.points.get(tag)
            if acc is None:
                acc = self.points[tag] = _Points(kind=kind_of(canonical_name(tag)))
                self.scalar_tags.append(tag)
            tag_steps = steps[sel]
            acc.steps.extend(tag_steps.tolist())
            acc.values.extend(values[sel].tolist())
            acc.walls.extend(walls[sel].tolist())
            acc.last_step = max(acc.last_step, int(tag_steps.max()))

    def progress(self, kinds: tuple[str, ...] = ("eval",)) -> tuple[tuple[tuple[str, int], ...], int, Any]:
        # From the accumulated lists: no Series is built until an evaluation arrives.
        evals = tuple((name, len(p.steps)) for name, p in self.points.items() if p.kind in kinds)
        last = max((p.last_step for p in self.points.values()), default=-1)
        return evals, last, self.meta.get("max_steps")

    def result(self) -> Any:
        from logsage.ingest.readers.base import ReadResult

        series = []
        for name, acc in self.points.items():
            if not acc.steps:
                continue
            walls = np.asarray(acc.walls, dtype=np.float64)
            t = acc.template
            s, _ = Series.from_points(name, acc.steps, acc.values,
                                      wall_times=None if np.isnan(walls).all() else walls,
                                      source=str(self.path), format=self.reader.FORMAT,
                                      precision=t.precision if t else self.reader.PRECISION,
                                      **({"canonical": t.canonical, "kind": t.kind} if t else {}))
            series.append(s)
        return ReadResult(format=self.reader.FORMAT, files=[str(self.path)], series=series, meta=dict(self.meta),
                          summary=dict(self.summary), precision=self.reader.PRECISION)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_CRC_TABLE: list[int] | None = None


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C (for the few bytes of a preamble record; the kernel checks it)."""
    global _CRC_TABLE
    if _CRC_TABLE is None:
        from logsage.ingest.tfrecord import crc32c_tables

        _CRC_TABLE = [int(v) for v in crc32c_tables()[0]]
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _scalars_preamble(tags: list[str]) -> bytes:
    """One TFRecord whose Event holds, for every tag, a float tensor value with the scalars
    plugin's metadata: scanned before a chunk, it tells the kernel that these tags are
    scalars (a TF2 writer says so on a tag's first value only). Its points are the scan's
    first len(tags), one per tag, and are dropped."""
    if not tags:
        return b""
    plugin = _field(9, _field(1, _field(1, b"scalars")))  # metadata.plugin_data.plugin_name
    tensor = _field(8, b"\x08\x01" + _field(5, b"\x00\x00\x00\x00"))  # dtype DT_FLOAT, float_val [0.0]
    values = b"".join(_field(1, _field(1, t.encode("utf-8")) + plugin + tensor) for t in tags)
    event = b"\x09" + b"\x00" * 8 + b"\x10\x00" + _field(5, values)  # wall_time 0.0, step 0, summary
    head = len(event).to_bytes(8, "little")
    return (head + _masked_crc32c(head).to_bytes(4, "little") + event
            + _masked_crc32c(event).to_bytes(4, "little"))


def _complete_records(buf: bytes) -> int:
    """Bytes of `buf` that form whole TFRecords (8-byte length, 4-byte CRC, data, 4-byte CRC)."""
    pos = 0
    while pos + 12 <= len(buf):
        length = int.from_bytes(buf[pos:pos + 8], "little")
        end = pos + 12 + length + 4
        if end > len(buf):
            break
        pos = end
    return pos


class _Inventory:
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
                    if _is_checkpoint_dir(e.name) and e.is_dir():
                        try:
                            mtime = e.stat().st_mtime_ns
                        except OSError:
                            continue
                        found.append((checkpoint_step(e.name), e.name, mtime))
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


def _is_checkpoint_dir(name: str) -> bool:
    return checkpoint_step(name) is not None  # the one checkpoint-name rule (logsage.core.runfolder)


# ====================================================================== the watcher
class Watcher:
    """Follows one run; each `poll()` reads what was appended and returns advice for new evaluations.

    Args:
        path: a log file or a run folder (as the user gave it).
        rule: a rule spec, "hf:patience=3" (validated at once).
        metric / mode: the monitored metric (default: the run's eval loss once it appears).
        format: force a reader for a single file.
    """

    def __init__(self, path: str | os.PathLike, rule: str, *, metric: str | None = None, mode: str | None = None,
                 format: str | None = None):
        from logsage.core.objective import check_mode
        from logsage.replay.engine import expand_rules
        from logsage.rules.base import parse_rule_spec

        self.path = str(path)
        self.root = Path(path)
        self.rule = rule
        (info, self.params), = expand_rules([parse_rule_spec(rule)])  # RuleConfigError before any waiting
        self.rule_name = info.name
        self.metric = metric
        self.mode = check_mode(mode) if mode else None
        self.format = format
        self.followers: list[_Follower] = []
        self.groups: dict[str, _Rewritten] = {}  # format -> the follower that reads all its files together
        self.known: set[str] = set()
        self._listed_checkpoints: set[str] = set()  # checkpoint-N folders whose trainer_state.json is followed
        self.inventory = _Inventory(self.root)
        self.n_seen = 0  # evaluations already advised on
        self.history: History | None = None
        self.finished = False  # the run reached its step budget
        self._evals: tuple = ()  # eval points per follower and series at the last build
        # Which series' new points can be a new evaluation: eval series, or every series
        # when the user watches a train or test metric.
        from logsage.core.names import canonical_name, kind_of

        self._kinds = ("eval",) if metric is None or kind_of(canonical_name(metric)) == "eval" else \
            ("eval", "train", "test", "other")

    # ------------------------------------------------------------------ files
    def _discover(self) -> None:
        from logsage.ingest import _KNOWN_NON_LOGS, _NOT_LOG_SUFFIXES, _SUMMARY_FILES, _readers, _reader_for

        readers = _readers()
        if self.format is not None:
            readers = [r for r in readers if r.FORMAT == self.format]
            if not readers:
                from logsage.ingest import formats

                raise UsageError(f"unknown format {self.format!r}; choose one of: {', '.join(formats())}")
        if self.root.is_file():
            files = [self.root]
        elif self.root.is_dir():
            files = [f for f in self._walk() if f.name not in _SUMMARY_FILES and f.name != RUN_MANIFEST]
        else:
            return  # not there yet: training has not written it
        for f in files:
            if str(f) in self.known:
                continue
            if f != self.root and (f.name in _KNOWN_NON_LOGS or f.suffix.lower() in _NOT_LOG_SUFFIXES):
                self.known.add(str(f))  # weights, configs, images: never a log, never sniffed again
                continue
            r = readers[0] if (self.format is not None and self.root.is_file()) else _reader_for(f, readers)
            if r is None:
                continue  # not a log (weights, configs...); looked at again only if it is new
            self.known.add(str(f))
            if r.FORMAT in _LINE_FORMATS | _CSV_FORMATS | _RECORD_FORMATS:
                kind = "lines" if r.FORMAT in _LINE_FORMATS else "csv" if r.FORMAT in _CSV_FORMATS else "records"
                self.followers.append(_Appended(r, f, kind))
            elif r.FORMAT in self.groups:  # e.g. a new checkpoint-N/trainer_state.json: the group follows it too
                self.groups[r.FORMAT].paths.append(f)
            else:
                self.groups[r.FORMAT] = (_NewestState if r.FORMAT == "trainer-state" else _Rewritten)(r, [f])
                self.followers.append(self.groups[r.FORMAT])

    def _walk(self) -> Iterator[Path]:
        """The run folder's files as `logsage.ingest._walk` lists them (sorted; a checkpoint-N/
        folder gives only its trainer_state.json), except that a checkpoint folder whose
        trainer_state.json was found is not listed again: the cost of a poll does not grow
        with the number of checkpoints."""
        for dirpath, dirnames, filenames in os.walk(self.root):
            here = Path(dirpath)
            parts = here.relative_to(self.root).parts
            if parts and _is_checkpoint_dir(parts[0]):
                dirnames[:] = []
                if len(parts) == 1 and "trainer_state.json" in filenames:
                    self._listed_checkpoints.add(parts[0])
                    yield here / "trainer_state.json"
                continue
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__"
                                 and not (not parts and d in self._listed_checkpoints))
            for fn in sorted(filenames):
                yield here / fn

    def close(self) -> None:
        for f in self.followers:
            if isinstance(f, _Appended):
                f.close()

    def _build(self) -> History | None:
        from logsage.ingest import _merge

        results = [f.result() for f in self.followers]
        results = [r for r in results if r is not None and r.series]
        if not results:
            return None
        h = History(path=self.path, format="")
        _merge(h, results)
        if self.root.is_dir():
            h.checkpoints = self.inventory.refresh()
        return h

    # ------------------------------------------------------------------ advice
    def poll(self) -> list[Advice]:
        """Read what was appended; advice for each evaluation not advised on yet.

        On the first poll that finds evaluations, only the latest is advised on (with what
        the rule did on the ones before, e.g. "would have stopped at step 400").
        """
        self._discover()
        changed = False
        for f in self.followers:
            changed |= f.refresh()
        if not changed and self.history is not None:
            return []
        # Rebuilding the history costs as much as the log is long: do it only when an
        # evaluation arrived or the run reached its step budget, not for every train line.
        progress = [f.progress(self._kinds) for f in self.followers]
        evals = tuple(p[0] for p in progress)
        last = max((p[1] for p in progress), default=-1)
        budgets = [p[2] for p in progress if isinstance(p[2], (int, float)) and p[2]]
        if budgets and last >= max(budgets):
            self.finished = True
        if self.history is not None and evals == self._evals and not self.finished:
            return []
        self._evals = evals
        h = self._build()
        if h is None:
            return []
        self.history = h
        try:
            from logsage.core.objective import resolve_objective

            obj = resolve_objective(h, self.metric, self.mode)
        except LogsageError:
            return []  # the metric has not been logged yet (an early train-only log)
        s = h.series[obj.metric]
        n = len(s)
        if n <= self.n_seen:
            return []
        start = self.n_seen if self.n_seen else n - 1
        out = [self._advise(h, obj.metric, obj.mode, t) for t in range(start, n)]
        self.n_seen = n
        return out

    def _advise(self, h: History, metric: str, mode: str, t: int) -> Advice:
        from logsage.replay.engine import replay

        s = h.series[metric]
        step = int(s.steps[t])
        prefix = _cut(h, step)
        d = replay([prefix], [(self.rule_name, self.params)], metric=metric, mode=mode).decisions[0]
        value = float(s.values[t])
        from logsage.rules.base import rule_spec

        label = rule_spec(self.rule_name, self.params)
        kept = _kept(h, d, metric)
        if not d.decidable:
            action, msg = "undecidable", f"cannot judge yet: {d.reason}"
        elif d.stop_eval_index == t:
            action, msg = "stop", f"would stop now ({label}); best {kept}"
        elif d.stop_eval_index is not None:
            action, msg = "stopped", (f"past the stop: {label} would have stopped at step {d.stop_step}; "
                                      f"best {kept}")
        else:
            action, msg = "continue", f"continue: {self._progress(s, mode, d, t)}; best {kept}"
        return Advice(eval_index=t, step=step, value=value, metric=metric, action=action, message=msg,
                      selected_step=d.selected_step, selected_value=d.selected_value, stop_step=d.stop_step,
                      reason=d.reason, note=d.note)

    def _progress(self, s: Series, mode: str, d: Any, t: int) -> str:
        """'2 of 3 evaluations without improvement' where that is exact, else evaluations since the best."""
        from logsage.core.objective import orient
        from logsage.replay.scoring import hindsight_best

        best = hindsight_best(orient(s.values, mode), upto=t)
        since = t - best if best is not None else t + 1
        from logsage.rules.base import counting_rules

        # Rules whose no-improvement counter equals "evaluations since the best" when their margin is 0.
        delta_name = counting_rules().get(self.rule_name)
        patience = self.params.get("patience")
        if delta_name is not None and patience is not None and not self.params.get(delta_name):
            return f"{since} of {patience} evaluation{'' if patience == 1 else 's'} without improvement"
        return (f"{since} evaluation{'' if since == 1 else 's'} since the best"
                + (f" (patience {patience})" if patience is not None else ""))


def _cut(h: History, step: int) -> History:
    """The history as it was when the evaluation at `step` was logged (every series up to that step)."""
    series = {}
    for name, s in h.series.items():
        keep = s.steps <= step
        series[name] = replace(s, steps=s.steps[keep], values=s.values[keep],
                               wall_times=None if s.wall_times is None else s.wall_times[keep])
    return replace(h, series=series)


def _kept(h: History, d: Any, metric: str) -> str:
    """'checkpoint-1200 (eval_loss 0.81)' for the checkpoint the rule keeps, or 'step 1200 (...)' in a bare log."""
    if d.selected_step is None:
        return "none kept" + (f" ({d.note})" if d.note else "")
    c = h.checkpoint_at(d.selected_step)
    where = os.path.basename(os.path.normpath(c.path)) if c is not None else f"step {d.selected_step}"
    value = "nan" if d.selected_value is None or not math.isfinite(d.selected_value) else f"{d.selected_value:.6g}"
    return f"{where} ({metric} {value})"


def watch(path: str | os.PathLike, rule: str, *, metric: str | None = None, mode: str | None = None,
          format: str | None = None, interval: float = 2.0, timeout: float | None = None,
          max_evals: int | None = None, until_stop: bool = False,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic
          ) -> Iterator[Advice]:
    """Yield advice for each new evaluation of the run at `path` until a limit is reached.

    Args:
        interval: seconds between polls.
        timeout: stop watching after this many seconds (None: until the run reaches its
            step budget, or forever when the log does not state one).
        max_evals: stop after advising on this many evaluations.
        until_stop: stop right after the rule says "would stop now" (or "stopped").

    Raises:
        RuleConfigError: a bad rule spec (before any waiting).
    """
    if interval <= 0:
        raise UsageError(f"--interval must be > 0 seconds, got {interval}")
    w = Watcher(path, rule, metric=metric, mode=mode, format=format)
    start = clock()
    n = 0
    try:
        while True:
            for advice in w.poll():
                yield advice
                n += 1
                if (max_evals is not None and n >= max_evals) or (until_stop and advice.action in ("stop", "stopped")):
                    return
            if w.finished:
                return
            if timeout is not None and clock() - start >= timeout:
                return
            sleep(interval)
    finally:
        w.close()


__all__ = ["Advice", "Watcher", "watch"]
