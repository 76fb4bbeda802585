"""The `logsage train` run: Hugging Face Trainer + peft LoRA, a checkpoint at every evaluation.

`run_training(cfg)` does, in this order (cheap checks first, so that a bad file or
option fails in a second, before any model is loaded):

1. checks the run folder (a fresh run never reuses a folder with checkpoints) and
   the `--early-stop` rules;
2. reads and checks the data (`data.load_examples`), splits off the eval set;
3. loads the tokenizer, tokenizes (response-only labels, truncation);
4. loads the model (a local folder never touches the hub), wraps it with LoRA;
5. trains with `eval_strategy = save_strategy = "steps"`; with `--save-all`,
   `save_steps == eval_steps`, no rotation, and a save after every evaluation
   (including transformers 5's extra evaluation at `max_steps`);
6. at every evaluation captures the per-example eval losses and writes them into
   that evaluation's checkpoint (`per_example.py`); live rules may stop the run
   (`logsage.integrations.hf.LogsageCallback`);
7. writes `trainer_state.json` at the run root and the manifest `logsage_run.json`.

TensorBoard events go to `RUN_DIR/runs/` (one folder for every segment of a resumed
run, so the run folder is one run). Under `torchrun`/`accelerate launch` every rank
runs this function; only rank 0 writes the manifest, logs and per-example files.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from logsage.core.errors import CheckpointError, LogsageError, UsageError
from logsage.core.runfolder import RUN_MANIFEST, checkpoint_name, checkpoint_step
from logsage.train.config import TrainConfig, resolve_config
from logsage.train.data import (
    Example,
    TokenizedExample,
    check_eval_size,
    load_examples,
    split_eval,
    tokenize_examples,
)
from logsage.train.tiny import TINY_MODEL_ALIAS

log = logging.getLogger("logsage.train")

# The collator passes each example's dataset position under this key; the trainer
# removes it before the forward pass and uses it to name per-example losses.
INDEX_KEY = "logsage_example_index"


@dataclass
class TrainResult:
    """What a finished (or early-stopped) run produced."""

    run_dir: str
    status: str  # "completed" | "stopped early"
    global_step: int
    max_steps: int
    evaluations: list[dict[str, Any]] = field(default_factory=list)  # {"step", "eval_loss"}
    checkpoints: list[str] = field(default_factory=list)
    early_stop: dict[str, Any] | None = None
    manifest: str | None = None
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------- small helpers
def require_training_stack() -> None:
    """One line naming the `train` extra when torch, transformers, peft or accelerate is not installed."""
    from logsage.core.extras import require

    require("logsage train", "torch", "transformers", "peft", "accelerate")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    root = Path(run_dir)
    if not root.is_dir():
        return []
    return sorted(s for c in root.iterdir() if c.is_dir() and (s := checkpoint_step(c.name)) is not None)


def resolve_resume(cfg: TrainConfig) -> str | None:
    """The checkpoint folder to resume from (None for a fresh run); checks the run folder either way."""
    run_dir = Path(cfg.output)  # type: ignore[arg-type]
    if run_dir.exists() and not run_dir.is_dir():
        raise UsageError(f"--output {cfg.output}: exists and is a file, not a run folder; choose a new folder "
                         "(or remove the file)")
    existing = checkpoint_steps(run_dir)
    if cfg.resume_from_checkpoint is None:
        if existing:
            raise UsageError(
                f"{cfg.output}: already holds checkpoints ({checkpoint_name(existing[-1])}); pass "
                "--resume-from-checkpoint latest to continue that run, or choose a new --output")
        return None
    if cfg.resume_from_checkpoint == "latest":
        if not existing:
            raise CheckpointError(f"{cfg.output}: no checkpoint-N folder to resume from; start a fresh run "
                                  "without --resume-from-checkpoint")
        return str(run_dir / checkpoint_name(existing[-1]))
    path = Path(cfg.resume_from_checkpoint)
    if not (path / "trainer_state.json").is_file():
        raise CheckpointError(f"{path}: not a checkpoint folder (no trainer_state.json); give a "
                              "RUN_DIR/checkpoint-N folder or 'latest'")
    return str(path)


def default_cache_dir() -> Path:
    env = os.environ.get("LOGSAGE_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("logsage"))


def resolve_model(name: str) -> tuple[str, bool]:
    """(path or hub id, is_local). The tiny alias is built once into the cache (under a file lock for ranks)."""
    if name == TINY_MODEL_ALIAS:
        from filelock import FileLock

        from logsage.train.tiny import build_tiny_model

        target = default_cache_dir() / "models" / TINY_MODEL_ALIAS
        target.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(target) + ".lock"):
            if not (target / "model.safetensors").is_file():
                build_tiny_model(target)
        return str(target), True
    p = Path(name).expanduser()
    if p.is_dir():
        return str(p), True
    # A hub id is "name" or "org/name"; anything else that does not exist is a mistyped folder.
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise LogsageError(f"{name}: no such model folder; give a local folder or a hub id such as {TrainConfig().model}")
    return name, False


def prepare_examples(cfg: TrainConfig) -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Read and check the data (no tokenizer); returns train, eval and the manifest's data section."""
    from logsage.train.manifest import data_entry

    train = load_examples(cfg.data, cfg.data_format)
    per_file: dict[str, int] = {}
    for e in train:
        per_file[e.file] = per_file.get(e.file, 0) + 1
    if cfg.eval_data:
        evals = load_examples(cfg.eval_data, cfg.data_format)
        source = ", ".join(cfg.eval_data)
        split = None
    else:
        split = cfg.effective_eval_split
        train, evals = split_eval(train, split, cfg.seed)  # type: ignore[arg-type]
        source = f"{', '.join(cfg.data)} (--eval-split {split})"
    check_eval_size(evals, cfg.per_device_eval_batch_size, world_size(), source=source)
    eval_counts: dict[str, int] = {}
    for e in evals:
        eval_counts[e.file] = eval_counts.get(e.file, 0) + 1
    data = {
        "train": [data_entry(f, per_file.get(f, 0)) for f in cfg.data],
        "eval": [data_entry(f, eval_counts.get(f, 0)) for f in cfg.eval_data],
        "eval_split": split,
        "train_examples": len(train),
        "eval_examples": len(evals),
        "eval_ids": [e.id for e in evals],
    }
    return train, evals, data


