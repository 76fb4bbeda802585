"""Whole-file JSON logs decoded fast and exactly alike, whichever decoder is installed.

`decode` tries orjson (an optional speed-up, ~2x the stdlib decoder) on the bytes as
they are; when orjson refuses them because of the bare `NaN`/`Infinity`/`-Infinity`
tokens Python's json writes, it quotes those tokens and tries again (the strings
come back as `QUOTED_NON_FINITE` keys, which `to_float` reads as the same floats);
anything else orjson refuses (invalid UTF-8, huge integers, broken JSON) goes to the
stdlib decoder, which also gives the one-line error with line and column.
`count_keys` counts an object's keys (iteratively, with a depth limit both decoders
share) and `duplicate_keys` finds repeated keys exactly (the slow check, run only when
the key count says it is needed).
"""

from __future__ import annotations

import json
import math
from typing import Any

from logsage.core.errors import IngestError
from logsage.ingest.readers.base import loads_lenient

_BOM = b"\xef\xbb\xbf"

_orjson: Any = None


def _fast_loads():
    """orjson.loads when orjson is installed (an optional speed-up), else None."""
    global _orjson
    if _orjson is None:
        try:
            import orjson

            _orjson = orjson.loads
        except ImportError:
            _orjson = False
    return _orjson or None


# Python's json writes NaN, Infinity and -Infinity bare; orjson refuses them. Quoted, they are
# strings that `to_float` reads as the same floats. The substitution cannot change a string's
# content unnoticed: inside a string, the inserted quote ends it and leaves a bare word
# behind, which no JSON decoder accepts, so that file falls back to the stdlib decoder.
QUOTED_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def decode(data: bytes, *, file: str) -> tuple[Any, bool]:
    """JSON bytes to Python, and whether bare NaN/Infinity tokens came back as the strings
    "NaN"/"Infinity"/"-Infinity" (read by `to_float` as the floats).

    orjson first (an optional speed-up), on the bytes with those tokens quoted when there are
    any; the stdlib decoder (bare tokens, invalid UTF-8 replaced, the one-line error with line
    and column) when orjson refuses the file or is not installed.
    """
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    fast = _fast_loads()
    if fast is not None:
        try:  # the usual file first, as it is (no scan for the tokens: most files have none)
            return fast(data), False
        except ValueError:  # orjson.JSONDecodeError: NaN/Infinity, bad UTF-8, huge ints, or broken JSON
            pass
        if b"NaN" in data or b"Infinity" in data:
            # -Infinity: the first replace makes it -"Infinity", the second "-Infinity"
            body = (data.replace(b"Infinity", b'"Infinity"').replace(b'-"Infinity"', b'"-Infinity"')
                    .replace(b"NaN", b'"NaN"'))
            try:
                return fast(body), True
            except ValueError:
                pass
    return loads_lenient(data.decode("utf-8", errors="replace"), file=file), False


_MAX_DEPTH = 512  # what the stdlib decoder refuses (~1,000) and orjson accepts must read alike


def count_keys(obj: Any, *, file: str = "") -> int:
    """Keys of every object inside `obj` (iterative: no recursion limit); IngestError past `_MAX_DEPTH`."""
    n = 0
    stack = [(obj, 0)]
    while stack:
        o, depth = stack.pop()
        if depth > _MAX_DEPTH:
            raise IngestError(f"{file}: JSON nested too deeply to be a training log; check the file or pass --format")
        if type(o) is dict:
            n += len(o)
            stack.extend((v, depth + 1) for v in o.values() if type(v) in (dict, list))
        elif type(o) is list:
            stack.extend((v, depth + 1) for v in o if type(v) in (dict, list))
    return n


def duplicate_keys(data: bytes, file: str) -> list[tuple[str, Any]]:
    """(key, step or None) for every repeated key of a JSON object in the file (the slow, exact check)."""
    found: list[tuple[str, Any]] = []

    def hook(pairs):
        d = dict(pairs)
        if len(d) < len(pairs):
            seen = set()
            for k, _ in pairs:
                if k in seen:
                    found.append((k, d.get("step")))
                seen.add(k)
        return d

    text = data.removeprefix(_BOM).decode("utf-8", errors="replace")
    try:
        json.loads(text, object_pairs_hook=hook)
    except (ValueError, RecursionError):
        return []
    return found
