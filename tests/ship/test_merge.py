"""The streaming LoRA merge (logsage.ship.merge) against peft's own merge_and_unload, on real random models.

Every case builds a small random Qwen2 model with transformers (saved as several
safetensors shards), a real peft adapter with random non-zero weights (peft
initialises lora_B to zero, which would make every merge a no-op), merges it with
`merge_streaming`, and compares every tensor with `PeftModel(...).merge_and_unload()`
on the same inputs: within one unit in the last place of the output dtype.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from logsage.core.errors import CheckpointError, ExportError  # noqa: E402
from logsage.ship.merge import (  # noqa: E402
    INDEX_NAME,
    base_entries,
    merge_streaming,
    qlora_warning,
    read_header,
    read_tensor,
    static_check,
)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]


def build_base(folder: Path, dtype, *, tie: bool = False, seed: int = 0) -> Path:
    """A random Qwen2ForCausalLM (q/k/v biases, GQA) saved in several safetensors shards."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=320, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tie)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(cfg)
    model.to(dtype).save_pretrained(folder, max_shard_size="60KB")
    return folder


def build_adapter(base: Path, folder: Path, *, seed: int = 1, scale: float = 0.05, **lora) -> Path:
    """A real peft adapter for `base` with random non-zero weights (lora_B included), saved by peft."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(**lora))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                # DoRA magnitudes stay near 1 (they scale rows); everything else is a small random value
                offset = 1.0 if "magnitude" in name else 0.0
                p.copy_(offset + scale * torch.randn(p.shape, generator=g))
    peft_model.save_pretrained(folder)
    return folder


def peft_merged(base: Path, adapter: Path, dtype) -> dict:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return {k: v.detach().clone() for k, v in merged.state_dict().items()}


def ulp(x, dtype):
    """One unit in the last place of |x| in `dtype` (for normal numbers), as a float64 tensor."""
    mant = {torch.float32: 23, torch.bfloat16: 7, torch.float16: 10}[dtype]
    tiny = torch.finfo(dtype).tiny
    mag = x.abs().double().clamp_min(tiny)
    return torch.exp2(torch.floor(torch.log2(mag)) - mant)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge-bases")
    return {
        (dtype, tie): build_base(root / f"{str(dtype).split('.')[-1]}-{'tied' if tie else 'untied'}", dtype, tie=tie)
        for dtype in (torch.float32, torch.bfloat16) for tie in (False, True)
    }


VARIANTS = {
    # alpha != r: scaling = alpha / r = 3
    "alpha_ne_r": (dict(r=4, lora_alpha=12, target_modules=["q_proj", "v_proj", "down_proj"]), False),
    # rsLoRA: scaling = alpha / sqrt(r)
    "rslora": (dict(r=8, lora_alpha=5, use_rslora=True, target_modules="all-linear"), False),
    "dora": (dict(r=4, lora_alpha=16, use_dora=True, target_modules=["q_proj", "o_proj", "up_proj"]), False),
    "bias_and_modules_to_save": (dict(r=4, lora_alpha=8, lora_bias=True, target_modules=["q_proj", "k_proj"],
                                      modules_to_save=["lm_head"]), False),
    "embedding_lora": (dict(r=4, lora_alpha=8, target_modules=["embed_tokens", "q_proj"]), False),
    "rank_alpha_pattern": (dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                rank_pattern={"v_proj": 2}, alpha_pattern={"q_proj": 3}), False),
    "tied_head_saved": (dict(r=4, lora_alpha=8, target_modules=["q_proj"], modules_to_save=["lm_head"]), True),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_streaming_merge_equals_peft_merge_and_unload(bases, tmp_path, variant, dtype):
    lora, tie = VARIANTS[variant]
    base = bases[(dtype, tie)]
    adapter = build_adapter(base, tmp_path / "adapter", **lora)
    out = tmp_path / "merged"
    out.mkdir()
    report = merge_streaming(base, adapter, out, max_shard_bytes=50_000)
    reference = peft_merged(base, adapter, dtype)

    merged = {name: read_tensor(e) for name, e in base_entries(out).items()}
    assert set(merged) == set(reference), set(merged) ^ set(reference)
    rounded_twice = variant == "embedding_lora" and dtype != torch.float32
    for name, ref in reference.items():
        got = merged[name]
        assert got.dtype == ref.dtype == dtype, name
        assert got.shape == ref.shape, name
        if rounded_twice and name == "model.embed_tokens.weight":
            continue  # checked against exact arithmetic below
        diff = (got.double() - ref.double()).abs()
        # Vanilla, rsLoRA, DoRA, bias and saved-module arithmetic is peft's own: bit-identical.
        assert float(diff.max()) == 0.0, f"{name}: differs from peft by {float(diff.max())}"
    if rounded_twice:
        # peft rounds an embedding's delta to bf16 before adding it (Embedding.merge), so its result can
        # be off by up to one ulp of the delta; ours is W + delta computed in float32, rounded once:
        # within one ulp of the exact (float64) value, and within one delta-ulp of peft's.
        from safetensors.torch import load_file

        st = load_file(str(adapter / "adapter_model.safetensors"))
        key = "base_model.model.model.embed_tokens"
        A, B = st[f"{key}.lora_embedding_A"].double(), st[f"{key}.lora_embedding_B"].double()
        delta = (B @ A).T * (lora["lora_alpha"] / lora["r"])
        W = read_tensor(base_entries(base)["model.embed_tokens.weight"]).double()
        exact = W + delta
        got = merged["model.embed_tokens.weight"].double()
        assert bool(((got - exact).abs() <= ulp(exact, dtype)).all())
        peft_value = reference["model.embed_tokens.weight"].double()
        bound = ulp(torch.maximum(got.abs(), peft_value.abs()), dtype) + ulp(delta, dtype)
        assert bool(((got - peft_value).abs() <= bound).all())
    assert report.changed == len(report.merged) > 0
    assert len([f for f in report.files if f.endswith(".safetensors")]) > 1  # really sharded
    assert static_check(out) == []


def test_merge_handles_alpha_not_r_scaling_concretely(bases, tmp_path):
    """Independent of peft: one weight recomputed by hand as W + (alpha/r) * B @ A."""
    base = bases[(torch.float32, False)]
    adapter = build_adapter(base, tmp_path / "a", r=4, lora_alpha=10, target_modules=["q_proj"])
    out = tmp_path / "m"
    out.mkdir()
    merge_streaming(base, adapter, out)
    from safetensors.torch import load_file

    state = load_file(str(adapter / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.1.self_attn.q_proj"
    A, B = state[f"{key}.lora_A.weight"], state[f"{key}.lora_B.weight"]
    W = read_tensor(base_entries(base)["model.layers.1.self_attn.q_proj.weight"])
    expected = W + (10 / 4) * (B @ A)
    got = read_tensor(base_entries(out)["model.layers.1.self_attn.q_proj.weight"])
    assert torch.allclose(got, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(got, W + (10 / math.sqrt(4)) * (B @ A), atol=1e-4)  # not the rsLoRA scale


def test_untouched_tensors_are_copied_bit_for_bit_and_cast_on_request(bases, tmp_path):
    base = bases[(torch.float32, False)]
    adapter = build_adapter(base, tmp_path / "a", r=2, lora_alpha=4, target_modules=["v_proj"])
    out = tmp_path / "m"
    out.mkdir()
    report = merge_streaming(base, adapter, out, dtype="bf16")
    assert report.dtype == "bfloat16"
    src, dst = base_entries(base), base_entries(out)
    norm = "model.norm.weight"
    assert dst[norm].dtype == "BF16"
    assert torch.equal(read_tensor(dst[norm]), read_tensor(src[norm]).to(torch.bfloat16))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dtype"] == cfg["torch_dtype"] == "bfloat16"
    assert cfg["architectures"] == ["Qwen2ForCausalLM"]

    same = tmp_path / "same"
    same.mkdir()
    merge_streaming(base, adapter, same)  # fp32 -> fp32: untouched tensors are byte copies
    a, b = src[norm], base_entries(same)[norm]
    assert a.file.read_bytes()[a.start:a.end] == b.file.read_bytes()[b.start:b.end]


def test_tied_embeddings_are_untied_when_the_head_changes(bases, tmp_path):
    base = bases[(torch.float32, True)]
    assert "lm_head.weight" not in base_entries(base)  # tied: the base stores the embedding only
    adapter = build_adapter(base, tmp_path / "a", **VARIANTS["tied_head_saved"][0])
    out = tmp_path / "m"
    out.mkdir()
    report = merge_streaming(base, adapter, out)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is False
    assert any("untie" in w for w in report.warnings)
    entries = base_entries(out)
    assert not torch.equal(read_tensor(entries["lm_head.weight"]), read_tensor(entries["model.embed_tokens.weight"]))


def test_quantized_base_is_refused(bases, tmp_path):
    import shutil

    base = tmp_path / "quantized"
    shutil.copytree(bases[(torch.float32, False)], base)
    cfg = json.loads((base / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(cfg))
    adapter = build_adapter(bases[(torch.float32, False)], tmp_path / "a", r=2, lora_alpha=4,
                            target_modules=["q_proj"])
    out = tmp_path / "m"
    out.mkdir()
    with pytest.raises(ExportError, match=r"quantized \(bitsandbytes 4-bit\).*full-precision.*--base"):
        merge_streaming(base, adapter, out)
    assert list(out.iterdir()) == []


def test_qlora_adapter_merges_into_full_precision_base_with_a_warning(bases, tmp_path):
    base = bases[(torch.float32, False)]
    cfg = {"base_model_name_or_path": "unsloth/Qwen2.5-7B-Instruct-bnb-4bit"}
    msg = qlora_warning(cfg, base)
    assert msg and "QLoRA" in msg and "bnb-4bit" in msg and str(base) in msg
    assert qlora_warning({"base_model_name_or_path": str(base)}, base) is None
    assert "load_in_4bit" in qlora_warning({}, base, manifest={"load_in_4bit": True})


def test_adapter_for_another_model_is_refused_with_the_fix(bases, tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    other = tmp_path / "other"
    cfg = Qwen2Config(vocab_size=320, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False)
    Qwen2ForCausalLM(cfg).save_pretrained(other)
    adapter = build_adapter(other, tmp_path / "a", r=2, lora_alpha=4, target_modules=["q_proj"])
    out = tmp_path / "m"
    out.mkdir()
    with pytest.raises(ExportError, match="is --base the model this adapter was trained on"):
        merge_streaming(bases[(torch.float32, False)], adapter, out)


def test_unknown_lora_variants_and_tensors_are_refused_not_dropped(bases, tmp_path):
    base = bases[(torch.float32, False)]
    adapter = build_adapter(base, tmp_path / "a", r=2, lora_alpha=4, target_modules=["q_proj"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["use_bdlora"] = {"block_size": 2}
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    out = tmp_path / "m"
    out.mkdir()
    with pytest.raises(ExportError, match="BD-LoRA.*drop --merge"):
        merge_streaming(base, adapter, out)

    from safetensors.torch import load_file, save_file

    adapter2 = build_adapter(base, tmp_path / "b", r=2, lora_alpha=4, target_modules=["q_proj"])
    state = load_file(str(adapter2 / "adapter_model.safetensors"))
    state["base_model.model.model.layers.0.self_attn.q_proj.lora_weird_extra"] = torch.ones(2)
    save_file(state, str(adapter2 / "adapter_model.safetensors"))
    with pytest.raises(ExportError, match="lora_weird_extra.*cannot merge"):
        merge_streaming(base, adapter2, out)


def test_truncated_base_shard_is_detected_before_reading(bases, tmp_path):
    import shutil

    base = tmp_path / "base"
    shutil.copytree(bases[(torch.float32, False)], base)
    shard = sorted(base.glob("model-*.safetensors"))[1]
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    adapter = build_adapter(bases[(torch.float32, False)], tmp_path / "a", r=2, lora_alpha=4,
                            target_modules=["q_proj"])
    out = tmp_path / "m"
    out.mkdir()
    with pytest.raises(CheckpointError, match=f"{shard.name}.*cut short"):
        merge_streaming(base, adapter, out)
    assert list(out.iterdir()) == []  # failed before writing anything


def test_static_check_finds_what_would_break_loading(bases, tmp_path):
    base = bases[(torch.float32, False)]
    adapter = build_adapter(base, tmp_path / "a", r=2, lora_alpha=4, target_modules=["q_proj"])
    out = tmp_path / "m"
    out.mkdir()
    merge_streaming(base, adapter, out, max_shard_bytes=50_000)
    assert static_check(out) == []

    index = json.loads((out / INDEX_NAME).read_text())
    index["weight_map"]["model.layers.0.self_attn.q_proj.lora_A.weight"] = next(iter(index["weight_map"].values()))
    (out / INDEX_NAME).write_text(json.dumps(index))
    problems = static_check(out)
    assert any("lacks 1 tensor" in p for p in problems) and any("leftover peft" in p for p in problems)

    del index["weight_map"]["model.layers.0.self_attn.q_proj.lora_A.weight"]
    del index["weight_map"]["model.norm.weight"]
    (out / INDEX_NAME).write_text(json.dumps(index))
    assert any("does not name" in p and "model.norm.weight" in p for p in static_check(out))

    del index["weight_map"]  # restore a sane index, then break config.json
    merge_ok = tmp_path / "m2"
    merge_ok.mkdir()
    merge_streaming(base, adapter, merge_ok)
    cfg = json.loads((merge_ok / "config.json").read_text())
    del cfg["architectures"], cfg["dtype"], cfg["torch_dtype"]
    (merge_ok / "config.json").write_text(json.dumps(cfg))
    problems = static_check(merge_ok)
    assert "config.json has no 'architectures'" in problems and "config.json has no dtype / torch_dtype" in problems


def test_written_shards_are_valid_safetensors_for_the_library_itself(bases, tmp_path):
    """Our hand-written shards load with safetensors' own reader, tensor for tensor."""
    from safetensors import safe_open

    base = bases[(torch.bfloat16, False)]
    adapter = build_adapter(base, tmp_path / "a", r=4, lora_alpha=8, target_modules="all-linear")
    out = tmp_path / "m"
    out.mkdir()
    merge_streaming(base, adapter, out, max_shard_bytes=40_000)
    for shard in sorted(out.glob("*.safetensors")):
        entries, meta = read_header(shard)
        assert meta == {"format": "pt"}
        with safe_open(str(shard), "pt") as f:
            assert set(f.keys()) == set(entries)
            for name, e in entries.items():
                assert torch.equal(f.get_tensor(name), read_tensor(e))


@pytest.mark.parametrize("dora", [False, True], ids=["lora", "dora"])
def test_fan_in_fan_out_conv1d_layers(tmp_path, dora):
    """GPT-2 stores its projections transposed (Conv1D); peft's fan_in_fan_out transposes the delta."""
    from transformers import GPT2Config, GPT2LMHeadModel

    base = tmp_path / "gpt2"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64,
                                   bos_token_id=0, eos_token_id=0)).save_pretrained(base)
    adapter = build_adapter(base, tmp_path / "a", r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"],
                            fan_in_fan_out=True, use_dora=dora)
    out = tmp_path / "m"
    out.mkdir()
    report = merge_streaming(base, adapter, out)
    reference = peft_merged(base, adapter, torch.float32)
    merged = {name: read_tensor(e) for name, e in base_entries(out).items()}
    assert report.changed == 4
    for name, got in merged.items():
        assert torch.equal(got, reference[name]), name
