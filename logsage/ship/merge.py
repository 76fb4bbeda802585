"""The streaming LoRA merge: base safetensors shards + a peft LoRA adapter -> merged, sharded safetensors.

The merge never holds the model in memory. It reads the base's shard headers,
plans the output layout (every tensor's name, dtype, shape and byte offsets are
known before a byte of data is read), then writes each output shard tensor by
tensor: a tensor the adapter does not touch is copied (or cast) in chunks, a
targeted weight is read alone, merged in float32 and cast to the output dtype.
Peak memory is about the largest single weight in float32 plus the adapter (a
7B model merges in well under 2 GB), whatever the size of the shards.

The arithmetic is peft's own (peft 0.13 - 0.21, `LoraLayer.get_delta_weight`,
`DoraLinearVariant.merge_unsafe`), so the output equals `merge_and_unload()`:

* delta = (B @ A) * scaling, with scaling = lora_alpha / r, or lora_alpha / sqrt(r)
  with `use_rslora` (per-module r and alpha from `rank_pattern` / `alpha_pattern`);
  transposed for `fan_in_fan_out` layers (GPT-2's Conv1D);
* embedding LoRA: delta = (lora_embedding_B @ lora_embedding_A).T * scaling;
* DoRA: W' = m / ||W + delta||_row * (W + delta), the norm taken over the input
  dimension (one value per output row), as peft's `DoraLinearLayer.get_weight_norm`;
* `lora_bias`: b' = b + lora_B.bias * scaling;
* `modules_to_save`: the adapter's copy replaces the base tensor (a resized
  embedding / lm_head updates `vocab_size`).

Everything else an adapter may hold (other LoRA variants, trainable tokens,
layer replication...) is refused by name rather than dropped: a merge that
silently ignores part of an adapter is the failure this module exists to prevent.
Tied input/output embeddings are untied when the adapter changes either of them
(the unmerged peft model leaves the other one as it was).

torch and safetensors are imported inside the functions.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from logsage.core.errors import CheckpointError, ExportError

# safetensors dtype codes -> torch dtype attribute names.
_ST_TO_TORCH = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "U16": "uint16", "U32": "uint32", "U64": "uint64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
_TORCH_TO_ST = {v: k for k, v in _ST_TO_TORCH.items()}
_ITEMSIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
             "BOOL": 1, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
_FLOAT_CODES = {"F64", "F32", "F16", "BF16"}

# --dtype spellings -> torch dtype names.
DTYPE_NAMES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
               "half": "float16", "fp32": "float32", "float32": "float32", "float": "float32"}

INDEX_NAME = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3  # 2 GiB: small enough for any loader, few files for 7B
_COPY_CHUNK = 16 * 1024**2  # bytes per read when copying an untouched tensor
_CAST_CHUNK = 16 * 1024**2  # source bytes per chunk when casting an untouched tensor

# Adapter config keys whose (truthy) presence means a LoRA variant this merge does not implement.
_UNSUPPORTED_CONFIG = {
    "use_bdlora": "BD-LoRA", "alora_invocation_tokens": "aLoRA", "velora_config": "VeLoRA",
    "monteclora_config": "MonteCLoRA", "kasa_config": "KaSA", "arrow_config": "Arrow",
    "use_qalora": "QA-LoRA", "layer_replication": "layer replication",
    "target_parameters": "LoRA on nn.Parameter targets", "trainable_token_indices": "trainable tokens",
    "mica": "MiCA",
}
_QUANT_NAME = re.compile(r"(bnb|4bit|8bit|4-bit|8-bit|gptq|awq|int4|int8|nf4|qlora)", re.I)


# ============================================================ safetensors I/O
@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors file: where its bytes are, without reading them."""

    name: str
    dtype: str  # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]
    file: Path
    start: int  # absolute byte offset in `file`
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """The tensors (in file order) and `__metadata__` of one safetensors file; damage raises CheckpointError."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise CheckpointError(f"{path}: cut short ({size} bytes, no header); re-copy or re-save the file")
            (n,) = struct.unpack("<Q", raw)
            if n > 100 * 1024**2 or 8 + n > size:
                raise CheckpointError(f"{path}: cut short or corrupt (header of {n} bytes in a {size}-byte file)")
            header = json.loads(f.read(n))
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
    except ValueError:
        raise CheckpointError(f"{path}: unreadable safetensors header; the file is damaged") from None
    meta = header.pop("__metadata__", None) or {}
    entries = []
    for name, info in header.items():
        try:
            a, b = (int(x) for x in info["data_offsets"])
            entry = TensorEntry(name, str(info["dtype"]), tuple(int(d) for d in info["shape"]), path,
                                8 + n + a, 8 + n + b)
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: malformed header entry for tensor {name!r}") from None
        if entry.dtype not in _ITEMSIZE or entry.nbytes != entry.numel * _ITEMSIZE[entry.dtype]:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {entry.dtype} / size that do not match")
        if entry.end > size:
            raise CheckpointError(f"{path}: cut short (tensor {name!r} ends at byte {entry.end}, file has {size})")
        entries.append(entry)
    entries.sort(key=lambda e: e.start)
    return {e.name: e for e in entries}, meta


def read_tensor(entry: TensorEntry, rows: slice | None = None, *, into=None):
    """Read one tensor (or a range of its first dimension) with plain reads: no mmap, so no page stays resident.

    `into`: a uint8 tensor of at least the tensor's size to read into (reused buffers spare the page
    faults of a fresh allocation per tensor); the result is a view of it.
    """
    import torch

    dtype = getattr(torch, _ST_TO_TORCH[entry.dtype])
    shape = list(entry.shape)
    start, nbytes = entry.start, entry.nbytes
    if rows is not None:
        row_bytes = entry.nbytes // max(shape[0], 1)
        r0, r1, _ = rows.indices(shape[0])
        start, nbytes, shape[0] = entry.start + r0 * row_bytes, (r1 - r0) * row_bytes, r1 - r0
    buf = torch.empty(nbytes, dtype=torch.uint8) if into is None or into.numel() < nbytes else into[:nbytes]
    if nbytes:
        with open(entry.file, "rb") as f:
            f.seek(start)
            got = f.readinto(memoryview(buf.numpy()))
        if got != nbytes:
            raise CheckpointError(f"{entry.file}: cut short while reading tensor {entry.name!r}")
    return buf.view(dtype).reshape(shape)


def _torch_code(dtype) -> str:
    return _TORCH_TO_ST[str(dtype).replace("torch.", "")]


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model folder, in index order; pickle-only or missing weights raise."""
    index = model_dir / INDEX_NAME
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError):
            raise CheckpointError(f"{index}: unreadable index; re-download the model") from None
        files = list(dict.fromkeys(weight_map.values()))
        missing = [f for f in files if not (model_dir / f).exists()]
        if missing:
            raise CheckpointError(f"{model_dir}: shard {missing[0]} named in {INDEX_NAME} is missing")
        return [model_dir / f for f in files]
    single = model_dir / "model.safetensors"
    if single.exists():
        return [single]
    if list(model_dir.glob("*.bin")) or list(model_dir.glob("*.pt")):
        raise CheckpointError(
            f"{model_dir}: weights only in pickle files (.bin); logsage reads and writes model weights as "
            "safetensors only - convert the folder once with transformers' save_pretrained")
    raise CheckpointError(f"{model_dir}: no model weights (model.safetensors or {INDEX_NAME}) found")


