"""Compiled scan of a TensorBoard event file: TFRecord framing, CRC32C checks, Event decoding.

One numba kernel (`_scan_kernel`) walks the records of a file held as a numpy
uint8 array, verifies the masked CRC32C of every record's length and data (as
TFRecord defines them), decodes the `Event` protobuf by hand (wall_time, step,
summary.value[].tag / simple_value / tensor / metadata.plugin_data.plugin_name)
and writes every scalar point into preallocated arrays. A damaged record (a bad
checksum, an impossible length) is not the end of the file: the scan looks for the next
offset where a whole record starts (length and data checksums both valid) and goes on
from there, counting the stretch it skipped. Tags are interned inside
the kernel (FNV-1a hash + byte comparison, so there are no collisions; the tag
that followed the previous one is tried first), which is
what lets `scan_bytes` group points by tag with numpy alone.

This module imports numba at import time: import it only from the read path,
never from `logsage.ingest.readers.tensorboard` at module level (that keeps
`logsage --help` fast). `cache=True` stores the compiled kernel on disk; when the
package folder is read-only numba falls back to NUMBA_CACHE_DIR or the user's
cache folder.
"""

from __future__ import annotations

from dataclasses import dataclass

import contextlib
import sys

import numpy as np
from numba import njit

from logsage.core import startup as _startup
_BLAS = "scipy.linalg.cython_blas"


@contextlib.contextmanager
def _numba_start():
    """Around the first kernel call, which initialises numba's CPU target: when the CLI asks
    (logsage/core/startup.py), make numba's optional BLAS probe fail instead of importing scipy.linalg."""
    block = (_startup.SKIP_NUMBA_BLAS_PROBE and "numba.np.arraymath" not in sys.modules
             and _BLAS not in sys.modules)
    if block:
        sys.modules[_BLAS] = None
    try:
        yield
    finally:
        if block and sys.modules.get(_BLAS, 0) is None:
            del sys.modules[_BLAS]

# Damage codes written by the kernel (`counters[_ERR_CODE]`); the reader turns them into words.
DAMAGE_NONE = 0
DAMAGE_SHORT_HEADER = 1  # the file ends inside a 12-byte record header
DAMAGE_LENGTH_CRC = 2  # the length's checksum does not match
DAMAGE_SHORT_DATA = 3  # the file ends inside the record's data or its checksum
DAMAGE_DATA_CRC = 4  # the data's checksum does not match

# Kernel return codes.
_DONE = 0
_NEED_POINTS = 1
_NEED_TAGS = 2

# Slots of the int64 `counters` array shared between the kernel and Python.
_POS = 0  # in: where to resume; out: where the scan stopped
_N_POINTS = 1
_N_TAGS = 2
_N_RECORDS = 3  # records whose checksums passed
_ERR_CODE = 4
_ERR_OFFSET = 5
_N_MALFORMED = 6  # checksums passed but the bytes are not an Event
_FIRST_MALFORMED = 7
_N_UNSUPPORTED = 8  # tensor values of the scalars plugin with a dtype/shape we do not decode
_ERR_LENGTH = 9  # the declared data length of the damaged record (for messages)
_N_GAPS = 10  # damaged stretches the scan resynchronised after (a valid record follows each)
_GAP_BYTES = 11  # bytes skipped over in those stretches
_FIRST_GAP = 12  # where the first such stretch starts
_FIRST_GAP_CODE = 13  # and what was wrong there (a DAMAGE_* code)
_N_COUNTERS = 14

# Per-tag plugin state: a TF2 writer puts the summary metadata (which plugin owns
# the tag) only on the first value of each tag, so the kernel remembers it.
_PLUGIN_UNKNOWN = 0
_PLUGIN_SCALARS = 1
_PLUGIN_OTHER = 2

_SCALARS_BYTES = np.frombuffer(b"scalars", dtype=np.uint8).copy()  # the scalars plugin's name
_FNV_OFFSET = np.int64(-3750763034362895579)  # 0xcbf29ce484222325 as a signed 64-bit value
_FNV_PRIME = np.int64(0x100000001B3)


def crc32c_tables() -> np.ndarray:
    """The 8 x 256 lookup tables of CRC32C (Castagnoli, reflected 0x82F63B78) for slicing-by-8."""
    t = np.arange(256, dtype=np.int64)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ 0x82F63B78, t >> 1)
    tables = np.empty((8, 256), dtype=np.int64)
    tables[0] = t
    for k in range(1, 8):
        prev = tables[k - 1]
        tables[k] = (prev >> 8) ^ tables[0][prev & 0xFF]
    return tables


