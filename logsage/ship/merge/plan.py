"""Planning the merge: read and check the adapter and the base config, then lay out every output tensor.

Nothing here writes: `plan_adapter` maps the adapter's LoRA modules onto base tensors,
the config checks refuse what cannot be merged (quantized bases, unsupported LoRA
variants), and `plan_layout` / `shard_groups` / `header_bytes` fix every output
tensor's name, dtype, shape and byte offsets before a byte of data is read.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logsage.core.errors import CheckpointError, ExportError
from logsage.core.safetensors import ITEMSIZE, TensorEntry
from logsage.ship.merge.tensors import (
    DTYPE_NAMES,
    FLOAT_CODES,
    ST_TO_TORCH,
    read_header,
    read_tensor,
    torch_code,
)

# Adapter config keys whose (truthy) presence means a LoRA variant this merge does not implement.
_UNSUPPORTED_CONFIG = {
    "use_bdlora": "BD-LoRA", "alora_invocation_tokens": "aLoRA", "velora_config": "VeLoRA",
    "monteclora_config": "MonteCLoRA", "kasa_config": "KaSA", "arrow_config": "Arrow",
    "use_qalora": "QA-LoRA", "layer_replication": "layer replication",
    "target_parameters": "LoRA on nn.Parameter targets", "trainable_token_indices": "trainable tokens",
    "mica": "MiCA",
}
_QUANT_NAME = re.compile(r"(bnb|4bit|8bit|4-bit|8-bit|gptq|awq|int4|int8|nf4|qlora)", re.I)


# ============================================================ the adapter
@dataclass
class LoraModule:
    """The LoRA parts that change one base weight."""

    weight: str  # base tensor name, e.g. "model.layers.0.self_attn.q_proj.weight"
    A: Any
    B: Any
    scaling: float
    embedding: bool = False
    fan_in_fan_out: bool = False
    magnitude: Any = None  # DoRA
    bias: Any = None  # lora_B.bias (lora_bias=True)


@dataclass
class AdapterPlan:
    """What an adapter does to a base, by base tensor name."""

    config: dict[str, Any]
    lora: dict[str, LoraModule] = field(default_factory=dict)  # base weight name -> parts
    bias: dict[str, tuple[Any, float]] = field(default_factory=dict)  # base bias name -> (lora bias, scaling)
    replace: dict[str, Any] = field(default_factory=dict)  # modules_to_save: base tensor name -> tensor
    warnings: list[str] = field(default_factory=list)

    @property
    def touched(self) -> set[str]:
        return set(self.lora) | set(self.bias) | set(self.replace)


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    path = adapter_dir / "adapter_config.json"
    try:
        cfg = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{adapter_dir}: no adapter_config.json; this is not a peft adapter folder") from None
    except (OSError, ValueError):
        raise CheckpointError(f"{path}: unreadable; the adapter config is damaged") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return cfg


def adapter_weights_file(adapter_dir: Path, *, allow_pickle: bool) -> tuple[Path, bool]:
    """The adapter's weights file and whether it is a pickle (refused unless `allow_pickle`)."""
    st = adapter_dir / "adapter_model.safetensors"
    if st.exists():
        return st, False
    for name in ("adapter_model.bin", "adapter_model.pt"):
        p = adapter_dir / name
        if p.exists():
            if not allow_pickle:
                raise CheckpointError(
                    f"{p}: pickle weights can run code when loaded; logsage loads them only with --allow-pickle "
                    "(then with torch.load(weights_only=True))")
            return p, True
    raise CheckpointError(f"{adapter_dir}: no adapter weights (adapter_model.safetensors) found")


def load_adapter_state(adapter_dir: Path, *, allow_pickle: bool = False) -> dict[str, Any]:
    """The adapter's tensors (CPU); an empty adapter (no tensor, or only 0-element ones) raises CheckpointError."""
    import torch

    path, is_pickle = adapter_weights_file(adapter_dir, allow_pickle=allow_pickle)
    if is_pickle:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # weights_only refuses anything but tensors and plain containers
            first = (str(e).splitlines() or [e.__class__.__name__])[0][:160]
            raise CheckpointError(f"{path}: torch.load(weights_only=True) refused it ({first})") from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: not a flat dict of tensors; not a peft adapter state dict")
    else:
        entries, _ = read_header(path)
        state = {name: read_tensor(e).clone() for name, e in entries.items()}
    if not state or all(t.numel() == 0 for t in state.values()):
        raise CheckpointError(
            f"{path}: the adapter is empty (no tensor data; typical of a ZeRO-3 save without gathering); "
            "re-save the adapter from the trained model")
    return state


