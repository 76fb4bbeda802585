"""Optional dependencies: which extra brings which module, and the one-line error when it is missing.

logsage's core install (`pip install logsage-replay`) runs ingest, replay, rules, tune,
watch and the HTML report. Training, re-evaluation and export need the `train` extra,
PNG plots the `report` extra. A command that reaches a missing one raises
`MissingExtraError`, which the CLI prints as one line naming the extra to install.
"""

from __future__ import annotations

import importlib.util

from logsage.core.errors import LogsageError

# The distribution's name on PyPI (the import package is `logsage`; that PyPI name is
# taken by an unrelated project, so the docs never tell anyone to install it).
DISTRIBUTION = "logsage-replay"

# Top-level module -> the extra that installs it.
EXTRA_OF_MODULE = {
    "torch": "train",
    "transformers": "train",
    "peft": "train",
    "accelerate": "train",
    "safetensors": "train",
    "tensorboard": "train",
    "matplotlib": "report",
    "pandas": "notebook",
}


class MissingExtraError(LogsageError, ImportError):
    """A feature needs an optional dependency that is not installed (names the extra to install)."""


def install_command(extra: str) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]'"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a blocked or half-installed package counts as missing
        return False


def missing_extra_error(feature: str, module: str) -> MissingExtraError:
    """The error for `feature` lacking `module` (its extra from EXTRA_OF_MODULE)."""
    extra = EXTRA_OF_MODULE.get(module.split(".")[0], "train")
    return MissingExtraError(f"{feature} needs {module}, which is not installed: {install_command(extra)}")


def require(feature: str, *modules: str) -> None:
    """Raise MissingExtraError naming the extra when any of `modules` is not importable (checked without importing)."""
    for module in modules:
        if not _installed(module):
            raise missing_extra_error(feature, module)
