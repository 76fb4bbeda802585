"""Reader for TensorBoard event files (`events.out.tfevents.*`): every scalar point, CRC-checked.

Reads a single event file, or all event files of a run folder at once (the folder
loader passes them together), and returns one `Series` per scalar tag, named as
written (`eval/loss`, `val_loss`, `train/epoch`...), with per-point wall times.

* Both scalar encodings: `simple_value`, and a `tensor` (DT_FLOAT / DT_DOUBLE, in
  float_val / double_val / tensor_content) whose summary metadata names the
  `scalars` plugin. Text, hparams, histograms and images are skipped, not counted.
* `add_scalars` sub-folders (torch writes `<main_tag>_<key>/events...` with tag
  `main_tag`) become series `<main_tag>/<key>`.
* Several files: ordered by the wall time of their first event; a step written
  more than once keeps the later write; steps rewritten by a later file are
  reported as `overlap`, within one file as `duplicates`. Unlike TensorBoard, a
  restarted writer does not purge the earlier file's later steps: every step keeps
  its latest write, and the overlap says which file wrote what.
* A later file that holds only evaluation points at one final step (the HF
  Trainer's post-training `trainer.evaluate()`, e.g. after
  `load_best_model_at_end`) is a run summary, not a new point of the curve: its
  values go to `summary` (cleanup `final_eval`).
* Damage: a corrupt record in the middle of a file (bad length or data CRC32C) is
  skipped and the read resynchronises on the next whole record (both checksums
  valid), so what follows is kept; a warning plus a `dropped_record` cleanup say where
  the first damaged stretch starts, how many stretches and bytes were skipped.
  Damage that runs to the end of the file (a cut last record) is a `truncated`
  cleanup: everything before it is kept. TensorBoard's own loaders drop everything
  after the first bad record without saying so.

The scan itself is one compiled numba kernel (`_tfrecord.py`, imported only when a
file is read, so `logsage --help` never loads numba). Parsed files are cached on
disk (`cache.py`), keyed on what a rewrite in place changes (see `cache.file_identity`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup, Series
from logsage.ingest.readers.base import ReadContext, ReadResult, open_regular
from logsage.core.names import canonical_name, kind_of

FORMAT = "tensorboard"
DESCRIPTION = "TensorBoard event files (events.out.tfevents.*): simple_value and tensor scalars, several files per run"
PRECISION = "float32"
# Bump when what `scan_file` stores in the cache changes.
CACHE_VERSION = 2

_LFS_MAGIC = b"version https://git-lfs.github.com/spec/"

# Damage codes the kernel reports (the same numbers as `_tfrecord.DAMAGE_*`, which cannot be
# imported here without importing numba).
_SHORT_HEADER, _LENGTH_CRC, _SHORT_DATA, _DATA_CRC = 1, 2, 3, 4



# --------------------------------------------------------------------- detection
_CRC_TABLE: list[int] | None = None


def _masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC32C, in pure Python: used only on 8-byte headers while sniffing."""
    global _CRC_TABLE
    if _CRC_TABLE is None:
        table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            table.append(c)
        _CRC_TABLE = table
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _framing_ok(head: bytes) -> bool:
    """Whether `head` starts with a TFRecord header whose length checksum is right."""
    return len(head) >= 12 and _masked_crc32c(head[:8]) == int.from_bytes(head[8:12], "little")


def claims(path: Path, head: bytes) -> bool:
    """An event file: named `*tfevents*` and empty, still being written, framed as TFRecord, or an LFS pointer."""
    if "tfevents" not in path.name:
        return False
    return len(head) < 12 or head.startswith(_LFS_MAGIC) or _framing_ok(head)


