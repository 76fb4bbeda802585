"""What a run folder says about itself: its manifest, the base model its adapters were trained on
(and a warning when that base lies outside the run unasked), and the eval data it was evaluated on."""

from __future__ import annotations
import json
import os
from pathlib import Path
from typing import Any
from logsage.core.errors import CheckpointError, UsageError
from logsage.core.runfolder import RUN_MANIFEST


# ====================================================================== run facts
def dict_field(obj: dict[str, Any] | None, key: str) -> dict[str, Any]:
    """``obj[key]`` when it is a JSON object, else an empty one (a manifest written by another version)."""
    value = (obj or {}).get(key)
    return value if isinstance(value, dict) else {}


def read_manifest(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The `logsage train` manifest of a run folder (RUN/logsage_run.json), or None when there is none.

    Read as plain JSON so that this works without the training extras installed.
    """
    path = Path(run_dir) / RUN_MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"{path}: unreadable manifest; fix or remove it") from None
    return data if isinstance(data, dict) else None


def manifest_base(manifest: dict[str, Any] | None) -> str | None:
    """The base model a `logsage train` manifest names: its local folder, else its hub id."""
    if not manifest:
        return None
    model = manifest.get("model")
    if isinstance(model, dict):
        if model.get("kind") == "full":
            return None  # a full fine-tune's checkpoints are whole models
        return model.get("path") or model.get("name")
    if isinstance(model, str):
        return model
    return dict_field(manifest, "config").get("model")


def _data_path(f: str, run_dir: Path, abs_path: str | None = None) -> str:
    """A data path recorded at training time: as given (relative to where training ran), else its
    recorded absolute path, else beside the run."""
    p = Path(f)
    if p.exists() or p.is_absolute():
        return str(p)
    if abs_path and Path(abs_path).exists():
        return abs_path
    for root in (run_dir, run_dir.parent):
        if (root / p).exists():
            return str(root / p)
    return str(p)


def manifest_eval_data(manifest: dict[str, Any] | None, run_dir: Path) -> tuple[Any, list[str]]:
    """(the eval set a manifest names as a `logsage.ship.evaluate.EvalData`, or None; warnings).

    Eval files when the run had --eval-data, else the split it held out of its
    training files (same files, split and seed). A file whose sha256 differs from the
    one recorded is named in a warning.
    """
    if not manifest or not isinstance(manifest.get("config"), dict):
        return None, []
    from logsage.ship.evaluate import EvalData
    from logsage.ship.export import sha256_file

    cfg = dict_field(manifest, "config")
    data = dict_field(manifest, "data")
    warnings: list[str] = []
    recorded = {e.get("path"): e.get("sha256") for e in (data.get("train") or []) + (data.get("eval") or [])
                if isinstance(e, dict)}
    if cfg.get("eval_data"):
        files, split = [str(f) for f in cfg["eval_data"]], None
    elif cfg.get("data") and data.get("eval_split") is not None:
        files, split = [str(f) for f in cfg["data"]], float(data["eval_split"])
    else:
        return None, []
    absolute = {e.get("path"): e.get("abs_path") for e in (data.get("train") or []) + (data.get("eval") or [])
                if isinstance(e, dict)}
    resolved = [_data_path(f, run_dir, absolute.get(f)) for f in files]
    missing = [f for f in resolved if not Path(f).is_file()]
    if missing:
        return None, [f"{RUN_MANIFEST} names the eval data {missing[0]}, which is not found from here (nor beside "
                      f"the run); pass --eval-data to re-evaluate"]
    for given, path in zip(files, resolved):
        want = recorded.get(given)
        if want and Path(path).is_file() and sha256_file(Path(path)) != want:
            warnings.append(f"{path}: changed since training (sha256 differs from the manifest); the re-evaluated "
                            "loss will not match the logged one")
    split_value: float | None = None
    if split is not None:
        split_value = int(split) if split >= 1 else split
    ids = data.get("eval_ids") if split is not None else None
    return EvalData(files=resolved, split=split_value, seed=int(cfg.get("seed", 42)), expected_ids=ids), warnings


def resolve_base(base: str | None, adapter_dir: Path | None, run_dir: Path,
                 manifest: dict[str, Any] | None) -> tuple[Path, str]:
    """(base model folder, where its name came from): --base, else the adapter's config, else the manifest.

    A name is tried as a local folder (as given, then relative to the run and the
    adapter folders), then in the local Hugging Face cache (never downloaded).
    """
    tried: list[str] = []
    sources: list[tuple[str | None, str]] = [(base, "--base")]
    if adapter_dir is not None and (adapter_dir / "adapter_config.json").exists():
        try:
            cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
        except (OSError, ValueError):
            cfg = {}
        sources.append((cfg.get("base_model_name_or_path"), f"{adapter_dir.name}/adapter_config.json"))
    sources.append((manifest_base(manifest), RUN_MANIFEST))
    for name, source in sources:
        if not name:
            continue
        for cand in (Path(name), run_dir / name, *( [adapter_dir / name] if adapter_dir else [])):
            if cand.is_dir() and (cand / "config.json").exists():
                return cand, source
        cached = _hf_cache(name)
        if cached is not None:
            return cached, source
        tried.append(f"{name!r} (from {source})")
        if source == "--base":  # an explicit --base that does not exist is an error, not a fallback
            raise UsageError(f"--base {name}: no model folder (with config.json) there and not in the local "
                             "Hugging Face cache; pass the folder of the base model")
    if tried:
        raise CheckpointError(f"base model not found locally: tried {', '.join(tried)}; pass --base with the "
                              "folder of the base model (download it first if needed)")
    raise CheckpointError(f"{run_dir}: the base model is not named anywhere (no --base, no base_model_name_or_path "
                          "in adapter_config.json, no manifest); pass --base")


def base_warning(base_dir: Path, source: str, run_dir: Path) -> str | None:
    """A warning when the base model was not named by the user and lies outside the run folder (None: no warning).

    A name written in the run's files (adapter_config.json's base_model_name_or_path, the
    manifest) can point anywhere, e.g. "../evilbase"; its weights and tokenizer then go
    into the export. A base in the local Hugging Face cache is where hub ids resolve to,
    and is not warned about.
    """
    if source == "--base":
        return None
    where = Path(os.path.abspath(base_dir)).resolve()
    run = Path(os.path.abspath(run_dir)).resolve()
    if where == run or run in where.parents or _in_hf_cache(where):
        return None
    return (f"the base model {base_dir} comes from {source} and lies outside the run folder; check that it is the "
            "model this adapter was trained on, or name it with --base")


def _in_hf_cache(path: Path) -> bool:
    try:
        from huggingface_hub import constants

        cache = Path(constants.HF_HUB_CACHE).resolve()
    except Exception:  # huggingface_hub missing: no cache to be in
        return False
    return cache in path.parents


def _hf_cache(name: str) -> Path | None:
    if name.count("/") != 1 or name.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import snapshot_download

        p = Path(snapshot_download(name, local_files_only=True))
    except Exception:  # not cached, or huggingface_hub missing: not a local model
        return None
    return p if (p / "config.json").exists() else None
