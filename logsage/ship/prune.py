"""Free the disk a `--save-all` run used: delete its checkpoint-N folders except the ones the user keeps.

`plan_prune` decides, `prune` deletes (or, with `dry_run`, only says what it would
delete). What can be kept:

* ``selected``: the checkpoint `logsage select RUN --rule ...` picks (needs a rule).
  Pickle-only checkpoints are not selectable without --allow-pickle; prune keeps the
  pick with and without that opt-in, so a later `select --allow-pickle` still finds it;
* ``best``: the whole checkpoint with the best logged value of the monitored metric
  (hindsight), again with and without pickle-only ones;
* ``last``: the newest whole checkpoint (to resume from);
* explicit steps: ``500`` or ``checkpoint-500``.

Only folders named `checkpoint-<N>` directly inside the run folder are ever deleted
(the one name rule of `logsage.core.runfolder`: ASCII digits, nothing around them);
a checkpoint that is a symbolic link, or that resolves outside the run folder, is
left alone and reported, and so are the two folders of a step conflict
(``checkpoint-12`` and ``checkpoint-012``) and the other layouts the inventory lists
(DeepSpeed, torchtune, MLX, Lightning files). A checkpoint newer than the last step
the log knows may still be being written: it is kept, and the plan says so. Nothing
else in the run (logs, the manifest, trainer state, exports) is touched. A keep list
that matches no checkpoint is refused rather than deleting every checkpoint.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from logsage.core.errors import CheckpointError, LogsageError, UsageError
from logsage.core.history import History
from logsage.core.runfolder import checkpoint_name, checkpoint_step

KEEP_WORDS = ("selected", "best", "last")


@dataclass
class PrunePlan:
    """What stays, what goes, and how much disk that frees."""

    run: str
    keep: list[dict[str, Any]]  # {"step", "path", "bytes", "why": [...]}
    delete: list[dict[str, Any]]  # {"step", "path", "bytes", "whole", "problem"?}
    left_alone: list[dict[str, Any]] = field(default_factory=list)  # {"step", "path", "reason"}
    notes: list[str] = field(default_factory=list)
    dry_run: bool = True
    deleted: list[int] = field(default_factory=list)

    @property
    def freed_bytes(self) -> int:
        return sum(d["bytes"] for d in self.delete)

    @property
    def kept_bytes(self) -> int:
        return sum(k["bytes"] for k in self.keep)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "dry_run": self.dry_run, "keep": self.keep, "delete": self.delete,
                "left_alone": self.left_alone, "freed_bytes": self.freed_bytes, "kept_bytes": self.kept_bytes,
                "deleted_steps": self.deleted, "notes": self.notes}


def parse_keep(items: str | Sequence[str]) -> list[str | int]:
    """`"selected,best,last,500"` (or a list of such strings) -> ["selected", "best", "last", 500]."""
    parts = [items] if isinstance(items, str) else list(items)
    out: list[str | int] = []
    for part in parts:
        for raw in str(part).split(","):
            word = raw.strip()
            if not word:
                continue
            step = checkpoint_step(word) if not word.isascii() or not word.isdigit() else int(word)
            if step is not None:
                out.append(step)
            elif word.lower() in KEEP_WORDS:
                out.append(word.lower())
            else:
                raise UsageError(f"--keep {word!r}: use selected, best, last or checkpoint steps (e.g. 500)")
    if not out:
        raise UsageError("--keep is empty; name what to keep, e.g. --keep selected,best,last")
    return out


def folder_bytes(path: Path) -> int:
    """Bytes of the files under `path` (symbolic links are not followed)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        for name in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


def _best_whole(history: History, metric: str | None, mode: str | None, *, allow_pickle: bool) -> int | None:
    from logsage.core.objective import resolve_objective

    objective = resolve_objective(history, metric, mode)
    series = history.series[objective.metric]
    value_at = {int(s): float(v) for s, v in zip(series.steps, series.values)}
    best = None
    for c in history.checkpoints:
        v = value_at.get(c.step)
        if not c.whole or c.kind not in ("adapter", "full") or (c.pickle and not allow_pickle):
            continue
        if v is None or not math.isfinite(v):
            continue
        o = v if objective.mode == "min" else -v
        if best is None or o < best[0]:
            best = (o, c.step)
    return None if best is None else best[1]


