"""Re-evaluate checkpoints with the real model: one base load, one adapter swap per candidate.

`evaluate_checkpoints` loads the base model ONCE, wraps it with peft for the first
adapter candidate, and for each further candidate loads that adapter under its
own name, activates it and deletes the previous one (`PeftModel.load_adapter` /
`set_adapter` / `delete_adapter`), so K candidates cost one base load, not K. A
full-model checkpoint is loaded on its own.

The eval loss is computed the way Hugging Face Trainer (5.x) computes `eval_loss`:
the eval data goes through `logsage.train.data` (same record formats, the
tokenizer's chat template, labels on the assistant responses only, truncation to
`max_length`), in file order, in batches of `batch_size` padded on the right;
each batch's loss is its token mean (summed float32 cross-entropy of the shifted
labels over its target tokens), and `eval_loss` is the mean of the batch losses
weighted by each batch's number of examples (`logsage.ingest.per_example.hf_eval_loss`).
With the run's own eval set and settings the result matches the logged `eval_loss`
to float precision. Perplexity is exp(eval_loss).

With a `logsage.ship.generate.GenerationTask` each candidate also answers a prompts
file greedily while its adapter is active (same single base load) and is scored by
a generation metric; the candidates are then ranked under the selection objective
(the metric, the loss, or the loss among those not distinguishable from the
metric's best) and the per-example generations are kept.

Per-example losses come for free; `paired_test` says whether the two best
candidates differ by more than the noise across examples (scipy's paired t-test
and Wilcoxon signed-rank test on per-example mean losses).

torch, transformers and peft are imported inside the functions.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from logsage.core.errors import CheckpointError, DataError, LogsageError, UsageError
from logsage.core.runfolder import checkpoint_name

DEFAULT_BATCH_SIZE = 8
DEFAULT_MAX_LENGTH = 2048
SIGNIFICANCE_LEVEL = 0.05


@dataclass
class EvalSettings:
    """How the eval data is read and batched (the run's own settings reproduce its logged eval_loss)."""

    batch_size: int = DEFAULT_BATCH_SIZE
    max_length: int = DEFAULT_MAX_LENGTH
    data_format: str = "auto"
    dtype: str = "auto"  # model dtype: auto (the checkpoint config's), bf16, fp16, fp32
    device: str = "auto"  # auto (cuda when available) or cpu

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any] | None, *, batch_size: int | None = None,
                      max_length: int | None = None) -> "EvalSettings":
        """Settings from a `logsage train` manifest (its config), overridden by explicit values."""
        cfg: dict[str, Any] = {}
        if manifest:
            config = manifest.get("config")
            cfg = config if isinstance(config, dict) else manifest
        s = cls()
        s.batch_size = int(batch_size or cfg.get("per_device_eval_batch_size") or s.batch_size)
        s.max_length = int(max_length or cfg.get("max_length") or s.max_length)
        s.data_format = str(cfg.get("data_format") or "auto")
        if cfg.get("device") == "cpu":
            s.device = "cpu"
        # The dtype the run's model was loaded in for training (and so for its logged evaluations).
        if cfg.get("bf16"):
            s.dtype = "bf16"
        elif cfg.get("fp16") and not cfg.get("full"):
            s.dtype = "fp16"
        elif manifest:
            s.dtype = "fp32"
        if s.batch_size < 1 or s.max_length < 2:
            raise LogsageError(f"eval batch size {s.batch_size} / max length {s.max_length} must be positive")
        return s


@dataclass
class EvalData:
    """Where the eval examples come from: eval files, or a split held out of training files as `logsage train`
    made it (same files, fraction or count, and seed give the same examples)."""

    files: list[str]
    split: float | None = None
    seed: int = 42
    expected_ids: list[Any] | None = None  # the ids the manifest recorded, to check the split reproduces

    def describe(self) -> str:
        names = ", ".join(self.files)
        return names if self.split is None else f"{names} (held-out split {self.split}, seed {self.seed})"

    def examples(self, data_format: str = "auto") -> list[Any]:
        from logsage.train.data import load_examples, split_eval

        examples = load_examples(list(self.files), data_format)
        if self.split is not None:
            _, examples = split_eval(examples, self.split, self.seed)
        if self.expected_ids is not None and [e.id for e in examples] != list(self.expected_ids):
            raise DataError(f"{self.describe()}: the eval examples differ from the ones the run evaluated "
                            "(the data files changed since training?); pass --eval-data explicitly")
        if not examples:
            raise DataError(f"{self.describe()}: no eval examples")
        return examples


