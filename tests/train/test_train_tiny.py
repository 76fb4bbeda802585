"""The tiny local Qwen2 model and tokenizer (logsage.train.tiny): offline, deterministic, Qwen-shaped."""

from __future__ import annotations

import hashlib
import json

import pytest

pytestmark = pytest.mark.slow


def test_loads_offline_with_the_auto_classes(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir, local_files_only=True)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    cfg = model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    assert cfg.tie_word_embeddings is False  # a separate lm_head, as Qwen2.5-7B
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"} <= names
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.bias is not None and attn.k_proj.bias is not None and attn.v_proj.bias is not None
    assert attn.o_proj.bias is None
    assert (tiny_model_dir / "model.safetensors").is_file()
    assert json.loads((tiny_model_dir / "generation_config.json").read_text())["eos_token_id"]
    # special tokens as in Qwen2.5-Instruct
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(tok(t, add_special_tokens=False)["input_ids"]) == 1
    assert len(tok) <= cfg.vocab_size


@pytest.mark.parametrize("text", ["Hello, world!", "Translate the word into French.\ncat", "  two  spaces\tand tab ~{}[]",
                                  "Qu'est-ce que c'est? 0123456789"])
def test_tokenizer_round_trips_text(tiny_model_dir, text):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_chat_template_is_chatml(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}]
    assert tok.apply_chat_template(msgs, tokenize=False) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n")
    # a default system turn when none is given, and the generation prompt on request
    assert tok.apply_chat_template(msgs[1:2], tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_build_is_deterministic_and_seeded(tmp_path, tiny_model_dir):
    from logsage.train.tiny import build_tiny_model

    def digest(d):
        return {f: hashlib.sha256((d / f).read_bytes()).hexdigest()
                for f in ("model.safetensors", "tokenizer.json", "config.json")}

    again = build_tiny_model(tmp_path / "again", seed=0)
    assert digest(again) == digest(tiny_model_dir)
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert digest(other)["model.safetensors"] != digest(tiny_model_dir)["model.safetensors"]
    assert digest(other)["tokenizer.json"] == digest(tiny_model_dir)["tokenizer.json"]


def test_options_and_command_line(tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    from logsage.train.tiny import main

    assert main([str(tmp_path / "m"), "--dtype", "bfloat16", "--num-layers", "1"]) == 0
    cfg = AutoConfig.from_pretrained(tmp_path / "m")
    assert cfg.num_hidden_layers == 1
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype="auto")
    assert str(model.dtype) == "torch.bfloat16"

    from logsage.train.tiny import build_tiny_model

    padded = build_tiny_model(tmp_path / "padded", vocab_extra=5)
    from transformers import AutoTokenizer

    assert AutoConfig.from_pretrained(padded).vocab_size == len(AutoTokenizer.from_pretrained(padded)) + 5


def test_tiny_alias_builds_into_the_cache(tmp_path, monkeypatch):
    from logsage.train.recipe import resolve_model
    from logsage.train.tiny import TINY_MODEL_ALIAS

    monkeypatch.setenv("LOGSAGE_CACHE_DIR", str(tmp_path))
    path, local = resolve_model(TINY_MODEL_ALIAS)
    assert local and path.startswith(str(tmp_path))
    assert resolve_model(TINY_MODEL_ALIAS) == (path, True)  # built once, reused
    assert resolve_model("Qwen/Qwen2.5-7B-Instruct") == ("Qwen/Qwen2.5-7B-Instruct", False)


def test_loading_the_lora_model_does_not_warn_about_gradient_checkpointing(tiny_model_dir):
    import warnings

    from logsage.train.config import TrainConfig
    from logsage.train.recipe import _load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _ = _load_model(TrainConfig(model=str(tiny_model_dir)), str(tiny_model_dir), True)
    assert hasattr(model, "peft_config")
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)], [str(w.message) for w in caught]