def base_entries(model_dir: Path) -> dict[str, TensorEntry]:
    """Every tensor of a base model, in shard then file order."""
    out: dict[str, TensorEntry] = {}
    for f in weight_files(model_dir):
        entries, _ = read_header(f)
        out.update(entries)
    return out


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
        if base_shape(weight) is None:
            raise ExportError(f"adapter targets {module}, but the base has no tensor {weight!r}; "
                              "is --base the model this adapter was trained on?")
        r = int(_pattern_value(config.get("rank_pattern") or {}, module, r_default))
        alpha = float(_pattern_value(config.get("alpha_pattern") or {}, module, alpha_default))
        rank = A.shape[0]
        if rank != r:
            raise ExportError(f"adapter module {module}: rank {rank} in the weights, r={r} in adapter_config.json")
        scaling = alpha / math.sqrt(r) if rslora else alpha / r
        wshape = tuple(plan.replace[weight].shape) if weight in plan.replace else base_shape(weight)
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


def _add_into(out, W, chunk: int = 1 << 20):
    """out += W (W in any float dtype), in row blocks: a mixed-dtype in-place add converts its whole
    operand to float32 first, a block at a time that temporary stays small. Element-wise: same result."""
    if out.dim() < 2 or out.shape[0] <= 1:
        return out.add_(W)
    step = max(1, chunk // max(1, out[0].numel()))
    for r in range(0, out.shape[0], step):
        out[r:r + step].add_(W[r:r + step])
    return out


def merged_weight(W, mod: LoraModule, work=None):
    """(W with the LoRA delta applied as float32, the largest |change| in float32).

    peft's arithmetic step by step, done in place where that is bit-identical (IEEE
    addition and multiplication commute), so a weight costs one float32 copy of
    itself plus its input.
    """
    import torch

    A = mod.A.float()
    B = mod.B.float()
    if work is None:
        out = B @ A
    else:  # a reused float32 buffer: no fresh 4-bytes-per-weight allocation (and its page faults) per tensor
        out = torch.matmul(B, A, out=work[: B.shape[0] * A.shape[1]].view(B.shape[0], A.shape[1]))
    out.mul_(mod.scaling)  # peft: (B @ A) * scaling
    if mod.magnitude is None:
        if mod.embedding or mod.fan_in_fan_out:
            out = out.T
        lo, hi = torch.aminmax(out)
        change = max(float(hi), -float(lo))
        _add_into(out, W)  # delta + W: peft's W + delta, in float32
        return out, change
    # DoRA: m / ||W + delta||_row * (W + delta), written as peft's DoraLinearVariant.merge_unsafe writes it
    # (same expressions, same memory layouts), so that the row norms sum in the same order.
    fifo = mod.fan_in_fan_out
    delta = out.T if fifo else out  # in W's orientation, as peft's get_delta_weight returns it
    weight = (W.T if fifo else W) + 1 * (delta.T if fifo else delta)  # get_weight_norm(W, delta, scaling=1)
    norm = torch.linalg.norm(weight, dim=1).to(weight.dtype)
    del weight
    factor = mod.magnitude.float() / norm
    factor = factor.view(-1, 1).T if fifo else factor.view(-1, 1)
    merged = factor * (W + delta)
    change = float(torch.linalg.vector_norm(merged - W.float(), ord=math.inf))
    return merged, change


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
    floats = [e.dtype for e in base.values() if e.dtype in _FLOAT_CODES]
    return _ST_TO_TORCH[max(set(floats), key=floats.count)] if floats else "float32"


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
class _Out:
    """One tensor of the output: its layout, and how to produce its bytes."""

    name: str
    dtype: str  # safetensors code
    shape: tuple[int, ...]
    source: TensorEntry | None  # base tensor it comes from (None: from the adapter only)
    how: str  # "copy" | "cast" | "lora" | "bias" | "replace"

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _ITEMSIZE[self.dtype]


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


def _plan_layout(base: dict[str, TensorEntry], plan: AdapterPlan, out_code: str, config: dict[str, Any]
                 ) -> tuple[list[_Out], dict[str, Any], list[str]]:
    outs: list[_Out] = []
    updates: dict[str, Any] = {}
    warnings: list[str] = []
    for name, e in base.items():
        code = out_code if e.dtype in _FLOAT_CODES else e.dtype
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
            code = _torch_code(plan.replace[name].dtype)
        outs.append(_Out(name, code, shape, e, how))
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
            outs.append(_Out(head, out_code, shape, e, how))
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
        if name in (emb, head) and t.shape[0] != base.get(name, base.get(emb or "", None)).shape[0]:
            updates["vocab_size"] = int(t.shape[0])
    return outs, updates, warnings


def _shard(outs: list[_Out], max_bytes: int) -> list[list[_Out]]:
    shards: list[list[_Out]] = [[]]
    size = 0
    for o in outs:
        if shards[-1] and size + o.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(o)
        size += o.nbytes
    return shards


def _header_bytes(items: list[_Out]) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for o in items:
        header[o.name] = {"dtype": o.dtype, "shape": list(o.shape), "data_offsets": [offset, offset + o.nbytes]}
        offset += o.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)  # safetensors aligns the data to 8 bytes
    return struct.pack("<Q", len(raw)) + raw


