"""Checkpoint inventory: what is really on disk in a run folder, and whether each checkpoint is whole.

`inventory(run_dir)` lists the checkpoints directly under the run folder, in numeric
step order (never string order: checkpoint-9000 comes before checkpoint-10000), and
judges each one without loading any weights. `scan(run_dir)` also returns what was
left out and why (names that look like checkpoints but are not: `logsage.core.runfolder`),
for the History's cleanups.

Layouts (`Checkpoint.kind`):

* ``checkpoint-<N>/`` (transformers, ms-swift, LLaMA-Factory, TRL; N in ASCII digits only,
  the one rule of `logsage.core.runfolder`): kind ``adapter`` (`adapter_config.json` plus
  `adapter_model.safetensors`, or a pickle `adapter_model.bin`), ``full`` (`config.json`
  plus model weights, single file or shards with an index), ``other`` (trainer state,
  optimizer, DeepSpeed `global_stepN/` shards only: a `global_stepN/` inside a
  checkpoint-N folder is part of that checkpoint). Two folders for one step
  (``checkpoint-12`` and ``checkpoint-012``) are a conflict: both are listed, neither is
  whole, the problem names both;
* ``global_step<N>/`` at the top level (DeepSpeed without transformers): ``deepspeed``,
  ZeRO shards (pickle), listed with their step, never loaded;
* ``epoch_<N>/`` (torchtune): ``torchtune_epoch``; its weights are judged as above, and
  `step` holds the epoch number N (torchtune does not record the step in the name);
* ``<NNNNNNN>_adapters.safetensors`` (MLX-LM, in the run folder or its ``adapters/``):
  ``mlx_adapter``, the step from the name;
* ``epoch=<E>-step=<S>[-vK].ckpt`` (PyTorch Lightning, in the run folder or its
  ``checkpoints/``): ``lightning``, step S; a pickle: listed, checked as a zip archive,
  never loaded.

Judging: every weights file is present, each safetensors header is valid
(`logsage.core.safetensors`: a cut-short file or a malformed header makes that one
checkpoint "not whole", never an error for the run), every shard named in an index
exists, and an adapter holds at least one non-empty tensor. Pickle weights
(`.bin`/`.pt`/`.ckpt`) are checked as zip archives (torch's format) without unpickling
anything, and flagged `pickle=True`: logsage loads them only with an explicit opt-in.

Paths come from the folder the user gave; `best_model_checkpoint` and manifests are
never trusted for locations (runs get moved and copied).
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from logsage.core.history import Checkpoint
from logsage.core.runfolder import checkpoint_step, conflict_problem, odd_checkpoint_name, step_conflicts
from logsage.core.safetensors import header_problem

_DEEPSPEED = re.compile(r"global_step([0-9]+)", re.ASCII)
_TORCHTUNE = re.compile(r"epoch_([0-9]+)", re.ASCII)
_MLX = re.compile(r"([0-9]+)_adapters\.safetensors", re.ASCII)
_LIGHTNING = re.compile(r"epoch=([0-9]+)-step=([0-9]+)(?:-v[0-9]+)?\.ckpt", re.ASCII)
# Kinds whose weights logsage can export (the others are listed, never shipped).
SHIPPABLE_KINDS = ("adapter", "full")


def safetensors_problem(path: Path, *, require_tensors: bool = False) -> str | None:
    """None if `path` is a readable, complete safetensors file; else what is wrong, in words."""
    return header_problem(path, require_tensors=require_tensors)


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
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            return [index.name], f"{index.name} is unreadable", False
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            return [index.name], f"{index.name}: malformed weight_map (not an object of file names)", False
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
    if any(_DEEPSPEED.fullmatch(p.name) for p in _subdirs(path)):
        return Checkpoint(step, str(path), "other", False, "no model or adapter weights in this folder, only DeepSpeed "
                          "global_stepN/ shards (pickle; convert them with DeepSpeed's zero_to_fp32.py)")
    return Checkpoint(step, str(path), "other", False, "no model or adapter weights in this folder")


def _subdirs(path: Path) -> list[Path]:
    try:
        return [Path(e.path) for e in os.scandir(path) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []


def _pickle_files(paths: list[Path]) -> tuple[list[str], str | None]:
    """Names and the first problem of pickle files judged as torch zip archives (central directory only: cheap)."""
    for p in paths:
        try:
            if p.stat().st_size == 0:
                return [x.name for x in paths], f"{p.name} is empty"
            with zipfile.ZipFile(p):
                pass
        except (OSError, zipfile.BadZipFile, ValueError):
            return [x.name for x in paths], f"{p.name} is cut short or not a torch zip archive"
    return [x.name for x in paths], None


def _deepspeed(path: Path, step: int) -> Checkpoint:
    files = sorted(p for p in path.glob("*.pt") if p.is_file())
    if not files:
        return Checkpoint(step, str(path), "deepspeed", False, "DeepSpeed folder without *.pt shards")
    names, problem = _pickle_files(files)
    return Checkpoint(step, str(path), "deepspeed", problem is None, problem, names, True)


def _lightning(path: Path, step: int) -> Checkpoint:
    names, problem = _pickle_files([path])
    return Checkpoint(step, str(path), "lightning", problem is None, problem, names, True)


def _mlx(path: Path, step: int) -> Checkpoint:
    problem = safetensors_problem(path, require_tensors=True)
    return Checkpoint(step, str(path), "mlx_adapter", problem is None, problem, [path.name], False)


def _torchtune(path: Path, epoch: int) -> Checkpoint:
    c = inspect_checkpoint(path, epoch)
    return replace(c, kind="torchtune_epoch", whole=c.whole and c.kind in SHIPPABLE_KINDS,
                   problem=c.problem if c.kind in SHIPPABLE_KINDS or c.problem else "no model or adapter weights")


@dataclass
class Scan:
    """The checkpoints of a run folder, and the names that look like checkpoints but were not read as such."""

    checkpoints: list[Checkpoint]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    conflicts: dict[int, list[str]] = field(default_factory=dict)  # step -> folder names


# Where the other layouts' files live, relative to the run folder.
_MLX_DIRS = ("", "adapters")
_LIGHTNING_DIRS = ("", "checkpoints")
# Listing order at one step: checkpoint-N first, so `History.checkpoint_at` finds it.
_KIND_ORDER = {"deepspeed": 1, "torchtune_epoch": 2, "mlx_adapter": 3, "lightning": 4}


def _is(entry: os.DirEntry, kind: str) -> bool:
    """entry.is_dir() / is_file(), False for a link that loops or cannot be followed (ELOOP, EACCES...)."""
    try:
        return entry.is_dir() if kind == "dir" else entry.is_file()
    except OSError:
        return False


def _entries(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError:
        return []


def scan(run_dir: str | os.PathLike) -> Scan:
    """Every checkpoint of `run_dir` in the layouts of the module docstring, in step order, with what was skipped."""
    root = Path(run_dir)
    found: list[Checkpoint] = []
    skipped: list[tuple[str, str]] = []
    top = _entries(root)
    ckpt_names: list[str] = []
    for e in top:
        is_dir = _is(e, "dir")
        step = checkpoint_step(e.name)
        if step is not None and is_dir:
            ckpt_names.append(e.name)
            continue
        odd = odd_checkpoint_name(e.name)
        if odd and is_dir:
            skipped.append((str(root / e.name), odd))
            continue
        if is_dir and (m := _DEEPSPEED.fullmatch(e.name)):
            found.append(_deepspeed(root / e.name, int(m.group(1))))
        elif is_dir and (m := _TORCHTUNE.fullmatch(e.name)):
            found.append(_torchtune(root / e.name, int(m.group(1))))
    for sub in _MLX_DIRS:
        for e in (top if not sub else _entries(root / sub)):
            if (m := _MLX.fullmatch(e.name)) and _is(e, "file"):
                found.append(_mlx(root / sub / e.name if sub else root / e.name, int(m.group(1))))
    for sub in _LIGHTNING_DIRS:
        for e in (top if not sub else _entries(root / sub)):
            if (m := _LIGHTNING.fullmatch(e.name)) and _is(e, "file"):
                found.append(_lightning(root / sub / e.name if sub else root / e.name, int(m.group(2))))
    conflicts = step_conflicts(ckpt_names)
    for name in ckpt_names:
        step = checkpoint_step(name)
        assert step is not None  # only names with a step were collected above
        c = inspect_checkpoint(root / name, step)  # paths under the folder as the user gave it
        if step in conflicts:
            c = replace(c, whole=False, problem=conflict_problem(step, conflicts[step]))
        found.append(c)
    found.sort(key=lambda c: (c.step, _KIND_ORDER.get(c.kind, 0), c.path))
    return Scan(found, skipped, conflicts)


def mark_conflicts(checkpoints: list[Checkpoint]) -> list[Checkpoint]:
    """`checkpoints` with every checkpoint-N folder that shares its step with another marked not whole (a conflict)."""
    names = [os.path.basename(os.path.normpath(c.path)) for c in checkpoints]
    conflicts = step_conflicts(names)
    return [replace(c, whole=False, problem=conflict_problem(c.step, conflicts[c.step]))
            if checkpoint_step(n) is not None and c.step in conflicts else c for c, n in zip(checkpoints, names)]


def inventory(run_dir: str | os.PathLike) -> list[Checkpoint]:
    """All checkpoints directly under `run_dir` (the layouts of the module docstring), in numeric step order."""
    return scan(run_dir).checkpoints