# ------------------------------------------------------------------ kernel helpers
# Helpers are compiled into the kernel (and cached with it): only `_scan_kernel` is
# ever called from Python, so a warm start loads exactly one cached function.


@njit(nogil=True)
def _crc32c(buf, start, stop, tables):  # pragma: no cover - compiled
    crc = np.int64(0xFFFFFFFF)
    i = start
    t0 = tables[0]
    t1 = tables[1]
    t2 = tables[2]
    t3 = tables[3]
    t4 = tables[4]
    t5 = tables[5]
    t6 = tables[6]
    t7 = tables[7]
    while stop - i >= 8:
        one = crc ^ (np.int64(buf[i]) | (np.int64(buf[i + 1]) << 8)
                     | (np.int64(buf[i + 2]) << 16) | (np.int64(buf[i + 3]) << 24))
        crc = (t7[one & 0xFF] ^ t6[(one >> 8) & 0xFF] ^ t5[(one >> 16) & 0xFF] ^ t4[(one >> 24) & 0xFF]
               ^ t3[buf[i + 4]] ^ t2[buf[i + 5]] ^ t1[buf[i + 6]] ^ t0[buf[i + 7]])
        i += 8
    while i < stop:
        crc = t0[(crc ^ np.int64(buf[i])) & 0xFF] ^ (crc >> 8)
        i += 1
    crc ^= 0xFFFFFFFF
    # TFRecord stores a "masked" CRC: rotate right by 15 bits and add a constant.
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


@njit(nogil=True)
def _le(buf, at, nbytes):  # pragma: no cover - compiled
    v = np.int64(0)
    for k in range(nbytes):
        v |= np.int64(buf[at + k]) << (8 * k)
    return v


@njit(nogil=True)
def _varint(buf, q, end):  # pragma: no cover - compiled
    """(value, next position); next position -1 when the varint is cut off or too long."""
    result = np.int64(0)
    shift = 0
    while q < end:
        b = np.int64(buf[q])
        q += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, q
        shift += 7
        if shift > 63:
            return result, -1
    return result, -1


@njit(nogil=True)
def _skip(buf, q, end, wire):  # pragma: no cover - compiled
    """Position after a field of wire type `wire` starting at q; -1 when malformed."""
    if wire == 0:
        _, q = _varint(buf, q, end)
        return q
    if wire == 1:
        return q + 8 if q + 8 <= end else -1
    if wire == 2:
        n, q = _varint(buf, q, end)
        if q < 0 or n < 0 or n > end - q:
            return -1
        return q + n
    if wire == 5:
        return q + 4 if q + 4 <= end else -1
    return -1  # groups (3, 4) never occur in Event; 6, 7 are invalid


@njit(nogil=True)
def _intern(buf, start, length, slots, t_start, t_len, t_hash, n_tags):  # pragma: no cover - compiled
    """Id of the tag bytes buf[start:start+length], adding it if new; -1 when the tables are full."""
    h = _FNV_OFFSET
    for k in range(start, start + length):
        h = (h ^ np.int64(buf[k])) * _FNV_PRIME
    mask = slots.size - 1
    s = h & mask
    while True:
        tid = slots[s]
        if tid < 0:
            break
        if t_hash[tid] == h and t_len[tid] == length:
            a = t_start[tid]
            same = True
            for k in range(length):
                if buf[a + k] != buf[start + k]:
                    same = False
                    break
            if same:
                return tid, n_tags
        s = (s + 1) & mask
    if n_tags >= t_start.size or 2 * (n_tags + 1) > slots.size:
        return -1, n_tags
    slots[s] = n_tags
    t_start[n_tags] = start
    t_len[n_tags] = length
    t_hash[n_tags] = h
    return n_tags, n_tags + 1


@njit(nogil=True)
def _valid_record_at(buf, q, end, tables):  # pragma: no cover - compiled
    """Whether a whole record starts at q: its length checksum and its data checksum both match."""
    if end - q < 16:
        return False
    if _crc32c(buf, q, q + 8, tables) != _le(buf, q + 8, 4):
        return False
    length = _le(buf, q, 8)
    if length < 0 or length > end - q - 16:
        return False
    return _crc32c(buf, q + 12, q + 12 + length, tables) == _le(buf, q + 12 + length, 4)


