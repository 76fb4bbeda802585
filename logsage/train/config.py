"""The configuration of one `logsage train` run: defaults, the preset, YAML files and overrides.

One dataclass, `TrainConfig`, is the single source of truth: its fields carry
their help text, and `logsage train --help`, the YAML schema, docs/train.md and
the run manifest are all derived from it. Values are resolved in this order, each
later layer overriding the earlier ones:

    built-in defaults  <  --preset (or `preset:` in the YAML)  <  --config run.yaml  <  command-line options

Names follow Hugging Face `TrainingArguments` where one exists (`learning_rate`,
`per_device_train_batch_size`, ...); YAML keys may use `-` or `_`. An unknown key is
a `UsageError` that names the closest valid key. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from logsage.core.errors import UsageError

DEFAULT_MODEL = "Qwen/Qwen2.5-7B-Instruct"
# When neither --eval-data nor --eval-split is given, this fraction of the training
# data is held out (ms-swift's default `split_dataset_ratio` is 0.01; 0.05 gives a
# usable eval set on the small instruction sets this tool is aimed at).
DEFAULT_EVAL_SPLIT = 0.05

DATA_FORMATS = ("auto", "alpaca", "messages", "prompt-completion")
DEVICES = ("auto", "cpu")


def _f(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field with its help text (shown by --help and in docs/train.md)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **meta})  # a fresh copy each
    return field(default=default, metadata={"help": help, **meta})


@dataclass
class TrainConfig:
    """Every setting of a `logsage train` run (see the module docstring for precedence)."""

    # --- what to train on
    model: str = _f(DEFAULT_MODEL, "Hub id or local folder of the base model ('tiny-random-qwen2' builds a "
                                   "tiny local Qwen2 for demos and tests).")
    revision: str | None = _f(None, "Hub revision (branch, tag or commit) of --model; ignored for a local folder.")
    data: list[str] = _f([], "Training data: JSON or JSONL files (alpaca, messages or prompt/completion).")
    eval_data: list[str] = _f([], "Evaluation data files (same formats).")
    eval_split: float | None = _f(None, f"Hold out this fraction (<1) or number (>=1) of the training examples "
                                        f"for evaluation when no --eval-data is given (default {DEFAULT_EVAL_SPLIT}).")
    data_format: str = _f("auto", "Record format: detected per record by its fields, or forced.",
                          choices=DATA_FORMATS)
    max_length: int = _f(2048, "Truncate each tokenized example to this many tokens (from the right).")
    output: str | None = _f(None, "Run folder: checkpoints, trainer_state.json, TensorBoard events, manifest.")

    # --- checkpointing and evaluation
    save_all: bool = _f(False, "Save a checkpoint at every evaluation and never delete one "
                               "(save_steps = eval_steps, save_total_limit off).")
    eval_steps: int = _f(50, "Evaluate every N optimizer steps (and at the last step).")
    save_steps: int | None = _f(None, "Save every N steps (default: eval_steps; must be a multiple of it).")
    save_total_limit: int | None = _f(2, "Without --save-all: keep at most N checkpoints (the best is protected); "
                                         "0 keeps all.")
    logging_steps: int = _f(5, "Log the training loss every N steps.")

    # --- optimisation (HF TrainingArguments names)
    learning_rate: float = _f(1e-4, "Peak learning rate.")
    num_train_epochs: float = _f(3.0, "Epochs over the training data (ignored when --max-steps > 0).")
    max_steps: int = _f(-1, "Stop after this many optimizer steps (-1: use --num-train-epochs).")
    per_device_train_batch_size: int = _f(1, "Training examples per device per forward pass.")
    per_device_eval_batch_size: int = _f(1, "Evaluation examples per device per forward pass.")
    gradient_accumulation_steps: int = _f(1, "Forward passes per optimizer step.")
    warmup_ratio: float = _f(0.05, "Fraction of the steps spent warming the learning rate up linearly.")
    warmup_steps: int = _f(0, "Warm-up steps; when > 0 it replaces --warmup-ratio.")
    lr_scheduler_type: str = _f("cosine", "Learning-rate schedule after warm-up (any HF SchedulerType).")
    weight_decay: float = _f(0.0, "AdamW weight decay.")
    max_grad_norm: float = _f(1.0, "Gradient clipping norm.")
    optim: str | None = _f(None, "Optimizer (any HF OptimizerNames value; default: the installed HF default).")
    bf16: bool = _f(False, "Train in bfloat16 mixed precision (GPU).")
    fp16: bool = _f(False, "Train in float16 mixed precision (GPU).")
    gradient_checkpointing: bool = _f(False, "Recompute activations in the backward pass to save memory.")
    seed: int = _f(42, "Random seed (model init of LoRA weights, data order, dropout).")
    dataloader_num_workers: int = _f(0, "Data loader worker processes.")
    fsdp: str | None = _f(None, "FSDP under torchrun/accelerate launch, as HF's TrainingArguments.fsdp "
                                "(e.g. 'full_shard auto_wrap'); see docs/train.md.")
    fsdp_config: str | None = _f(None, "FSDP settings file (JSON), as HF's TrainingArguments.fsdp_config.")
    deepspeed: str | None = _f(None, "DeepSpeed config file (JSON), as HF's TrainingArguments.deepspeed.")

    # --- LoRA (peft)
    full: bool = _f(False, "Full fine-tune instead of LoRA (checkpoints hold the whole model as safetensors).")
    lora_r: int = _f(8, "LoRA rank.")
    lora_alpha: int = _f(32, "LoRA alpha (scaling = alpha / r, or alpha / sqrt(r) with --use-rslora).")
    lora_dropout: float = _f(0.05, "Dropout on the LoRA input.")
    target_modules: str = _f("all-linear", "Modules to adapt: 'all-linear' (every linear layer except the output "
                                           "head) or a comma-separated list such as q_proj,v_proj.")
    use_rslora: bool = _f(False, "Rank-stabilised LoRA scaling (alpha / sqrt(r)).")
    use_dora: bool = _f(False, "Weight-decomposed LoRA (DoRA).")

    # --- live early stopping and resume
    early_stop: list[str] = _f([], "Stop live with a logsage rule, e.g. hf:patience=3,threshold=1e-4 "
                                   "(the same code as `logsage replay`); repeat to combine (the first to fire stops).")
    early_stop_metric: str = _f("eval_loss", "Metric the --early-stop rules watch.")
    resume_from_checkpoint: str | None = _f(None, "Continue from a checkpoint folder, or 'latest' in --output.")
    device: str = _f("auto", "'auto' (GPU when there is one) or 'cpu'.", choices=DEVICES)

    # ------------------------------------------------------------------ helpers
    @property
    def effective_eval_split(self) -> float | None:
        if self.eval_data:
            return None
        return DEFAULT_EVAL_SPLIT if self.eval_split is None else self.eval_split

    @property
    def effective_save_steps(self) -> int:
        return self.eval_steps if (self.save_all or self.save_steps is None) else self.save_steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}


# ---------------------------------------------------------------------- preset
@dataclass(frozen=True)
class Preset:
    name: str
    summary: str
    values: dict[str, Any]
    sources: dict[str, str]  # field -> where the number comes from


_SWIFT = "ms-swift self-cognition LoRA guide for Qwen2.5-7B (shared/reference/seed-rules.md)"

PRESETS: dict[str, Preset] = {
    "qwen2.5-7b-lora": Preset(
        name="qwen2.5-7b-lora",
        summary="Qwen2.5-7B-Instruct LoRA on a small instruction set, as the ms-swift guide runs it "
                "(one 24 GB GPU, about 10 minutes for ~50 examples).",
        values={
            "model": DEFAULT_MODEL,
            "learning_rate": 1e-4,
            "lora_r": 8,
            "lora_alpha": 32,
            "target_modules": "all-linear",
            "num_train_epochs": 10.0,
            "per_device_train_batch_size": 1,
            "gradient_accumulation_steps": 16,
            "warmup_ratio": 0.05,
            "bf16": True,
            "max_length": 2048,
            "eval_steps": 50,
        },
        sources={
            "model": "the model the guide fine-tunes",
            "learning_rate": f"{_SWIFT}: lr 1e-4 (its table: 1e-3 oscillates, 5e-5 under-trains)",
            "lora_r": f"{_SWIFT}: LoRA rank 8",
            "lora_alpha": f"{_SWIFT}: alpha 32",
            "target_modules": f"{_SWIFT}: all linear layers",
            "num_train_epochs": f"{_SWIFT}: 10 epochs (its table: 10 best, 15+ repeats the samples)",
            "per_device_train_batch_size": f"{_SWIFT}: batch 1",
            "gradient_accumulation_steps": f"{_SWIFT}: gradient accumulation 16",
            "warmup_ratio": f"{_SWIFT}: warmup ratio 0.05",
            "bf16": f"{_SWIFT}: bf16",
            "max_length": f"{_SWIFT}: max length 2048",
            "eval_steps": f"{_SWIFT}: eval and save every 50 steps",
        },
    ),
}


# ---------------------------------------------------------------------- parsing
def _closest(name: str, choices: list[str]) -> str:
    hit = difflib.get_close_matches(name, choices, n=1, cutoff=0.4)
    return f"; did you mean {hit[0]!r}?" if hit else f"; valid keys: {', '.join(choices)}"


def field_type_name(f: dataclasses.Field) -> str:
    t = str(f.type)
    for name in ("list", "bool", "int", "float", "str"):
        if t.startswith(name):
            return name
    return "str"


def coerce_value(name: str, raw: Any, *, where: str = "") -> Any:
    """Type-check and convert one setting (from YAML or the command line)."""
    f = FIELDS[name]
    kind = field_type_name(f)
    optional = "None" in str(f.type)
    prefix = f"{where}: " if where else ""
    if raw is None:
        if optional or kind == "list":
            return None if optional else []
        raise UsageError(f"{prefix}{name} cannot be empty; give a {kind}")
    try:
        if kind == "list":
            items = raw if isinstance(raw, (list, tuple)) else [raw]
            return [str(x) for x in items]
        if kind == "bool":
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("true", "yes", "on", "1"):
                return True
            if s in ("false", "no", "off", "0"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(raw, bool):
                raise ValueError
            v = float(raw)
            if not v.is_integer():
                raise ValueError
            return int(v)
        if kind == "float":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        value = str(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{prefix}{name} must be {'an' if kind == 'int' else 'a'} {kind}, got {raw!r}") from None
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise UsageError(f"{prefix}{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a run configuration file into {field: value}; unknown keys raise UsageError naming the closest."""
    import yaml

    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"{path}: cannot read the config file ({e.strerror}); check --config") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}: not valid YAML{where}; fix the file or pass the options on the command line") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UsageError(f"{path}: a config file must be a mapping of option: value, got {type(doc).__name__}")
    out: dict[str, Any] = {}
    valid = [*FIELDS, "preset"]
    for key, value in doc.items():
        name = str(key).replace("-", "_")
        if name not in valid:
            raise UsageError(f"{path}: unknown key {key!r}{_closest(name, valid)}")
        out[name] = value if name == "preset" else coerce_value(name, value, where=str(path))
    return _relative_to(out, p.parent)