# peft's saved key suffixes (adapter name already stripped) -> the part they hold.
_PART_NAMES = {"lora_A.weight": "lora_A", "lora_B.weight": "lora_B", "lora_B.bias": "lora_B_bias",
               "lora_magnitude_vector": "lora_magnitude_vector",
               "lora_magnitude_vector.weight": "lora_magnitude_vector",
               "lora_embedding_A": "lora_embedding_A", "lora_embedding_B": "lora_embedding_B"}
_LORA_PART = re.compile(r"^(.*)\.(" + "|".join(re.escape(k) for k in _PART_NAMES) + r")$")


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """peft's `get_pattern_key`: the first pattern that matches the end of the module name wins."""
    for key in patterns or {}:
        if re.match(rf"(.*\.)?({key})$", module):
            return patterns[key]
    return default


def plan_adapter(config: dict[str, Any], state: dict[str, Any], base: dict[str, TensorEntry]) -> AdapterPlan:
    """Map an adapter's tensors onto the base's tensor names; anything not understood raises ExportError."""
    ptype = str(config.get("peft_type", "LORA")).upper()
    if ptype != "LORA":
        raise ExportError(f"adapter type {ptype} is not LoRA; only LoRA adapters can be merged by logsage")
    for key, what in _UNSUPPORTED_CONFIG.items():
        if config.get(key):
            raise ExportError(f"the adapter uses {what} ({key} in adapter_config.json), which logsage cannot merge; "
                              "export it unmerged (drop --merge)")
    plan = AdapterPlan(config=config)
    emb, head = _embedding_names(base)

    def base_shape(name: str) -> tuple[int, ...] | None:
        if name in base:
            return base[name].shape
        if name == head and emb:  # tied: the output embedding is the input one
            return base[emb].shape
        return None

    r_default = int(config.get("r", 8))
    alpha_default = float(config.get("lora_alpha", r_default))
    rslora = bool(config.get("use_rslora", False))
    dora = bool(config.get("use_dora", False))
    fifo = bool(config.get("fan_in_fan_out", False))

    parts: dict[str, dict[str, Any]] = {}
    for key, tensor in state.items():
        name = key[len("base_model.model."):] if key.startswith("base_model.model.") else key
        m = _LORA_PART.match(name)
        if m:
            parts.setdefault(m.group(1), {})[_PART_NAMES[m.group(2)]] = tensor
            continue
        # peft saves a targeted embedding's own weights too (save_embedding_layers="auto"): they
        # stand for the base tensor (resized when tokens were added), with the LoRA on top.
        name = re.sub(r"\.base_layer\.(weight|bias)$", r".\1", name)
        if re.search(r"(^|\.)(lora_\w+|token_adapter|trainable_tokens\w*)(\.|$)", name):
            raise ExportError(f"adapter tensor {key!r} is of a kind logsage cannot merge; "
                              "export it unmerged (drop --merge)")
        # modules_to_save: a full copy of a base module's tensor
        shape = base_shape(name)
        if shape is None:
            raise ExportError(f"adapter tensor {key!r} replaces {name!r}, which the base model does not have; "
                              "is --base the model this adapter was trained on?")
        if tuple(tensor.shape) != shape:
            same_rank = len(tensor.shape) == len(shape) and tuple(tensor.shape[1:]) == shape[1:]
            if not same_rank or name not in (emb, head):
                raise ExportError(f"adapter tensor {key!r} has shape {tuple(tensor.shape)}, the base's {name} has "
                                  f"{shape}; is --base the model this adapter was trained on?")
            plan.warnings.append(f"{name}: resized from {shape[0]} to {tensor.shape[0]} rows "
                                 "(the adapter added tokens); vocab_size is updated")
        plan.replace[name] = tensor

    for module, p in parts.items():
        is_emb = "lora_embedding_A" in p or "lora_embedding_B" in p
        A = p.get("lora_embedding_A" if is_emb else "lora_A")
        B = p.get("lora_embedding_B" if is_emb else "lora_B")
        if A is None or B is None:
            raise ExportError(f"adapter module {module}: has {sorted(p)} but not both A and B; "
                              "the adapter is incomplete")
        if A.dim() != 2 or B.dim() != 2:
            raise ExportError(f"adapter module {module}: LoRA on a {A.dim()}-d weight (convolution?) is not supported")
        weight = f"{module}.weight"
        base_wshape = base_shape(weight)
        if base_wshape is None:
            raise ExportError(f"adapter targets {module}, but the base has no tensor {weight!r}; "
                              "is --base the model this adapter was trained on?")
        r = int(_pattern_value(config.get("rank_pattern") or {}, module, r_default))
        alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, alpha_default))
        rank = A.shape[0]
        if rank != r:
            raise ExportError(f"adapter module {module}: rank {rank} in the weights, r={r} in adapter_config.json")
        scaling = alpha / math.sqrt(r) if rslora else alpha / r
        wshape = tuple(plan.replace[weight].shape) if weight in plan.replace else base_wshape
        # A is (r, in) and B (out, r); an embedding's lora_embedding_A is (r, vocab) and B (dim, r).
        expect = (A.shape[1], B.shape[0]) if (fifo or is_emb) else (B.shape[0], A.shape[1])
        if tuple(wshape) != expect:
            raise ExportError(f"adapter module {module}: LoRA delta has shape {expect}, the base weight {wshape}; "
                              "is --base the model this adapter was trained on?")
        mag = p.get("lora_magnitude_vector")
        if dora and mag is None:
            raise ExportError(f"adapter module {module}: use_dora is set but there is no magnitude vector")
        if mag is not None and is_emb:
            raise ExportError(f"adapter module {module}: DoRA on an embedding is not supported by the merge")
        mod = LoraModule(weight, A, B, scaling, embedding=is_emb, fan_in_fan_out=fifo and not is_emb, magnitude=mag)
        plan.lora[weight] = mod
        if "lora_B_bias" in p:
            bias = f"{module}.bias"
            if bias not in base:
                raise ExportError(f"adapter module {module}: has a LoRA bias but the base layer has no bias")
            plan.bias[bias] = (p["lora_B_bias"], scaling)
    if not plan.lora and not plan.replace:
        raise ExportError("the adapter holds no LoRA weights and no saved modules; nothing to merge")
    return plan