@njit(nogil=True)
def _resync(buf, pos, end, tables):  # pragma: no cover - compiled
    """The offset of the next whole record after the damaged one at pos, or -1 when none follows.

    A random byte position passes both 32-bit checksums with odds of about 2**-64, so a match
    is a real record, not noise in the damaged stretch.
    """
    q = pos + 1
    while end - q >= 16:
        if _valid_record_at(buf, q, end, tables):
            return q
        q += 1
    return -1


@njit(cache=True, nogil=True)
def _scan_kernel(buf, tables, p_step, p_wall, p_value, p_tag, slots, t_start, t_len, t_hash,
                 t_plugin, t_double, counters, walls):  # pragma: no cover - compiled
    """Scan records from counters[_POS] on; returns _DONE, _NEED_POINTS or _NEED_TAGS.

    On _NEED_*, the record that did not fit was rolled back and counters[_POS] is its
    offset, so the caller can grow the arrays and call again.
    """
    end = buf.size
    pos = counters[_POS]
    n_points = counters[_N_POINTS]
    n_tags = counters[_N_TAGS]
    # Scratch cells to reinterpret little-endian bits as IEEE floats.
    bits64 = np.empty(1, dtype=np.int64)
    as_f64 = bits64.view(np.float64)
    bits32 = np.empty(1, dtype=np.uint32)
    as_f32 = bits32.view(np.float32)
    # Rebuild the hash slots (the caller may have grown the tag tables).
    slots[:] = -1
    mask = slots.size - 1
    for tid in range(n_tags):
        s = t_hash[tid] & mask
        while slots[s] >= 0:
            s = (s + 1) & mask
        slots[s] = tid

    t_next = np.full(t_start.size, -1, dtype=np.int64)  # tag id -> the tag id seen after it
    last_tid = -1
    status = _DONE
    while pos < end:
        damage = DAMAGE_NONE
        length = np.int64(0)
        if end - pos < 12:
            damage = DAMAGE_SHORT_HEADER
        else:
            length = _le(buf, pos, 8)
            if _crc32c(buf, pos, pos + 8, tables) != _le(buf, pos + 8, 4):
                damage = DAMAGE_LENGTH_CRC
            elif length < 0 or length > end - pos - 16:
                damage = DAMAGE_SHORT_DATA
            elif _crc32c(buf, pos + 12, pos + 12 + length, tables) != _le(buf, pos + 12 + length, 4):
                damage = DAMAGE_DATA_CRC
        if damage != DAMAGE_NONE:
            # Resynchronise: a damaged record in the middle must not cost every record after it.
            nxt = _resync(buf, pos, end, tables) if damage != DAMAGE_SHORT_HEADER else -1
            if nxt < 0:  # nothing valid follows: the damage is the file's end (a cut or a corrupt tail)
                counters[_ERR_CODE] = damage
                counters[_ERR_OFFSET] = pos
                counters[_ERR_LENGTH] = length
                break
            if counters[_N_GAPS] == 0:
                counters[_FIRST_GAP] = pos
                counters[_FIRST_GAP_CODE] = damage
            counters[_N_GAPS] += 1
            counters[_GAP_BYTES] += nxt - pos
            pos = nxt
            continue
        ds = pos + 12
        de = ds + length

        # ---- Event: wall_time = 1 (double), step = 2 (int64), summary = 5 (message)
        saved_points = n_points
        saved_unsupported = counters[_N_UNSUPPORTED]
        malformed = False
        wall = 0.0
        step = np.int64(0)
        sum_start = -1
        sum_end = -1
        q = ds
        while q < de:
            key, q = _varint(buf, q, de)
            if q < 0:
                malformed = True
                break
            field = key >> 3
            wire = key & 7
            if field == 1 and wire == 1:
                if q + 8 > de:
                    malformed = True
                    break
                bits64[0] = _le(buf, q, 8)
                wall = as_f64[0]
                q += 8
            elif field == 2 and wire == 0:
                step, q = _varint(buf, q, de)
                if q < 0:
                    malformed = True
                    break
            elif field == 5 and wire == 2:
                n, q = _varint(buf, q, de)
                if q < 0 or n < 0 or n > de - q:
                    malformed = True
                    break
                sum_start = q
                sum_end = q + n
                q += n
            else:
                q = _skip(buf, q, de, wire)
                if q < 0:
                    malformed = True
                    break

        # ---- Summary: repeated Value value = 1
        q = sum_start
        while not malformed and status == _DONE and sum_start >= 0 and q < sum_end:
            key, q = _varint(buf, q, sum_end)
            if q < 0:
                malformed = True
                break
            if key != 0x0A:  # not field 1 / length-delimited
                q = _skip(buf, q, sum_end, key & 7)
                if q < 0:
                    malformed = True
                continue
            n, q = _varint(buf, q, sum_end)
            if q < 0 or n < 0 or n > sum_end - q:
                malformed = True
                break
            vq = q
            ve = q + n
            q = ve
            # Value: tag = 1, simple_value = 2 (float), node_name = 7, tensor = 8, metadata = 9
            tag_s = -1
            tag_l = 0
            node_s = -1
            node_l = 0
            kind = 0  # 0 none / other summary type, 1 simple_value, 2 tensor
            simple = np.float32(0.0)
            ten_s = -1
            ten_e = -1
            plug_s = -1
            plug_l = 0
            while vq < ve:
                key, vq = _varint(buf, vq, ve)
                if vq < 0:
                    malformed = True
                    break
                field = key >> 3
                wire = key & 7
                if wire == 2 and (field == 1 or field == 7 or field == 8 or field == 9
                                  or field == 3 or field == 4 or field == 5 or field == 6):
                    m, vq = _varint(buf, vq, ve)
                    if vq < 0 or m < 0 or m > ve - vq:
                        malformed = True
                        break
                    if field == 1:
                        tag_s = vq
                        tag_l = m
                    elif field == 7:
                        node_s = vq
                        node_l = m
                    elif field == 8:
                        kind = 2
                        ten_s = vq
                        ten_e = vq + m
                    elif field == 9:
                        # SummaryMetadata.plugin_data = 1 -> PluginData.plugin_name = 1
                        mq = vq
                        me = vq + m
                        while mq < me:
                            k2, mq = _varint(buf, mq, me)
                            if mq < 0:
                                break
                            if k2 == 0x0A:
                                m2, mq = _varint(buf, mq, me)
                                if mq < 0 or m2 < 0 or m2 > me - mq:
                                    break
                                pq = mq
                                pe = mq + m2
                                mq = pe
                                while pq < pe:
                                    k3, pq = _varint(buf, pq, pe)
                                    if pq < 0:
                                        break
                                    if k3 == 0x0A:
                                        m3, pq = _varint(buf, pq, pe)
                                        if pq < 0 or m3 < 0 or m3 > pe - pq:
                                            break
                                        plug_s = pq
                                        plug_l = m3
                                        pq += m3
                                    else:
                                        pq = _skip(buf, pq, pe, k3 & 7)
                                        if pq < 0:
                                            break
                            else:
                                mq = _skip(buf, mq, me, k2 & 7)
                                if mq < 0:
                                    break
                    else:  # image, histo, audio, old-style histogram: not a scalar
                        kind = 0
                    vq += m
                elif field == 2 and wire == 5:
                    if vq + 4 > ve:
                        malformed = True
                        break
                    bits32[0] = _le(buf, vq, 4)
                    simple = as_f32[0]
                    kind = 1
                    vq += 4
                else:
                    vq = _skip(buf, vq, ve, wire)
                    if vq < 0:
                        malformed = True
                        break
            if malformed:
                break
            if kind == 0:
                continue
            if kind == 2 and tag_l == 0 and node_s >= 0:
                tag_s = node_s  # TF1 tensor summaries may name themselves by node only
                tag_l = node_l
            if tag_s < 0:
                tag_s = vq  # an empty tag is still a tag
                tag_l = 0
            # Logs repeat their tags in the same order at every step: try the tag that followed
            # the previous one last time before hashing (one byte comparison instead).
            tid = -1
            if last_tid >= 0:
                guess = t_next[last_tid]
                if guess >= 0 and t_len[guess] == tag_l:
                    a = t_start[guess]
                    tid = guess
                    for k in range(tag_l):
                        if buf[a + k] != buf[tag_s + k]:
                            tid = -1
                            break
            if tid < 0:
                tid, n_tags = _intern(buf, tag_s, tag_l, slots, t_start, t_len, t_hash, n_tags)
                if tid >= 0 and last_tid >= 0:
                    t_next[last_tid] = tid
            if tid >= 0:
                last_tid = tid
            if tid < 0:
                status = _NEED_TAGS
                break
            if plug_s >= 0:
                is_scalars = plug_l == 7
                if is_scalars:
                    for k in range(7):
                        if buf[plug_s + k] != _SCALARS_BYTES[k]:
                            is_scalars = False
                            break
                t_plugin[tid] = _PLUGIN_SCALARS if is_scalars else _PLUGIN_OTHER
            value = 0.0
            if kind == 1:
                value = np.float64(simple)
            else:
                if t_plugin[tid] != _PLUGIN_SCALARS:
                    continue  # text, hparams, histograms... written as tensors
                # TensorProto: dtype = 1, tensor_content = 4, float_val = 5, double_val = 6
                dtype = np.int64(0)
                n_vals = 0
                val_at = -1
                content_s = -1
                content_l = 0
                tq = ten_s
                while tq < ten_e:
                    key, tq = _varint(buf, tq, ten_e)
                    if tq < 0:
                        malformed = True
                        break
                    field = key >> 3
                    wire = key & 7
                    if field == 1 and wire == 0:
                        dtype, tq = _varint(buf, tq, ten_e)
                        if tq < 0:
                            malformed = True
                            break
                    elif wire == 2 and (field == 4 or field == 5 or field == 6):
                        m, tq = _varint(buf, tq, ten_e)
                        if tq < 0 or m < 0 or m > ten_e - tq:
                            malformed = True
                            break
                        if field == 4:
                            content_s = tq
                            content_l = m
                        elif field == 5 and m % 4 == 0:  # packed float_val
                            n_vals += m // 4
                            if m > 0:
                                val_at = tq + m - 4
                        elif field == 6 and m % 8 == 0:  # packed double_val
                            n_vals += m // 8
                            if m > 0:
                                val_at = tq + m - 8
                        else:
                            n_vals += 2  # not a whole number of values: unsupported
                        tq += m
                    elif field == 5 and wire == 5:  # unpacked float_val
                        if tq + 4 > ten_e:
                            malformed = True
                            break
                        n_vals += 1
                        val_at = tq
                        tq += 4
                    elif field == 6 and wire == 1:  # unpacked double_val
                        if tq + 8 > ten_e:
                            malformed = True
                            break
                        n_vals += 1
                        val_at = tq
                        tq += 8
                    else:
                        tq = _skip(buf, tq, ten_e, wire)
                        if tq < 0:
                            malformed = True
                            break
                if malformed:
                    break
                width = 4 if dtype == 1 else (8 if dtype == 2 else 0)
                if width == 0:
                    counters[_N_UNSUPPORTED] += 1
                    continue
                if content_s >= 0 and content_l > 0:
                    if content_l != width or n_vals != 0:
                        counters[_N_UNSUPPORTED] += 1
                        continue
                    val_at = content_s
                elif n_vals != 1:
                    counters[_N_UNSUPPORTED] += 1
                    continue
                if width == 4:
                    bits32[0] = _le(buf, val_at, 4)
                    value = np.float64(as_f32[0])
                else:
                    bits64[0] = _le(buf, val_at, 8)
                    value = as_f64[0]
                    t_double[tid] = 1
            if n_points >= p_step.size:
                status = _NEED_POINTS
                break
            p_step[n_points] = step
            p_wall[n_points] = wall
            p_value[n_points] = value
            p_tag[n_points] = tid
            n_points += 1

        if status != _DONE:
            # Roll the record back; the caller grows the arrays and resumes at this record.
            n_points = saved_points
            counters[_N_UNSUPPORTED] = saved_unsupported
            break
        if malformed:
            n_points = saved_points
            counters[_N_UNSUPPORTED] = saved_unsupported
            if counters[_N_MALFORMED] == 0:
                counters[_FIRST_MALFORMED] = pos
            counters[_N_MALFORMED] += 1
        else:
            counters[_N_RECORDS] += 1
            if not (walls[0] == walls[0]):  # NaN: first event of the file
                walls[0] = wall
            if wall > walls[1] or not (walls[1] == walls[1]):
                walls[1] = wall
        pos = de + 4

    counters[_POS] = pos
    counters[_N_POINTS] = n_points
    counters[_N_TAGS] = n_tags
    return status