# Settings that name files or folders: a relative one in a YAML file is relative to that file's folder
# (so a config works from any working directory, like a Makefile's includes).
_PATH_FIELDS = ("data", "eval_data", "output", "resume_from_checkpoint", "fsdp_config", "deepspeed")


def _relative_to(values: dict[str, Any], folder: Path) -> dict[str, Any]:
    def anchor(v: Any) -> Any:
        if not isinstance(v, str) or not v or Path(v).expanduser().is_absolute() or v.startswith("~"):
            return v
        return str(folder / v)

    out = dict(values)
    for name in _PATH_FIELDS:
        if name not in out or (name == "resume_from_checkpoint" and out[name] == "latest"):
            continue
        v = out[name]
        out[name] = [anchor(x) for x in v] if isinstance(v, list) else anchor(v)
    # --model is a hub id unless it names a folder: a relative folder next to the YAML is that folder.
    model = out.get("model")
    if isinstance(model, str) and not Path(model).is_absolute() and (
            model.startswith(("./", "../")) or (folder / model).is_dir()):
        out["model"] = str(folder / model)
    return out


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise UsageError(f"unknown preset {name!r}{_closest(name, list(PRESETS))}")
    return PRESETS[name]


def resolve_config(
    overrides: Mapping[str, Any] | None = None,
    *,
    config_file: str | Path | None = None,
    preset: str | None = None,
) -> tuple[TrainConfig, dict[str, str]]:
    """Build the run's configuration from the layers (see the module docstring).

    Args:
        overrides: command-line values; `None` means "not given" and is skipped.
        config_file: a YAML file of settings (may name a `preset`).
        preset: a preset name (wins over a `preset:` key in the file).

    Returns:
        The validated config and, per field, where its value came from
        ("default", "preset:<name>", "config:<file>" or "command line").
    """
    values: dict[str, Any] = {}
    origin: dict[str, str] = {name: "default" for name in FIELDS}
    from_file = load_yaml(config_file) if config_file else {}
    preset_name = preset or from_file.pop("preset", None)
    from_file.pop("preset", None)
    if preset_name:
        p = get_preset(str(preset_name))
        for k, v in p.values.items():
            values[k] = v
            origin[k] = f"preset:{p.name}"
    for k, v in from_file.items():
        values[k] = v
        origin[k] = f"config:{config_file}"
    for k, v in (overrides or {}).items():
        if k not in FIELDS:
            raise UsageError(f"unknown option {k!r}{_closest(k, list(FIELDS))}")
        if v is None or (isinstance(v, (list, tuple)) and not v):
            continue
        values[k] = coerce_value(k, v)
        origin[k] = "command line"
    cfg = TrainConfig(**values)
    validate(cfg)
    return cfg, origin


