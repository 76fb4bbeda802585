"""Drop-in callbacks that run logsage rules live in the user's own training script.

    from logsage.integrations.hf import LogsageCallback                 # transformers Trainer (and TRL, ...)
    from logsage.integrations.lightning import LogsageEarlyStopping     # lightning / pytorch_lightning
    from logsage.integrations.keras import LogsageEarlyStopping         # Keras 3

Each module imports only its own framework (this package imports none), and each
decides with `logsage.decide.live.first_stop`, the function `logsage replay` uses, on
the metric's history as the run logs it: the live stop is the replay's stop.
"""
