"""Ground truth for replay: run the REAL HF, Lightning and Keras early-stopping code on a sequence.

Each oracle feeds a metric sequence, one evaluation at a time, to the library's own
callback object and returns ``(stop_index, best_index)``:

* ``stop_index``: 0-based index of the evaluation after which the library asks training
  to stop, or ``None`` when it never does within the sequence;
* ``best_index``: the evaluation the library regards as best at that point (for HF the
  Trainer's ``best_global_step``, for Keras ``best_epoch``, for Lightning the evaluation
  whose tensor became ``best_score``), or ``None`` when the library has none.

`keras_run` also reads back, from the model's weights after ``on_train_end``, which
epoch's weights Keras actually leaves in the model (``best_epoch``'s with
``restore_best_weights``, else the last epoch trained); the keras rule's best_index is
``best_epoch`` either way, and its reason says which weights Keras leaves.

Nothing here re-implements a rule: the libraries decide; this module only drives them the
way their trainers do (see the reference, ``stopping-semantics.md`` §1.2, §1.3, §2.2, §3.2).
The heavy imports happen inside the functions so that collecting the tests stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import tempfile
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Sequence

# Keras 3 picks its backend at import time and falls back to TensorFlow, which is not
# installed; the torch backend is the one the reference verified. This must run before
# anything imports keras (we do not own tests/conftest.py, so it lives here).
os.environ["KERAS_BACKEND"] = "torch"

Result = tuple[int | None, int | None]

# Metric names the oracles log under; the name only matters for the key lookup.
_HF_METRIC = {"min": "eval_loss", "max": "eval_accuracy"}
_KERAS_MONITOR = {"min": "val_loss", "max": "val_accuracy"}


def _check_mode(mode: str) -> None:
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")


# --------------------------------------------------------------------------- Hugging Face
@functools.lru_cache(maxsize=None)
def _hf_args(mode: str):
    """Real TrainingArguments for an eval-every-step, save-every-step run (built once per mode)."""
    from transformers import TrainingArguments

    # output_dir is never written: the oracle saves nothing.
    return TrainingArguments(
        output_dir=os.path.join(tempfile.gettempdir(), "logsage-hf-oracle-unused"),
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",  # so that _determine_best_metric records best_global_step
        save_steps=1,
        metric_for_best_model=_HF_METRIC[mode],
        greater_is_better=(mode == "max"),
        load_best_model_at_end=False,
        report_to=[],
        use_cpu=True,
    )


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Silence one library logger (the 'without load_best_model_at_end' warning fires per run)."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def hf_stop(values: Sequence[float], *, patience: int, threshold: float, mode: str) -> Result:
    """transformers' EarlyStoppingCallback + Trainer best tracking, in the Trainer's order.

    Per evaluation, as `Trainer._maybe_log_save_evaluate` does in 5.24: `evaluate()` fires
    `on_evaluate` (the callback compares with the best of the *previous* evaluations), then
    the real `Trainer._determine_best_metric` updates `state.best_metric` /
    `state.best_global_step`; the loop honours `control.should_training_stop` afterwards.
    `_determine_best_metric` only reads `self.args` and `self.state`, so it is called
    unbound on a namespace carrying the real args and state.
    """
    _check_mode(mode)
    from transformers import EarlyStoppingCallback, Trainer, TrainerControl, TrainerState

    args = _hf_args(mode)
    state = TrainerState()
    control = TrainerControl()
    callback = EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold)
    trainer_view = SimpleNamespace(args=args, state=state)
    with _quiet_logger("transformers.trainer_callback"):
        callback.on_train_begin(args, state, control)  # validates args (asserts), as in train()
    key = _HF_METRIC[mode]
    for index, value in enumerate(values):
        state.global_step = index + 1  # steps 1..n, so best_global_step - 1 is the eval index
        metrics = {key: float(value)}  # Trainer hands callbacks plain Python floats
        callback.on_evaluate(args, state, control, metrics=metrics)
        Trainer._determine_best_metric(trainer_view, metrics=metrics, trial=None)
        if control.should_training_stop:
            return index, _hf_best_index(state)
    return None, _hf_best_index(state)


def _hf_best_index(state) -> int | None:
    return None if state.best_global_step is None else state.best_global_step - 1


# --------------------------------------------------------------------------- Lightning
def _lightning_callback(patience, min_delta, mode, check_finite, stopping_threshold, divergence_threshold):
    from pytorch_lightning.callbacks import EarlyStopping

    return EarlyStopping(
        monitor="val_loss",
        min_delta=min_delta,
        patience=patience,
        mode=mode,
        check_finite=check_finite,
        stopping_threshold=stopping_threshold,
        divergence_threshold=divergence_threshold,
    )


def lightning_stop(
    values: Sequence[float],
    *,
    patience: int,
    min_delta: float,
    mode: str,
    check_finite: bool = True,
    stopping_threshold: float | None = None,
    divergence_threshold: float | None = None,
) -> Result:
    """pytorch_lightning's EarlyStopping, one `_evaluate_stopping_criteria` call per check.

    Values go in as float32 tensors, as `self.log` stores them. The best index is the
    evaluation whose tensor the callback adopted as `best_score` (it assigns the very
    object it was given, so identity tells us when it moved).
    """
    _check_mode(mode)
    import torch

    callback = _lightning_callback(patience, min_delta, mode, check_finite, stopping_threshold,
                                   divergence_threshold)
    best_index = None
    for index, value in enumerate(values):
        current = torch.tensor(value, dtype=torch.float32)
        should_stop, _reason = callback._evaluate_stopping_criteria(current)
        if callback.best_score is current:
            best_index = index
        if should_stop:
            return index, best_index
    return None, best_index


def lightning_stop_via_check(
    values: Sequence[float],
    *,
    patience: int,
    min_delta: float,
    mode: str,
    check_finite: bool = True,
    stopping_threshold: float | None = None,
    divergence_threshold: float | None = None,
) -> int | None:
    """The same callback driven through `_run_early_stopping_check(trainer)`, the path fit() uses.

    The trainer is a namespace with exactly what that method reads (callback_metrics,
    fast_dev_run, strategy.reduce_boolean_decision, should_stop, current_epoch); the
    single-process strategy's reduce returns the decision unchanged. Returns the stop index.
    """
    _check_mode(mode)
    import torch

    callback = _lightning_callback(patience, min_delta, mode, check_finite, stopping_threshold,
                                   divergence_threshold)
    trainer = SimpleNamespace(
        callback_metrics={},
        fast_dev_run=False,
        strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision),
        should_stop=False,
        current_epoch=0,
    )
    for index, value in enumerate(values):
        trainer.current_epoch = index
        trainer.callback_metrics = {"val_loss": torch.tensor(value, dtype=torch.float32)}
        callback._run_early_stopping_check(trainer)
        if trainer.should_stop:
            return index
    return None


# --------------------------------------------------------------------------- Keras
@functools.lru_cache(maxsize=1)
def _keras_model():
    """One tiny real model (cached: building it dominates the cost of a Keras run)."""
    import keras

    if keras.backend.backend() != "torch":
        raise RuntimeError(f"keras was imported with backend {keras.backend.backend()!r} before the oracles set torch")
    return keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])


@dataclass(frozen=True)
class KerasRun:
    """What Keras did on one sequence (all indices 0-based evaluation = epoch indices)."""

    stop_index: int | None  # the epoch at which it set model.stop_training
    best_epoch: int | None  # callback.best_epoch; None when it never saw a value
    kept_index: int | None  # the epoch whose weights the model holds after on_train_end


def keras_run(
    values: Sequence[float],
    *,
    patience: int,
    min_delta: float,
    mode: str,
    baseline: float | None = None,
    start_from_epoch: int = 0,
    restore_best_weights: bool = False,
) -> KerasRun:
    """Keras 3 EarlyStopping on the torch backend, one `on_epoch_end(epoch)` per value.

    Epochs are the 0-based evaluation indices (what `fit` passes). Logs carry Python
    floats, as `fit` does after pythonifying them. Before each epoch's callback the
    model's weights are set to encode that epoch, and `on_train_end` runs after the last
    epoch (or the stop), so `kept_index` is read back from the weights Keras actually
    leaves in the model: its restore target with `restore_best_weights`, otherwise the
    last epoch trained.
    """
    _check_mode(mode)
    import keras
    import numpy as np

    model = _keras_model()
    model.stop_training = False
    callback = keras.callbacks.EarlyStopping(
        monitor=_KERAS_MONITOR[mode],
        min_delta=min_delta,
        patience=patience,
        mode=mode,
        baseline=baseline,
        restore_best_weights=restore_best_weights,
        start_from_epoch=start_from_epoch,
    )
    callback.set_model(model)
    _set_epoch_weights(model, -1)  # "no epoch trained yet"
    callback.on_train_begin()
    stop_index = None
    for epoch, value in enumerate(values):
        _set_epoch_weights(model, epoch)  # the weights at the end of this epoch
        callback.on_epoch_end(epoch, logs={_KERAS_MONITOR[mode]: float(value)})
        if model.stop_training:
            stop_index = epoch
            break
    callback.on_train_end()
    kernel = np.asarray(model.get_weights()[0]).reshape(-1)[0]
    kept_index = None if kernel < 0 else int(kernel)
    best_epoch = None if callback.best is None else int(callback.best_epoch)
    model.stop_training = False
    return KerasRun(stop_index, best_epoch, kept_index)


def _set_epoch_weights(model, epoch: int) -> None:
    import numpy as np

    kernel, bias = model.get_weights()
    model.set_weights([np.full_like(kernel, float(epoch)), np.zeros_like(bias)])


def keras_stop(
    values: Sequence[float],
    *,
    patience: int,
    min_delta: float,
    mode: str,
    baseline: float | None = None,
    start_from_epoch: int = 0,
    restore_best_weights: bool = False,
) -> Result:
    """`(stop_index, best_epoch)` of `keras_run`, the pair the keras rule's Outcome must equal.

    best_epoch is the callback's own (the last epoch counted as an improvement, the same
    with restore_best_weights on or off), or None when Keras never saw a value (`best`
    still None; its `best_epoch` is then only the initial 0).
    """
    run = keras_run(values, patience=patience, min_delta=min_delta, mode=mode, baseline=baseline,
                    start_from_epoch=start_from_epoch, restore_best_weights=restore_best_weights)
    return run.stop_index, run.best_epoch