class Collator:
    """Pads a list of tokenized examples (right padding; labels -100) and carries their dataset index."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        n = max(len(f["input_ids"]) for f in features)
        b = len(features)
        input_ids = torch.full((b, n), self.pad_token_id, dtype=torch.long)
        attention = torch.zeros((b, n), dtype=torch.long)
        labels = torch.full((b, n), -100, dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            input_ids[i, :k] = torch.tensor(f["input_ids"], dtype=torch.long)
            attention[i, :k] = 1
            labels[i, :k] = torch.tensor(f["labels"], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention, "labels": labels,
                INDEX_KEY: torch.tensor([f[INDEX_KEY] for f in features], dtype=torch.long)}


def _rows(tokenized: list[TokenizedExample]) -> list[dict[str, Any]]:
    return [{"input_ids": t.input_ids, "labels": t.labels, INDEX_KEY: t.index} for t in tokenized]


def _trainer_class():
    """The Trainer subclass that captures per-example eval losses (built lazily: imports transformers)."""
    from transformers import Trainer

    class LogsageTrainer(Trainer):
        def __init__(self, *args: Any, capture: Any = None, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.capture = capture

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            index = inputs.pop(INDEX_KEY, None)
            if self.capture is None or not self.capture.active or index is None:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
            self.capture.add_batch(index, outputs["logits"], inputs["labels"])
            return (loss, outputs) if return_outputs else loss

        def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                            metric_key_prefix="eval"):
            if self.capture is None:
                return super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                               metric_key_prefix)
            self.capture.begin()
            try:
                out = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                              metric_key_prefix)
            except BaseException:
                self.capture.finish(self.state.global_step)
                self.capture.pending.pop(self.state.global_step, None)
                raise
            self.capture.finish(self.state.global_step)
            return out

    return LogsageTrainer


def _training_arguments(cfg: TrainConfig, run_dir: str):
    from transformers import TrainingArguments

    save_steps = cfg.effective_save_steps
    limit = None if (cfg.save_all or not cfg.save_total_limit) else cfg.save_total_limit
    kwargs: dict[str, Any] = dict(
        output_dir=run_dir,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=limit,
        # The best checkpoint is tracked (and protected from rotation without --save-all);
        # nothing is reloaded at the end and no HF early stopping is added.
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        load_best_model_at_end=False,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        # transformers 5 folded warmup_ratio into warmup_steps (a float < 1 is a ratio).
        warmup_steps=cfg.warmup_steps if cfg.warmup_steps > 0 else float(cfg.warmup_ratio),
        lr_scheduler_type=cfg.lr_scheduler_type,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        bf16=cfg.bf16,
        fp16=cfg.fp16,
        seed=cfg.seed,
        dataloader_num_workers=cfg.dataloader_num_workers,
        report_to=["tensorboard"],
        use_cpu=cfg.device == "cpu",
        remove_unused_columns=False,  # keeps INDEX_KEY in the batch
        label_names=["labels"],
        ddp_find_unused_parameters=False if not cfg.full else None,
        save_only_model=False,  # optimizer and RNG state too, so that a resume continues exactly
    )
    if cfg.optim:
        kwargs["optim"] = cfg.optim
    for name in ("fsdp", "fsdp_config", "deepspeed"):  # HF's own distributed configuration, passed through
        if getattr(cfg, name):
            kwargs[name] = getattr(cfg, name)
    if cfg.gradient_checkpointing:
        # transformers 5.2x renamed it activation_checkpointing (the old name warns); accept both.
        prefix = "activation" if "activation_checkpointing" in TrainingArguments.__dataclass_fields__ else "gradient"
        kwargs[f"{prefix}_checkpointing"] = True
        kwargs[f"{prefix}_checkpointing_kwargs"] = {"use_reentrant": False}
    try:
        return TrainingArguments(**kwargs)
    except ValueError as e:
        raise UsageError(f"invalid training settings: {str(e).splitlines()[0]}") from None


def _load_tokenizer(model_path: str, local: bool, revision: str | None):
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model_path, local_files_only=local or _offline(),
                                            revision=None if local else revision)
    except (OSError, ValueError) as e:
        raise LogsageError(f"{model_path}: cannot load the tokenizer ({_first_line(e)}); check --model") from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _load_model(cfg: TrainConfig, model_path: str, local: bool):
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.float32
    if cfg.bf16:
        dtype = torch.bfloat16
    elif cfg.fp16 and not cfg.full:
        dtype = torch.float16  # frozen base in half precision; LoRA weights stay float32 (peft's autocast)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, local_files_only=local or _offline(),
                                                     revision=None if local else cfg.revision)
    except (OSError, ValueError) as e:
        raise LogsageError(f"{model_path}: cannot load the model ({_first_line(e)}); check --model") from None
    commit = getattr(model.config, "_commit_hash", None)
    if cfg.full:
        return model, commit
    from peft import LoraConfig, TaskType, get_peft_model

    target: str | list[str] = cfg.target_modules
    if cfg.target_modules != "all-linear":
        target = [t.strip() for t in cfg.target_modules.split(",") if t.strip()]
    lora = LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=target, use_rslora=cfg.use_rslora,
                      use_dora=cfg.use_dora, bias="none")
    try:
        with _no_checkpointing_deprecation():
            peft_model = get_peft_model(model, lora)
    except ValueError as e:
        raise UsageError(f"--target-modules {cfg.target_modules}: {_first_line(e)}") from None
    return peft_model, commit


@contextlib.contextmanager
def _no_checkpointing_deprecation():
    """Silence only transformers 5's "`is_gradient_checkpointing` is deprecated" FutureWarning.

    peft reads the old property name inside `get_peft_model` (our own code passes the new
    `activation_checkpointing` arguments); the warning is about peft's call, not the
    user's settings, so it is filtered for that one call, by its exact message.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                                category=FutureWarning)
        yield


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


