"""On-disk cache of parsed log files, keyed by the file's identity (path, size, mtime, inode, ctime, edge hash).

A reader that parses a big file once (TensorBoard events, say) stores what it
parsed - a dict of numpy arrays plus a JSON-able dict - and the next read of the
same unchanged file loads that instead of parsing again:

    >>> cache = FileCache("tensorboard", version=1, cache_dir=None)   # user cache folder
    >>> hit = cache.get(path)            # (arrays, meta) or None
    >>> if hit is None:
    ...     arrays, meta = parse(path)
    ...     cache.put(path, arrays, meta)

The key is the file's identity (`file_identity`: real absolute path, size, mtime,
device, inode, ctime and a hash of its first and last 64 KiB), the reader's namespace and
its format version: any change re-parses, including a rewrite in place that keeps the
size and puts the old mtime back. Entries are
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
LAYOUT_VERSION = 2
_SUFFIX = ".npys"


def default_cache_dir() -> Path:
    """Where entries go when no folder is given: $LOGSAGE_CACHE_DIR, else the user cache folder."""
    env = os.environ.get("LOGSAGE_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("logsage"))


_EDGE_BYTES = 64 * 1024  # how much of the head and of the tail the identity hashes


def _edge_digest(path: str, size: int) -> str:
    """A hash of the first and the last 64 KiB of the file's first `size` bytes (all of a small file)."""
    h = hashlib.blake2b(digest_size=16)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        if size <= 2 * _EDGE_BYTES:
            h.update(os.pread(fd, size, 0))
        else:
            h.update(os.pread(fd, _EDGE_BYTES, 0))
            h.update(os.pread(fd, _EDGE_BYTES, size - _EDGE_BYTES))
    finally:
        os.close(fd)
    return h.hexdigest()


def file_identity(path: str | os.PathLike, st: os.stat_result | None = None) -> dict[str, Any]:
    """What a cache entry is keyed by: the file as it is now, so that any rewrite re-parses.

    Real absolute path, size and mtime_ns (what an append or an ordinary save changes); device,
    inode and ctime_ns (a file replaced by a rename, or rewritten in place and given its old
    mtime back with `touch -d`/`os.utime`: the kernel sets ctime on every write and every
    utime, and no user can set it); and a hash of its first and last 64 KiB (a rewrite on a
    filesystem whose ctime is too coarse to tell two writes apart). Costs one stat and two
    64 KiB reads, whatever the file's size.
    """
    real = os.path.realpath(path)
    st = st if st is not None else os.stat(real)
    size = int(st.st_size)
    return {"path": real, "size": size, "mtime_ns": int(st.st_mtime_ns), "dev": int(st.st_dev),
            "ino": int(st.st_ino), "ctime_ns": int(st.st_ctime_ns), "edges": _edge_digest(real, size)}


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