@dataclass
class CandidateEval:
    """One checkpoint's re-evaluated loss, with its per-example losses."""

    step: int
    path: str
    loss: float
    perplexity: float
    n_examples: int
    n_tokens: int
    seconds: float  # adapter swap (or model load) + forward passes
    logged: float | None = None
    rank: int = 0
    per_example: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "per_example"}
        if self.logged is not None and math.isfinite(self.logged) and math.isfinite(self.loss):
            d["difference"] = self.loss - self.logged
            d["relative_difference"] = (self.loss - self.logged) / abs(self.logged) if self.logged else None
        return d


@dataclass
class EvalReport:
    base: str | None
    eval_data: str | None
    settings: EvalSettings
    results: list[CandidateEval]
    base_load_s: float | None
    paired: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)
    generation: dict[str, Any] | None = None  # logsage.ship.generate.summarize(...)
    per_example: list[dict[str, Any]] = field(default_factory=list, repr=False)  # candidate x prompt generations
    ranking: list[int] | None = None  # under the selection objective (None: by re-evaluated loss)
    model_loads: int = 0

    def ranked_steps(self) -> list[int]:
        if self.ranking is not None:
            return list(self.ranking)
        return [r.step for r in sorted(self.results, key=lambda r: r.rank)]

    def to_dict(self) -> dict[str, Any]:
        from logsage.core.history import json_safe

        return json_safe({
            "base": self.base, "eval_data": self.eval_data, "settings": dict(self.settings.__dict__),
            "base_load_s": self.base_load_s, "results": [r.to_dict() for r in self.results],
            "ranking": self.ranked_steps(), "paired_test": self.paired, "warnings": self.warnings,
            "model_loads": self.model_loads, "generation": self.generation,
            **({"generations": self.per_example} if self.generation is not None else {}),
        })


# ====================================================================== data
def load_eval_set(tokenizer: Any, data: EvalData, settings: EvalSettings) -> list[Any]:
    """Tokenized eval examples (logsage.train.data: same formats, chat template, response-only labels)."""
    from logsage.train.data import tokenize_examples

    return tokenize_examples(tokenizer, data.examples(settings.data_format), settings.max_length)


