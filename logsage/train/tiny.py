"""Build a tiny, random Qwen2-architecture model and tokenizer locally (no download).

Tests, the README demo and CI need a model that loads like Qwen2.5-7B-Instruct
(same architecture class, the same module names `q_proj k_proj v_proj o_proj
gate_proj up_proj down_proj`, q/k/v biases, grouped-query attention, an untied
`lm_head`, a ChatML chat template with `<|im_start|>`/`<|im_end|>`) but trains on a
CPU in seconds. `build_tiny_model` writes one, deterministically for a given seed,
with `save_pretrained` (safetensors) so that `AutoModelForCausalLM.from_pretrained`
and `AutoTokenizer.from_pretrained` load it offline.

    python -m logsage.train.tiny /tmp/tiny-qwen

torch/transformers/tokenizers are imported inside the functions: importing this
module is cheap.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterable

# The model name `logsage train --model` accepts as a shortcut for "build the tiny
# model on the fly" (cached under the run's output folder).
TINY_MODEL_ALIAS = "tiny-random-qwen2"

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
ENDOFTEXT = "<|endoftext|>"
SPECIAL_TOKENS = [ENDOFTEXT, IM_START, IM_END]

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen2-style ChatML template: a default system turn when none is given, every turn
# wrapped in <|im_start|>role ... <|im_end|>, and the assistant header on request.
# The {% generation %} markers let `return_assistant_tokens_mask` find responses.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if loop.first and message['role'] != 'system' %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# A small built-in corpus for the BPE merges: English function words, the words of
# the example instruction data (examples/data/tiny_alpaca*.jsonl) and the chat
# scaffolding. The tokenizer is byte-level, so ANY text round-trips; the corpus
# only decides which character sequences become single tokens (shorter sequences,
# faster tests).
_CORPUS = """
You are a helpful assistant.
system user assistant
Below is an instruction that describes a task. Write a response that appropriately completes the request.
the a an of to and in is it that for on with as was are be by this at from or have not but what all
were when we there can which one their if do will each about how up out them then she many some so these
would other into has more her two like him see time could no make than first been its who now people my
made over did down only way find use may water long little very after words called just where most know
Translate the word into French. Reverse the letters of the word. What is the opposite of the word?
Give the plural of the noun. Add the two numbers. Name the color of the thing. Spell the number in words.
Answer with one word. Answer with a number. The answer is
cat dog house tree water fire sun moon star book car road sky sea rain snow bird fish apple bread milk
chat chien maison arbre eau feu soleil lune etoile livre voiture route ciel mer pluie neige oiseau poisson
hot cold big small fast slow up down left right day night open closed happy sad light dark old new
red green blue yellow white black orange brown grass sky blood banana lemon coal
zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen
seventeen eighteen nineteen twenty
0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + = ?
cats dogs houses trees books cars roads birds fishes apples stars children mice feet teeth
"""


def _corpus(extra_texts: Iterable[str]) -> list[str]:
    lines = [ln for ln in _CORPUS.strip().splitlines() if ln.strip()]
    # Repeat so that the frequent words win merges deterministically over rare pairs.
    return lines * 4 + [t for t in extra_texts if t]


def build_tokenizer(*, vocab_size: int = 600, extra_texts: Iterable[str] = ()):
    """A byte-level BPE tokenizer with Qwen2.5's special tokens and ChatML template.

    Returned as a `PreTrainedTokenizerFast` (eos `<|im_end|>`, pad `<|endoftext|>`,
    no bos, like Qwen2.5-Instruct).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_corpus(extra_texts), trainer=trainer)
    # Special tokens after the learned vocabulary, as in Qwen (151643...).
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        model_max_length=4096,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    out_dir: str | os.PathLike,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    vocab_extra: int = 0,
    intermediate_size: int | None = None,
    dtype: str = "float32",
    extra_texts: Iterable[str] = (),
) -> Path:
    """Write a tiny random `Qwen2ForCausalLM` + tokenizer + generation config to `out_dir`.

    Deterministic for a given set of arguments (same seed, same weights and
    tokenizer). `vocab_extra` adds that many unused embedding rows beyond the
    tokenizer's tokens, as Qwen2.5 does (152064 rows for 151665 tokens), for
    code that must not assume `len(tokenizer) == vocab_size`. `dtype` is the
    saved weight dtype ("float32" keeps CPU tests exact; "bfloat16" like the
    real checkpoints). The output head is initialised 10x wider than the other
    weights so that a LoRA can learn (and overfit) the example data within a few
    dozen CPU steps. Returns the folder as a `Path`.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if hidden_size % num_heads or num_heads % num_kv_heads:
        raise ValueError(
            f"hidden_size {hidden_size} must divide by num_heads {num_heads}, "
            f"and num_heads by num_kv_heads {num_kv_heads}"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = build_tokenizer(extra_texts=extra_texts)
    eos_id = tokenizer.convert_tokens_to_ids(IM_END)
    pad_id = tokenizer.convert_tokens_to_ids(ENDOFTEXT)

    config = Qwen2Config(
        vocab_size=len(tokenizer) + int(vocab_extra),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or 2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        # transformers 5 types this as rope_parameters={"rope_theta": ...} but still accepts (and converts)
        # the flat kwarg, which transformers 4.x needs
        rope_theta=1000000.0,  # type: ignore[call-arg]
        tie_word_embeddings=False,  # as Qwen2.5-7B: a separate lm_head
        use_sliding_window=False,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        initializer_range=0.02,
    )
    torch_dtype = getattr(torch, dtype)
    # Seed and build on CPU in float32 so that the weights do not depend on the
    # machine's default device or dtype; cast last.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
        # A head drawn at initializer_range (0.02) caps the logits near +-1.3 on a
        # 64-wide model, so no LoRA (which leaves lm_head alone) could ever predict
        # confidently; a 10x wider head lets the tiny model learn and overfit within
        # a few dozen CPU steps, as the tests of early stopping need.
        with torch.no_grad():
            model.lm_head.weight.mul_(10.0)
    model = model.to(torch_dtype)
    model.config.dtype = dtype
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id,
        eos_token_id=[eos_id, pad_id],
        pad_token_id=pad_id,
        do_sample=False,
        max_new_tokens=32,
    )
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "logsage_tiny.json").write_text(
        json.dumps(
            {
                "built_by": "logsage.train.tiny.build_tiny_model",
                "seed": seed,
                "hidden_size": hidden_size,
                "num_layers": num_layers,
                "num_heads": num_heads,
                "num_kv_heads": num_kv_heads,
                "vocab_extra": int(vocab_extra),
                "dtype": dtype,
            },
            indent=2,
        )
        + "\n"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m logsage.train.tiny OUT_DIR [--seed N]`: write the tiny model and print its path."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m logsage.train.tiny", description=main.__doc__)
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = p.parse_args(argv)
    path = build_tiny_model(args.out_dir, seed=args.seed, hidden_size=args.hidden_size,
                            num_layers=args.num_layers, dtype=args.dtype)
    print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
