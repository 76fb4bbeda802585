"""Re-evaluate candidates by generating: greedy, batched answers to a prompts file, scored against its references.

`GenerationTask` holds what is fixed for every candidate: the prompts (read with
`logsage.train.data`, so any format `logsage train` reads: alpaca, messages,
prompt-completion; the reference is the `output`, the last assistant turn, or the
`completion`; the prompt is everything before it), the metric (`logsage.ship.gen_metrics`)
and the decoding settings. It is built, and so checks the prompts and the metric,
before any model is loaded. `GenerationTask.run(model, tokenizer, ...)` generates
with one candidate - `logsage.ship.evaluate.evaluate_checkpoints` calls it while
that candidate's adapter is active, so the base is loaded once for loss and
generation alike.

Decoding: the tokenizer's chat template with the generation prompt (the run's
template, as training rendered it), greedy (do_sample off, one beam), at most
`max_new_tokens` new tokens, stopping at the generation config's eos tokens.
Prompts are batched by length and padded on the LEFT with an attention mask, so a
batch decodes what each prompt alone would (the tests compare with a plain
one-prompt `model.generate` loop).

`summarize` ranks the candidates by their mean score, tests each against the best
(paired by prompt: McNemar for 0/1 metrics, a seeded paired bootstrap otherwise),
names the ones not distinguishable from the best, and says when the loss picks a
different checkpoint. `rank_steps` applies the selection objective: `gen` (the
metric; ties by loss), `loss`, or `gen-then-loss` (the lowest loss among the
candidates not distinguishable from the metric's best).

torch is imported inside the functions.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from logsage.core.errors import DataError, LogsageError, UsageError
from logsage.ship.gen_metrics import DEFAULT_SEED, Metric, paired_metric_test, resolve_metric
from logsage.ship.runfacts import dict_field

DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_GEN_BATCH_SIZE = 8
OBJECTIVES = ("gen", "loss", "gen-then-loss")
PER_EXAMPLE_NAME = "logsage_generations.jsonl"
SIGNIFICANCE_LEVEL = 0.05


# ====================================================================== prompts
@dataclass(frozen=True)
class Prompt:
    """One prompt record: the chat up to the reference, and the reference answer."""

    index: int  # position in the prompts file(s)
    id: Any
    where: str  # file:line
    messages: tuple[dict[str, str], ...]
    reference: str


def _missing_reference(where: str, what: str) -> DataError:
    return DataError(f"{where}: the prompt record has no reference answer ({what}); --eval-generate scores each "
                     "generation against it, so add the expected answer to every record")


def load_prompts(files: Sequence[str | os.PathLike], data_format: str = "auto") -> list[Prompt]:
    """The prompts and references of the files, checked record by record (DataError naming file:line)."""
    from logsage.train.data import detect_format, load_examples, read_records

    for f in files:  # a missing reference gets its own message before the training parser's generic one
        for line, record in read_records(f):
            where = f"{f}:{line}"
            if not isinstance(record, dict):
                continue  # load_examples names it
            kind = detect_format(record) if data_format == "auto" else data_format
            if kind == "alpaca" and not record.get("output"):
                raise _missing_reference(where, 'alpaca "output"')
            if kind == "prompt-completion" and record.get("completion") in (None, "", []):
                raise _missing_reference(where, '"completion"')
            turns = record.get("messages", record.get("conversations")) if kind == "messages" else None
            if isinstance(turns, list) and turns and isinstance(turns[-1], dict):
                last = turns[-1]
                role = last.get("role", last.get("from"))
                content = last.get("content", last.get("value"))
                if role not in ("assistant", "gpt", "model") or not isinstance(content, str) or not content.strip():
                    raise _missing_reference(where, "the last message must be the assistant's expected answer")
    prompts = []
    for i, ex in enumerate(load_examples([str(f) for f in files], data_format)):
        msgs = list(ex.messages)
        if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
            raise _missing_reference(ex.where, "the last message must be the assistant's expected answer")
        if not any(m["role"] == "user" for m in msgs[:-1]):
            raise DataError(f"{ex.where}: the prompt record has no user turn before its reference; add the prompt")
        prompts.append(Prompt(i, ex.id, ex.where, tuple(msgs[:-1]), msgs[-1]["content"]))
    return prompts


# ====================================================================== generation
def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    cfg = getattr(model, "generation_config", None)
    eos = getattr(cfg, "eos_token_id", None) if cfg is not None else None
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def prompt_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """The prompt rendered with the tokenizer's chat template and the assistant header, as token ids."""
    if not getattr(tokenizer, "chat_template", None):
        raise LogsageError("the tokenizer has no chat template; --eval-generate renders prompts with the run's "
                           "template (use the tokenizer the run trained with)")
    text = tokenizer.apply_chat_template(list(prompt.messages), add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def greedy_settings(model: Any, max_new_tokens: int, pad_id: int, eos_ids: list[int]):
    """The model's generation config made greedy (no sampling, one beam), with our stop and length."""
    import copy

    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    cfg = copy.deepcopy(base) if base is not None else GenerationConfig()
    cfg.do_sample, cfg.num_beams = False, 1
    cfg.temperature = cfg.top_p = cfg.top_k = None  # no sampling knobs left over to warn about
    cfg.max_new_tokens, cfg.max_length = int(max_new_tokens), None
    cfg.pad_token_id, cfg.eos_token_id = pad_id, eos_ids
    return cfg


def generate_batched(model: Any, tokenizer: Any, prompts: Sequence[Prompt], *, batch_size: int,
                     max_new_tokens: int, device: Any, tick: Callable[[], None] | None = None) -> list[tuple[str, int]]:
    """(decoded prediction, new tokens) per prompt, in prompt order: greedy, left-padded batches by length."""
    import torch

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    cfg = greedy_settings(model, max_new_tokens, pad_id, eos)
    encoded = [prompt_ids(tokenizer, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: (len(encoded[i]), i))  # little padding per batch
    out: list[tuple[str, int] | None] = [None] * len(prompts)
    stops = set(eos) | {pad_id}
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(encoded[i]) for i in rows)
            ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                n = len(encoded[i])
                ids[r, width - n:] = torch.tensor(encoded[i])
                mask[r, width - n:] = 1
            gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=cfg)
            for r, i in enumerate(rows):
                new = gen[r, width:].tolist()
                cut = next((k for k, t in enumerate(new) if t in stops), len(new))
                out[i] = (tokenizer.decode(new[:cut], skip_special_tokens=True).strip(), cut)
            if tick:
                tick()
    return [o for o in out]  # type: ignore[misc]


