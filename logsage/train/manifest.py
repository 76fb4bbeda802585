"""The run manifest `RUN_DIR/logsage_run.json`: exactly what ran, written by rank 0 only.

It records the resolved configuration (and where each value came from), the model
as given with its revision (null for a local folder; for a hub id the commit the
local cache resolved, when known), the dataset files with their hex sha256 and
example counts, the versions of python, torch, transformers, peft, accelerate and
logsage, the device the run actually used (the Trainer's, not merely a visible
GPU), and start/end times. A resumed run appends a segment rather
than forgetting the first one. The file is replaced atomically, so a reader never
sees half of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from logsage.core.runfolder import RUN_MANIFEST

RUN_MANIFEST = RUN_MANIFEST  # the run-folder contract: logsage.core.runfolder
SCHEMA = "logsage-run/1"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def versions() -> dict[str, str | None]:
    """Versions of the stack that shaped the run (None for a package that is not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "accelerate", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    from logsage import __version__

    out["logsage"] = __version__
    return out


def device_info(device: Any = None) -> dict[str, Any]:
    """The device the run used: `device` is what the Trainer resolved (`args.device`), e.g. `cpu` or `cuda:0`.

    Without one (a caller that has no Trainer), the device is guessed as `--device auto`
    would pick it. A visible but unused GPU (`--device cpu` on a GPU machine) is noted
    as `cuda_available`, never as the device type.
    """
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    cuda_available = torch.cuda.is_available()
    if device is None:
        device = "cuda" if cuda_available else "cpu"
    dev = torch.device(device)
    info["type"] = dev.type
    info["device"] = str(dev)
    info["cuda_available"] = cuda_available
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        info["index"] = index
        info["count"] = torch.cuda.device_count()
        info["name"] = torch.cuda.get_device_name(index)
        info["names"] = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
    elif dev.type == "cpu":
        info["cpu_count"] = os.cpu_count()
    return info


def data_entry(path: str, n_examples: int) -> dict[str, Any]:
    # `path` as the user gave it, and absolute, so that `select` finds the eval set from anywhere.
    return {"path": path, "abs_path": str(Path(path).resolve()), "sha256": sha256_file(path), "examples": n_examples}


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    p = Path(run_dir) / RUN_MANIFEST
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def write_manifest(run_dir: str | os.PathLike, doc: dict[str, Any]) -> Path:
    from logsage.core.history import json_safe

    p = Path(run_dir) / RUN_MANIFEST
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    return p


def start_manifest(
    run_dir: str | os.PathLike,
    *,
    config: dict[str, Any],
    origin: dict[str, str],
    model: dict[str, Any],
    data: dict[str, Any],
    resumed_from: str | None,
    device: Any = None,
) -> dict[str, Any]:
    """Write the manifest at the start of a run (end_time null, status "running") and return it.

    `device` is the device the run uses (the Trainer's `args.device`); see `device_info`.
    """
    previous = read_manifest(run_dir) if resumed_from else None
    segments = list(previous.get("segments", [])) if previous else []
    start = now_iso()
    segments.append({"start_time": start, "end_time": None, "resumed_from": resumed_from, "status": "running"})
    doc = {
        "schema": SCHEMA,
        "tool": "logsage train",
        "command": " ".join(sys.argv),
        "config": config,
        "config_origin": origin,
        "model": model,
        "data": data,
        "versions": versions(),
        "device": device_info(device),
        "start_time": previous.get("start_time", start) if previous else start,
        "end_time": None,
        "status": "running",
        "early_stop": None,
        "segments": segments,
    }
    write_manifest(run_dir, doc)
    return doc


def finish_manifest(run_dir: str | os.PathLike, doc: dict[str, Any], *, status: str,
                    result: dict[str, Any]) -> dict[str, Any]:
    end = now_iso()
    doc["end_time"] = end
    doc["status"] = status
    doc["segments"][-1].update({"end_time": end, "status": status})
    doc.update(result)
    write_manifest(run_dir, doc)
    return doc
