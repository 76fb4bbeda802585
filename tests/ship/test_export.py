"""Export (logsage.ship.export): adapter and merged exports, atomicity, verification, and the fault cases.

The base is the tiny Qwen2 model of `logsage.train.tiny` (conftest's `tiny_model_dir`:
real tokenizer with the ChatML template, generation config); adapters are real peft
adapters with random non-zero weights. The kill test runs an export in a
subprocess, stops it after its first shard (the LOGSAGE_TEST_HANG_AFTER_SHARD hook)
and SIGKILLs it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from logsage.core.errors import CheckpointError, ExportError  # noqa: E402
from logsage.core.runfolder import SELECTION_FILE  # noqa: E402
from logsage.ship.atomic import clean_stale  # noqa: E402
from logsage.ship.export import HANG_HOOK_ENV, export_checkpoint, sha256_file  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::FutureWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning")]
ROOT = Path(__file__).resolve().parents[2]


def make_adapter(base: Path, folder: Path, *, randomize: bool = True, seed: int = 3, **lora) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = {"r": 4, "lora_alpha": 12, "target_modules": ["q_proj", "v_proj", "gate_proj"], **lora}
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), LoraConfig(**lora))
    if randomize:  # peft starts lora_B at zero: an untrained adapter changes nothing
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapter(tiny_model_dir, tmp_path_factory):
    return make_adapter(tiny_model_dir, tmp_path_factory.mktemp("export") / "adapter")


def logits(model_dir: Path, ids, adapter_dir: Path | None = None):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, adapter_dir)
    with torch.inference_mode():
        return model(input_ids=ids).logits


def strays(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".logsage-" in p.name)


def test_merged_export_loads_and_matches_base_plus_adapter(tiny_model_dir, adapter, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "ship"
    result = export_checkpoint(adapter, out, base_dir=tiny_model_dir, merge=True, max_shard_bytes=150_000,
                               provenance={"run": "runs/x", "selected_step": 40})
    assert result.kind == "merged" and out.is_dir() and strays(tmp_path) == []
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1  # sharded output
    # Independent check: transformers loads it, and its logits equal base + adapter (peft) in float32.
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(0))
    merged = logits(out, ids)
    reference = logits(tiny_model_dir, ids, adapter)
    assert torch.allclose(merged, reference, atol=1e-4)
    assert not torch.allclose(logits(tiny_model_dir, ids), reference, atol=1e-3)  # the adapter does something
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen2ForCausalLM"] and cfg["torch_dtype"] == "float32"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    assert (out / "generation_config.json").read_bytes() == (tiny_model_dir / "generation_config.json").read_bytes()
    # Provenance: the caller's facts, and the sha256 of every other file in OUT.
    prov = json.loads((out / SELECTION_FILE).read_text())
    assert prov["selected_step"] == 40 and prov["versions"]["peft"] and prov["versions"]["transformers"]
    on_disk = {p.name for p in out.iterdir() if p.name != SELECTION_FILE}
    assert set(prov["files"]) == on_disk
    assert all(prov["files"][n] == sha256_file(out / n) for n in on_disk)
    check = result.verification["logits"]
    assert check["passed"] and check["max_abs_diff"] <= check["tolerance"] < check["adapter_effect"]


def test_merged_export_in_bf16(tiny_model_dir, adapter, tmp_path):
    from logsage.ship.merge import base_entries

    out = tmp_path / "ship"
    result = export_checkpoint(adapter, out, base_dir=tiny_model_dir, merge=True, dtype="bf16")
    assert result.dtype == "bfloat16"
    assert {e.dtype for e in base_entries(out).values()} == {"BF16"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dtype"] == cfg["torch_dtype"] == "bfloat16"
    ids = torch.randint(0, 500, (2, 12), generator=torch.Generator().manual_seed(1))
    gap = (logits(out, ids) - logits(tiny_model_dir, ids, adapter)).abs().max()
    assert float(gap) < 0.05  # bf16 weights: close, not equal


def test_adapter_export_carries_weights_tokenizer_template_and_generation_config(tiny_model_dir, adapter, tmp_path):
    # The checkpoint has a tokenizer without a chat template (as some trainers save it): the base's travels.
    ckpt = tmp_path / "checkpoint-7"
    shutil.copytree(adapter, ckpt)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy2(tiny_model_dir / name, ckpt / name)
    out = tmp_path / "ship"
    result = export_checkpoint(ckpt, out, base_dir=tiny_model_dir)
    assert result.kind == "adapter"
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json",
            "chat_template.jinja", "generation_config.json", SELECTION_FILE} <= names
    assert sha256_file(out / "adapter_model.safetensors") == sha256_file(ckpt / "adapter_model.safetensors")
    assert (out / "chat_template.jinja").read_text() == (tiny_model_dir / "chat_template.jinja").read_text()
    assert any("carried the base's over" in w for w in result.warnings)


def test_existing_out_is_refused_untouched_and_replaced_with_force(tiny_model_dir, adapter, tmp_path):
    out = tmp_path / "ship"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ExportError, match="already exists.*--force"):
        export_checkpoint(adapter, out, base_dir=tiny_model_dir)
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "precious"
    assert strays(tmp_path) == []
    with pytest.raises(ExportError, match="not written by logsage.*--force-any"):  # not an export of ours
        export_checkpoint(adapter, out, base_dir=tiny_model_dir, force=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    export_checkpoint(adapter, out, base_dir=tiny_model_dir, force=True, force_any=True)
    assert not (out / "keep.txt").exists() and (out / "adapter_model.safetensors").exists()
    assert strays(tmp_path) == []
    (out / "stale.txt").write_text("from the previous export")
    export_checkpoint(adapter, out, base_dir=tiny_model_dir, force=True)  # ours now: --force is enough
    assert not (out / "stale.txt").exists() and (out / SELECTION_FILE).is_file()


def test_killed_export_leaves_no_out_and_the_next_run_cleans_up(tiny_model_dir, adapter, tmp_path):
    out = tmp_path / "ship"
    marker = tmp_path / "first-shard-written"
    code = ("from logsage.ship.export import export_checkpoint\n"
            f"export_checkpoint({str(adapter)!r}, {str(out)!r}, base_dir={str(tiny_model_dir)!r}, merge=True, "
            "max_shard_bytes=100_000)\n")
    env = {**os.environ, HANG_HOOK_ENV: str(marker), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the export never wrote its first shard"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    left = strays(tmp_path)
    assert len(left) == 1 and left[0].startswith(".ship.logsage-tmp-")
    assert list((tmp_path / left[0]).glob("model-00001-of-*.safetensors"))  # it really was part-way

    result = export_checkpoint(adapter, out, base_dir=tiny_model_dir, merge=True, max_shard_bytes=100_000)
    assert out.is_dir() and strays(tmp_path) == []
    assert any("interrupted export" in c for c in result.cleaned)


def test_stale_folders_of_live_processes_are_kept_and_an_interrupted_force_is_undone(tmp_path):
    out = tmp_path / "ship"
    live = tmp_path / f".ship.logsage-tmp-{os.getpid()}-abcd1234"  # this process: alive
    live.mkdir()
    other = tmp_path / ".other.logsage-tmp-1-abcd1234"  # another OUT's folder: not ours to touch
    other.mkdir()
    dead_pid = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_pid.wait()
    old = tmp_path / f".ship.logsage-old-{dead_pid.pid}-0123abcd"  # killed between the two renames
    old.mkdir()
    (old / "adapter_model.safetensors").write_text("the previous export")
    done = clean_stale(out)
    assert live.exists() and other.exists()
    assert (out / "adapter_model.safetensors").read_text() == "the previous export" and not old.exists()
    assert any("restored" in d for d in done)


def test_pickle_adapter_is_refused_without_the_flag_and_loaded_safely_with_it(tiny_model_dir, adapter, tmp_path):
    from safetensors.torch import load_file

    ckpt = tmp_path / "checkpoint-9"
    ckpt.mkdir()
    shutil.copy2(adapter / "adapter_config.json", ckpt / "adapter_config.json")
    state = load_file(str(adapter / "adapter_model.safetensors"))
    torch.save(state, ckpt / "adapter_model.bin")
    with pytest.raises(CheckpointError, match="--allow-pickle"):
        export_checkpoint(ckpt, tmp_path / "a", base_dir=tiny_model_dir)
    assert not (tmp_path / "a").exists()
    result = export_checkpoint(ckpt, tmp_path / "b", base_dir=tiny_model_dir, allow_pickle=True)
    back = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert set(back) == set(state) and all(torch.equal(back[k], state[k]) for k in state)
    assert "weights_only=True" in result.verification["weights"]
    assert not (tmp_path / "b" / "adapter_model.bin").exists()  # safetensors only out


class _Payload:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_malicious_pickle_never_runs(tiny_model_dir, adapter, tmp_path):
    sentinel = tmp_path / "pwned"
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    shutil.copy2(adapter / "adapter_config.json", ckpt / "adapter_config.json")
    torch.save({"x": _Payload(str(sentinel))}, ckpt / "adapter_model.bin")
    with pytest.raises(CheckpointError, match="--allow-pickle"):
        export_checkpoint(ckpt, tmp_path / "a", base_dir=tiny_model_dir)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        export_checkpoint(ckpt, tmp_path / "b", base_dir=tiny_model_dir, allow_pickle=True)
    assert not sentinel.exists()
    assert strays(tmp_path) == []


def test_empty_and_truncated_adapters_are_refused(tiny_model_dir, adapter, tmp_path):
    from safetensors.torch import save_file

    empty = tmp_path / "empty"
    empty.mkdir()
    shutil.copy2(adapter / "adapter_config.json", empty / "adapter_config.json")
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(0)},
              str(empty / "adapter_model.safetensors"))
    with pytest.raises(CheckpointError, match="adapter is empty"):
        export_checkpoint(empty, tmp_path / "a", base_dir=tiny_model_dir)
    cut = tmp_path / "cut"
    shutil.copytree(adapter, cut)
    data = (cut / "adapter_model.safetensors").read_bytes()
    (cut / "adapter_model.safetensors").write_bytes(data[: len(data) - 100])
    for merge in (False, True):
        with pytest.raises(CheckpointError, match="cut short"):
            export_checkpoint(cut, tmp_path / "b", base_dir=tiny_model_dir, merge=merge)
    assert strays(tmp_path) == [] and not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_merge_that_changes_nothing_is_an_error(tiny_model_dir, tmp_path):
    untrained = make_adapter(tiny_model_dir, tmp_path / "untrained", randomize=False)  # lora_B == 0
    with pytest.raises(ExportError, match="changed nothing"):
        export_checkpoint(untrained, tmp_path / "ship", base_dir=tiny_model_dir, merge=True)
    assert not (tmp_path / "ship").exists() and strays(tmp_path) == []


def test_a_wrong_merge_fails_the_logits_check(tiny_model_dir, adapter, tmp_path, monkeypatch):
    import logsage.ship.merge as merging

    right = merging.merged_weight

    def forgets_one_layer(W, mod, work=None):
        if mod.weight == "model.layers.1.mlp.gate_proj.weight":
            return W.float(), 0.0  # as if this layer's LoRA had been dropped
        return right(W, mod, work=work)

    import logsage.ship.merge.write as merge_writer  # where merge_streaming looks it up

    monkeypatch.setattr(merge_writer, "merged_weight", forgets_one_layer)
    with pytest.raises(ExportError, match="logits differ from base \\+ adapter"):
        export_checkpoint(adapter, tmp_path / "ship", base_dir=tiny_model_dir, merge=True)
    assert not (tmp_path / "ship").exists() and strays(tmp_path) == []
    # With --force over a previous export, a failed verification leaves that export as it was
    # (the old folder goes only after the new one is complete and verified).
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "model.safetensors").write_text("the export already shipped")
    (previous / SELECTION_FILE).write_text('{"export": {"kind": "merged"}}')  # an earlier logsage export
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    with pytest.raises(ExportError, match="logits differ from base \\+ adapter"):
        export_checkpoint(adapter, previous, base_dir=tiny_model_dir, merge=True, force=True)
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before and strays(tmp_path) == []


def test_full_model_checkpoint_is_exported_as_is_and_never_merged(tiny_model_dir, tmp_path):
    ckpt = tmp_path / "checkpoint-5"
    shutil.copytree(tiny_model_dir, ckpt)
    result = export_checkpoint(ckpt, tmp_path / "ship", kind="full")
    assert result.kind == "full"
    out = tmp_path / "ship"
    assert (out / "model.safetensors").read_bytes() == (ckpt / "model.safetensors").read_bytes()
    assert (out / "config.json").exists() and (out / "chat_template.jinja").exists()
    with pytest.raises(ExportError, match="nothing to merge"):
        export_checkpoint(ckpt, tmp_path / "ship2", kind="full", merge=True, base_dir=tiny_model_dir)
    (ckpt / "model.safetensors").unlink()
    torch.save({"w": torch.zeros(2)}, ckpt / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="safetensors only"):
        export_checkpoint(ckpt, tmp_path / "ship3", kind="full")
    assert strays(tmp_path) == []


def test_qlora_adapter_merges_into_the_full_precision_base_with_a_warning(tiny_model_dir, adapter, tmp_path):
    qlora = tmp_path / "qlora-adapter"
    shutil.copytree(adapter, qlora)
    cfg = json.loads((qlora / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "unsloth/Qwen2.5-7B-Instruct-bnb-4bit"  # trained on the 4-bit base
    (qlora / "adapter_config.json").write_text(json.dumps(cfg))
    result = export_checkpoint(qlora, tmp_path / "ship", base_dir=tiny_model_dir, merge=True)
    assert any("QLoRA" in w and str(tiny_model_dir) in w for w in result.warnings)
    prov = json.loads((tmp_path / "ship" / SELECTION_FILE).read_text())
    assert any("QLoRA" in w for w in prov["export"]["warnings"])
