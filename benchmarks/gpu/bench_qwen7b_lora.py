"""GPU benchmark: the `qwen2.5-7b-lora` preset on a randomly initialised model with Qwen2.5-7B's exact
configuration, next to bare HF Trainer + peft on the same model and data, then the streaming merge.

    python benchmarks/gpu/bench_qwen7b_lora.py [--steps 40] [--eval-steps 10] [--workdir /tmp/logsage-gpu]
    python benchmarks/gpu/bench_qwen7b_lora.py --tiny      # CPU, a tiny config: what the test suite runs

One GPU, no download. Steps:

1. base: Qwen2Config with Qwen2.5-7B's public config values (hidden 3584, 28 layers, 28
   heads, 4 KV heads, intermediate 18944, vocab 152064, rope_theta 1e6, max_position 32768,
   rms_norm_eps 1e-6, untied embeddings), weights drawn at random (normal, std 0.02) in
   bfloat16 on the GPU and saved as safetensors (about 15 GB), with logsage's tiny
   tokenizer (its ids are a subset of the vocabulary);
2. data: synthetic alpaca records of a fixed length, train and eval files;
3. logsage: `logsage train --preset qwen2.5-7b-lora --model BASE --save-all --max-steps N
   --eval-steps E` in a child process;
4. baseline: bare `transformers.Trainer` + `peft.get_peft_model` with the preset's values
   (LoRA r 8, alpha 32, all linear layers, lr 1e-4, batch 1 x accumulation 16, warmup 5%,
   bf16, eval and save every E steps) on the same tokenized data, in a child process;
5. for both: tokens/s over the training steps (evaluation and saving excluded), peak GPU
   memory (torch.cuda.max_memory_allocated), seconds per evaluation + save (timed around
   `Trainer.evaluate` and `Trainer._save_checkpoint` in the child: benchmark instrumentation
   only);
6. the last whole checkpoint of the logsage run is selected from its inventory and merged
   into the base with `logsage.ship.merge.merge_streaming` in a child process: merge time
   and peak host memory (VmHWM).

Each child prints one JSON line; the parent prints the table. `--json` prints everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

QWEN25_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1e6,
                 rms_norm_eps=1e-6, hidden_act="silu", tie_word_embeddings=False, use_sliding_window=False,
                 sliding_window=131072, max_window_layers=28, attention_dropout=0.0, initializer_range=0.02,
                 bos_token_id=151643, eos_token_id=151645)
TINY = dict(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048, rope_theta=1e6, rms_norm_eps=1e-6,
            hidden_act="silu", tie_word_embeddings=False, use_sliding_window=False, initializer_range=0.02)
# The preset's values (logsage/train/config.py PRESETS["qwen2.5-7b-lora"]) the baseline reproduces.
PRESET = dict(learning_rate=1e-4, lora_r=8, lora_alpha=32, per_device_train_batch_size=1,
              gradient_accumulation_steps=16, warmup_ratio=0.05, max_length=2048)


def peak_rss_gb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024 ** 2
    return float("nan")


# ---------------------------------------------------------------------- fixtures
def build_base(folder: Path, tiny: bool) -> None:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from logsage.train.tiny import build_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    config = Qwen2Config(**(TINY if tiny else QWEN25_7B))
    device = "cpu" if tiny or not torch.cuda.is_available() else "cuda"
    dtype = torch.float32 if tiny else torch.bfloat16
    torch.manual_seed(0)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    model = model.to_empty(device=device).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02)
    model.config.dtype = "float32" if tiny else "bfloat16"
    model.save_pretrained(folder, max_shard_size="4GB")
    build_tokenizer().save_pretrained(folder)
    del model


def write_data(folder: Path, n_train: int, n_eval: int, words: int) -> tuple[Path, Path]:
    import random

    rng = random.Random(0)
    vocab = ["alpha", "beta", "gamma", "delta", "loss", "model", "train", "eval", "step", "rule", "stop", "best"]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, n in (("train.jsonl", n_train), ("eval.jsonl", n_eval)):
        p = folder / name
        with open(p, "w") as f:
            for _ in range(n):
                text = " ".join(rng.choice(vocab) for _ in range(words))
                f.write(json.dumps({"instruction": text[: len(text) // 3], "output": text}) + "\n")
        paths.append(p)
    return paths[0], paths[1]


# ---------------------------------------------------------------------- children
def _instrument() -> dict:
    """Time Trainer.evaluate and Trainer._save_checkpoint, and count trained tokens (class-level: the
    logsage Trainer subclass inherits them)."""
    import transformers

    stats = {"eval_s": 0.0, "save_s": 0.0, "n_eval": 0, "n_save": 0, "tokens": 0, "train_call_s": 0.0}
    T = transformers.Trainer
    evaluate, save, step, train = T.evaluate, T._save_checkpoint, T.training_step, T.train

    def timed_train(self, *a, **k):  # Trainer.train only: model loading and tokenization excluded
        t = time.perf_counter()
        try:
            return train(self, *a, **k)
        finally:
            stats["train_call_s"] += time.perf_counter() - t

    def timed_evaluate(self, *a, **k):
        t = time.perf_counter()
        try:
            return evaluate(self, *a, **k)
        finally:
            stats["eval_s"] += time.perf_counter() - t
            stats["n_eval"] += 1

    def timed_save(self, *a, **k):
        t = time.perf_counter()
        try:
            return save(self, *a, **k)
        finally:
            stats["save_s"] += time.perf_counter() - t
            stats["n_save"] += 1

    def counted_step(self, model, inputs, *a, **k):
        mask = inputs.get("attention_mask")
        stats["tokens"] += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
        return step(self, model, inputs, *a, **k)

    T.evaluate, T._save_checkpoint, T.training_step, T.train = timed_evaluate, timed_save, counted_step, timed_train
    return stats


def _report(kind: str, stats: dict, seconds: float) -> None:
    """`seconds`: the whole child call (logsage: the command, with loading); the rates use Trainer.train's time."""
    import torch

    train_s = stats["train_call_s"] - stats["eval_s"] - stats["save_s"]
    peak = torch.cuda.max_memory_allocated() / 1024 ** 3 if torch.cuda.is_available() else float("nan")
    print(json.dumps({"kind": kind, "train_s": train_s, "total_s": seconds, "trainer_train_s": stats["train_call_s"],
                      "tokens": stats["tokens"],
                      "tokens_per_s": stats["tokens"] / train_s if train_s > 0 else float("nan"),
                      "peak_gpu_gb": peak, "n_eval": stats["n_eval"], "n_save": stats["n_save"],
                      "eval_save_s": (stats["eval_s"] + stats["save_s"]) / max(stats["n_eval"], 1),
                      "peak_rss_gb": peak_rss_gb()}))


