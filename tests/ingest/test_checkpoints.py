"""Checkpoint inventory: whole / broken judged from files written by the real safetensors and torch writers."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from logsage.ingest.checkpoints import inventory, safetensors_problem


def _adapter(d: Path, tensors: dict | None = None) -> Path:
    d.mkdir(parents=True)
    (d / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 32, "peft_type": "LORA"}))
    if tensors is None:
        tensors = {"base_model.model.layers.0.self_attn.q_proj.lora_A.weight": np.ones((8, 16), np.float32),
                   "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": np.ones((16, 8), np.float32)}
    save_file(tensors, str(d / "adapter_model.safetensors"))
    return d


def test_whole_adapter_full_model_and_numeric_order(tmp_path):
    _adapter(tmp_path / "checkpoint-10000")
    _adapter(tmp_path / "checkpoint-9000")
    full = tmp_path / "checkpoint-500"
    full.mkdir()
    (full / "config.json").write_text("{}")
    save_file({"w": np.zeros((4, 4), np.float32)}, str(full / "model.safetensors"))
    (tmp_path / "checkpoint-best").mkdir()  # not numbered: not a checkpoint of a step
    inv = inventory(tmp_path)
    assert [c.step for c in inv] == [500, 9000, 10000]
    assert [c.kind for c in inv] == ["full", "adapter", "adapter"]
    assert all(c.whole and c.problem is None for c in inv)
    assert inv[0].path == str(tmp_path / "checkpoint-500")


def test_truncated_weights_are_not_whole(tmp_path):
    d = _adapter(tmp_path / "checkpoint-2")
    f = d / "adapter_model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:-10])
    (c,) = inventory(tmp_path)
    assert not c.whole and "cut short" in c.problem
    f.write_bytes(data[:5])
    assert "cut short" in safetensors_problem(f)


def test_empty_adapter_is_not_whole(tmp_path):
    _adapter(tmp_path / "checkpoint-3", tensors={"base_model.model.x.lora_A.weight": np.zeros((0,), np.float32)})
    _adapter(tmp_path / "checkpoint-4", tensors={})
    inv = inventory(tmp_path)
    assert [c.whole for c in inv] == [False, False]
    assert all("empty" in c.problem for c in inv)


def test_adapter_config_without_weights_and_missing_shard(tmp_path):
    d = tmp_path / "checkpoint-1"
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    s = tmp_path / "checkpoint-2"
    s.mkdir()
    (s / "config.json").write_text("{}")
    save_file({"a": np.ones(3, np.float32)}, str(s / "model-00001-of-00002.safetensors"))
    (s / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    c1, c2 = inventory(tmp_path)
    assert not c1.whole and "adapter weights" in c1.problem
    assert not c2.whole and "model-00002-of-00002.safetensors" in c2.problem and "missing" in c2.problem


class _Payload:
    """Unpickling this creates a file: the inventory must never unpickle a checkpoint."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_checkpoint_is_flagged_and_checked_without_unpickling(tmp_path):
    torch = pytest.importorskip("torch")
    d = tmp_path / "checkpoint-7"
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    sentinel = tmp_path / "unpickled"
    torch.save({"w": torch.ones(3), "x": _Payload(str(sentinel))}, d / "adapter_model.bin")
    (c,) = inventory(tmp_path)
    assert c.whole and c.pickle and c.weights == ["adapter_model.bin"]
    assert not sentinel.exists()  # judged as a zip archive, never loaded
    data = (d / "adapter_model.bin").read_bytes()
    (d / "adapter_model.bin").write_bytes(data[: len(data) // 2])
    (c,) = inventory(tmp_path)
    assert not c.whole and c.pickle


def test_other_checkpoint_without_weights(tmp_path):
    d = tmp_path / "checkpoint-5"
    d.mkdir()
    (d / "trainer_state.json").write_text("{}")
    (c,) = inventory(tmp_path)
    assert c.kind == "other" and not c.whole


def test_inventory_of_missing_folder_is_empty(tmp_path):
    assert inventory(tmp_path / "nope") == []
    assert not os.path.exists(tmp_path / "nope")  # looking does not create the folder


# ---------------------------------------------------------------------------- malformed headers (issue 9)
def _with_header(path: Path, header, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)
    return path


GOOD = {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}
MALFORMED = {
    "a list": [GOOD["w"]],
    "a number": 7,
    "offsets as floats": {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0.0, 16.0]}},
    "offsets as strings": {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": ["0", "16"]}},
    "one offset": {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16]}},
    "reversed offsets": {"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [16, 0]}},
    "null in a shape": {"w": {"dtype": "F32", "shape": [2, None], "data_offsets": [0, 16]}},
    "bool in a shape": {"w": {"dtype": "F32", "shape": [True, 4], "data_offsets": [0, 16]}},
    "negative dim": {"w": {"dtype": "F32", "shape": [-2, -2], "data_offsets": [0, 16]}},
    "shape a dict": {"w": {"dtype": "F32", "shape": {"a": 1}, "data_offsets": [0, 16]}},
    "unknown dtype": {"w": {"dtype": "F33", "shape": [2, 2], "data_offsets": [0, 16]}},
    "entry a list": {"w": [0, 16]},
    "span disagrees": {"w": {"dtype": "F32", "shape": [3, 2], "data_offsets": [0, 16]}},
    "metadata a list": {"__metadata__": ["pt"], **GOOD},
    "metadata not strings": {"__metadata__": {"format": 1}, **GOOD},
    "overlap": {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_headers_make_that_checkpoint_not_whole_never_a_traceback(tmp_path, case):
    from logsage.core.errors import CheckpointError
    from logsage.ship.merge import read_header

    good = _adapter(tmp_path / "checkpoint-10")
    bad = _adapter(tmp_path / "checkpoint-20")
    _with_header(bad / "adapter_model.safetensors", MALFORMED[case], b"\0" * 16)
    inv = inventory(tmp_path)
    assert [c.step for c in inv] == [10, 20] and inv[0].whole and good.exists()
    assert not inv[1].whole and "malformed header" in inv[1].problem, inv[1].problem
    with pytest.raises(CheckpointError, match="malformed header"):  # the merge reads it with the same rule
        read_header(bad / "adapter_model.safetensors")


def test_not_json_trailing_bytes_and_a_good_hand_written_header(tmp_path):
    f = tmp_path / "x.safetensors"
    f.write_bytes((4).to_bytes(8, "little") + b"\xff\xfe{]")
    assert "malformed header (not JSON)" in safetensors_problem(f)
    _with_header(f, GOOD, b"\0" * 20)
    assert "trailing bytes" in safetensors_problem(f)
    _with_header(f, GOOD, b"\0" * 16)
    assert safetensors_problem(f) is None  # a valid file, not written by safetensors: the rule is the format's


def test_a_malformed_shard_index_is_not_whole(tmp_path):
    d = tmp_path / "checkpoint-5"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": ["model-1.safetensors"]}))
    (c,) = inventory(tmp_path)
    assert not c.whole and "malformed weight_map" in c.problem


# ---------------------------------------------------------------------------- other layouts (issue 11)
def test_deepspeed_torchtune_mlx_and_lightning_layouts(tmp_path):
    torch = pytest.importorskip("torch")
    # DeepSpeed: inside checkpoint-N a part of that checkpoint; at the top level its own, a pickle never loaded.
    hf = _adapter(tmp_path / "checkpoint-100")
    (hf / "global_step100").mkdir()
    torch.save({"module": {}}, hf / "global_step100" / "mp_rank_00_model_states.pt")
    (tmp_path / "global_step200").mkdir()
    torch.save({"module": {"w": torch.ones(2)}}, tmp_path / "global_step200" / "mp_rank_00_model_states.pt")
    (tmp_path / "global_step300").mkdir()
    (tmp_path / "global_step300" / "mp_rank_00_model_states.pt").write_bytes(b"PK\x03\x04cut")
    # torchtune: epoch_N/ with the peft-format adapter its checkpointer writes.
    _adapter(tmp_path / "epoch_0")
    # MLX-LM: numbered adapter files in adapters/.
    (tmp_path / "adapters").mkdir()
    save_file({"model.layers.0.self_attn.q_proj.lora_a": np.ones((16, 8), np.float32)},
              str(tmp_path / "adapters" / "0000050_adapters.safetensors"))
    save_file({"model.layers.0.self_attn.q_proj.lora_a": np.ones((16, 8), np.float32)},
              str(tmp_path / "adapters" / "adapters.safetensors"))  # the final copy: no step, not listed
    # Lightning: epoch=E-step=S.ckpt in checkpoints/ (torch.save's zip; never unpickled here).
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": {"w": torch.ones(2)}, "global_step": 400},
               tmp_path / "checkpoints" / "epoch=3-step=400.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "checkpoints" / "epoch=3-step=400-v1.ckpt")
    inv = {(c.step, c.kind): c for c in inventory(tmp_path)}
    kinds = sorted((c.step, c.kind, c.whole) for c in inventory(tmp_path))
    assert kinds == [(0, "torchtune_epoch", True), (50, "mlx_adapter", True), (100, "adapter", True),
                     (200, "deepspeed", True), (300, "deepspeed", False), (400, "lightning", True),
                     (400, "lightning", True)]
    assert inv[(200, "deepspeed")].pickle and inv[(400, "lightning")].pickle
    assert "cut short" in inv[(300, "deepspeed")].problem


def test_other_layouts_are_listed_never_selected_or_pruned(tmp_path):
    torch = pytest.importorskip("torch")
    from transformers import TrainerState

    from logsage.ingest import load_history
    from logsage.ship.prune import prune
    from logsage.ship.select import choose_candidates

    log = [{"eval_loss": v, "step": s, "epoch": s / 100} for s, v in [(10, 2.0), (20, 1.0), (30, 1.5)]]
    TrainerState(global_step=30, max_steps=30, log_history=log).save_to_json(str(tmp_path / "trainer_state.json"))
    _adapter(tmp_path / "checkpoint-10")
    _adapter(tmp_path / "checkpoint-30")
    (tmp_path / "checkpoints").mkdir()
    torch.save({"state_dict": {}}, tmp_path / "checkpoints" / "epoch=1-step=20.ckpt")  # the logged best
    sel = choose_candidates(load_history(tmp_path), "hf:patience=5")
    assert sel.candidates[0].step in (10, 30)
    assert any("Lightning" in e["problem"] and e["step"] == 20 for e in sel.excluded)
    plan = prune(tmp_path, "last")
    assert plan.deleted == [10] and (tmp_path / "checkpoints" / "epoch=1-step=20.ckpt").is_file()
    assert any(a["step"] == 20 and "lightning" in a["reason"] for a in plan.left_alone)
