"""On-disk cache of parsed log files, keyed by the file's identity (path, size, mtime).

A reader that parses a big file once (TensorBoard events, say) stores what it
parsed - a dict of numpy arrays plus a JSON-able dict - and the next read of the
same unchanged file loads that instead of parsing again:

    >>> cache = FileCache("tensorboard", version=1, cache_dir=None)   # user cache folder
    >>> hit = cache.get(path)            # (arrays, meta) or None
    >>> if hit is None:
    ...     arrays, meta = parse(path)
    ...     cache.put(path, arrays, meta)

The key is the file's real absolute path, its size and its mtime in nanoseconds,
the reader's namespace and its format version: any change re-parses. Entries are
written to a temporary file in the same folder and renamed into place
(`os.replace`), so several processes can share the cache: a reader sees either a
whole entry or none. A missing, truncated or otherwise unreadable entry is
ignored (and removed), never an error; a cache folder that cannot be written to
only means nothing is cached.

An entry is one file holding a sequence of `.npy` records (numpy's own format,
read with `allow_pickle=False`): first the JSON meta as uint8 bytes, then the
arrays in the order the meta lists them. Default folder: ``LOGSAGE_CACHE_DIR``
if set, else platformdirs' ``user_cache_dir("logsage")``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# Bump when the entry layout below changes (readers version their own content).
LAYOUT_VERSION = 1
_SUFFIX = ".npys"


def default_cache_dir() -> Path:
    """Where entries go when no folder is given: $LOGSAGE_CACHE_DIR, else the user cache folder."""
    env = os.environ.get("LOGSAGE_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("logsage"))


def file_identity(path: str | os.PathLike, st: os.stat_result | None = None) -> dict[str, Any]:
    """What a cache entry is keyed by: real absolute path, size, mtime_ns."""
    real = os.path.realpath(path)
    st = st if st is not None else os.stat(real)
    return {"path": real, "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


class FileCache:
    """Get/put a dict of numpy arrays plus a JSON-able dict per (file identity, namespace, version)."""

    def __init__(self, namespace: str, *, version: int | str, cache_dir: str | os.PathLike | None = None) -> None:
        self.namespace = namespace
        self.version = str(version)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.folder = root / f"{namespace}-v{self.version}-l{LAYOUT_VERSION}"

    # ------------------------------------------------------------------ keys
    def _key(self, ident: dict[str, Any]) -> str:
        text = json.dumps([self.namespace, self.version, LAYOUT_VERSION, ident], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def entry_path(self, path: str | os.PathLike, st: os.stat_result | None = None) -> Path:
        """The entry file for `path` as it is now (exists only if it was cached)."""
        return self.folder / (self._key(file_identity(path, st)) + _SUFFIX)

    # ------------------------------------------------------------------ get / put
    def get(self, path: str | os.PathLike, st: os.stat_result | None = None
            ) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
        """The cached (arrays, meta) for `path` if it is cached and unchanged, else None.

        Pass `st` (an `os.stat` of the file taken before reading it) to key on that
        exact state of the file.
        """
        try:
            ident = file_identity(path, st)
        except OSError:
            return None
        entry = self.folder / (self._key(ident) + _SUFFIX)
        try:
            with open(entry, "rb") as f:
                header = np.load(f, allow_pickle=False)
                doc = json.loads(header.tobytes().decode("utf-8"))
                if doc.get("identity") != ident:  # a hash collision or a foreign file
                    return None
                arrays = {name: np.load(f, allow_pickle=False) for name in doc["arrays"]}
        except FileNotFoundError:
            return None
        except Exception:  # truncated, garbage, wrong layout: re-parse, and drop the bad entry
            try:
                entry.unlink()
            except OSError:
                pass
            return None
        return arrays, doc["meta"]

    def put(self, path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any],
            st: os.stat_result | None = None) -> bool:
        """Store (arrays, meta) for `path`; False if the cache folder cannot be written (never raises)."""
        try:
            ident = file_identity(path, st)
            header = json.dumps({"identity": ident, "arrays": list(arrays), "meta": meta}).encode("utf-8")
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=_SUFFIX)
        except (OSError, TypeError, ValueError):
            return False
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.frombuffer(header, dtype=np.uint8), allow_pickle=False)
                for a in arrays.values():
                    np.save(f, np.ascontiguousarray(a), allow_pickle=False)
            # Atomic on POSIX and Windows: readers see the old entry, the new one, or none.
            os.replace(tmp, self.folder / (self._key(ident) + _SUFFIX))
            return True
        except (OSError, ValueError):
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return False