# ============================================================ base config
def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{model_dir}: no config.json; pass a model folder as --base") from None
    except (OSError, ValueError):
        raise CheckpointError(f"{path}: unreadable model config") from None


def quantization_of(config: dict[str, Any]) -> str | None:
    """The quantization method a model config declares (bitsandbytes, gptq, awq...), or None."""
    q = config.get("quantization_config")
    if not q and isinstance(config.get("text_config"), dict):
        q = config["text_config"].get("quantization_config")
    if not q:
        return None
    if isinstance(q, dict):
        if q.get("load_in_4bit"):
            return "bitsandbytes 4-bit"
        if q.get("load_in_8bit"):
            return "bitsandbytes 8-bit"
        return str(q.get("quant_method", "unknown method"))
    return "unknown method"


def refuse_quantized_base(model_dir: Path, config: dict[str, Any]) -> None:
    q = quantization_of(config)
    if q:
        raise ExportError(f"base {model_dir} is quantized ({q}); a merge needs the full-precision weights - "
                          "pass the unquantized model as --base (the adapter merges into it)")


def qlora_warning(adapter_config: dict[str, Any], base_dir: Path, *,
                  manifest: dict[str, Any] | None = None) -> str | None:
    """A warning when the adapter was trained on a quantized base (QLoRA) and is merged into a full-precision one."""
    trained_on = str(adapter_config.get("base_model_name_or_path") or "")
    why = None
    for section in (manifest, (manifest or {}).get("config")):
        if not isinstance(section, dict):
            continue
        for k in ("quantization", "load_in_4bit", "load_in_8bit", "qlora"):
            if section.get(k) and why is None:
                why = f"the training manifest says {k}={section[k]}"
    if why is None and trained_on:
        p = Path(trained_on)
        if p.is_dir() and (p / "config.json").exists() and p.resolve() != base_dir.resolve():
            try:
                q = quantization_of(json.loads((p / "config.json").read_text()))
            except (OSError, ValueError):
                q = None
            if q:
                why = f"its base {trained_on} is quantized ({q})"
        if why is None and _QUANT_NAME.search(p.name):
            why = f"its base is named {trained_on!r}"
    if why is None:
        return None
    return (f"the adapter was trained on a quantized base (QLoRA: {why}); it is merged into the full-precision "
            f"base {base_dir}, so the merged model can differ slightly from the model evaluated during training")


def config_dtype(config: dict[str, Any]) -> str | None:
    for key in ("dtype", "torch_dtype"):
        v = config.get(key)
        if isinstance(v, str) and v.replace("torch.", "") in ("float32", "float16", "bfloat16"):
            return v.replace("torch.", "")
    tc = config.get("text_config")
    if isinstance(tc, dict):
        return config_dtype(tc)
    return None


def resolve_dtype(requested: str | None, config: dict[str, Any], base: dict[str, TensorEntry]) -> str:
    """The output dtype (a torch dtype name): --dtype, else the base config's, else its weights'."""
    if requested and requested != "auto":
        key = requested.lower().replace("torch.", "")
        if key not in DTYPE_NAMES:
            from logsage.core.errors import UsageError

            raise UsageError(f"--dtype {requested!r}: choose auto, bf16, fp16 or fp32")
        return DTYPE_NAMES[key]
    d = config_dtype(config)
    if d:
        return d
    floats = [e.dtype for e in base.values() if e.dtype in FLOAT_CODES]
    return ST_TO_TORCH[max(set(floats), key=floats.count)] if floats else "float32"