def child_logsage(base: str, train: str, eval_: str, out: str, steps: int, eval_steps: int, tiny: bool) -> None:
    stats = _instrument()
    from logsage.cli.main import cli

    args = ["train", "--preset", "qwen2.5-7b-lora", "--model", base, "--data", train, "--eval-data", eval_,
            "--output", out, "--save-all", "--max-steps", str(steps), "--eval-steps", str(eval_steps)]
    if tiny:
        args += ["--no-bf16", "--max-length", "256"]
    t0 = time.perf_counter()
    try:
        cli(args, standalone_mode=False)
    finally:
        seconds = time.perf_counter() - t0
    _report("logsage", stats, seconds)


def child_hf(base: str, train: str, eval_: str, out: str, steps: int, eval_steps: int, tiny: bool) -> None:
    stats = _instrument()
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from logsage.train.data import load_examples, tokenize_examples

    tok = AutoTokenizer.from_pretrained(base)
    max_length = 256 if tiny else PRESET["max_length"]
    rows = {name: [{"input_ids": t.input_ids, "labels": t.labels}
                   for t in tokenize_examples(tok, load_examples([path]), max_length)]
            for name, path in (("train", train), ("eval", eval_))}
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0

    def collate(features):
        n = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), n), pad, dtype=torch.long)
        att = torch.zeros((len(features), n), dtype=torch.long)
        lab = torch.full((len(features), n), -100, dtype=torch.long)
        for i, f in enumerate(features):
            k = len(f["input_ids"])
            ids[i, :k], att[i, :k], lab[i, :k] = torch.tensor(f["input_ids"]), 1, torch.tensor(f["labels"])
        return {"input_ids": ids, "attention_mask": att, "labels": lab}

    transformers.logging.set_verbosity_warning()
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32 if tiny else torch.bfloat16)
    model = get_peft_model(model, LoraConfig(r=PRESET["lora_r"], lora_alpha=PRESET["lora_alpha"],
                                             target_modules="all-linear", task_type="CAUSAL_LM"))
    args = TrainingArguments(
        output_dir=out, eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps", save_steps=eval_steps,
        logging_steps=eval_steps, learning_rate=PRESET["learning_rate"], max_steps=steps,
        per_device_train_batch_size=PRESET["per_device_train_batch_size"],
        gradient_accumulation_steps=PRESET["gradient_accumulation_steps"], warmup_steps=PRESET["warmup_ratio"],
        bf16=not tiny, report_to=[], remove_unused_columns=False, use_cpu=tiny, seed=42)
    trainer = Trainer(model=model, args=args, train_dataset=rows["train"], eval_dataset=rows["eval"],
                      data_collator=collate)
    t0 = time.perf_counter()
    trainer.train()
    _report("hf+peft", stats, time.perf_counter() - t0)