# ====================================================================== one candidate
@dataclass
class CandidateGeneration:
    """One checkpoint's predictions and per-prompt scores."""

    step: int
    predictions: list[str]
    scores: np.ndarray
    new_tokens: int
    seconds: float

    @property
    def mean(self) -> float:
        return float(self.scores.mean()) if self.scores.size else math.nan


@dataclass
class GenerationTask:
    """The prompts, metric and decoding settings every candidate is generated and scored with."""

    files: list[str]
    metric_name: str = "exact"
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    batch_size: int = DEFAULT_GEN_BATCH_SIZE
    data_format: str = "auto"
    seed: int = DEFAULT_SEED
    prompts: list[Prompt] = field(default_factory=list, init=False)
    metric: Metric = field(init=False)  # resolved from metric_name in __post_init__

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise UsageError(f"--max-new-tokens {self.max_new_tokens} and the generation batch size "
                             f"{self.batch_size} must be at least 1")
        self.metric = resolve_metric(self.metric_name)  # unknown metric / missing extra: before any model loads
        self.prompts = load_prompts(self.files, self.data_format)
        if not self.prompts:
            raise DataError(f"{', '.join(self.files)}: no prompts")

    @property
    def n_batches(self) -> int:
        return -(-len(self.prompts) // self.batch_size)

    def describe(self) -> str:
        return ", ".join(self.files)

    def run(self, model: Any, tokenizer: Any, device: Any, step: int,
            tick: Callable[[], None] | None = None) -> CandidateGeneration:
        t0 = time.perf_counter()
        outs = generate_batched(model, tokenizer, self.prompts, batch_size=self.batch_size,
                                max_new_tokens=self.max_new_tokens, device=device, tick=tick)
        scores = np.asarray([self.metric.score(pred, p.reference, f"{p.where} (checkpoint-{step})")
                             for (pred, _), p in zip(outs, self.prompts)], dtype=np.float64)
        return CandidateGeneration(step=step, predictions=[o[0] for o in outs], scores=scores,
                                   new_tokens=int(sum(o[1] for o in outs)), seconds=time.perf_counter() - t0)


# ====================================================================== ranking and comparison
def _loss_key(loss: dict[int, float], step: int) -> float:
    v = loss.get(step)
    return v if v is not None and math.isfinite(v) else math.inf


def summarize(task: GenerationTask, gens: Sequence[CandidateGeneration], *, order: Sequence[int],
              loss: dict[int, float] | None = None, loss_label: str = "eval_loss",
              alpha: float = SIGNIFICANCE_LEVEL) -> dict[str, Any]:
    """The generation re-evaluation as a JSON-able dict: per-candidate means and ranks, paired tests against the
    best, the candidates not distinguishable from it, and whether `loss` (lower is better) picks another one."""
    loss = loss or {}
    position = {s: i for i, s in enumerate(order)}
    by_step = {g.step: g for g in gens}
    ranked = sorted(gens, key=lambda g: (-g.mean, _loss_key(loss, g.step), position.get(g.step, 0)))
    best = ranked[0]
    metric = task.metric
    results: list[dict[str, Any]] = []
    tests: list[dict[str, Any]] = []
    for rank, g in enumerate(ranked, start=1):
        row: dict[str, Any] = {"step": g.step, "mean": g.mean, "rank": rank, "n_prompts": int(g.scores.size),
               "new_tokens": g.new_tokens, "seconds": g.seconds}
        if g is not best:
            t = paired_metric_test(best.scores, g.scores, binary=metric.binary, seed=task.seed)
            t.update(a_step=best.step, b_step=g.step, alpha=alpha, differ=t["p"] < alpha)
            tests.append(t)
            row["p_vs_best"], row["indistinguishable_from_best"] = t["p"], not t["differ"]
        results.append(row)
    results.sort(key=lambda r: position.get(r["step"], 0))
    indistinguishable = [t["b_step"] for t in tests if not t["differ"]]
    doc: dict[str, Any] = {
        "prompts": task.describe(), "n_prompts": len(task.prompts), "metric": metric.name,
        "metric_label": metric.label, "binary": metric.binary, "max_new_tokens": task.max_new_tokens,
        "batch_size": task.batch_size, "decoding": "greedy", "seed": task.seed, "alpha": alpha,
        "results": results, "ranking": [g.step for g in ranked], "best_step": best.step,
        "paired_tests": tests, "indistinguishable_from_best": indistinguishable,
    }
    doc["verdict"] = (f"{metric.label} picks step {best.step} (mean {best.mean:.3g}); " + (
        f"not distinguishable from it at p<{alpha:g}: step(s) {', '.join(map(str, indistinguishable))}"
        if indistinguishable else (f"every other candidate is worse beyond chance (p<{alpha:g})" if tests
                                   else "the only candidate")))
    finite = {s: v for s, v in loss.items() if s in by_step and v is not None and math.isfinite(v)}
    if finite:
        loss_best = min(finite, key=lambda s: (finite[s], position.get(s, 0)))
        doc["loss_best_step"], doc["loss_label"] = loss_best, loss_label
        doc["agree"] = loss_best == best.step
        if loss_best != best.step:
            t = next(t for t in tests if t["b_step"] == loss_best)
            doc["disagreement"] = (f"{loss_label} picks {loss_best}; {metric.label} picks {best.step}: "
                                   f"{best.mean:.2f} vs {by_step[loss_best].mean:.2f}, p = {t['p']:.2g}"
                                   + ("" if t["differ"] else " (not distinguishable)"))
    return doc


def rank_steps(objective: str, summary: dict[str, Any] | None, loss: dict[int, float] | None,
               order: Sequence[int], *, loss_label: str = "eval_loss") -> tuple[list[int], str]:
    """(candidate steps, best first, under `objective`; a sentence saying how they were ranked)."""
    loss = loss or {}
    position = {s: i for i, s in enumerate(order)}
    if objective not in OBJECTIVES:
        raise UsageError(f"--select-by {objective}: use one of {', '.join(OBJECTIVES)}")
    if objective == "loss" or summary is None:
        if not any(math.isfinite(_loss_key(loss, s)) for s in order):
            raise UsageError("--select-by loss needs a loss: pass --eval-data (or select on a run that logged "
                             "eval_loss)")
        return sorted(order, key=lambda s: (_loss_key(loss, s), position[s])), f"by {loss_label}"
    if objective == "gen":
        return list(summary["ranking"]), f"by {summary['metric_label']} (ties by loss)"
    if not any(math.isfinite(_loss_key(loss, s)) for s in order):
        raise UsageError("--select-by gen-then-loss needs a loss: pass --eval-data (or select on a run that "
                         "logged eval_loss)")
    best = summary["best_step"]
    pool = [best] + list(summary["indistinguishable_from_best"])
    first = sorted(pool, key=lambda s: (_loss_key(loss, s), position[s]))
    rest = [s for s in summary["ranking"] if s not in pool]
    return first + rest, (f"by loss among the candidates not distinguishable from the {summary['metric_label']} "
                          f"best (p<{summary['alpha']:g})")


# ====================================================================== per-example records
def per_example_records(task: GenerationTask, gens: Sequence[CandidateGeneration]) -> list[dict[str, Any]]:
    """One record per candidate x prompt: step, the prompt's index and id, prediction, reference, score."""
    return [{"step": g.step, "index": p.index, "id": p.id, "prediction": pred, "reference": p.reference,
             "score": float(s), "metric": task.metric.name}
            for g in gens for p, pred, s in zip(task.prompts, g.predictions, g.scores)]


def per_example_jsonl(records: Sequence[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in records)


def write_per_example(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> Path:
    """Write the records as JSONL, atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(per_example_jsonl(records), encoding="utf-8")
    os.replace(tmp, path)
    return path


def split_generations(evaluation: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(the evaluation without its per-example records but naming their file and sha256; the records), for a
    provenance file that keeps the records beside it as PER_EXAMPLE_NAME."""
    import hashlib

    records = list(evaluation.get("generations") or [])
    doc = {k: v for k, v in evaluation.items() if k != "generations"}
    doc["generations_file"] = {"name": PER_EXAMPLE_NAME, "records": len(records),
                               "sha256": hashlib.sha256(per_example_jsonl(records).encode("utf-8")).hexdigest()}
    return doc, records


# ====================================================================== entry points for select / evaluate
def generation_task(files: Sequence[str], metric: str | None, max_new_tokens: int | None,
                    manifest: dict[str, Any] | None, batch_size: int | None) -> GenerationTask:
    """A GenerationTask with the run's data format and eval batch size (a `logsage train` manifest's) as defaults."""
    cfg = dict_field(manifest, "config")
    return GenerationTask(files=[str(f) for f in files], metric_name=metric or "exact",
                          max_new_tokens=int(max_new_tokens or DEFAULT_MAX_NEW_TOKENS),
                          batch_size=int(batch_size or cfg.get("per_device_eval_batch_size") or DEFAULT_GEN_BATCH_SIZE),
                          data_format=str(cfg.get("data_format") or "auto"))


def check_objective(select_by: str, has_prompts: bool, has_loss: bool) -> None:
    """UsageError, before any model loads, for an objective the given inputs cannot rank by."""
    if select_by not in OBJECTIVES:
        raise UsageError(f"--select-by {select_by}: use one of {', '.join(OBJECTIVES)}")
    if select_by != "loss" and not has_prompts:
        raise UsageError(f"--select-by {select_by} ranks by a generation metric; add --eval-generate PROMPTS.jsonl")
    if select_by != "gen" and not has_loss:
        raise UsageError(f"--select-by {select_by} needs a loss: pass --eval-data (or select on a run that logged "
                         "eval_loss)")
