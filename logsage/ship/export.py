"""Export a selected checkpoint safely: an adapter, or the base with the adapter merged - atomically and verified.

`export_checkpoint` writes everything (weights, config, tokenizer files with the
chat template, generation config, and the provenance file `logsage_selection.json`
with the sha256 of every file) into a temporary folder beside OUT,
`.OUT.logsage-tmp-<pid>-<random>`, checks the result, and only then renames it to
OUT. So an interrupted export never leaves a partial OUT; the next export to the
same OUT removes the temporary folders that dead processes left. An existing OUT is
refused unless `force`; with `force` the old OUT is renamed away, the new one moved
in, and only then the old one deleted (if the process dies in between, the next run
puts the old one back).

What `force` may replace (`check_export_target`, run before anything is loaded, and
again right before the new folder is moved in): only a folder that logsage itself
exported (it holds a `logsage_selection.json` with an ``export`` record); any other
folder only with `force_any` (`--force-any`). Never, with any flag: a folder that is,
contains or lies inside a checkpoint, base model or run being read (the `protect`
paths), the current directory, the home directory or a filesystem root (mount
point). Paths are compared after resolving symbolic links, and as written.

Remote code: a base with `auto_map` comes with its own modelling code
(`modeling_*.py`, ...). That code is never copied into a merged export unless
`carry_remote_code` (`--carry-remote-code`); without it the export says what it left
out.

Write failures (a full disk, a read-only filesystem, a folder the user cannot write)
are one-line `ExportError`s naming the path; the temporary folder is removed.

* adapter export: `adapter_config.json` and the adapter weights (copied
  byte-for-byte; pickle weights, with `allow_pickle`, are loaded with
  `torch.load(weights_only=True)` and written as safetensors), tokenizer files and
  chat template (the checkpoint's, else the base's), generation config. Verified by
  comparing the written weights with the checkpoint's.
* merged export (`merge=True`): `logsage.ship.merge.merge_streaming` (sharded
  safetensors in the base's dtype or `dtype`, config.json with the dtype), plus the
  tokenizer files, chat template and generation config. Verified before success:
  the static check (`logsage.ship.merge.static_check`: what transformers and vLLM need),
  the merged weights differ from the base (a merge that changed nothing is an
  error), and the logits of the exported model and of base + adapter (peft, in
  memory) agree on fixed inputs within a tolerance for the dtype.

Test hook: with `LOGSAGE_TEST_HANG_AFTER_SHARD=<file>` in the environment, a merged
export touches <file> after writing its first shard and then sleeps, so a test can
kill it part-way.

torch, transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from logsage.core.errors import CheckpointError, ExportError
from logsage.core.runfolder import SELECTION_FILE
from logsage.ship.atomic import check_export_target, clean_stale, fsync_tree, publish, side_name, write_failure

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "tokenizer.model", "spiece.model", "vocab.txt",
                   "sentencepiece.bpe.model", "chat_template.jinja", "chat_template.json")
GENERATION_CONFIG = "generation_config.json"
HANG_HOOK_ENV = "LOGSAGE_TEST_HANG_AFTER_SHARD"

# Logit agreement bound, relative to max(1, the largest |logit| of the reference), by the
# dtype the models are compared in. fp32: merged and unmerged differ only in float32
# rounding; bf16/fp16: the merged weights are rounded once to the output dtype.
LOGIT_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
# Compare in float32 when a float32 copy of the model fits this many bytes; else in the export dtype.
FP32_CHECK_MAX_BYTES = 4 * 1024**3



# ====================================================================== helpers
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def library_versions() -> dict[str, str | None]:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    from logsage import __version__

    out["logsage"] = __version__  # the import package's own version, whatever the distribution is called
    for pkg in ("torch", "transformers", "peft", "safetensors", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _has_template(folder: Path) -> bool:
    if (folder / "chat_template.jinja").exists() or (folder / "chat_template.json").exists():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return False


def copy_tokenizer(checkpoint: Path, base: Path | None, dest: Path) -> tuple[list[str], str | None, list[str]]:
    """Copy tokenizer files (the checkpoint's, else the base's) and make sure a chat template travels with them.

    Returns (files written, where the tokenizer came from, warnings).
    """
    warnings: list[str] = []
    src = checkpoint if (checkpoint / "tokenizer_config.json").exists() else base
    if src is None or not (src / "tokenizer_config.json").exists():
        warnings.append(f"no tokenizer found in {checkpoint}" + (f" or {base}" if base else "")
                        + "; the export has no tokenizer files")
        return [], None, warnings
    written = []
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dest / name)
            written.append(name)
    if not _has_template(src):
        other = base if src != base else None
        if other is not None and _has_template(other):
            if (other / "chat_template.jinja").exists():
                shutil.copy2(other / "chat_template.jinja", dest / "chat_template.jinja")
            elif (other / "chat_template.json").exists():
                shutil.copy2(other / "chat_template.json", dest / "chat_template.json")
            else:
                template = json.loads((other / "tokenizer_config.json").read_text())["chat_template"]
                if isinstance(template, str):
                    (dest / "chat_template.jinja").write_text(template)
                else:  # several named templates
                    (dest / "chat_template.json").write_text(json.dumps({"chat_template": template}, indent=2))
            written.append("chat_template.jinja" if (dest / "chat_template.jinja").exists() else "chat_template.json")
            warnings.append(f"the tokenizer in {src} has no chat template; carried the base's over")
        else:
            warnings.append(f"no chat template in {src}" + (f" or {other}" if other else "")
                            + "; chat-style serving will need one")
    return written, str(src), warnings


def copy_generation_config(checkpoint: Path, base: Path | None, dest: Path) -> str | None:
    for src in (checkpoint, base):
        if src is not None and (src / GENERATION_CONFIG).exists():
            shutil.copy2(src / GENERATION_CONFIG, dest / GENERATION_CONFIG)
            return str(src)
    return None


def _hang_hook(index: int, total: int, path: Path) -> None:
    marker = os.environ.get(HANG_HOOK_ENV)
    if marker and index == 1:
        Path(marker).write_text(str(path))
        time.sleep(3600)


# ====================================================================== verification
def fixed_input_ids(vocab_size: int, *, n: int = 2, length: int = 24):
    """Deterministic token ids for the logits check (the same on every machine)."""
    import torch

    g = torch.Generator().manual_seed(1234)
    return torch.randint(0, max(2, vocab_size), (n, length), generator=g)


def logits_check(export_dir: Path, base_dir: Path, adapter_dir: Path, out_dtype: str, *,
                 trust_remote_code: bool = False) -> dict[str, Any]:
    """Compare the exported model's logits with base + adapter (peft, unmerged) on fixed inputs.

    The two models are loaded one after the other (never both in memory). The
    comparison runs in float32 when the model is small enough (then the only
    difference is the rounding of the merged weights to `out_dtype`), else in the
    export dtype. Also reports how far the adapter moves the base's logits, so a
    reader can see that the agreement is not vacuous.
    """
    import gc

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from logsage.ship.merge import base_entries, read_config

    n_params = sum(e.numel for e in base_entries(base_dir).values())
    compare = "float32" if n_params * 4 <= FP32_CHECK_MAX_BYTES else out_dtype
    dtype = getattr(torch, compare)
    config = read_config(base_dir)
    vocab = int(config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size") or 2)
    ids = fixed_input_ids(vocab)
    with torch.inference_mode():
        base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype, use_safetensors=True,
                                                    trust_remote_code=trust_remote_code)
        base.eval()
        base_logits = base(input_ids=ids).logits.float()
        ref_model = PeftModel.from_pretrained(base, adapter_dir, is_trainable=False)
        ref_model.eval()
        ref = ref_model(input_ids=ids).logits.float()
        del ref_model, base
        gc.collect()
        exp = AutoModelForCausalLM.from_pretrained(export_dir, dtype=dtype, use_safetensors=True,
                                                   trust_remote_code=trust_remote_code)
        exp.eval()
        got = exp(input_ids=ids).logits.float()
        del exp
        gc.collect()
    if got.shape[-1] != ref.shape[-1]:  # an added-token resize: compare the shared vocabulary
        k = min(got.shape[-1], ref.shape[-1])
        got, ref, base_logits = got[..., :k], ref[..., :k], base_logits[..., :k]
    gap = float((got - ref).abs().max())
    scale = float(ref.abs().max())
    effect = float((ref - base_logits).abs().max())
    # The looser of the export dtype's bound (its weights were rounded once) and the compute dtype's.
    tol = max(LOGIT_TOLERANCE.get(out_dtype, 5e-2), LOGIT_TOLERANCE.get(compare, 5e-2)) * max(1.0, scale)
    agree = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
    ok = bool(gap <= tol and torch.isfinite(got).all())
    return {"passed": ok, "compared_in": compare, "max_abs_diff": gap, "tolerance": tol,
            "max_abs_logit": scale, "adapter_effect": effect, "argmax_agreement": agree,
            "inputs": f"{ids.shape[0]} fixed sequences of {ids.shape[1]} token ids (seed 1234)"}


# ====================================================================== export
@dataclass
class ExportResult:
    out: str
    kind: str  # adapter | merged | full
    checkpoint: str
    files: dict[str, str]  # relative path -> sha256 (the provenance file excluded)
    dtype: str | None = None
    base: str | None = None
    verification: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _write_adapter(checkpoint: Path, dest: Path, *, allow_pickle: bool) -> tuple[list[str], dict[str, Any]]:
    """Adapter config + weights into `dest`; returns (files, verification)."""
    from logsage.ship.merge import adapter_weights_file, load_adapter_state

    weights, is_pickle = adapter_weights_file(checkpoint, allow_pickle=allow_pickle)
    shutil.copy2(checkpoint / "adapter_config.json", dest / "adapter_config.json")
    out = dest / "adapter_model.safetensors"
    if not is_pickle:
        load_adapter_state(checkpoint)  # refuses an empty or damaged adapter before it is shipped
        shutil.copy2(weights, out)
        same = sha256_file(out) == sha256_file(weights)
        if not same:
            raise ExportError(f"{out}: the copy differs from {weights}; check the disk and retry")
        return ["adapter_config.json", out.name], {"weights": f"identical to {weights.name} (sha256)"}
    import torch
    from safetensors.torch import save_file

    state = load_adapter_state(checkpoint, allow_pickle=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out), metadata={"format": "pt"})
    back = load_adapter_state(dest)
    if set(back) != set(state) or not all(torch.equal(back[k], state[k]) for k in state):
        raise ExportError(f"{out}: the converted adapter differs from {weights.name}")
    return ["adapter_config.json", out.name], {
        "weights": f"converted from pickle {weights.name} (torch.load weights_only=True, --allow-pickle); "
                   "every tensor equal"}


def _write_full(checkpoint: Path, dest: Path) -> tuple[list[str], dict[str, Any]]:
    """A full-model checkpoint: config and safetensors weights, copied byte-for-byte."""
    from logsage.ship.merge import INDEX_NAME, static_check, weight_files

    files = weight_files(checkpoint)  # refuses pickle-only weights: the export writes safetensors only
    written = []
    for f in files:
        shutil.copy2(f, dest / f.name)
        written.append(f.name)
    for name in ("config.json", INDEX_NAME):
        if (checkpoint / name).exists():
            shutil.copy2(checkpoint / name, dest / name)
            written.append(name)
    problems = [p for p in static_check(dest) if INDEX_NAME not in p] if (dest / INDEX_NAME).exists() else []
    if problems:
        raise ExportError(f"{checkpoint}: the exported model would not load: {problems[0]}")
    return written, {"weights": "copied byte-for-byte from the checkpoint"}


def export_checkpoint(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    *,
    kind: str = "adapter",
    base_dir: str | os.PathLike | None = None,
    merge: bool = False,
    dtype: str | None = None,
    force: bool = False,
    force_any: bool = False,
    protect: Sequence[str | os.PathLike] = (),
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    carry_remote_code: bool = False,
    provenance: dict[str, Any] | None = None,
    manifest: dict[str, Any] | None = None,
    max_shard_bytes: int | None = None,
    verify_logits: bool = True,
    progress: Callable[[str, int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> ExportResult:
    """Write `checkpoint` (an adapter or full-model folder) to `out`, atomically, verified (module docstring).

    Args:
        checkpoint: the checkpoint folder.
        out: the export folder; refused when it exists, unless `force` (see `check_export_target`).
        kind: "adapter" or "full" (the inventory's kind).
        base_dir: the base model folder (needed for `merge`; its tokenizer is the fallback).
        force: replace an existing OUT that logsage exported; `force_any`: replace any other folder too.
        protect: more folders being read (the run); with the checkpoint and the base, never replaced.
        merge: merge the adapter into the base (sharded safetensors) instead of exporting the adapter.
        carry_remote_code: copy a base's own modelling code (`*.py` of a config with auto_map) into a
            merged export; without it that code is left out and a warning says so.
        dtype: merged output dtype (auto, bf16, fp16, fp32).
        provenance: what the caller knows (run, rule, parameters, selected_step, metrics...); written to
            `logsage_selection.json` with the files' sha256 and the library versions.
        manifest: the run's `logsage train` manifest (for the QLoRA warning).
        max_shard_bytes: merged output shard bound (default: logsage.ship.merge.DEFAULT_MAX_SHARD_BYTES).
        verify_logits: compare logits after a merge (only benchmarks turn this off).
        progress: called as (label, done, total) while merging.
        warn: called with each warning as it happens.

    Raises:
        ExportError: OUT exists without `force`, a verification failed, or the merge cannot be done.
        CheckpointError: the checkpoint or base is damaged, empty, or pickle without `allow_pickle`.
    """
    checkpoint, out = Path(checkpoint), Path(out)
    base = Path(base_dir) if base_dir is not None else None
    protected = [checkpoint, *([base] if base is not None else []), *protect]
    # First, before anything is loaded or written: what OUT may be.
    check_export_target(out, protect=protected, force=force, force_any=force_any)
    try:
        return _export(checkpoint, out, kind=kind, base=base, merge=merge, dtype=dtype, force=force,
                       force_any=force_any, protected=protected, allow_pickle=allow_pickle,
                       trust_remote_code=trust_remote_code, carry_remote_code=carry_remote_code,
                       provenance=provenance, manifest=manifest, max_shard_bytes=max_shard_bytes,
                       verify_logits=verify_logits, progress=progress, warn=warn)
    except OSError as e:  # a full disk, a read-only filesystem, a folder we may not write
        raise write_failure(out, e) from None


def _export(checkpoint: Path, out: Path, *, kind: str, base: Path | None, merge: bool, dtype: str | None,
            force: bool, force_any: bool, protected: list, allow_pickle: bool, trust_remote_code: bool,
            carry_remote_code: bool, provenance: dict[str, Any] | None, manifest: dict[str, Any] | None,
            max_shard_bytes: int | None, verify_logits: bool, progress: Callable[[str, int, int], None] | None,
            warn: Callable[[str], None] | None) -> ExportResult:
    from logsage.ship import merge as merging

    warnings: list[str] = []

    def note(msg: str) -> None:
        warnings.append(msg)
        if warn:
            warn(msg)

    out.parent.mkdir(parents=True, exist_ok=True)
    cleaned = clean_stale(out)
    if merge and kind != "adapter":
        raise ExportError(f"{checkpoint} holds a full model, not an adapter; there is nothing to merge (drop --merge)")
    if merge and base is None:
        raise CheckpointError(f"{checkpoint}: a merged export needs the base model; pass --base")

    tmp = side_name(out, "tmp")
    tmp.mkdir()
    try:
        verification: dict[str, Any] = {}
        out_dtype = None
        if merge:
            assert base is not None  # a merge without a base was refused above
            from logsage.ship.evaluate import safe_adapter_dir

            with_work = tmp / ".work"  # a pickle adapter (--allow-pickle) is rewritten as safetensors here
            adapter_src = safe_adapter_dir(checkpoint, with_work, allow_pickle=allow_pickle)
            adapter_cfg = merging.read_adapter_config(adapter_src)
            q = merging.qlora_warning(adapter_cfg, base, manifest=manifest)
            if q:
                note(q)

            def on_shard(i: int, n: int, path: Path) -> None:
                if progress:
                    progress("shards", i, n)
                _hang_hook(i, n, path)

            report = merging.merge_streaming(
                base, adapter_src, tmp, dtype=dtype,
                max_shard_bytes=max_shard_bytes or merging.DEFAULT_MAX_SHARD_BYTES,
                on_shard=on_shard, progress=(lambda d, t: progress("merge", d, t)) if progress else None)
            for w in report.warnings:
                note(w)
            out_dtype = report.dtype
            problems = merging.static_check(tmp)
            if problems:
                raise ExportError(f"the merged export would not load: {problems[0]}")
            if report.changed == 0:
                raise ExportError(f"the merge changed nothing: every merged tensor equals the base's in {report.dtype} "
                                  f"(the adapter in {checkpoint} has zero or negligible weights); nothing to ship")
            verification["static_check"] = "passed"
            verification["changed_tensors"] = (f"{report.changed} of {len(report.merged)} adapted tensors differ "
                                               "from the base")
            verification["max_abs_weight_change"] = report.max_abs_change
            verification["merge"] = {"tensors": report.n_tensors, "bytes": report.total_bytes,
                                     "shards": len([f for f in report.files if f.endswith(".safetensors")]),
                                     "config_updates": report.config_updates}
            if verify_logits:
                check = logits_check(tmp, base, adapter_src, out_dtype, trust_remote_code=trust_remote_code)
                verification["logits"] = check
                if not check["passed"]:
                    raise ExportError(
                        f"the merged model's logits differ from base + adapter by {check['max_abs_diff']:.3g} "
                        f"(tolerance {check['tolerance']:.3g} in {check['compared_in']}); the export was not written")
            else:
                verification["logits"] = "skipped (verify_logits=False)"
            shutil.rmtree(with_work, ignore_errors=True)
            config = json.loads((base / "config.json").read_text())
            code = sorted(base.glob("*.py")) if config.get("auto_map") else []
            if code and carry_remote_code:  # asked: the base's own modelling code travels with the weights
                for py in code:
                    shutil.copy2(py, tmp / py.name)
            elif code:  # never carry code that would run on load unless the user asked for it
                note(f"{base} has its own modelling code ({', '.join(p.name for p in code[:3])}"
                     f"{', ...' if len(code) > 3 else ''}, named by auto_map); not copied into the export - pass "
                     "--carry-remote-code to include it")
            export_kind = "merged"
        elif kind == "adapter":
            _, verification = _write_adapter(checkpoint, tmp, allow_pickle=allow_pickle)
            export_kind = "adapter"
        else:
            _, verification = _write_full(checkpoint, tmp)
            export_kind = "full"
        _, tok_src, tok_warnings = copy_tokenizer(checkpoint, base, tmp)
        for w in tok_warnings:
            note(w)
        gen_src = copy_generation_config(checkpoint, base, tmp)
        if gen_src is None:
            note("no generation_config.json in the checkpoint or the base; generation will use model defaults")
        if tok_src is not None:
            verification["tokenizer"] = _check_tokenizer(tmp, trust_remote_code=trust_remote_code)

        files = {str(p.relative_to(tmp)): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        result = ExportResult(out=str(out), kind=export_kind, checkpoint=str(checkpoint), files=files,
                              dtype=out_dtype, base=str(base) if base else None, verification=verification,
                              warnings=warnings, cleaned=cleaned)
        doc = dict(provenance or {})
        doc["export"] = {k: v for k, v in result.to_dict().items() if k not in ("files",)}
        doc["export"]["tokenizer_from"] = tok_src
        doc["export"]["generation_config_from"] = gen_src
        doc["files"] = files
        doc["versions"] = library_versions()
        doc["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        from logsage.core.history import json_safe

        (tmp / SELECTION_FILE).write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
        fsync_tree(tmp)  # everything on disk before the rename makes it visible as OUT
        publish(tmp, out, force=force, force_any=force_any, protect=protected)
        return result
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_tokenizer(folder: Path, *, trust_remote_code: bool) -> str:
    """The exported tokenizer loads and keeps a chat template when its files have one."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as e:  # any loader failure means the export is not usable as shipped
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else e.__class__.__name__
        raise ExportError(f"the exported tokenizer does not load ({first})") from None
    if _has_template(folder) and not getattr(tok, "chat_template", None):
        raise ExportError("the exported tokenizer lost its chat template")
    return "loads" + (" with its chat template" if getattr(tok, "chat_template", None) else " (no chat template)")
