"""Writing the merge: the LoRA arithmetic, the streaming shard writer, `merge_streaming` and `static_check`."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from logsage.core.errors import CheckpointError, ExportError
from logsage.core.safetensors import ITEMSIZE
from logsage.ship.merge.plan import (
    AdapterPlan,
    LoraModule,
    MergeReport,
    OutTensor,
    config_dtype,
    header_bytes,
    load_adapter_state,
    plan_adapter,
    plan_layout,
    read_adapter_config,
    read_config,
    refuse_quantized_base,
    resolve_dtype,
    shard_groups,
)
from logsage.ship.merge.tensors import (
    CAST_CHUNK,
    COPY_CHUNK,
    DEFAULT_MAX_SHARD_BYTES,
    INDEX_NAME,
    ST_TO_TORCH,
    TORCH_TO_ST,
    base_entries,
    read_header,
    read_tensor,
)

if TYPE_CHECKING:
    import ctypes


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

    def __init__(self, outs: list["OutTensor"], plan: "AdapterPlan") -> None:
        import torch

        whole = [o for o in outs if o.how in ("lora", "bias")]
        out_bytes = max([o.nbytes for o in whole] + [COPY_CHUNK, CAST_CHUNK])
        read_bytes = max([o.source.nbytes for o in whole] + [CAST_CHUNK])
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


_LIBC: ctypes.CDLL | Literal[False] | None = None  # None: not loaded yet; False: not glibc


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
    for i in range(0, flat.numel(), COPY_CHUNK // itemsize):
        part = flat[i:i + COPY_CHUNK // itemsize]
        buf = w.buffer()
        n = part.numel() * itemsize
        buf[:n].view(out_dtype).copy_(part)
        written += w.submit(buf, n)
    return written


def _produce(w: _ShardWriter, o: OutTensor, plan: AdapterPlan, torch_dtype, stats: _Stats, mem: _Buffers) -> int:
    """Write one output tensor's bytes through `w`; returns the byte count."""
    import torch

    e = o.source
    out_dtype = getattr(torch, ST_TO_TORCH[o.dtype])
    if o.how == "copy":  # same dtype, untouched: raw bytes, chunk by chunk
        written = 0
        with open(e.file, "rb") as src:
            src.seek(e.start)
            remaining = e.nbytes
            while remaining:
                buf = w.buffer()
                n = min(COPY_CHUNK, remaining)
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
        step = _rows_per_chunk(e.shape, ITEMSIZE[e.dtype], CAST_CHUNK)
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


def idle_cores(limit: int) -> int:
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


class MergeThreads:
    """torch's intra-op threads for the merge, no more than the idle cores (restored afterwards).

    The merge's work is a rank-r product and element-wise passes per layer, memory-bound:
    extra threads help only on idle cores. When other processes hold the cores, torch's
    OpenMP threads spin at every barrier waiting for a thread that is not running: on a
    2-core machine under load the same merge took 8 s of CPU and 14 s instead of 2 s and
    2-4 s with one thread (benchmarks/README.md, "Streaming merge"), which is what made
    runs slower than peft.
    """

    def __enter__(self) -> "MergeThreads":
        import torch

        self.before = torch.get_num_threads()
        self.used = idle_cores(self.before)
        if self.used != self.before:
            torch.set_num_threads(self.used)
        return self

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.used != self.before:
            torch.set_num_threads(self.before)


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
    outs, updates, warnings = plan_layout(base, plan, TORCH_TO_ST[out_name], config)
    warnings = plan.warnings + warnings
    shards = shard_groups(outs, max_shard_bytes)
    mem = _Buffers(outs, plan)
    n = len(shards)
    total = sum(o.nbytes for o in outs)
    stats = _Stats()
    files: list[str] = []
    weight_map: dict[str, str] = {}
    done = 0
    with MergeThreads():  # no more threads than idle cores (see MergeThreads)
        for i, items in enumerate(shards, start=1):
            fname = f"model-{i:05d}-of-{n:05d}.safetensors"
            path = out_dir / fname
            with open(path, "wb") as f:
                f.write(header_bytes(items))
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
                if f.tell() != len(header_bytes(items)) + sum(o.nbytes for o in items):
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
