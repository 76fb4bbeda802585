"""Benchmark: the streaming LoRA merge against the standard path, and one base load for K candidates.

    python benchmarks/bench_merge.py [--workdir /tmp/logsage-bench-merge] [--k 3] [--json]

1. Builds once (cached in --workdir) a random-weight Qwen2-architecture model of
   about 1.2 GB in bfloat16, in four ~300 MB safetensors shards, and K random LoRA
   adapters (r=16, alpha=32, every linear layer, non-zero lora_B).
2. Merges adapter 1 into the base two ways, each in its own subprocess, run one
   after the other: the standard path (`from_pretrained`, `PeftModel`,
   `merge_and_unload`, `save_pretrained`) and `logsage.ship.merge.merge_streaming`. Each
   child reports its wall time for the merge (imports excluded, listed apart) and
   its peak RSS (VmHWM from /proc/self/status, which counts mmapped file pages too).
   The parent then compares the two outputs tensor by tensor (bit-identical, or
   the largest difference in bf16 ulps).
3. Re-evaluates K candidates with `logsage.ship.evaluate.evaluate_checkpoints`: once with
   all K (one base load, K adapter swaps) and K times with one candidate each (K
   base loads), and prints both timings.

The logits check of a full `select --export --merge` is not part of the merge
timing here (it loads the model, which is what the streaming merge avoids).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# ~1.2 GB of bf16 parameters: 11 layers of a Qwen2-1.5B-like width with a 32k vocabulary.
CONFIG = dict(vocab_size=32000, hidden_size=1536, intermediate_size=8960, num_hidden_layers=11,
              num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=False, max_position_embeddings=4096)
SHARD_BYTES = 310 * 1000**2
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def peak_rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------- fixtures
def build_base(folder: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from logsage.train.tiny import build_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    config = Qwen2Config(**CONFIG)
    config.dtype = "bfloat16"
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in Qwen2ForCausalLM(config).state_dict().items()}
    g = torch.Generator().manual_seed(0)
    shards, current, size = [], {}, 0
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, generator=g) * 0.02).to(torch.bfloat16)
        if current and size + t.numel() * 2 > SHARD_BYTES:
            shards.append(current)
            current, size = {}, 0
        current[name] = t
        size += t.numel() * 2
    shards.append(current)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in shard})
        total += sum(t.numel() * 2 for t in shard.values())
        shards[i - 1] = None  # free as we go
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    config.save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)  # for the re-evaluation part


def build_adapter(base: Path, folder: Path, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    index = json.loads((base / "model.safetensors.index.json").read_text())["weight_map"]
    from logsage.ship.merge import base_entries

    entries = base_entries(base)
    g = torch.Generator().manual_seed(seed)
    state = {}
    r = 16
    for name in index:
        module = name[: -len(".weight")]
        if not name.endswith(".weight") or module.split(".")[-1] not in TARGETS:
            continue
        out_f, in_f = entries[name].shape
        state[f"base_model.model.{module}.lora_A.weight"] = torch.randn((r, in_f), generator=g) * 0.01
        state[f"base_model.model.{module}.lora_B.weight"] = torch.randn((out_f, r), generator=g) * 0.01
    save_file(state, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": 32, "lora_dropout": 0.0,
        "target_modules": TARGETS, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
        "use_dora": False, "modules_to_save": None, "inference_mode": True,
        "base_model_name_or_path": str(base)}, indent=2))


# ---------------------------------------------------------------------- children
def child(kind: str, base: str, adapter: str, out: str) -> None:
    t0 = time.perf_counter()
    if kind == "standard":
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
    else:
        import torch  # noqa: F401  (imported by the merge anyway; counted with the imports, as above)

        from logsage.ship.merge import merge_streaming
    imports = time.perf_counter() - t0
    rss_imports = peak_rss_mb()
    t0 = time.perf_counter()
    if kind == "standard":
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
        model.save_pretrained(out, max_shard_size="310MB")
    else:
        Path(out).mkdir(parents=True, exist_ok=True)
        real_fsync = os.fsync

        def timed_fsync(fd: int) -> None:  # what the merge waits for the disk (peft's save never fsyncs)
            t = time.perf_counter()
            if kind != "streaming-nofsync":
                real_fsync(fd)
            fsync_s[0] += time.perf_counter() - t

        fsync_s = [0.0]
        os.fsync = timed_fsync
        try:
            merge_streaming(base, adapter, out)
        finally:
            os.fsync = real_fsync
    seconds = time.perf_counter() - t0
    print(json.dumps({"kind": kind, "seconds": seconds, "import_seconds": imports,
                      "peak_rss_mb": peak_rss_mb(), "rss_after_imports_mb": rss_imports,
                      "fsync_seconds": fsync_s[0] if kind != "standard" else 0.0}))


def run_child(kind: str, base: Path, adapter: Path, out: Path) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    p = subprocess.run([sys.executable, __file__, "--child", kind, str(base), str(adapter), str(out)],
                       capture_output=True, text=True, env=env, cwd=ROOT)
    if p.returncode:
        raise SystemExit(f"{kind} child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def compare(a: Path, b: Path) -> dict:
    import torch

    from logsage.ship.merge import base_entries, read_tensor

    ea, eb = base_entries(a), base_entries(b)
    assert set(ea) == set(eb), set(ea) ^ set(eb)
    identical, worst_ulps = 0, 0.0
    for name in ea:
        x, y = read_tensor(ea[name]), read_tensor(eb[name])
        if torch.equal(x, y):
            identical += 1
            continue
        mag = torch.maximum(x.abs(), y.abs()).float().clamp_min(torch.finfo(torch.bfloat16).tiny)
        ulp = torch.exp2(torch.floor(torch.log2(mag)) - 7)
        worst_ulps = max(worst_ulps, float(((x.float() - y.float()).abs() / ulp).max()))
    return {"tensors": len(ea), "bit_identical": identical, "max_diff_bf16_ulps": worst_ulps}


def reeval_child(mode: str, base: str, adapters: list[str]) -> None:
    """Re-evaluate the candidates: all with one base load ("shared") or each with its own ("separate")."""
    from logsage.ship.evaluate import EvalSettings, evaluate_checkpoints

    data = [str(ROOT / "examples" / "data" / "tiny_alpaca_eval.jsonl")]
    # float32 compute: bf16 matmuls are slow on CPUs, and the forward passes would hide the load times
    settings = EvalSettings(batch_size=8, dtype="fp32", device="cpu")
    cands = [(i + 1, Path(a), "adapter") for i, a in enumerate(adapters)]
    t0 = time.perf_counter()
    if mode == "shared":
        reports = [evaluate_checkpoints(cands, base=base, eval_data=data, settings=settings)]
    else:
        reports = [evaluate_checkpoints([c], base=base, eval_data=data, settings=settings) for c in cands]
    seconds = time.perf_counter() - t0
    print(json.dumps({"mode": mode, "seconds": seconds, "base_loads": len(reports),
                      "base_load_s": [r.base_load_s for r in reports],
                      "losses": [x.loss for r in reports for x in r.results]}))


def reevaluation(base: Path, adapters: list[Path]) -> dict:
    out = {"k": len(adapters)}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    for mode in ("shared", "separate"):  # each in a fresh process: no warm caches carried over
        p = subprocess.run([sys.executable, __file__, "--reeval-child", mode, str(base), *map(str, adapters)],
                           capture_output=True, text=True, env=env, cwd=ROOT)
        if p.returncode:
            raise SystemExit(f"re-evaluation child failed:\n{p.stderr[-3000:]}")
        out[mode] = json.loads(p.stdout.strip().splitlines()[-1])
    out["same_losses"] = all(abs(a - b) < 1e-6 for a, b in zip(out["shared"]["losses"], out["separate"]["losses"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/logsage-bench-merge")
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip-reeval", action="store_true")
    ap.add_argument("--repeat", type=int, default=1,
                    help="merge N times each way (alternating; implies --skip-reeval) and print medians")
    ap.add_argument("--nofsync", action="store_true",
                    help="with --repeat: also time the streaming merge with its fsync calls skipped (diagnosis)")
    ap.add_argument("--child", nargs=4, metavar=("KIND", "BASE", "ADAPTER", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--reeval-child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.reeval_child:
        reeval_child(args.reeval_child[0], args.reeval_child[1], args.reeval_child[2:])
        return
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    work = Path(args.workdir)
    base = work / "base"
    if not (base / "model.safetensors.index.json").exists():
        t0 = time.perf_counter()
        build_base(base)
        print(f"built the base in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    adapters = [work / f"checkpoint-{i}" for i in range(1, args.k + 1)]
    for i, a in enumerate(adapters, 1):
        if not (a / "adapter_model.safetensors").exists():
            build_adapter(base, a, seed=i)
    size = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    if args.repeat > 1:
        repeated(args, base, adapters[0], work, size)
        return
    results: dict = {"base_bytes": size, "shards": len(list(base.glob("*.safetensors")))}
    results["standard"] = run_child("standard", base, adapters[0], work / "out-standard")
    results["streaming"] = run_child("streaming", base, adapters[0], work / "out-streaming")
    results["outputs"] = compare(work / "out-standard", work / "out-streaming")
    s, t = results["standard"], results["streaming"]
    results["rss_ratio"] = t["peak_rss_mb"] / s["peak_rss_mb"]
    results["speedup"] = s["seconds"] / t["seconds"]
    if not args.skip_reeval:
        results["reevaluation"] = reevaluation(base, adapters)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"base: {size / 1e9:.2f} GB bf16 in {results['shards']} shards; adapter r=16 on every linear layer")
    for name in ("standard", "streaming"):
        r = results[name]
        print(f"{name:>9}: merge {r['seconds']:6.1f} s (imports {r['import_seconds']:.1f} s), "
              f"peak RSS {r['peak_rss_mb'] / 1024:.2f} GB (after imports {r['rss_after_imports_mb'] / 1024:.2f} GB)")
    o = results["outputs"]
    print(f"outputs: {o['bit_identical']}/{o['tensors']} tensors bit-identical, "
          f"max difference {o['max_diff_bf16_ulps']:.1f} bf16 ulp")
    print(f"streaming / standard: peak RSS x{results['rss_ratio']:.2f}, {results['speedup']:.2f}x the speed")
    if "reevaluation" in results:
        r = results["reevaluation"]
        sh, se = r["shared"], r["separate"]
        print(f"re-evaluating {r['k']} candidates: one base load + {r['k']} adapter swaps {sh['seconds']:.1f} s "
              f"(base load {sh['base_load_s'][0]:.1f} s) vs {r['k']} base loads {se['seconds']:.1f} s "
              f"(base loads {' + '.join(f'{x:.1f}' for x in se['base_load_s'])} s); same losses: {r['same_losses']}")


def repeated(args, base: Path, adapter: Path, work: Path, size: int) -> None:
    """--repeat N: the two merges (and the diagnostic one) N times, alternating, each in a fresh process."""
    import statistics

    kinds = ["standard", "streaming"] + (["streaming-nofsync"] if args.nofsync else [])
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    for i in range(args.repeat):
        for k in kinds:
            r = run_child(k, base, adapter, work / f"out-{k}")
            runs[k].append(r)
            print(f"run {i + 1}: {k:>17} {r['seconds']:6.2f} s (fsync {r['fsync_seconds']:5.2f} s), "
                  f"peak RSS {r['peak_rss_mb'] / 1024:.2f} GB", flush=True)
    print(f"base: {size / 1e9:.2f} GB bf16; medians of {args.repeat} runs:")
    med = {k: statistics.median(r["seconds"] for r in v) for k, v in runs.items()}
    for k, v in runs.items():
        print(f"  {k:>17}: {med[k]:6.2f} s (min {min(r['seconds'] for r in v):.2f}, max "
              f"{max(r['seconds'] for r in v):.2f}); fsync median "
              f"{statistics.median(r['fsync_seconds'] for r in v):.2f} s; peak RSS median "
              f"{statistics.median(r['peak_rss_mb'] for r in v) / 1024:.2f} GB")
    ratios = [s["seconds"] / t["seconds"] for s, t in zip(runs["standard"], runs["streaming"])]
    print(f"  standard / streaming per run: {' '.join(f'{x:.2f}x' for x in ratios)}; median "
          f"{statistics.median(ratios):.2f}x; slower than standard in {sum(x < 1 for x in ratios)} of {len(ratios)}")
    if args.json:
        print(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