def child_merge(base: str, run: str, out: str) -> None:
    from logsage.ingest import load_history
    from logsage.ship.merge import merge_streaming

    h = load_history(run, use_cache=False)
    whole = [c for c in h.checkpoints if c.whole]
    if not whole:
        raise SystemExit(f"{run}: no whole checkpoint to merge")
    last = max(whole, key=lambda c: c.step)
    Path(out).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = merge_streaming(base, last.path, out)
    print(json.dumps({"kind": "merge", "checkpoint": os.path.basename(os.path.normpath(last.path)),
                      "seconds": time.perf_counter() - t0, "peak_rss_gb": peak_rss_gb(),
                      "bytes": report.total_bytes, "changed": report.changed}))


def run_child(*args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, env=env,
                       cwd=ROOT)
    if p.returncode:
        raise SystemExit(f"child {args[0]} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="a tiny config on CPU (the test)")
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default 40; --tiny 4)")
    ap.add_argument("--eval-steps", type=int, default=None, help="evaluate and save every N steps (default 10; --tiny 2)")
    ap.add_argument("--workdir", default="/tmp/logsage-gpu")
    ap.add_argument("--examples", type=int, default=None, help="training examples (default 800; --tiny 40)")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, rest = args.child[0], args.child[1:]
        if kind == "merge":
            child_merge(*rest)
        else:
            base, train, eval_, out, steps, eval_steps, tiny = rest
            (child_logsage if kind == "logsage" else child_hf)(base, train, eval_, out, int(steps), int(eval_steps),
                                                               tiny == "1")
        return 0
    steps = args.steps or (4 if args.tiny else 40)
    eval_steps = args.eval_steps or (2 if args.tiny else 10)
    n_train = args.examples or (40 if args.tiny else 800)
    work = Path(args.workdir)
    base = work / ("base-tiny" if args.tiny else "base-qwen2.5-7b")
    t0 = time.perf_counter()
    if not (base / "config.json").exists():
        build_base(base, args.tiny)
    built_s = time.perf_counter() - t0
    train, eval_ = write_data(work / "data", n_train, 16 if args.tiny else 64, 60 if args.tiny else 400)
    import shutil

    results: dict = {"config": "tiny" if args.tiny else "Qwen2.5-7B", "steps": steps, "eval_steps": eval_steps,
                     "base_build_s": built_s}
    for kind in ("logsage",) + (() if args.skip_baseline else ("hf+peft",)):
        out = work / f"run-{kind.replace('+', '-')}"
        shutil.rmtree(out, ignore_errors=True)
        results[kind] = run_child(kind if kind == "logsage" else "hf", str(base), str(train), str(eval_), str(out),
                                  str(steps), str(eval_steps), "1" if args.tiny else "0")
    merged = work / "merged"
    shutil.rmtree(merged, ignore_errors=True)
    results["merge"] = run_child("merge", str(base), str(work / "run-logsage"), str(merged))
    shutil.rmtree(merged, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{results['config']} (random weights), {steps} steps, eval + save every {eval_steps}; "
          f"base built in {built_s:.1f} s")
    print(f"{'':9s} {'tokens/s':>10s} {'peak GPU GB':>12s} {'s per eval+save':>16s} {'train s':>8s} "
          f"{'Trainer.train s':>16s} {'whole child s':>14s}")
    for kind in ("logsage", "hf+peft"):
        if kind in results:
            r = results[kind]
            print(f"{kind:9s} {r['tokens_per_s']:10.1f} {r['peak_gpu_gb']:12.2f} {r['eval_save_s']:16.2f} "
                  f"{r['train_s']:8.1f} {r['trainer_train_s']:16.1f} {r['total_s']:14.1f}")
    print("(train s: Trainer.train minus evaluation and saving; tokens: attention-mask tokens of the training steps)")
    m = results["merge"]
    print(f"merge of {m['checkpoint']} into the base ({m['bytes'] / 1e9:.2f} GB): {m['seconds']:.1f} s, "
          f"peak host memory {m['peak_rss_gb']:.2f} GB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
