"""The framing of a W&B run file (``run-<id>.wandb``) and the few protobuf fields logsage reads from it.

No ``wandb`` import and no network: the file is W&B's transaction log, a LevelDB-style log of
serialized ``wandb.proto.Record`` messages, and both layers are small enough to read here.

Framing (wandb ``sdk/internal/datastore.py``; the Go core writes the same bytes)::

    file   := header block*            header := ":W&B" magic:u16le=0xBEE1 version:u8=0
    block  := record* trailer?         (32 KiB blocks; the file header sits in the first one)
    record := crc:u32le length:u16le type:u8 data[length]
              type 1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST (a message split across blocks)
              crc = zlib.crc32(data, zlib.crc32(bytes([type])))
    trailer := fewer than 7 zero bytes at the end of a block (no record header fits)

Protobuf fields used (``wandb/proto/wandb_internal.proto``)::

    Record        num=1 history=2 summary=3 metric=12 run=17
    HistoryRecord item=1 (repeated HistoryItem) step=2 (HistoryStep num=1)
    HistoryItem   key=1 nested_key=2 (repeated) value_json=16
    SummaryRecord update=1 (repeated SummaryItem: key=1 nested_key=2 value_json=16)
    MetricRecord  name=1 glob_name=2 step_metric=4 goal=8 (1 minimize, 2 maximize)
    RunRecord     run_id=1 project=3 display_name=8

Damage is reported, never hidden: `scan` yields the messages it can frame and fills a
`Damage` with what it had to skip (a bad checksum, a fragment without its start, a truncated
tail) so the reader can count it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from typing import Iterator

IDENT = b":W&B"
MAGIC = 0xBEE1
HEADER_LEN = 7
BLOCK_LEN = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
_TYPE_CRC = {t: zlib.crc32(bytes([t])) for t in (FULL, FIRST, MIDDLE, LAST)}


class NotAWandbFile(ValueError):
    """The file does not start with W&B's datastore header."""


@dataclass
class Damage:
    """What `scan` skipped: bad-checksum / unknown-type chunks, orphan fragments, a truncated tail."""

    bad_chunks: int = 0
    orphan_fragments: int = 0
    truncated_at: int | None = None  # byte offset where the file stops mid-record
    first_offset: int | None = None  # byte offset of the first problem
    notes: list[str] = field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.bad_chunks or self.orphan_fragments or self.truncated_at is not None)

    def _mark(self, offset: int, note: str) -> None:
        if self.first_offset is None:
            self.first_offset = offset
        if len(self.notes) < 3:
            self.notes.append(note)


def check_header(data: bytes) -> None:
    if len(data) < HEADER_LEN:
        raise NotAWandbFile(f"{len(data)} bytes, shorter than the 7-byte W&B header")
    ident, magic, version = struct.unpack_from("<4sHB", data, 0)
    if ident != IDENT or magic != MAGIC:
        raise NotAWandbFile("no ':W&B' datastore header")
    if version != 0:
        raise NotAWandbFile(f"datastore version {version}, logsage reads version 0")


def scan(data: bytes, damage: Damage) -> Iterator[tuple[int, bytes]]:
    """(offset, serialized Record) for every message the file holds, in write order."""
    check_header(data)
    pos = HEADER_LEN
    end = len(data)
    parts: list[bytes] | None = None  # fragments of a message split across blocks
    start = 0
    while pos < end:
        space = BLOCK_LEN - pos % BLOCK_LEN
        if space < HEADER_LEN:  # block trailer: zero padding
            pos += space
            continue
        if end - pos < HEADER_LEN:
            if data[pos:end].strip(b"\0"):
                damage.truncated_at = pos
                damage._mark(pos, f"truncated record header at byte {pos}")
            break
        crc, length, rtype = struct.unpack_from("<IHB", data, pos)
        if crc == 0 and length == 0 and rtype == 0:  # zero fill (preallocated or padded tail)
            if data[pos:min(end, pos + space)].strip(b"\0"):
                damage.bad_chunks += 1
                damage._mark(pos, f"unreadable bytes at byte {pos}")
            pos += space
            continue
        body_start = pos + HEADER_LEN
        if length > space - HEADER_LEN or rtype not in _TYPE_CRC:
            damage.bad_chunks += 1
            damage._mark(pos, f"invalid record header at byte {pos}")
            parts = None
            pos += space  # resynchronise at the next block
            continue
        if body_start + length > end:
            damage.truncated_at = pos
            damage._mark(pos, f"record at byte {pos} cut off by the end of the file")
            break
        body = data[body_start:body_start + length]
        if zlib.crc32(body, _TYPE_CRC[rtype]) != crc:
            damage.bad_chunks += 1
            damage._mark(pos, f"checksum mismatch at byte {pos}")
            parts = None
            pos += space
            continue
        pos = body_start + length
        if rtype == FULL:
            if parts is not None:
                damage.orphan_fragments += 1
                damage._mark(start, f"message started at byte {start} never finished")
            parts = None
            yield body_start - HEADER_LEN, body
        elif rtype == FIRST:
            if parts is not None:
                damage.orphan_fragments += 1
                damage._mark(start, f"message started at byte {start} never finished")
            parts, start = [body], body_start - HEADER_LEN
        elif parts is None:  # MIDDLE / LAST without its FIRST (after a skipped block)
            damage.orphan_fragments += 1
            damage._mark(pos, f"fragment without its start at byte {body_start - HEADER_LEN}")
        elif rtype == MIDDLE:
            parts.append(body)
        else:
            parts.append(body)
            yield start, b"".join(parts)
            parts = None
    if parts is not None:
        damage.truncated_at = start if damage.truncated_at is None else damage.truncated_at
        damage._mark(start, f"message started at byte {start} cut off by the end of the file")


