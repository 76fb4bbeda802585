"""The run-folder contract: the names logsage reads and writes in a run folder, and the one checkpoint-name rule.

Every module that lists, selects, prunes, follows or writes checkpoints uses
`checkpoint_step` (never its own pattern), so a name means the same thing everywhere:

* a checkpoint folder is named ``checkpoint-<N>`` with N in ASCII digits only, and
  nothing else: ``checkpoint-١٢`` (Arabic-Indic digits) or ``checkpoint-24\\n`` (a trailing
  newline) are not checkpoints for any command (`odd_checkpoint_name` says why, for the report);
* ``checkpoint-012`` is step 12. When two folders name one step (``checkpoint-12`` and
  ``checkpoint-012``) that is a conflict (`step_conflicts`), reported and never resolved
  silently: neither folder is selected, pruned or followed as "the" step 12.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_PATTERN = re.compile(r"checkpoint-([0-9]+)", re.ASCII)  # used with fullmatch: no "$" newline slack
RUN_MANIFEST = "logsage_run.json"  # what `logsage train` ran (logsage.train.manifest)
SELECTION_FILE = "logsage_selection.json"  # the provenance of an export (logsage.ship.export)
PER_EXAMPLE_FILE = "per_example_eval_loss.jsonl"  # per-example eval losses in checkpoint-N/ (logsage.train)


def checkpoint_step(name: str) -> int | None:
    """N for a folder named exactly ``checkpoint-<N>`` (ASCII digits), else None."""
    m = CHECKPOINT_PATTERN.fullmatch(name)
    return int(m.group(1)) if m else None


def checkpoint_name(step: int) -> str:
    """The canonical folder name of a step (what transformers writes): ``checkpoint-<step>``."""
    return f"{CHECKPOINT_PREFIX}{int(step)}"


def checkpoint_label(checkpoint) -> str:
    """How to name a `logsage.core.history.Checkpoint` to a user: its folder or file name as found on disk."""
    name = os.path.basename(os.path.normpath(checkpoint.path))
    return name or checkpoint_name(checkpoint.step)


def odd_checkpoint_name(name: str) -> str | None:
    """Why a name that looks like a checkpoint folder is not one (None: it is one, or it does not look like one)."""
    if not name.startswith(CHECKPOINT_PREFIX) or checkpoint_step(name) is not None:
        return None
    rest = name[len(CHECKPOINT_PREFIX):]
    if rest != rest.strip():
        return f"{name!r}: white space around the step number; not read as a checkpoint (rename it)"
    if rest and all(ch.isdigit() for ch in rest):
        return f"{name!r}: the step is not in ASCII digits; not read as a checkpoint (rename it)"
    if any(ch.isdigit() for ch in rest):
        return f"{name!r}: not checkpoint-<N>; not read as a checkpoint"
    return None  # e.g. "checkpoint-best": a user's own folder, not a step


def step_conflicts(names: Iterable[str]) -> dict[int, list[str]]:
    """Steps that two or more checkpoint folder names claim (``checkpoint-12`` and ``checkpoint-012``)."""
    by_step: dict[int, list[str]] = {}
    for n in names:
        step = checkpoint_step(n)
        if step is not None:
            by_step.setdefault(step, []).append(n)
    return {s: sorted(ns) for s, ns in by_step.items() if len(ns) > 1}


def conflict_problem(step: int, names: list[str]) -> str:
    """The words for a step conflict, naming every folder."""
    return (f"conflict: {' and '.join(names)} are both step {step}; logsage will not guess which one is step "
            f"{step} - remove or rename the copy")
