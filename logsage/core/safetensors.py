"""The one safetensors header reader: where each tensor's bytes are, checked as strictly as the real loader.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON, then
the tensor data. `read_header` reads only the header (never the data) and refuses
anything the `safetensors` library would refuse, with a `SafetensorsError` whose
message names the file and says what is wrong:

* cut short: fewer than 8 bytes, a header longer than the file, tensors that end past
  the end of the file;
* malformed header: not JSON / not UTF-8, a JSON value that is not an object (a list),
  a `__metadata__` that is not an object of strings, a tensor entry without `dtype`,
  `shape` or `data_offsets`, an unknown dtype, a shape that is not a list of
  non-negative integers (null, 1.5, "4", true), offsets that are not two integers
  (0 <= begin <= end), offsets whose span disagrees with dtype x shape, tensors that
  overlap or leave gaps (the data must be contiguous from byte 0);
* trailing bytes after the last tensor.

Both the checkpoint inventory (`logsage.ingest.checkpoints`: a bad header makes that
one checkpoint "not whole") and the merge (`logsage.ship.merge`) use it, so what one
accepts the other can read.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

from logsage.core.errors import CheckpointError

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit
ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
            "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1}


class SafetensorsError(CheckpointError):
    """A safetensors file that is cut short or whose header is malformed; `reason` is the message without the path."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: where its bytes are, without reading them."""

    name: str
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]
    file: Path
    start: int  # absolute byte offset in `file`
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Header:
    """A parsed, validated header: the tensors in file order and the `__metadata__` strings."""

    path: Path
    entries: dict[str, TensorEntry]
    metadata: dict[str, str]
    size: int  # bytes of the file

    @property
    def numel(self) -> int:
        return sum(e.numel for e in self.entries.values())


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def read_header(path: str | Path, *, max_header: int = MAX_HEADER_BYTES) -> Header:
    """Read and validate the header of one safetensors file (module docstring).

    Raises:
        SafetensorsError: the file is cut short or its header is malformed (`.reason` says how).
        CheckpointError: the file cannot be read at all (permissions, I/O error).
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise SafetensorsError(path, f"cut short ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", raw)
            if n > max_header or 8 + n > size:
                raise SafetensorsError(path, f"cut short or corrupt (header of {n} bytes, file of {size})")
            text = f.read(n)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror or e})") from None
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise SafetensorsError(path, "malformed header (not JSON)") from None
    if not isinstance(header, dict):
        raise SafetensorsError(path, f"malformed header (a JSON {type(header).__name__}, not an object)")
    meta = header.pop("__metadata__", None)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise SafetensorsError(path, "malformed header (__metadata__ is not an object of strings)")
    data_start = 8 + n
    entries: list[TensorEntry] = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise SafetensorsError(path, f"malformed header (tensor {name!r} is not an object)")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in ITEMSIZE:
            raise SafetensorsError(path, f"malformed header (tensor {name!r} has dtype {dtype!r})")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise SafetensorsError(path, f"malformed header (tensor {name!r} has shape {shape!r})")
        if (not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(x) for x in offsets)
                or not 0 <= offsets[0] <= offsets[1]):
            raise SafetensorsError(path, f"malformed header (tensor {name!r} has data_offsets {offsets!r})")
        entry = TensorEntry(name, dtype, tuple(shape), path, data_start + offsets[0], data_start + offsets[1])
        if entry.nbytes != entry.numel * ITEMSIZE[dtype]:
            raise SafetensorsError(path, f"malformed header (tensor {name!r}: its offsets span {entry.nbytes} "
                                         f"bytes, {dtype} {list(shape)} needs {entry.numel * ITEMSIZE[dtype]})")
        entries.append(entry)
    entries.sort(key=lambda e: (e.start, e.end))
    at = data_start
    for t in entries:
        if t.start != at:
            raise SafetensorsError(path, f"malformed header (tensor {t.name!r} starts at byte {t.start - data_start} "
                                         f"of the data, expected {at - data_start}: overlapping or gapped tensors)")
        at = t.end
    if at > size:
        raise SafetensorsError(path, f"cut short ({size} bytes, the header needs {at})")
    if at < size:
        raise SafetensorsError(path, f"{size - at} unexpected trailing bytes after the last tensor")
    return Header(path, {e.name: e for e in entries}, dict(meta), size)


def header_problem(path: str | Path, *, require_tensors: bool = False) -> str | None:
    """None if `path` is a complete safetensors file with a valid header; else what is wrong, in words.

    `require_tensors`: a file with no tensor data (no tensors, or only empty ones) is a problem too.
    """
    path = Path(path)
    try:
        header = read_header(path)
    except SafetensorsError as e:
        return f"{path.name}: {e.reason}"
    except CheckpointError as e:
        return f"{path.name}: unreadable ({str(e).split(': ', 1)[-1]})"
    if require_tensors and header.numel == 0:
        return f"{path.name} is empty (no tensor data)"
    return None