# --------------------------------------------------------------------- one file
@dataclass
class FileScan:
    """Every scalar point of one event file, grouped by tag, each tag in write order.

    Points of tag `tags[i]` are `steps[offsets[i]:offsets[i+1]]` (same for
    `wall_times`, `values`). Tags that hold no scalar (text, hparams) are left out.
    """

    path: str
    size: int
    tags: list[str]
    offsets: np.ndarray  # int64, len(tags) + 1
    steps: np.ndarray  # int64
    wall_times: np.ndarray  # float64
    values: np.ndarray  # float64
    tag_is_double: np.ndarray  # bool per tag
    n_records: int = 0
    damage: int = 0  # 0 = none; else one of the DAMAGE_* codes of `_tfrecord`
    damage_offset: int = 0
    damage_length: int = 0
    n_malformed: int = 0
    first_malformed: int = -1
    n_unsupported: int = 0
    first_wall_time: float = math.nan
    last_wall_time: float = math.nan
    n_gaps: int = 0  # damaged stretches in the middle, skipped by resynchronising
    gap_bytes: int = 0
    first_gap: int = -1
    first_gap_code: int = 0
    cached: bool = False  # True when this scan came from the parse cache

    def points(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.steps[a:b], self.values[a:b], self.wall_times[a:b]

    @property
    def n_points(self) -> int:
        return int(self.steps.size)

    # The cache holds exactly these arrays and these fields.
    _ARRAYS = ("offsets", "steps", "wall_times", "values", "tag_is_double")
    _FIELDS = ("size", "tags", "n_records", "damage", "damage_offset", "damage_length", "n_malformed",
               "first_malformed", "n_unsupported", "first_wall_time", "last_wall_time", "n_gaps", "gap_bytes",
               "first_gap", "first_gap_code")

    def to_cache(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        meta = {k: getattr(self, k) for k in self._FIELDS}
        for k in ("first_wall_time", "last_wall_time"):  # JSON has no NaN
            meta[k] = None if math.isnan(meta[k]) else meta[k]
        return {k: getattr(self, k) for k in self._ARRAYS}, meta

    @classmethod
    def from_cache(cls, path: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> "FileScan":
        kw = {k: meta[k] for k in cls._FIELDS}
        for k in ("first_wall_time", "last_wall_time"):
            kw[k] = math.nan if kw[k] is None else float(kw[k])
        array_kw: dict[str, Any] = {k: arrays[k] for k in cls._ARRAYS}
        scan = cls(path=path, **kw, **array_kw, cached=True)
        n = scan.steps.size
        if (scan.offsets.size != len(scan.tags) + 1 or scan.offsets[-1] != n or scan.values.size != n
                or scan.wall_times.size != n or scan.tag_is_double.size != len(scan.tags)):
            raise ValueError("inconsistent cache entry")
        return scan


def _parse(path: Path, size: int) -> FileScan:
    """Run the compiled kernel over the first `size` bytes of `path`.

    Memory: the file's bytes and the kernel's point arrays are held together only during the
    scan; the bytes are released before the points are grouped by tag, and each raw array is
    released as soon as its grouped copy exists (peak: about the file plus the points).
    """
    try:
        with open_regular(path) as f:
            buf = np.fromfile(f, dtype=np.uint8, count=size)
    except OSError as e:
        raise IngestError(f"{path}: cannot be read ({e.strerror or e}); check the path and its permissions") from None
    if buf[: len(_LFS_MAGIC)].tobytes() == _LFS_MAGIC:
        raise IngestError(f"{path}: is a Git LFS pointer, not the event file itself; "
                          "run `git lfs pull` in its repository first")
    from logsage.ingest.tfrecord import scan_bytes  # numba: only when a file is really parsed

    raw = scan_bytes(buf)
    n_bytes = int(buf.size)
    del buf
    n_tags = len(raw.tags)
    # Group points by tag, keeping write order inside each tag. Tag ids are small, so a
    # 16-bit stable sort (numpy uses radix sort there) does it in linear time.
    ids = raw.tag_ids
    if n_tags <= np.iinfo(np.uint16).max:
        ids = ids.astype(np.uint16)
    order = np.argsort(ids, kind="stable")
    del ids
    counts = np.bincount(raw.tag_ids, minlength=n_tags)
    raw.tag_ids = np.empty(0, np.int32)  # release the raw ids (nothing reads them after this), keeping the type
    keep = np.flatnonzero(counts)  # text/hparams tags hold no scalar point
    offsets = np.zeros(keep.size + 1, dtype=np.int64)
    np.cumsum(counts[keep], out=offsets[1:])
    grouped = {}
    for name in ("steps", "wall_times", "values"):
        grouped[name] = getattr(raw, name)[order]
        setattr(raw, name, None)  # the raw (over-allocated) array goes before the next copy
    del order
    return FileScan(
        path=str(path), size=n_bytes, tags=[raw.tags[i] for i in keep.tolist()], offsets=offsets,
        steps=grouped["steps"], wall_times=grouped["wall_times"], values=grouped["values"],
        tag_is_double=raw.tag_is_double[keep], n_records=raw.n_records, damage=raw.damage,
        damage_offset=raw.damage_offset, damage_length=raw.damage_length, n_malformed=raw.n_malformed,
        first_malformed=raw.first_malformed, n_unsupported=raw.n_unsupported,
        first_wall_time=raw.first_wall_time, last_wall_time=raw.last_wall_time,
        n_gaps=raw.n_gaps, gap_bytes=raw.gap_bytes, first_gap=raw.first_gap, first_gap_code=raw.first_gap_code,
    )


def scan_file(path: str | os.PathLike, *, use_cache: bool = True, cache_dir: str | os.PathLike | None = None
              ) -> FileScan:
    """All scalar points of one event file (from the parse cache when the file is unchanged).

    Raises:
        IngestError: the file cannot be read, or is a Git LFS pointer.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except OSError as e:
        raise IngestError(f"{p}: cannot be read ({e.strerror or e}); check the path and its permissions") from None
    cache = None
    if use_cache:
        from logsage.ingest.cache import FileCache

        cache = FileCache(FORMAT, version=CACHE_VERSION, cache_dir=cache_dir)
        hit = cache.get(p, st)
        if hit is not None:
            try:
                return FileScan.from_cache(str(p), *hit)
            except (KeyError, TypeError, ValueError):
                pass  # an entry from an incompatible writer: parse again
    # Parse exactly the bytes the stat saw, so the cache key matches the content even
    # while a writer is still appending to the file.
    scan = _parse(p, int(st.st_size))
    if cache is not None:
        cache.put(p, *scan.to_cache(), st=st)
    return scan


# --------------------------------------------------------------------- a run
def _series_name(tag: str, file: str, run_root: Path | None) -> str:
    """`main_tag/key` for an add_scalars sub-folder `<main_tag with / as _>_<key>/`, else the tag."""
    folder = Path(file).parent
    if run_root is None or os.path.abspath(folder) == os.path.abspath(run_root):
        return tag
    prefix = tag.replace("/", "_") + "_"
    name = folder.name
    if name.startswith(prefix) and len(name) > len(prefix):
        return f"{tag}/{name[len(prefix):]}"
    return tag


def _damage_words(scan: FileScan, code: int | None = None, offset: int | None = None) -> str:
    """What is wrong with the record at `offset` (default: `scan.damage_offset`), and the likely cause."""
    code = scan.damage if code is None else code
    at = f"record at byte {scan.damage_offset if offset is None else offset}"
    if code == _SHORT_DATA and offset is not None:
        return f"{at} declares a length that runs past the next valid record: the file is corrupt"
    if code == _SHORT_HEADER:
        return f"{at} is cut off (the file ends inside its 12-byte header): the writer was killed or is still writing"
    if code == _SHORT_DATA:
        return (f"{at} is cut off (it declares {scan.damage_length} data bytes, the file ends at byte {scan.size}): "
                "the writer was killed or is still writing")
    if code == _LENGTH_CRC:
        return f"{at} has a bad length checksum (CRC32C): the file is corrupt"
    return f"{at} has a bad data checksum (CRC32C): the file is corrupt"


def _damage_report(scan: FileScan) -> tuple[list[str], list[Cleanup]]:
    warnings: list[str] = []
    cleanups: list[Cleanup] = []
    if scan.n_gaps:
        words = _damage_words(scan, scan.first_gap_code, scan.first_gap)
        msg = (f"{scan.path}: {words}; skipped {scan.gap_bytes} damaged byte(s) in {scan.n_gaps} stretch(es) "
               f"(at least one record each) and resynchronised on the next valid record - the "
               f"{scan.n_records} valid record(s) before and after were kept")
        warnings.append(msg)
        cleanups.append(Cleanup("dropped_record", msg, file=scan.path, count=scan.n_gaps))
    if scan.damage:
        dropped = scan.size - scan.damage_offset
        msg = (f"{scan.path}: {_damage_words(scan)}; kept the {scan.n_records} record(s) before it "
               f"({scan.n_points} scalar points) and ignored the last {dropped} byte(s)")
        warnings.append(msg)
        cleanups.append(Cleanup("truncated", msg, file=scan.path))
    if scan.n_malformed:
        msg = (f"{scan.path}: {scan.n_malformed} record(s) with valid checksums are not TensorBoard events "
               f"(first at byte {scan.first_malformed}); skipped them")
        warnings.append(msg)
        cleanups.append(Cleanup("dropped_record", msg, file=scan.path, count=scan.n_malformed))
    if scan.n_unsupported:
        msg = (f"{scan.path}: {scan.n_unsupported} scalar value(s) stored as tensors of a type other than "
               "float32/float64 or not of size 1; skipped them")
        warnings.append(msg)
        cleanups.append(Cleanup("dropped_record", msg, file=scan.path, count=scan.n_unsupported))
    return warnings, cleanups


def _is_final_eval(scan: FileScan, earlier: list[FileScan]) -> bool:
    """A later file holding only eval points (plus the epoch) at one step at or after the end of training."""
    if not scan.n_points or not any(e.n_points for e in earlier):
        return False
    if scan.steps.min() != scan.steps.max():
        return False
    if scan.steps[0] < max(int(e.steps.max()) for e in earlier if e.n_points):
        return False
    canon = [canonical_name(t) for t in scan.tags]
    # eval/runtime and eval/samples_per_second count as bookkeeping, but they are eval tags too.
    return (any(kind_of(c) == "eval" for c in canon)
            and all(c.startswith("eval_") or c == "epoch" for c in canon))


def _merge_tag(name: str, parts: list[tuple[int, np.ndarray, np.ndarray, np.ndarray]], files: list[str],
               precision: str) -> tuple[Series, list[Cleanup]]:
    """One series from (file index, steps, values, wall_times) parts in file order: the later write wins."""
    cleanups: list[Cleanup] = []
    sources = "; ".join(dict.fromkeys(files[i] for i, *_ in parts))
    kw = dict(source=sources, format=FORMAT, precision=precision)
    if len(parts) == 1:
        _, s, v, w = parts[0]
        if s.size < 2 or bool(np.all(s[1:] > s[:-1])):  # the common case: nothing to sort
            return Series(name, s, v, wall_times=w, **kw), cleanups
    fidx = np.concatenate([np.full(p[1].size, p[0], dtype=np.int64) for p in parts])
    s = np.concatenate([p[1] for p in parts])
    v = np.concatenate([p[2] for p in parts])
    w = np.concatenate([p[3] for p in parts])
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    last = np.ones(s_sorted.size, dtype=bool)
    last[:-1] = s_sorted[1:] != s_sorted[:-1]
    keep = order[last]
    if keep.size < s.size:
        # Which write replaced each dropped one: the last of its group of equal steps.
        ends = np.flatnonzero(last)
        group = np.repeat(np.arange(ends.size), np.diff(np.concatenate([[-1], ends])))
        f_sorted = fidx[order]
        winner = f_sorted[ends][group]
        dropped = ~last
        same = dropped & (f_sorted == winner)
        n_dups = int(same.sum())
        if n_dups:
            # Within one file (or several, when more than one file repeats steps).
            for fi in np.unique(f_sorted[same]).tolist():
                n = int((same & (f_sorted == fi)).sum())
                cleanups.append(Cleanup("duplicates", f"{name}: {n} earlier write(s) of a repeated step "
                                        "replaced by the later one", file=files[fi], metric=name, count=n))
        cross = dropped & (f_sorted != winner)
        if cross.any():
            pairs = f_sorted[cross] * len(files) + winner[cross]
            for code in np.unique(pairs).tolist():
                old, new = divmod(code, len(files))
                hit = cross.copy()
                hit[cross] = pairs == code
                lo, hi = int(s_sorted[hit].min()), int(s_sorted[hit].max())
                n = int(hit.sum())
                span = f"step {lo}" if lo == hi else f"steps {lo}-{hi}"
                cleanups.append(Cleanup(
                    "overlap",
                    f"{name}: {n} write(s) ({span}) in {files[old]} "
                    f"were written again by the later file {files[new]}; the later write was kept",
                    file=files[new], metric=name, count=n))
    series = Series(name, s[keep], v[keep], wall_times=w[keep], **kw)
    return series, cleanups


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    """Read all event files of one run (see the module docstring for the rules)."""
    scans = [scan_file(p, use_cache=ctx.use_cache, cache_dir=ctx.cache_dir) for p in paths]
    result = ReadResult(format=FORMAT, precision=PRECISION)
    for scan in scans:
        if scan.damage and scan.damage_offset == 0 and "tfevents" not in Path(scan.path).name:
            raise IngestError(f"{scan.path}: not a TensorBoard event file (no valid record at its start); "
                              "pass the right --format")

    # Files in the order they were written: by the wall time of their first event.
    scans.sort(key=lambda sc: (math.isnan(sc.first_wall_time), sc.first_wall_time
                               if not math.isnan(sc.first_wall_time) else 0.0, sc.path))
    files = [sc.path for sc in scans]
    result.files = list(files)
    firsts = [sc.first_wall_time for sc in scans if not math.isnan(sc.first_wall_time)]
    lasts = [sc.last_wall_time for sc in scans if not math.isnan(sc.last_wall_time)]
    if firsts:
        result.meta["wall_time_first"] = min(firsts)
        result.meta["wall_time_last"] = max(lasts)

    parts: dict[str, list[tuple[int, np.ndarray, np.ndarray, np.ndarray]]] = {}
    doubles: dict[str, bool] = {}
    for fi, scan in enumerate(scans):
        warnings, cleanups = _damage_report(scan)
        result.warnings.extend(warnings)
        result.cleanups.extend(cleanups)
        if fi and _is_final_eval(scan, scans[:fi]):
            step = int(scan.steps[0])
            for i, tag in enumerate(scan.tags):
                _, v, _ = scan.points(i)
                result.summary[_series_name(tag, scan.path, ctx.run_root)] = float(v[-1])
            result.meta.setdefault("final_eval_step", step)
            result.cleanups.append(Cleanup(
                "final_eval",
                f"{scan.path}: holds only one evaluation, at step {step}, after training ended (the trainer's "
                "final evaluate(), e.g. of the best model); kept as a run summary, not as a point of the curve",
                file=scan.path, count=scan.n_points))
            continue
        for i, tag in enumerate(scan.tags):
            name = _series_name(tag, scan.path, ctx.run_root)
            parts.setdefault(name, []).append((fi, *scan.points(i)))
            doubles[name] = doubles.get(name, False) or bool(scan.tag_is_double[i])

    for name, tag_parts in parts.items():
        series, cleanups = _merge_tag(name, tag_parts, files, "float64" if doubles[name] else PRECISION)
        nf = series.n_non_finite
        if nf:
            cleanups.append(Cleanup("non_finite", f"{name}: {nf} NaN/inf value(s) kept as evaluations",
                                    file=series.source, metric=name, count=nf))
        result.series.append(series)
        result.cleanups.extend(cleanups)
    return result