class _ShardWriter:
    """Writes one shard's data from a background thread through a pool of reusable byte buffers.

    The main thread fills a free buffer (a copied chunk, a cast chunk or a merged tensor) and
    submits it; the thread writes it and hands the buffer back. Reading and merging the next
    tensor thus overlaps the disk (file writes and torch kernels release the GIL), and the
    memory the output takes is the pool, allocated once: no fresh allocation per tensor.
    """

    def __init__(self, f, pool: list) -> None:
        import queue
        import threading

        self.f = f
        self.free: queue.Queue = queue.Queue()
        for buf in pool:
            self.free.put(buf)
        self.work: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="logsage-shard-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.work.get()
            if item is None:
                return
            buf, n = item
            try:
                if self.error is None:
                    self.f.write(memoryview(buf.numpy())[:n])
            except BaseException as e:  # raised again in the main thread
                self.error = e
            finally:
                self.free.put(buf)

    def buffer(self):
        """A free uint8 buffer (waits for the writer to release one)."""
        if self.error is not None:
            raise self.error
        return self.free.get()

    def submit(self, buf, n: int) -> int:
        self.work.put((buf, n))
        return n

    def close(self) -> None:
        self.work.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


class _Buffers:
    """The merge's working memory, sized once for the largest tensor it must hold whole."""

    def __init__(self, outs: list["_Out"], plan: "AdapterPlan") -> None:
        import torch

        whole = [o for o in outs if o.how in ("lora", "bias")]
        out_bytes = max([o.nbytes for o in whole] + [_COPY_CHUNK, _CAST_CHUNK])
        read_bytes = max([o.source.nbytes for o in whole] + [_CAST_CHUNK])
        work = max([math.prod(o.shape) for o in outs if o.how == "lora"] + [1])
        self.pool = [torch.empty(out_bytes, dtype=torch.uint8) for _ in range(2)]
        self.read = torch.empty(read_bytes, dtype=torch.uint8)
        self.work = torch.empty(work, dtype=torch.float32)