def plan_prune(history: History, keep: Sequence[str | int], *, rule: str | None = None,
               metric: str | None = None, mode: str | None = None) -> PrunePlan:
    """Decide which checkpoint folders of `history`'s run stay and which go (nothing is deleted here)."""
    run_dir = Path(history.path)
    if not run_dir.is_dir():
        raise UsageError(f"{history.path}: not a run folder; prune needs the folder holding checkpoint-N folders")
    checkpoints = history.checkpoints
    if not checkpoints:
        raise CheckpointError(f"{history.path}: no checkpoint-N folders; nothing to prune")
    by_step = {c.step: c for c in checkpoints}
    why: dict[int, list[str]] = {}
    notes: list[str] = []

    def add(step: int | None, reason: str) -> None:
        if step is not None:
            why.setdefault(step, [])
            if reason not in why[step]:
                why[step].append(reason)

    for item in keep:
        if isinstance(item, int):
            if item not in by_step:
                have = ", ".join(str(s) for s in sorted(by_step))
                raise UsageError(f"--keep {item}: no {checkpoint_name(item)} in {history.path} (have: {have})")
            add(item, "asked")
        elif item == "selected":
            if not rule:
                raise UsageError("--keep selected needs --rule (the rule whose pick to keep), "
                                 "e.g. --rule hf:patience=3")
            from logsage.ship.select import choose_candidates

            picks = {}
            for allow in (False, True):
                try:
                    sel = choose_candidates(history, rule, metric=metric, mode=mode, allow_pickle=allow)
                except CheckpointError as e:
                    if not allow:
                        notes.append(f"selected: {e}")
                    continue
                picks[allow] = (sel.candidates[0].step, sel.rule)
            for allow, (step, name) in picks.items():
                if allow and picks.get(False, (None,))[0] == step:
                    continue  # the same pick either way: one label
                add(step, f"selected by {name}" + (" (with --allow-pickle)" if allow else ""))
        elif item == "best":
            plain = _best_whole(history, metric, mode, allow_pickle=False)
            with_pickle = _best_whole(history, metric, mode, allow_pickle=True)
            add(plain, "best logged")
            if with_pickle != plain:
                add(with_pickle, "best logged (pickle weights)")
        elif item == "last":
            whole = [c.step for c in checkpoints if c.whole and checkpoint_step(Path(c.path).name) is not None]
            add(max(whole) if whole else None, "newest whole")
    # A checkpoint past the last step the log knows may still be being written: never delete it.
    logged = _last_logged_step(history)
    if logged is not None:
        for c in checkpoints:
            if c.step > logged and checkpoint_step(Path(c.path).name) is not None:
                add(c.step, f"newer than the log's last step {logged} (may still be being written)")
    if not why:
        raise CheckpointError(f"{history.path}: --keep {','.join(map(str, keep))} matches no checkpoint "
                              "(none is whole?); refusing to delete every checkpoint")
    root = run_dir.resolve()
    plan = PrunePlan(run=history.path, keep=[], delete=[], notes=notes)
    for c in checkpoints:
        path = Path(c.path)
        entry: dict[str, Any] = {"step": c.step, "path": c.path}
        if checkpoint_step(path.name) is None:  # another layout (DeepSpeed, torchtune, MLX, Lightning)
            plan.left_alone.append({**entry, "reason": f"a {c.kind} checkpoint; prune deletes only checkpoint-N "
                                                       "folders"})
            continue
        if path.is_symlink():
            plan.left_alone.append({**entry, "reason": "is a symbolic link; left alone"})
            continue
        if path.resolve().parent != root:
            plan.left_alone.append({**entry, "reason": "not a checkpoint folder directly inside the run; left alone"})
            continue
        if (c.problem or "").startswith("conflict:"):
            plan.left_alone.append({**entry, "reason": f"{c.problem}; left alone"})
            continue
        entry["bytes"] = folder_bytes(path)
        if c.step in why:
            plan.keep.append({**entry, "why": why[c.step]})
        else:
            d = {**entry, "whole": c.whole}
            if c.problem:
                d["problem"] = c.problem
            plan.delete.append(d)
    status = _manifest_status(run_dir)
    if status == "running":
        notes.append(f"{history.path}/logsage_run.json says the run is still running; a checkpoint being written "
                     "now could be deleted - prune after it ends")
    return plan


def _last_logged_step(history: History) -> int | None:
    """The last step any series of the log reaches (None: the log has no points)."""
    last = [int(s.steps[-1]) for s in history.series.values() if len(s.steps)]
    return max(last) if last else None


def _manifest_status(run_dir: Path) -> str | None:
    from logsage.ship.runfacts import read_manifest

    try:
        m = read_manifest(run_dir)
    except LogsageError:
        return None
    return m.get("status") if m else None


def prune(run: str | os.PathLike, keep: str | Sequence[str | int], *, rule: str | None = None,
          metric: str | None = None, mode: str | None = None, dry_run: bool = False) -> PrunePlan:
    """Delete the checkpoint folders of `run` that `keep` does not name (see the module docstring).

    Raises:
        UsageError: a bad keep list, `selected` without a rule, or RUN is not a folder.
        CheckpointError: the run has no checkpoints, or the keep list matches none.
    """
    from logsage.ingest import load_history

    keep_items = parse_keep(keep if isinstance(keep, str) else [str(k) for k in keep])
    if not Path(run).is_dir():
        raise UsageError(f"{run}: not a run folder; prune needs the folder holding checkpoint-N folders")
    history = load_history(run)
    plan = plan_prune(history, keep_items, rule=rule, metric=metric, mode=mode)
    plan.dry_run = dry_run
    if dry_run:
        return plan
    root = Path(run).resolve()
    for d in plan.delete:
        path = Path(d["path"])
        # Re-check right before deleting: the plan was made from a listing that may be stale.
        if path.is_symlink() or path.resolve().parent != root or checkpoint_step(path.name) is None:
            plan.left_alone.append({"step": d["step"], "path": d["path"],
                                    "reason": "changed since planning; left alone"})
            continue
        try:
            shutil.rmtree(path)
        except OSError as e:
            raise LogsageError(f"{path}: could not be deleted ({e.strerror}); "
                               f"{len(plan.deleted)} checkpoint(s) were deleted before it") from None
        plan.deleted.append(d["step"])
    return plan
