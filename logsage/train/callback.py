"""`logsage train`'s own Trainer callback: a save after every evaluation (`--save-all`).

The live early-stop callback (`--early-stop`) is the public drop-in
`logsage.integrations.hf.LogsageCallback`, the same one users add to their own Trainer.
"""

from __future__ import annotations

from transformers import TrainerCallback


class SaveEveryEvalCallback(TrainerCallback):
    """--save-all: make sure every evaluation is followed by a save, whatever triggered the evaluation."""

    def on_evaluate(self, args, state, control, **kwargs):
        control.should_save = True
        return control