# ------------------------------------------------------------------ Python driver


@dataclass
class RawScan:
    """Every scalar point of one file in write order, tags interned.

    `tag_ids[i]` indexes `tags`; `damage` is one of the DAMAGE_* codes, at byte
    `damage_offset` (the start of the bad record): damage that ends the file. Damage followed by
    a valid record is a gap the scan resynchronised after: `n_gaps` stretches, `gap_bytes`
    skipped, the first at `first_gap` (what was wrong there: `first_gap_code`).
    """

    steps: np.ndarray  # int64
    wall_times: np.ndarray  # float64
    values: np.ndarray  # float64 (the float32 value, exactly)
    tag_ids: np.ndarray  # int32
    tags: list[str]
    tag_is_double: np.ndarray  # bool per tag: some value came as DT_DOUBLE
    n_records: int
    damage: int
    damage_offset: int
    damage_length: int
    n_malformed: int
    first_malformed: int
    n_unsupported: int
    first_wall_time: float
    last_wall_time: float
    n_gaps: int = 0
    gap_bytes: int = 0
    first_gap: int = -1
    first_gap_code: int = 0


_TABLES: np.ndarray | None = None


def scan_bytes(buf: np.ndarray) -> RawScan:
    """Scan a whole event file given as a uint8 array (see `RawScan`)."""
    global _TABLES
    if _TABLES is None:
        _TABLES = crc32c_tables()
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    # Scalar records written by torch/HF are 50-100 bytes; start near that and grow if needed.
    cap = max(256, buf.size // 40 + 64)
    # plain np.ndarray: np.resize below keeps the dtype, but numpy's stubs do not say so
    p_step: np.ndarray = np.empty(cap, np.int64)
    p_wall: np.ndarray = np.empty(cap, np.float64)
    p_value: np.ndarray = np.empty(cap, np.float64)
    p_tag: np.ndarray = np.empty(cap, np.int32)
    tag_cap = 256
    slots = np.empty(4 * tag_cap, np.int64)
    t_start = np.zeros(tag_cap, np.int64)
    t_len = np.zeros(tag_cap, np.int64)
    t_hash = np.zeros(tag_cap, np.int64)
    t_plugin = np.zeros(tag_cap, np.int8)
    t_double = np.zeros(tag_cap, np.uint8)
    counters = np.zeros(_N_COUNTERS, np.int64)
    counters[_FIRST_MALFORMED] = -1
    counters[_FIRST_GAP] = -1
    walls = np.full(2, np.nan)
    while True:
        with _numba_start():
            status = _scan_kernel(buf, _TABLES, p_step, p_wall, p_value, p_tag, slots, t_start, t_len, t_hash,
                                  t_plugin, t_double, counters, walls)
        if status == _DONE:
            break
        if status == _NEED_POINTS:
            cap *= 2
            p_step, p_wall, p_value, p_tag = (np.resize(a, cap) for a in (p_step, p_wall, p_value, p_tag))
        else:
            tag_cap *= 2
            slots = np.empty(4 * tag_cap, np.int64)
            t_start, t_len, t_hash, t_plugin, t_double = (
                np.concatenate([a, np.zeros_like(a)]) for a in (t_start, t_len, t_hash, t_plugin, t_double))
    n = int(counters[_N_POINTS])
    n_tags = int(counters[_N_TAGS])
    # Tag bytes are protobuf strings (UTF-8); a broken one is shown, not fatal.
    tags = [buf[s:s + ln].tobytes().decode("utf-8", errors="replace")
            for s, ln in zip(t_start[:n_tags].tolist(), t_len[:n_tags].tolist())]
    return RawScan(
        steps=p_step[:n], wall_times=p_wall[:n], values=p_value[:n], tag_ids=p_tag[:n], tags=tags,
        tag_is_double=t_double[:n_tags].astype(bool), n_records=int(counters[_N_RECORDS]),
        damage=int(counters[_ERR_CODE]), damage_offset=int(counters[_ERR_OFFSET]),
        damage_length=int(counters[_ERR_LENGTH]), n_malformed=int(counters[_N_MALFORMED]),
        first_malformed=int(counters[_FIRST_MALFORMED]), n_unsupported=int(counters[_N_UNSUPPORTED]),
        first_wall_time=float(walls[0]), last_wall_time=float(walls[1]),
        n_gaps=int(counters[_N_GAPS]), gap_bytes=int(counters[_GAP_BYTES]), first_gap=int(counters[_FIRST_GAP]),
        first_gap_code=int(counters[_FIRST_GAP_CODE]),
    )