def _tied(config: dict[str, Any]) -> bool:
    if "tie_word_embeddings" in config:
        return bool(config["tie_word_embeddings"])
    tc = config.get("text_config")
    if isinstance(tc, dict) and "tie_word_embeddings" in tc:
        return bool(tc["tie_word_embeddings"])
    return True  # transformers' PretrainedConfig default


def _embedding_names(base: dict[str, TensorEntry]) -> tuple[str | None, str]:
    """(input embedding tensor name, output embedding tensor name) by the usual spellings."""
    inp = [n for n in base if re.search(r"(embed_tokens|wte|word_embeddings|tok_embeddings)\.weight$", n)]
    out = next((n for n in base if n.endswith("lm_head.weight")), "lm_head.weight")
    return (inp[0] if len(inp) == 1 else None), out


# ============================================================ the merge
@dataclass
class OutTensor:
    """One tensor of the output: its layout, and how to produce its bytes."""

    name: str
    dtype: str  # safetensors code
    shape: tuple[int, ...]
    # The base tensor its bytes come from (for a tied head the base does not store, the input
    # embedding: `plan_layout` writes every output tensor from one base tensor).
    source: TensorEntry
    how: str  # "copy" | "cast" | "lora" | "bias" | "replace"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * ITEMSIZE[self.dtype]


@dataclass
class MergeReport:
    """What the merge wrote and how much it changed."""

    out_dir: str
    dtype: str
    files: list[str]
    n_tensors: int
    total_bytes: int
    merged: list[str]  # tensors the adapter changed (LoRA, bias, modules_to_save)
    changed: int  # of those, how many differ from the base after the cast to `dtype`
    max_abs_change: float
    warnings: list[str] = field(default_factory=list)
    config_updates: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def plan_layout(base: dict[str, TensorEntry], plan: AdapterPlan, out_code: str, config: dict[str, Any]
                 ) -> tuple[list[OutTensor], dict[str, Any], list[str]]:
    outs: list[OutTensor] = []
    updates: dict[str, Any] = {}
    warnings: list[str] = []
    for name, e in base.items():
        code = out_code if e.dtype in FLOAT_CODES else e.dtype
        if name in plan.lora:
            how = "lora"
        elif name in plan.bias:
            how = "bias"
        elif name in plan.replace:
            how = "replace"
        else:
            how = "copy" if code == e.dtype else "cast"
        shape = tuple(plan.replace[name].shape) if name in plan.replace else e.shape
        if how == "replace" and not plan.replace[name].dtype.is_floating_point:
            code = torch_code(plan.replace[name].dtype)
        outs.append(OutTensor(name, code, shape, e, how))
    emb, head = _embedding_names(base)
    touched = plan.touched
    if _tied(config) and emb and (emb in touched or head in touched):
        # The unmerged peft model changes only the module the adapter targets; a tied
        # copy would carry the change to the other one, so write both explicitly.
        if head not in base:
            e = base[emb]
            shape = tuple(plan.replace[head].shape) if head in plan.replace else e.shape
            if head in plan.lora:
                how = "lora"
            elif head in plan.replace:
                how = "replace"
            else:
                how = "copy" if out_code == e.dtype else "cast"
            outs.append(OutTensor(head, out_code, shape, e, how))
        updates["tie_word_embeddings"] = False
        warnings.append(f"{emb} and {head} were tied; the adapter changes "
                        f"{'both' if emb in touched and head in touched else (emb if emb in touched else head)}, "
                        "so the export unties them (tie_word_embeddings=false)")
    elif head in touched and head not in base:
        raise ExportError(f"the adapter changes {head}, which the base does not store and does not tie; cannot merge")
    for name in touched:
        if name not in base and name != head:
            raise ExportError(f"the adapter changes {name}, which the base does not have")
    # A resized embedding / head (added tokens) changes the vocabulary size.
    for name, t in plan.replace.items():
        if name not in (emb, head):
            continue
        held = base.get(name, base.get(emb or "", None))
        # A head the base does not store is tied to the embedding (emb is set): otherwise it raised above.
        assert held is not None
        if t.shape[0] != held.shape[0]:
            updates["vocab_size"] = int(t.shape[0])
    return outs, updates, warnings


def shard_groups(outs: list[OutTensor], max_bytes: int) -> list[list[OutTensor]]:
    shards: list[list[OutTensor]] = [[]]
    size = 0
    for o in outs:
        if shards[-1] and size + o.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(o)
        size += o.nbytes
    return shards


def header_bytes(items: list[OutTensor]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for o in items:
        header[o.name] = {"dtype": o.dtype, "shape": list(o.shape), "data_offsets": [offset, offset + o.nbytes]}
        offset += o.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)  # safetensors aligns the data to 8 bytes
    return struct.pack("<Q", len(raw)) + raw