def _batches(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _collate(batch: list[Any], pad_id: int):
    """Right-padded input ids, attention mask and labels (-100 on padding), as a seq2seq collator pads them."""
    import torch

    width = max(len(t.input_ids) for t in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, t in enumerate(batch):
        n = len(t.input_ids)
        ids[i, :n] = torch.tensor(t.input_ids)
        labels[i, :n] = torch.tensor(t.labels)
        mask[i, :n] = 1
    return ids, mask, labels


def _row_losses(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(summed token cross-entropy, target tokens) per row, as transformers' ForCausalLMLoss counts them."""
    import torch
    import torch.nn.functional as F

    shift = F.pad(labels, (0, 1), value=-100)[..., 1:]
    sums = [F.cross_entropy(logits[i].float(), shift[i], ignore_index=-100, reduction="sum")
            for i in range(logits.shape[0])]  # a row at a time: no second full float32 copy of the logits
    return torch.stack(sums), (shift != -100).sum(dim=-1)


def eval_loss_of(model: Any, examples: list[Any], settings: EvalSettings, pad_id: int, device: Any,
                 tick: Callable[[], None] | None = None) -> dict[str, np.ndarray]:
    """Per-example (loss_sum, n_tokens, batch) of `model` on `examples`."""
    import torch

    ids_out: list[Any] = []  # int or str per example, as the eval set names them
    sums_out: list[float] = []
    counts_out: list[int] = []
    batch_out: list[int] = []
    model.eval()
    with torch.inference_mode():
        for b, batch in enumerate(_batches(examples, settings.batch_size)):
            ids, mask, labels = _collate(batch, pad_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            sums, counts = _row_losses(logits, labels.to(device))
            ids_out.extend(t.id for t in batch)
            sums_out.extend(sums.float().cpu().tolist())
            counts_out.extend(counts.cpu().tolist())
            batch_out.extend([b] * len(batch))
            if tick:
                tick()
    ids_arr = np.asarray(ids_out) if ids_out and all(isinstance(i, int) for i in ids_out) else np.asarray(
        [str(i) for i in ids_out], dtype=np.object_)
    return {"id": ids_arr, "loss_sum": np.asarray(sums_out, dtype=np.float64),
            "n_tokens": np.asarray(counts_out, dtype=np.int64), "batch": np.asarray(batch_out, dtype=np.int64)}


# ====================================================================== models
def _torch_dtype(name: str):
    import torch

    from logsage.ship.merge import DTYPE_NAMES

    if name in (None, "auto"):
        return "auto"
    return getattr(torch, DTYPE_NAMES[name])


def _device(settings: EvalSettings):
    import torch

    if settings.device == "cpu":
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def safe_adapter_dir(adapter_dir: Path, workdir: Path, *, allow_pickle: bool) -> Path:
    """The adapter folder to hand to peft: itself when its weights are safetensors; a pickle adapter (with
    `allow_pickle`) is loaded with torch.load(weights_only=True) and rewritten as safetensors in `workdir`."""
    from logsage.ship.merge import adapter_weights_file, load_adapter_state

    _, is_pickle = adapter_weights_file(adapter_dir, allow_pickle=allow_pickle)
    if not is_pickle:
        return adapter_dir
    import shutil

    from safetensors.torch import save_file

    state = load_adapter_state(adapter_dir, allow_pickle=True)
    out = workdir / adapter_dir.name
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy2(adapter_dir / "adapter_config.json", out / "adapter_config.json")
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    return out


def tokenizer_source(candidates: Sequence[Path], base: Path | None) -> Path:
    """Where the tokenizer lives: the first checkpoint that saved one, else the base."""
    for c in candidates:
        if (c / "tokenizer_config.json").exists():
            return c
    if base is None:
        raise CheckpointError(f"{candidates[0]}: no tokenizer in the checkpoint and no base model; pass --base")
    return base


def load_full_model(path: Path, settings: EvalSettings, *, allow_pickle: bool, trust_remote_code: bool):
    """A full model from a folder, safetensors only unless `allow_pickle`."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=_torch_dtype(settings.dtype), use_safetensors=None if allow_pickle else True,
            trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else e.__class__.__name__
        raise CheckpointError(f"{path}: the model could not be loaded ({first})") from None


# ====================================================================== the loop
def iter_candidate_models(items: Sequence[tuple[int, Path, str]], base_dir: Path | None, settings: EvalSettings,
                          device: Any, workdir: Path, *, allow_pickle: bool, trust_remote_code: bool,
                          on_load: Callable[[str, float], None] | None = None):
    """Yield (step, folder, model, seconds to make it ready) per candidate: adapters first, onto ONE base load
    (each loaded under its own name, activated, the previous one deleted), then each full checkpoint on its own.

    `on_load(what, seconds)` is told about every model load ("base" or a full checkpoint's folder).
    """
    adapters = [(s, p) for s, p, k in items if k == "adapter"]
    if adapters:
        if base_dir is None:
            raise CheckpointError(f"{adapters[0][1]}: an adapter needs its base model; pass --base")
        from peft import PeftModel

        t0 = time.perf_counter()
        base_model = load_full_model(base_dir, settings, allow_pickle=False, trust_remote_code=trust_remote_code)
        base_model.to(device)
        if on_load:
            on_load("base", time.perf_counter() - t0)
        model = None
        previous = None
        for step, path in adapters:
            t0 = time.perf_counter()
            src = safe_adapter_dir(path, workdir, allow_pickle=allow_pickle)
            name = f"step_{step}"
            try:
                if model is None:
                    model = PeftModel.from_pretrained(base_model, src, adapter_name=name, is_trainable=False)
                else:
                    model.load_adapter(src, adapter_name=name, is_trainable=False)
                    model.set_adapter(name)
                    if previous is not None:  # (always, once a model exists)
                        model.delete_adapter(previous)  # keep one adapter in memory, however many candidates
            except (OSError, ValueError, RuntimeError, KeyError) as e:
                first = str(e).strip().splitlines()[0][:200] if str(e).strip() else e.__class__.__name__
                raise CheckpointError(f"{path}: the adapter does not load onto {base_dir} ({first}); "
                                      "is --base the model it was trained on?") from None
            model.to(device)
            previous = name
            yield step, path, model, time.perf_counter() - t0
        del model, base_model
    for step, path, kind in items:
        if kind == "adapter":
            continue
        t0 = time.perf_counter()
        model = load_full_model(path, settings, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code)
        model.to(device)
        if on_load:
            on_load(str(path), time.perf_counter() - t0)
        yield step, path, model, time.perf_counter() - t0
        del model


def evaluate_checkpoints(
    candidates: Sequence[tuple[int, Path, str]],
    *,
    base: str | os.PathLike | None,
    eval_data: EvalData | Sequence[str] | None,
    settings: EvalSettings | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    logged: dict[int, float | None] | None = None,
    metric: str | None = None,
    generation: Any = None,
    select_by: str | None = None,
) -> EvalReport:
    """Re-evaluate checkpoints (step, folder, kind "adapter" | "full") on `eval_data` (eval loss) and/or by
    generating (`generation`, a `logsage.ship.generate.GenerationTask`); rank them under `select_by`.

    Adapters share one base model load (`base`) for both measures; a full checkpoint is loaded alone.
    `progress(label, done, total)` is called after every eval or generation batch. `select_by` is
    "loss" (the default without generation), "gen" (the default with it) or "gen-then-loss".

    Raises:
        CheckpointError: a checkpoint or the base cannot be loaded.
        DataError: the eval data or a prompt is malformed, or the scorer fails (names the file and line).
    """
    from transformers import AutoTokenizer

    settings = settings or EvalSettings()
    if eval_data is None and generation is None:
        raise LogsageError("nothing to re-evaluate: give eval data, prompts to generate from, or both")
    data = None
    if eval_data is not None:
        data = eval_data if isinstance(eval_data, EvalData) else EvalData(files=[str(f) for f in eval_data])
    base_dir = Path(base) if base is not None else None
    items = [(int(s), Path(p), k) for s, p, k in candidates]
    if any(k == "adapter" for _, _, k in items) and base_dir is None:
        raise CheckpointError(f"{items[0][1]}: an adapter needs its base model; pass --base")
    device = _device(settings)
    warnings: list[str] = []
    tok_dir = tokenizer_source([p for _, p, _ in items], base_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_dir, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else e.__class__.__name__
        raise CheckpointError(f"{tok_dir}: the tokenizer could not be loaded ({first})") from None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise CheckpointError(f"{tok_dir}: the tokenizer has neither a pad nor an eos token; cannot batch")
    examples = load_eval_set(tokenizer, data, settings) if data is not None else []
    n_batches = len(_batches(examples, settings.batch_size)) + (generation.n_batches if generation else 0)
    total = n_batches * len(items)
    done = 0

    def tick(label: str) -> Callable[[], None]:
        def _t() -> None:
            nonlocal done
            done += 1
            if progress:
                progress(label, done, total)
        return _t

    results: list[CandidateEval] = []
    gens: list[Any] = []
    loads: list[tuple[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="logsage-eval-") as work:
        for step, path, model, ready_s in iter_candidate_models(
                items, base_dir, settings, device, Path(work), allow_pickle=allow_pickle,
                trust_remote_code=trust_remote_code, on_load=lambda what, s: loads.append((what, s))):
            t0 = time.perf_counter()
            if data is not None:
                per = eval_loss_of(model, examples, settings, pad_id, device, tick(checkpoint_name(step)))
                results.append(_result(step, path, per, ready_s + time.perf_counter() - t0))
            if generation is not None:
                gens.append(generation.run(model, tokenizer, device, step, tick(f"{checkpoint_name(step)} generate")))
    base_load_s = next((s for what, s in loads if what == "base"), None)
    order = {s: i for i, (s, _, _) in enumerate(items)}
    results.sort(key=lambda r: order[r.step])
    from logsage.core.names import canonical_name

    comparable = metric is None or "loss" in canonical_name(metric)  # a logged accuracy is no loss to compare
    for r in results:
        r.logged = (logged or {}).get(r.step) if comparable else None
    ranked = sorted(results, key=lambda r: (r.loss if math.isfinite(r.loss) else math.inf, order[r.step]))
    for i, r in enumerate(ranked, start=1):
        r.rank = i
    non_finite = [r.step for r in results if not math.isfinite(r.loss)]
    if non_finite:
        warnings.append(f"re-evaluated loss is not finite for step(s) {non_finite}; ranked last")
    paired = None
    if len(ranked) >= 2:
        paired = paired_test(ranked[0].per_example, ranked[1].per_example, ranked[0].step, ranked[1].step)
    if not comparable and data is not None:
        warnings.append(f"the logged metric is {metric}; the re-evaluation measures eval loss, so the two are "
                        "compared by rank only")
    report = EvalReport(base=str(base_dir) if base_dir else None, eval_data=data.describe() if data else None,
                        settings=settings, results=results, base_load_s=base_load_s, paired=paired,
                        warnings=warnings)
    report.model_loads = len(loads)
    if generation is not None:
        from logsage.ship.generate import per_example_records, rank_steps, summarize

        loss, label = {r.step: r.loss for r in results}, "re-evaluated eval_loss"
        if not loss and comparable and logged:  # no eval data: the logged loss is what the loss says
            loss, label = {s: v for s, v in logged.items() if v is not None}, f"logged {metric or 'eval_loss'}"
        summary = summarize(generation, gens, order=[s for s, _, _ in items], loss=loss, loss_label=label)
        objective = select_by or "gen"
        ranking, how = rank_steps(objective, summary, loss, [s for s, _, _ in items], loss_label=label)
        summary["select_by"], summary["objective"] = objective, how
        report.generation = summary
        report.per_example = per_example_records(generation, gens)
        report.ranking = ranking
    elif select_by not in (None, "loss"):
        raise UsageError(f"--select-by {select_by} needs --eval-generate PROMPTS")
    return report


def _result(step: int, path: Path, per: dict[str, np.ndarray], seconds: float) -> CandidateEval:
    from logsage.ingest.per_example import hf_eval_loss

    loss = hf_eval_loss(per)
    return CandidateEval(step=step, path=str(path), loss=loss,
                         perplexity=math.exp(loss) if math.isfinite(loss) and loss < 700 else math.inf,
                         n_examples=int(per["id"].size), n_tokens=int(per["n_tokens"].sum()), seconds=seconds,
                         per_example=per)


# ====================================================================== significance
def paired_test(a: dict[str, np.ndarray], b: dict[str, np.ndarray], step_a: int, step_b: int,
                *, alpha: float = SIGNIFICANCE_LEVEL) -> dict[str, Any] | None:
    """Whether two evaluations' per-example mean losses differ beyond the noise (paired by example id).

    Returns None with fewer than 2 shared finite examples. `differ` is the paired
    t-test's verdict at `alpha`; the Wilcoxon signed-rank p-value is reported beside it
    (robust to a few outlying examples).
    """
    from scipy import stats

    from logsage.ingest.per_example import per_example_mean_loss

    ma, mb = per_example_mean_loss(a), per_example_mean_loss(b)
    index_b = {str(i): k for k, i in enumerate(b["id"].tolist())}
    xs, ys = [], []
    for k, i in enumerate(a["id"].tolist()):
        j = index_b.get(str(i))
        if j is not None and math.isfinite(ma[k]) and math.isfinite(mb[j]):
            xs.append(ma[k])
            ys.append(mb[j])
    n = len(xs)
    if n < 2:
        return None
    x, y = np.asarray(xs), np.asarray(ys)
    d = x - y
    if not np.any(d):
        t_p = w_p = 1.0
    else:
        t_p = float(stats.ttest_rel(x, y).pvalue)
        try:
            w_p = float(stats.wilcoxon(x, y).pvalue)
        except ValueError:
            w_p = None
    differ = bool(t_p is not None and math.isfinite(t_p) and t_p < alpha)
    return {
        "a_step": step_a, "b_step": step_b, "n_examples": n, "mean_difference": float(d.mean()),
        "t_test_p": t_p, "wilcoxon_p": w_p, "alpha": alpha, "differ": differ,
        "verdict": (f"step {step_a} and step {step_b} differ beyond the noise (paired t-test p={t_p:.3g})" if differ
                    else f"step {step_a} and step {step_b} do not differ beyond the noise "
                         f"(paired t-test p={t_p:.3g}, n={n})"),
    }