def validate(cfg: TrainConfig) -> None:
    """Raise UsageError for settings that cannot work together; one line each, naming the option."""
    def bad(msg: str) -> None:
        raise UsageError(msg)

    if not cfg.data:
        bad("no training data: pass --data FILE (JSON or JSONL)")
    if not cfg.output:
        bad("no run folder: pass --output RUN_DIR")
    if cfg.learning_rate <= 0:
        bad(f"--learning-rate must be > 0, got {cfg.learning_rate}")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                 "eval_steps", "logging_steps", "lora_r", "max_length"):
        if getattr(cfg, name) < 1:
            bad(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.max_steps == 0 or cfg.max_steps < -1:
        bad(f"--max-steps must be > 0 (or -1 to use --num-train-epochs), got {cfg.max_steps}")
    if cfg.max_steps < 0 and cfg.num_train_epochs <= 0:
        bad(f"--num-train-epochs must be > 0, got {cfg.num_train_epochs}")
    if not 0 <= cfg.warmup_ratio < 1:
        bad(f"--warmup-ratio must be in [0, 1), got {cfg.warmup_ratio}")
    if cfg.warmup_steps < 0:
        bad(f"--warmup-steps must be >= 0, got {cfg.warmup_steps}")
    if not 0 <= cfg.lora_dropout < 1:
        bad(f"--lora-dropout must be in [0, 1), got {cfg.lora_dropout}")
    if cfg.bf16 and cfg.fp16:
        bad("--bf16 and --fp16 exclude each other; choose one")
    if cfg.eval_data and cfg.eval_split is not None:
        bad("--eval-data and --eval-split exclude each other; give one")
    if cfg.eval_split is not None and (cfg.eval_split <= 0 or (cfg.eval_split >= 1 and not float(cfg.eval_split).is_integer())):
        bad(f"--eval-split must be a fraction in (0, 1) or a whole number of examples, got {cfg.eval_split}")
    if cfg.save_steps is not None:
        if cfg.save_steps < 1:
            bad(f"--save-steps must be >= 1, got {cfg.save_steps}")
        if cfg.save_all and cfg.save_steps != cfg.eval_steps:
            bad(f"--save-all saves at every evaluation: --save-steps {cfg.save_steps} must equal --eval-steps "
                f"{cfg.eval_steps} (or leave it out)")
        if cfg.save_steps % cfg.eval_steps:
            bad(f"--save-steps {cfg.save_steps} must be a multiple of --eval-steps {cfg.eval_steps}")
    if cfg.save_total_limit is not None and cfg.save_total_limit < 0:
        bad(f"--save-total-limit must be >= 0, got {cfg.save_total_limit}")
    if cfg.full and (cfg.use_dora or cfg.use_rslora):
        bad("--use-dora/--use-rslora are LoRA options; drop them with --full")


def cli_flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def help_with_default(name: str) -> str:
    """The help text of a field with its default, for --help and docs/train.md."""
    f = FIELDS[name]
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:  # every TrainConfig field is made by _f, with a default
        raise TypeError(f"TrainConfig.{name} has no default")
    text = f.metadata.get("help", "")
    if isinstance(default, bool):
        return text + (" [default: on]" if default else " [default: off]")
    if default is None or default == []:
        return text
    return f"{text} [default: {default}]"
