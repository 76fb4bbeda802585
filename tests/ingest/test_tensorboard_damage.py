"""TensorBoard event files damaged in the middle, and rewritten in place (issue 9).

Files are written by TensorBoard's own `EventFileWriter`; the damage is done to their
bytes, record boundaries found with `struct` (not with the reader).
"""

from __future__ import annotations

import os
import struct
import time
from pathlib import Path

import pytest

import logsage

pytest.importorskip("tensorboard")


def _write(folder: Path, values: list[float], tag: str = "eval/loss") -> Path:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder.mkdir(parents=True, exist_ok=True)
    w = EventFileWriter(str(folder))
    for step, v in enumerate(values):
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=v)])
        w.add_event(event_pb2.Event(wall_time=1000.0 + step, step=step, summary=summary))
    w.close()
    (f,) = folder.glob("events.out.tfevents.*")
    return f


def _records(data: bytes) -> list[tuple[int, int]]:
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, length))
        pos += 16 + length
    return out


def _values(path: Path, **kw) -> list[float]:
    h = logsage.load_history(path, **kw)
    return h.metric("eval/loss").values.tolist(), h


def test_two_damaged_stretches_cost_only_their_records(tmp_path):
    f = _write(tmp_path / "run", [float(i) for i in range(20)])
    data = bytearray(f.read_bytes())
    recs = _records(bytes(data))
    for k in (5, 12):  # record k holds step k - 1 (record 0 is the file_version event)
        off, length = recs[k]
        data[off + 12 + length // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    values, h = _values(f, use_cache=False)
    assert values == [float(i) for i in range(20) if i not in (4, 11)]
    (c,) = [c for c in h.cleanups if c.kind == "dropped_record"]
    assert c.count == 2 and "2 stretch(es)" in c.message and f"byte {recs[5][0]}" in c.message
    assert not any(c.kind == "truncated" for c in h.cleanups)


def test_garbage_inserted_between_records_loses_nothing_and_is_reported(tmp_path):
    f = _write(tmp_path / "run", [float(i) for i in range(10)])
    data = f.read_bytes()
    at = _records(data)[6][0]
    f.write_bytes(data[:at] + os.urandom(37) + data[at:])
    values, h = _values(f, use_cache=False)
    assert values == [float(i) for i in range(10)]
    assert any(c.kind == "dropped_record" and "skipped 37 damaged byte(s)" in c.message for c in h.cleanups)


def test_damage_then_a_cut_tail_reports_both(tmp_path):
    f = _write(tmp_path / "run", [float(i) for i in range(10)])
    data = bytearray(f.read_bytes())
    recs = _records(bytes(data))
    data[recs[3][0] + 3] ^= 0x01  # the length of step 2's record
    f.write_bytes(bytes(data[:-6]))  # and the last record cut
    values, h = _values(f, use_cache=False)
    assert values == [0.0, 1.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    kinds = sorted(c.kind for c in h.cleanups if c.kind in ("dropped_record", "truncated"))
    assert kinds == ["dropped_record", "truncated"]


def test_cache_is_not_stale_after_a_same_size_same_mtime_rewrite(tmp_path):
    run = tmp_path / "run"
    f = _write(run, [1.0, 2.0, 3.0])
    cache = tmp_path / "cache"
    assert _values(f, cache_dir=cache)[0] == [1.0, 2.0, 3.0]
    st = os.stat(f)
    # Rewrite in place: same size (same number of records, same lengths), mtime put back.
    other = _write(tmp_path / "other", [7.0, 8.0, 9.0])
    new = other.read_bytes()
    assert len(new) == st.st_size
    with open(f, "r+b") as fh:
        fh.write(new)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(f).st_mtime_ns == st.st_mtime_ns and os.stat(f).st_size == st.st_size
    assert _values(f, cache_dir=cache)[0] == [7.0, 8.0, 9.0]


def test_cache_still_hits_for_an_unchanged_file_and_the_key_is_cheap(tmp_path):
    from logsage.ingest.cache import file_identity
    from logsage.ingest.readers import tensorboard as tb

    f = _write(tmp_path / "run", [float(i) for i in range(2000)])
    cache = tmp_path / "cache"
    tb.scan_file(f, cache_dir=cache)
    assert tb.scan_file(f, cache_dir=cache).cached
    t0 = time.perf_counter()
    for _ in range(50):
        file_identity(f)
    assert (time.perf_counter() - t0) / 50 < 0.05  # a generous guard: two 64 KiB reads, not the file