# ----------------------------------------------------------------------------- protobuf
class ProtoError(ValueError):
    """A message that is not valid protobuf wire format."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtoError("varint runs past the end of the message")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoError("varint longer than 10 bytes")


def fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) of one message: an int for varints/fixed, bytes for length-delimited."""
    pos, n = 0, len(buf)
    value: int | bytes
    while pos < n:
        key, pos = _varint(buf, pos)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > n:
                raise ProtoError(f"field {num} runs past the end of the message")
            value, pos = buf[pos:pos + length], pos + length
        elif wire == 1:
            if pos + 8 > n:
                raise ProtoError(f"field {num} runs past the end of the message")
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            if pos + 4 > n:
                raise ProtoError(f"field {num} runs past the end of the message")
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ProtoError(f"wire type {wire} of field {num} is not one protobuf writes")
        if num == 0:
            raise ProtoError("field number 0")
        yield num, value


@dataclass
class HistoryRow:
    """One ``wandb.log`` call as W&B stored it: ``{key: value_json}`` and the step it was given."""

    items: dict[str, str]
    step: int | None


@dataclass
class MetricDef:
    """A ``wandb.define_metric``: its name or glob, the step metric and the goal (``min``/``max``/None)."""

    name: str
    glob: str
    step_metric: str
    goal: str | None


def record_kind(record: bytes) -> tuple[str, bytes | None]:
    """``("history" | "summary" | "metric" | "run" | "other", payload)`` for a serialized Record."""
    for num, value in fields(record):
        if num == 2 and isinstance(value, bytes):
            return "history", value
        if num == 3 and isinstance(value, bytes):
            return "summary", value
        if num == 12 and isinstance(value, bytes):
            return "metric", value
        if num == 17 and isinstance(value, bytes):
            return "run", value
    return "other", None


def _item(value: bytes) -> tuple[str, str]:
    """(name, value_json) of a HistoryItem or SummaryItem (same field numbers)."""
    key = ""
    nested: list[str] = []
    value_json = ""
    for n, v in fields(value):
        if n == 1 and isinstance(v, bytes):
            key = v.decode("utf-8", "replace")
        elif n == 2 and isinstance(v, bytes):
            nested.append(v.decode("utf-8", "replace"))
        elif n == 16 and isinstance(v, bytes):
            value_json = v.decode("utf-8", "replace")
    return key or "/".join(nested), value_json  # a nested dict ({"train": {"loss": x}}) is logged as train/loss


def summary_update(payload: bytes) -> dict[str, str]:
    """The items a SummaryRecord sets (``run.summary[k] = v``, and W&B's own running summary)."""
    out: dict[str, str] = {}
    for num, value in fields(payload):
        if num == 1 and isinstance(value, bytes):
            name, value_json = _item(value)
            if name:
                out[name] = value_json
    return out


def history_row(payload: bytes) -> HistoryRow:
    items: dict[str, str] = {}
    step: int | None = None
    for num, value in fields(payload):
        if num == 1 and isinstance(value, bytes):
            name, value_json = _item(value)
            if name:
                items[name] = value_json
        elif num == 2 and isinstance(value, bytes):
            for n, v in fields(value):
                if n == 1 and isinstance(v, int):
                    step = v
    return HistoryRow(items, step)


def metric_def(payload: bytes) -> MetricDef:
    name = glob = step_metric = ""
    goal: str | None = None
    for num, value in fields(payload):
        if num == 1 and isinstance(value, bytes):
            name = value.decode("utf-8", "replace")
        elif num == 2 and isinstance(value, bytes):
            glob = value.decode("utf-8", "replace")
        elif num == 4 and isinstance(value, bytes):
            step_metric = value.decode("utf-8", "replace")
        elif num == 8 and isinstance(value, int):
            goal = {1: "min", 2: "max"}.get(value)
    return MetricDef(name, glob, step_metric, goal)


def run_info(payload: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for num, value in fields(payload):
        if isinstance(value, bytes) and num in (1, 3, 8):
            out[{1: "run_id", 3: "project", 8: "display_name"}[num]] = value.decode("utf-8", "replace")
    return out
