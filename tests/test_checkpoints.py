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
