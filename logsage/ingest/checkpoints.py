"""Checkpoint inventory: what is really on disk in a run folder, and whether each checkpoint is whole.

`inventory(run_dir)` lists every `checkpoint-<step>/` folder directly under the run
folder, in numeric step order (never string order: checkpoint-9000 comes before
checkpoint-10000), and judges each one without loading any weights:

* kind ``adapter``: `adapter_config.json` plus `adapter_model.safetensors` (or a
  pickle `adapter_model.bin`); ``full``: `config.json` plus model weights (single
  file or shards with an index); ``other``: neither (trainer state, optimizer or
  DeepSpeed shards only).
* whole: every weights file is present, each safetensors header parses and its
  tensors end exactly where the file ends (a file cut short is caught here), every
  shard named in an index exists, and an adapter holds at least one non-empty
  tensor. `problem` says what is wrong otherwise, in words.
* pickle-only weights (`.bin`/`.pt`) are checked as zip archives (torch's format)
  without unpickling anything, and flagged `pickle=True`: logsage loads them only
  with an explicit opt-in.

Paths come from the folder the user gave; `best_model_checkpoint` and manifests are
never trusted for locations (runs get moved and copied).
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from pathlib import Path

from logsage.core.history import Checkpoint

_CKPT = re.compile(r"^checkpoint-(\d+)$")
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit


def safetensors_problem(path: Path, *, require_tensors: bool = False) -> str | None:
    """None if `path` is a readable, complete safetensors file; else what is wrong, in words."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                return f"{path.name} is cut short ({size} bytes, no header)"
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER or 8 + n > size:
                return f"{path.name} is cut short or corrupt (header of {n} bytes, file of {size})"
            header = json.loads(f.read(n))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"{path.name} has an unreadable header ({e.__class__.__name__})"
    end = 0
    numel_total = 0
    n_tensors = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            start, stop = info["data_offsets"]
            shape = info["shape"]
        except (KeyError, TypeError, ValueError):
            return f"{path.name}: tensor {name!r} has a malformed header entry"
        n_tensors += 1
        end = max(end, int(stop))
        numel = 1
        for d in shape:
            numel *= int(d)
        numel_total += numel
    if 8 + n + end != size:
        if 8 + n + end > size:
            return f"{path.name} is cut short ({size} bytes, the header needs {8 + n + end})"
        return f"{path.name} has {size - (8 + n + end)} unexpected trailing bytes"
    if require_tensors and (n_tensors == 0 or numel_total == 0):
        return f"{path.name} is empty (no tensor data)"
    return None


def _zip_problem(path: Path) -> str | None:
    """Check a torch pickle checkpoint (a zip archive) for completeness without unpickling it."""
    try:
        if path.stat().st_size == 0:
            return f"{path.name} is empty"
        if not zipfile.is_zipfile(path):
            return f"{path.name} is cut short or not a torch zip archive"
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        return f"{path.name}: damaged member {bad}" if bad else None
    except (OSError, zipfile.BadZipFile) as e:
        return f"{path.name} is unreadable ({e.__class__.__name__})"


def _weights_problem(ckpt: Path, stem: str, *, adapter: bool) -> tuple[list[str], str | None, bool]:
    """Find and check the weights named `<stem>.safetensors` / sharded / `<stem>.bin` in a folder."""
    single = ckpt / f"{stem}.safetensors"
    index = ckpt / f"{stem}.safetensors.index.json"
    if single.exists():
        return [single.name], safetensors_problem(single, require_tensors=adapter), False
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError):
            return [index.name], f"{index.name} is unreadable", False
        shards = sorted(set(weight_map.values()))
        for shard in shards:
            p = ckpt / shard
            if not p.exists():
                return [index.name, *shards], f"shard {shard} named in {index.name} is missing", False
            prob = safetensors_problem(p)
            if prob:
                return [index.name, *shards], prob, False
        return [index.name, *shards], None, False
    pickles = sorted(ckpt.glob(f"{stem}*.bin")) + sorted(ckpt.glob(f"{stem}*.pt"))
    if pickles:
        for p in pickles:
            prob = _zip_problem(p)
            if prob:
                return [p.name for p in pickles], prob, True
        return [p.name for p in pickles], None, True
    return [], None, False


def inspect_checkpoint(path: Path, step: int) -> Checkpoint:
    """Judge one checkpoint folder (see the module docstring)."""
    if (path / "adapter_config.json").exists():
        weights, problem, is_pickle = _weights_problem(path, "adapter_model", adapter=True)
        if not weights:
            problem = "adapter_config.json without adapter weights (adapter_model.safetensors missing)"
        else:
            try:
                json.loads((path / "adapter_config.json").read_text())
            except (OSError, ValueError):
                problem = problem or "adapter_config.json is unreadable"
        return Checkpoint(step, str(path), "adapter", problem is None, problem, weights, is_pickle)
    if (path / "config.json").exists():
        for stem in ("model", "pytorch_model"):
            weights, problem, is_pickle = _weights_problem(path, stem, adapter=False)
            if weights:
                return Checkpoint(step, str(path), "full", problem is None, problem, weights, is_pickle)
        return Checkpoint(step, str(path), "full", False, "config.json without model weights")
    return Checkpoint(step, str(path), "other", False, "no model or adapter weights in this folder")


def inventory(run_dir: str | os.PathLike) -> list[Checkpoint]:
    """All `checkpoint-<step>/` folders directly under `run_dir`, in numeric step order."""
    root = Path(run_dir)
    found: list[tuple[int, Path]] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return []
    for e in entries:
        m = _CKPT.match(e.name)
        if m and e.is_dir():
            found.append((int(m.group(1)), Path(e.path)))
    found.sort(key=lambda t: t[0])
    # Paths are reported under the folder as the user gave it.
    return [inspect_checkpoint(root / p.name, step) for step, p in found]
