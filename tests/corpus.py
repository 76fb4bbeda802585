"""Where the team's shared real-run corpus lives, and how tests that read it skip (or fail) without it.

The corpus is logs from other people's public training runs, so it is never part of the project:
it sits beside the repository in ``../shared/real-runs/`` and ``../shared/real-runs-2/`` (each with
an INDEX.md and a SOURCE.txt per run) and tests read it in place. ``LOGSAGE_SHARED`` points
elsewhere. A clone without it skips the tests that need it, with a reason that says where it
comes from; ``LOGSAGE_REQUIRE_CORPUS=1`` (set by ``.ci/run``) turns its absence into a failure of
the whole session (tests/conftest.py), so CI can never pass without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("LOGSAGE_SHARED") or ROOT.parent / "shared")
REAL_RUNS = SHARED / "real-runs"
REAL_RUNS_2 = SHARED / "real-runs-2"
REQUIRE_ENV = "LOGSAGE_REQUIRE_CORPUS"


def present(root: Path = REAL_RUNS) -> bool:
    """Whether a corpus folder is there (its INDEX.md is the mark of a complete copy)."""
    return (root / "INDEX.md").is_file()


def missing() -> list[Path]:
    return [root for root in (REAL_RUNS, REAL_RUNS_2) if not present(root)]


def reason(root: Path) -> str:
    return (f"needs the team's shared real-run corpus {root} (logs from public training runs, kept beside "
            f"the repository in ../shared/{root.name}/, never in it); set LOGSAGE_SHARED to the folder "
            f"holding real-runs/ and real-runs-2/")


needs_corpus = pytest.mark.skipif(not present(REAL_RUNS), reason=reason(REAL_RUNS))
needs_corpus_2 = pytest.mark.skipif(not present(REAL_RUNS_2), reason=reason(REAL_RUNS_2))


def run_dirs(root: Path, fmt: str | None = None) -> list[Path]:
    """The run folders of one format folder (or of every one), sorted; [] when the corpus is absent."""
    base = root / fmt if fmt else root
    if not base.is_dir():
        return []
    pattern = "*" if fmt else "*/*"
    return sorted(p for p in base.glob(pattern) if p.is_dir())