# ---------------------------------------------------------------------- the run
def run_training(
    cfg: TrainConfig | None = None,
    origin: dict[str, str] | None = None,
    *,
    echo: Callable[[str], None] | None = None,
    **overrides: Any,
) -> TrainResult:
    """Train as configured and return what was produced (see the module docstring for the steps).

    Args:
        cfg: a resolved configuration (`config.resolve_config`); or pass the settings
            as keyword arguments (`run_training(model=..., data=[...], output=...)`).
        origin: where each setting came from (written into the manifest).
        echo: where the live early-stop reason goes (default: the `logsage.train` logger, at warning level).

    Raises:
        UsageError: contradictory options, an existing run folder without --resume.
        DataError: malformed data (file:line), before any model is loaded.
        LogsageError / CheckpointError: the model or checkpoint cannot be loaded.
    """
    require_training_stack()
    if cfg is None:
        cfg, origin = resolve_config(overrides)
    elif overrides:
        raise TypeError("pass either cfg or keyword settings, not both")
    say = echo or log.warning  # the early-stop reason must be visible without logging setup
    run_dir = str(cfg.output)

    # 1-2: everything that can fail cheaply (no tokenizer, no model yet).
    resume = resolve_resume(cfg)
    live_rules = []
    if cfg.early_stop:
        from logsage.decide.live import parse_live_rules

        live_rules = parse_live_rules(cfg.early_stop)  # a bad rule fails before the data and model
    train_examples, eval_examples, data_info = prepare_examples(cfg)
    model_path, local = resolve_model(cfg.model)

    # 3: tokenizer and tokenization (still no model).
    tokenizer = _load_tokenizer(model_path, local, cfg.revision)
    train_tok = tokenize_examples(tokenizer, train_examples, cfg.max_length)
    eval_tok = tokenize_examples(tokenizer, eval_examples, cfg.max_length)

    import transformers

    from logsage.integrations.hf import LogsageCallback
    from logsage.train.callback import SaveEveryEvalCallback
    from logsage.train.manifest import finish_manifest, start_manifest
    from logsage.train.per_example import PerExampleCapture, PerExampleWriter

    transformers.logging.set_verbosity_warning()
    args = _training_arguments(cfg, run_dir)  # initialises torch.distributed under torchrun
    main = args.process_index == 0
    transformers.set_seed(cfg.seed)  # LoRA initialisation is reproducible for a seed

    # 4: the model.
    model, commit = _load_model(cfg, model_path, local)

    capture = PerExampleCapture([e.id for e in eval_examples])
    callbacks: list[Any] = [PerExampleWriter(capture)]
    if cfg.save_all:
        callbacks.append(SaveEveryEvalCallback())
    live = None
    if live_rules:
        from logsage.ingest.per_example import read_per_example

        earlier = read_per_example(run_dir) if resume else {}  # earlier segments of a resumed run

        def per_example_so_far() -> dict[int, Any]:
            import numpy as np

            found = dict(earlier)
            for step, rows in capture.by_step.items():
                found[step] = {
                    "id": np.asarray([r["id"] for r in rows]),
                    "loss_sum": np.asarray([np.nan if r["loss_sum"] is None else r["loss_sum"] for r in rows]),
                    "n_tokens": np.asarray([r["n_tokens"] for r in rows], dtype=np.int64),
                    "batch": np.asarray([r["batch"] for r in rows], dtype=np.int64),
                }
            return found

        live = LogsageCallback([r.spec for r in live_rules], metric=cfg.early_stop_metric,
                               per_example=per_example_so_far, echo=say)
        callbacks.append(live)

    trainer = _trainer_class()(
        model=model,
        args=args,
        data_collator=Collator(tokenizer.pad_token_id),
        train_dataset=_rows(train_tok),
        eval_dataset=_rows(eval_tok),
        processing_class=tokenizer,
        callbacks=callbacks,
        capture=capture,
    )
    from transformers.integrations import TensorBoardCallback

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback):
            cb.logging_dir = os.path.join(run_dir, "runs")  # one folder for all segments of the run

    doc = None
    if main:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        model_info = {"name": cfg.model, "path": model_path if local else None, "local": local,
                      # the commit the (offline) hub cache resolved; null for a local folder or when unknown
                      "revision": None if local else commit,
                      "revision_requested": None if local else cfg.revision,
                      "kind": "full" if cfg.full else "lora"}
        # The device the Trainer resolved (cpu under --device cpu even when a GPU is visible).
        doc = start_manifest(run_dir, config=cfg.to_dict(), origin=origin or {}, model=model_info,
                             data=data_info, resumed_from=resume, device=trainer.args.device)
    status = "failed"
    try:
        trainer.train(resume_from_checkpoint=resume)
        status = "stopped early" if (live and live.stopped) else "completed"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if main and doc is not None:
            if status in ("completed", "stopped early"):
                trainer.save_state()
            result = {
                "early_stop": live.stopped if live else None,
                "global_step": trainer.state.global_step,
                "max_steps": trainer.state.max_steps,
            }
            finish_manifest(run_dir, doc, status=status, result=result)

    evaluations = [{"step": int(e["step"]), "eval_loss": float(e["eval_loss"])}
                   for e in trainer.state.log_history if "eval_loss" in e]
    return TrainResult(
        run_dir=run_dir,
        status=status,
        global_step=int(trainer.state.global_step),
        max_steps=int(trainer.state.max_steps),
        evaluations=evaluations,
        checkpoints=[checkpoint_name(s) for s in checkpoint_steps(run_dir)],
        early_stop=live.stopped if live else None,
        manifest=str(Path(run_dir) / RUN_MANIFEST) if main else None,
        model=cfg.model,
    )
