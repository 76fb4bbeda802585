"""Reading safetensors models for the merge: dtype codes, headers (the shared strict reader), tensor bytes, shard lists."""

from __future__ import annotations

import json
from pathlib import Path

from logsage.core.errors import CheckpointError
from logsage.core.safetensors import TensorEntry
from logsage.core.safetensors import read_header as _read_st_header

# safetensors dtype codes -> torch dtype attribute names.
ST_TO_TORCH = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
    "U16": "uint16", "U32": "uint32", "U64": "uint64",
    "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "F8_E8M0": "float8_e8m0fnu",
}
TORCH_TO_ST = {v: k for k, v in ST_TO_TORCH.items()}
FLOAT_CODES = {"F64", "F32", "F16", "BF16"}

# --dtype spellings -> torch dtype names.
DTYPE_NAMES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16",
               "half": "float16", "fp32": "float32", "float32": "float32", "float": "float32"}

INDEX_NAME = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 2 * 1024**3  # 2 GiB: small enough for any loader, few files for 7B
COPY_CHUNK = 16 * 1024**2  # bytes per read when copying an untouched tensor
CAST_CHUNK = 16 * 1024**2  # source bytes per chunk when casting an untouched tensor


# ============================================================ safetensors I/O
def read_header(path: Path) -> tuple[dict[str, TensorEntry], dict[str, str]]:
    """The tensors (in file order) and `__metadata__` of one safetensors file; damage raises CheckpointError.

    One reader and one strictness for the whole project: `logsage.core.safetensors.read_header`.
    """
    header = _read_st_header(path)
    return dict(header.entries), dict(header.metadata)


def read_tensor(entry: TensorEntry, rows: slice | None = None, *, into=None):
    """Read one tensor (or a range of its first dimension) with plain reads: no mmap, so no page stays resident.

    `into`: a uint8 tensor of at least the tensor's size to read into (reused buffers spare the page
    faults of a fresh allocation per tensor); the result is a view of it.
    """
    import torch

    dtype = getattr(torch, ST_TO_TORCH[entry.dtype])
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
            # .data is memoryview(array), typed as one (numpy's stubs make ndarray a Buffer only on 3.12+)
            got = f.readinto(buf.numpy().data)
        if got != nbytes:
            raise CheckpointError(f"{entry.file}: cut short while reading tensor {entry.name!r}")
    return buf.view(dtype).reshape(shape)


def torch_code(dtype) -> str:
    return TORCH_TO_ST[str(dtype).replace("torch.", "")]


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
