"""Small run folders written by the real writers (transformers' TrainerState, safetensors), shared by
the prune and checkpoint-name tests: a trainer_state.json and one adapter checkpoint per evaluation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

EVALS = [(10, 2.0), (20, 1.5), (30, 1.2), (40, 1.3), (50, 1.4), (60, 1.6)]


def write_adapter(folder: Path, *, rows: int = 64, pickle: bool = False, broken: bool = False) -> None:
    """A checkpoint folder with a small adapter written by safetensors' (or torch's) own writer."""
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
    tensors = {"base_model.model.q_proj.lora_A.weight": np.ones((2, rows), dtype=np.float32)}
    if pickle:
        import torch

        torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, folder / "adapter_model.bin")
        return
    from safetensors.numpy import save_file

    save_file(tensors, str(folder / "adapter_model.safetensors"))
    if broken:
        data = (folder / "adapter_model.safetensors").read_bytes()
        (folder / "adapter_model.safetensors").write_bytes(data[:-16])
    (folder / "optimizer.pt").write_bytes(b"\0" * 4096)  # the bulk a --save-all run leaves behind


def make_run(root: Path, evals=EVALS, states: dict[int, str] | None = None) -> Path:
    from transformers import TrainerState

    root.mkdir(parents=True)
    log = [{"eval_loss": v, "step": s, "epoch": s / 100} for s, v in evals]
    TrainerState(global_step=evals[-1][0], max_steps=evals[-1][0], log_history=log).save_to_json(
        str(root / "trainer_state.json"))
    for s, _ in evals:
        state = (states or {}).get(s, "ok")
        if state != "missing":
            write_adapter(root / f"checkpoint-{s}", pickle=state == "pickle", broken=state == "broken")
    return root


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink()}