def _release_freed_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps freed blocks below its mmap threshold, which grows
    to 32 MB after large frees: without this, the peak RSS of a merge creeps up tensor after tensor)."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes

            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


def _idle_cores(limit: int) -> int:
    """How many of this process's cores are idle (by the 1-minute load average), between 1 and `limit`."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return limit
    return max(1, min(limit, int(cores - load + 0.5)))


class _MergeThreads:
    """torch's intra-op threads for the merge, no more than the idle cores (restored afterwards).

    The merge's work is a rank-r product and element-wise passes per layer, memory-bound:
    extra threads help only on idle cores. When other processes hold the cores, torch's
    OpenMP threads spin at every barrier waiting for a thread that is not running: on a
    2-core machine under load the same merge took 8 s of CPU and 14 s instead of 2 s and
    2-4 s with one thread (benchmarks/README.md, "Streaming merge"), which is what made
    runs slower than peft.
    """

    def __enter__(self) -> "_MergeThreads":
        import torch

        self.before = torch.get_num_threads()
        self.used = _idle_cores(self.before)
        if self.used != self.before:
            torch.set_num_threads(self.used)
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.used != self.before:
            torch.set_num_threads(self.before)


class _Stats:
    def __init__(self) -> None:
        self.changed = 0
        self.max_abs = 0.0

    def compare(self, new, old, change: float | None = None) -> None:
        """Count `new` as changed when it differs from `old` in the output dtype; `change` is the largest
        |change| when the caller knows it (else it is measured)."""
        import torch

        old_cast = old.to(new.dtype)
        if new.shape != old_cast.shape:  # a resized embedding: changed, but not comparable element-wise
            self.changed += 1
            return
        if torch.equal(new, old_cast):
            return
        self.changed += 1
        if change is None:  # measured in row blocks of ~4M elements: bounded memory for a big lm_head
            a = new.reshape(new.shape[0], -1) if new.dim() else new.reshape(1, 1)
            b = old.reshape(old.shape[0], -1) if old.dim() else old.reshape(1, 1)
            step = max(1, (4 * 1024**2) // max(1, a.shape[1]))
            change = max(float(torch.linalg.vector_norm(a[r:r + step].float() - b[r:r + step].float(), ord=math.inf))
                         for r in range(0, a.shape[0], step))
        self.max_abs = max(self.max_abs, change)


def _check_finite(t, name: str) -> None:
    import torch

    # One cheap pass; the sum of finite weights is finite unless it overflows, then look element-wise.
    if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise ExportError(f"merged tensor {name} has NaN/inf values; the adapter is broken (check its training)")


def _rows_per_chunk(shape: tuple[int, ...], bytes_per_elem: int, budget: int) -> int:
    row = max(1, math.prod(shape[1:]) if len(shape) > 1 else 1) * bytes_per_elem
    return max(1, budget // row)


def _emit(w: _ShardWriter, src, out_dtype) -> int:
    """Write a tensor that is in memory, cast to `out_dtype`, in chunks through the writer's buffers."""
    import torch

    flat = src.reshape(-1)
    itemsize = torch.empty((), dtype=out_dtype).element_size()
    written = 0
    for i in range(0, flat.numel(), _COPY_CHUNK // itemsize):
        part = flat[i:i + _COPY_CHUNK // itemsize]
        buf = w.buffer()
        n = part.numel() * itemsize
        buf[:n].view(out_dtype).copy_(part)
        written += w.submit(buf, n)
    return written


def _produce(w: _ShardWriter, o: _Out, plan: AdapterPlan, torch_dtype, stats: _Stats, mem: _Buffers) -> int:
    """Write one output tensor's bytes through `w`; returns the byte count."""
    import torch

    e = o.source
    out_dtype = getattr(torch, _ST_TO_TORCH[o.dtype])
    if o.how == "copy":  # same dtype, untouched: raw bytes, chunk by chunk
        written = 0
        with open(e.file, "rb") as src:
            src.seek(e.start)
            remaining = e.nbytes
            while remaining:
                buf = w.buffer()
                n = min(_COPY_CHUNK, remaining)
                got = src.readinto(memoryview(buf.numpy())[:n])
                if got != n:
                    w.free.put(buf)
                    raise CheckpointError(f"{e.file}: cut short while copying {e.name!r}")
                written += w.submit(buf, n)
                remaining -= n
        return written
    if o.how == "cast":  # untouched, another dtype: cast row chunk by row chunk
        if not e.shape:
            return _emit(w, read_tensor(e), out_dtype)
        step = _rows_per_chunk(e.shape, _ITEMSIZE[e.dtype], _CAST_CHUNK)
        written = 0
        for r0 in range(0, e.shape[0], step):
            part = read_tensor(e, slice(r0, min(r0 + step, e.shape[0])), into=mem.read)
            written += _emit(w, part, out_dtype)
        return written
    if o.how == "replace":  # modules_to_save: the adapter's copy, cast, compared with the base's
        new = plan.replace[o.name]
        new = new.to(torch_dtype) if new.is_floating_point() else new
        stats.compare(new, read_tensor(e))
        return _emit(w, new, new.dtype)
    W = read_tensor(e, into=mem.read)
    buf = w.buffer()
    new = buf[:o.nbytes].view(out_dtype).view(o.shape)
    change = None
    if o.how == "lora":
        # A saved copy of the targeted layer's own weight (peft's embedding save) stands for the base's.
        own = plan.replace.get(o.name)
        merged, change = merged_weight(W if own is None else own, plan.lora[o.name], work=mem.work)
        new.copy_(merged)  # the cast to the output dtype, straight into the write buffer
        del merged
    else:  # bias
        lb, scaling = plan.bias[o.name]
        new.copy_(W.float() + lb.float() * scaling)
    try:
        _check_finite(new, o.name)
        stats.compare(new, W, change)
    except BaseException:
        w.free.put(buf)
        raise
    return w.submit(buf, o.nbytes)


def merge_streaming(
    base_dir: str | os.PathLike,
    adapter_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    allow_pickle: bool = False,
    adapter_state: dict[str, Any] | None = None,
    on_shard: Callable[[int, int, Path], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> MergeReport:
    """Merge a LoRA adapter into a base model, writing sharded safetensors + index + config to `out_dir`.

    Args:
        base_dir: the full-precision base model folder (config.json + safetensors).
        adapter_dir: the peft adapter folder (adapter_config.json + adapter weights).
        out_dir: an existing, empty folder (the caller makes it atomic).
        dtype: output dtype (auto/bf16/fp16/fp32); default: the base config's dtype.
        max_shard_bytes: output shard size bound (a tensor larger than it gets a shard alone).
        allow_pickle: accept a pickle adapter (loaded with weights_only=True).
        adapter_state: the adapter's tensors when already loaded.
        on_shard: called as (shard index from 1, shard count, path) after each shard is closed.
        progress: called as (bytes written so far, total bytes).

    Raises:
        CheckpointError: the base or adapter is missing, damaged, empty or pickle without opt-in.
        ExportError: a quantized base, an adapter feature the merge cannot apply, or a non-finite result.
    """
    import torch

    base_dir, adapter_dir, out_dir = Path(base_dir), Path(adapter_dir), Path(out_dir)
    config = read_config(base_dir)
    refuse_quantized_base(base_dir, config)
    base = base_entries(base_dir)
    adapter_config = read_adapter_config(adapter_dir)
    state = adapter_state if adapter_state is not None else load_adapter_state(adapter_dir, allow_pickle=allow_pickle)
    plan = plan_adapter(adapter_config, state, base)
    out_name = resolve_dtype(dtype, config, base)
    torch_dtype = getattr(torch, out_name)
    outs, updates, warnings = _plan_layout(base, plan, _TORCH_TO_ST[out_name], config)
    warnings = plan.warnings + warnings
    shards = _shard(outs, max_shard_bytes)
    mem = _Buffers(outs, plan)
    n = len(shards)
    total = sum(o.nbytes for o in outs)
    stats = _Stats()
    files: list[str] = []
    weight_map: dict[str, str] = {}
    done = 0
    with _MergeThreads():  # no more threads than idle cores (see _MergeThreads)
        for i, items in enumerate(shards, start=1):
            fname = f"model-{i:05d}-of-{n:05d}.safetensors"
            path = out_dir / fname
            with open(path, "wb") as f:
                f.write(_header_bytes(items))
                writer = _ShardWriter(f, mem.pool)
                try:
                    for o in items:
                        wrote = _produce(writer, o, plan, torch_dtype, stats, mem)
                        if wrote != o.nbytes:  # the planned header would lie about the data
                            raise ExportError(f"{path}: wrote {wrote} bytes for {o.name}, planned {o.nbytes}")
                        weight_map[o.name] = fname
                        done += wrote
                        if progress:
                            progress(done, total)
                finally:
                    writer.close()
                f.flush()
                os.fsync(f.fileno())
                if f.tell() != len(_header_bytes(items)) + sum(o.nbytes for o in items):
                    raise ExportError(f"{path}: size does not match its header; the disk may be full")
            files.append(fname)
            if on_shard:
                on_shard(i, n, path)
    del mem
    _release_freed_memory()
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out_dir / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n")
    files.append(INDEX_NAME)

    new_config = dict(config)
    new_config.pop("quantization_config", None)
    new_config["dtype"] = out_name
    new_config["torch_dtype"] = out_name  # older transformers and vLLM read this spelling
    for k, v in updates.items():
        new_config[k] = v
        if isinstance(new_config.get("text_config"), dict) and k in new_config["text_config"]:
            new_config["text_config"] = {**new_config["text_config"], k: v}
    (out_dir / "config.json").write_text(json.dumps(new_config, indent=2, sort_keys=True) + "\n")
    files.append("config.json")
    return MergeReport(
        out_dir=str(out_dir), dtype=out_name, files=files, n_tensors=len(outs), total_bytes=total,
        merged=sorted(plan.touched), changed=stats.changed, max_abs_change=stats.max_abs,
        warnings=warnings, config_updates=updates,
    )


# ============================================================ static check
def static_check(model_dir: str | os.PathLike) -> list[str]:
    """Problems that would stop transformers or vLLM from loading a merged export (empty list: none).

    Checks: config.json has `architectures` and a dtype; the index names only files
    that exist, every tensor it names is in its shard and no shard holds a tensor
    the index does not name; no leftover `lora_` / peft-wrapped tensor names.
    """
    d = Path(model_dir)
    problems: list[str] = []
    try:
        config = json.loads((d / "config.json").read_text())
    except (OSError, ValueError):
        return ["config.json is missing or unreadable"]
    if not config.get("architectures"):
        problems.append("config.json has no 'architectures'")
    if not config_dtype(config):
        problems.append("config.json has no dtype / torch_dtype")
    try:
        weight_map = json.loads((d / INDEX_NAME).read_text())["weight_map"]
    except (OSError, ValueError, KeyError, TypeError):
        return problems + [f"{INDEX_NAME} is missing or unreadable"]
    by_file: dict[str, set[str]] = {}
    for name, fname in weight_map.items():
        by_file.setdefault(fname, set()).add(name)
    for fname, names in sorted(by_file.items()):
        path = d / fname
        if not path.exists():
            problems.append(f"shard {fname} named in the index is missing")
            continue
        try:
            entries, meta = read_header(path)
        except CheckpointError as e:
            problems.append(str(e))
            continue
        missing = names - set(entries)
        extra = set(entries) - names
        if missing:
            problems.append(f"{fname} lacks {len(missing)} tensor(s) the index names, e.g. {sorted(missing)[0]}")
        if extra:
            problems.append(f"{fname} holds {len(extra)} tensor(s) the index does not name, e.g. {sorted(extra)[0]}")
        if meta.get("format") not in ("pt", None):
            problems.append(f"{fname}: metadata format {meta.get('format')!r}, transformers expects 'pt'")
    peft_names = re.compile(r"(^|\.)(lora_|base_model\.model\.|base_layer\.|modules_to_save\.)")
    leftovers = [n for n in weight_map if peft_names.search(n)]
    if leftovers:
        problems.append(f"{len(leftovers)} leftover peft tensor name(s), e.g. {leftovers[0]}")
    stray = [p.name for p in d.glob("*.safetensors") if p.name not in by_file]
    if stray:
        problems.append(f"safetensors file(s) not named in the index: {', '.join(sorted(stray))}")
    return problems
