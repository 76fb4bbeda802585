"""Select the checkpoint to ship from a run: the rule's pick (or the top-k by the logged metric), never a bad one.

`choose_candidates` replays the run through one rule (`logsage.decide.engine`) over the
checkpoints that are really on disk (`History.checkpoints`, found under the run
folder as given - never through `best_model_checkpoint` or other recorded paths)
and returns the candidates: the rule's selected checkpoint, or with `top_k` the K
best usable checkpoints by the logged metric. A checkpoint is usable when it is
whole (present, not truncated, not an empty adapter), its logged value is finite,
and its weights are safetensors - or pickle with `allow_pickle`. When the logged
best (hindsight) has no usable checkpoint the selection says which checkpoint it
is, what is wrong with it, and what was chosen instead.

`select_checkpoint` is what `logsage select` runs: choose, re-evaluate with the real
model (`logsage.ship.evaluate`, when eval data is given or named in the run's
`logsage train` manifest), and export (`logsage.ship.export`). torch, transformers and
peft are imported only inside those steps, so choosing alone is cheap.

    >>> from logsage.ship.select import ExportOptions, ReevalOptions, select_checkpoint
    >>> result = select_checkpoint("runs/qwen-lora", "hf:patience=3",
    ...                            reeval=ReevalOptions(eval_data=["data/val.jsonl"]),
    ...                            export_to=ExportOptions("ship/qwen-lora", merge=True))
    >>> result.selected_step
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from logsage.core.errors import CheckpointError, LogsageError, UsageError
from logsage.core.history import Checkpoint, History, json_safe
from logsage.core.runfolder import checkpoint_name
from logsage.ship.runfacts import base_warning, manifest_eval_data, read_manifest, resolve_base



# ====================================================================== candidates
@dataclass
class Candidate:
    """A checkpoint considered for shipping."""

    step: int
    path: str  # under the run folder as the user gave it
    kind: str  # adapter | full
    logged_value: float | None  # the monitored metric at this step, as logged
    logged_rank: int  # 1 = best logged value among the candidates
    rule_pick: bool  # the rule's selected checkpoint
    pickle: bool = False

    def to_dict(self) -> dict[str, Any]:
        return json_safe(dataclasses.asdict(self))


@dataclass
class Selection:
    """The candidates of one run under one rule, and what was wrong with the checkpoints left out."""

    run: str
    rule: str
    params: dict[str, Any]
    metric: str
    mode: str
    decision: Any  # logsage.decide.engine.Decision
    rule_step: int | None  # the rule's selected step among usable checkpoints
    candidates: list[Candidate]  # best logged first; with top_k=None only the rule's pick
    notes: list[str] = field(default_factory=list)
    excluded: list[dict[str, Any]] = field(default_factory=list)  # {"step", "path", "problem"}

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "run": self.run, "rule": self.rule, "params": self.params, "metric": self.metric, "mode": self.mode,
            "rule_step": self.rule_step, "candidates": [c.to_dict() for c in self.candidates],
            "notes": self.notes, "excluded": self.excluded, "decision": self.decision.to_dict(),
        })


def pickle_problem(c: Checkpoint) -> str:
    files = ", ".join(c.weights) or "pickle files"
    return (f"weights only in pickle files ({files}), which can run code when loaded; "
            "pass --allow-pickle to consider it (loaded with torch.load(weights_only=True))")


# Checkpoint layouts the inventory lists but logsage does not export (logsage.ingest.checkpoints).
_NOT_SHIPPABLE = {
    "deepspeed": "DeepSpeed ZeRO shards (pickle); convert them with DeepSpeed's zero_to_fp32.py, then select the result",
    "lightning": "a PyTorch Lightning .ckpt (a pickle); logsage lists it but never loads it",
    "mlx_adapter": "an MLX-LM adapter file; fuse or convert it with mlx_lm, logsage does not export MLX adapters",
    "torchtune_epoch": "a torchtune epoch folder (named by epoch, not step); export it by hand",
}


def usable_problem(c: Checkpoint, *, allow_pickle: bool) -> str | None:
    """Why a checkpoint cannot be shipped (None: it can)."""
    if not c.whole:
        return c.problem or "not whole"
    if c.kind not in ("adapter", "full"):
        return c.problem or _NOT_SHIPPABLE.get(c.kind, "no model or adapter weights")
    if c.pickle and not allow_pickle:
        return pickle_problem(c)
    return None


def _usable_history(history: History, allow_pickle: bool) -> History:
    """A shallow copy of `history` whose inventory marks unusable checkpoints (pickle without opt-in) as not whole,
    so that the replay's own selection and notes skip them."""
    checkpoints = []
    for c in history.checkpoints:
        problem = usable_problem(c, allow_pickle=allow_pickle)
        checkpoints.append(c if problem is None else dataclasses.replace(c, whole=False, problem=problem))
    return dataclasses.replace(history, checkpoints=checkpoints)


def _name(c: Checkpoint) -> str:
    return os.path.basename(os.path.normpath(c.path)) or checkpoint_name(c.step)


def choose_candidates(history: History, rule: str | tuple[str, dict], *, metric: str | None = None,
                      mode: str | None = None, top_k: int | None = None, allow_pickle: bool = False) -> Selection:
    """The checkpoint(s) to consider shipping from one run under one rule.

    Args:
        history: the run, with its checkpoint inventory (`load_history` of a run folder).
        rule: a rule spec, e.g. "hf:patience=3,threshold=1e-4", or ("hf", {"patience": 3}).
        metric, mode: the monitored metric and its direction (defaults as in `replay`).
        top_k: consider the K best usable checkpoints by the logged metric instead of only the rule's pick.
        allow_pickle: consider checkpoints whose weights are only in pickle files.

    Raises:
        RuleConfigError: a bad rule or parameter.
        MetricNotFound: the metric is not in the run.
        CheckpointError: the run has no usable checkpoint (the message lists each one and what is wrong).
    """
    from logsage.core.objective import resolve_objective
    from logsage.decide.engine import replay

    if top_k is not None and top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    if not history.checkpoints:
        raise CheckpointError(
            f"{history.path}: no checkpoint-N folders in the run; select needs the checkpoints on disk "
            "(train with a checkpoint at every evaluation, e.g. `logsage train --save-all`)")
    usable = _usable_history(history, allow_pickle)
    result = replay([usable], [rule], metric=metric, mode=mode)
    if result.errors:
        raise LogsageError(result.errors[0]["error"])
    decision = result.decisions[0]
    objective = resolve_objective(history, metric, mode)
    series = history.series[objective.metric]
    value_at = {int(s): float(v) for s, v in zip(series.steps, series.values)}

    notes: list[str] = []
    excluded: list[dict[str, Any]] = []
    for c in history.checkpoints:
        problem = usable_problem(c, allow_pickle=allow_pickle)
        if problem is None and c.step in value_at and not math.isfinite(value_at[c.step]):
            problem = f"its logged {objective.metric} is {value_at[c.step]}"
        if problem:
            excluded.append({"step": c.step, "path": c.path, "problem": problem})
    skipped_pickles = [c for c in history.checkpoints if c.pickle and c.whole and not allow_pickle]
    if skipped_pickles:
        names = ", ".join(_name(c) for c in skipped_pickles)
        notes.append(f"not considered: {names} (weights only in pickle files); pass --allow-pickle to consider "
                     "them (loaded with torch.load(weights_only=True))")
    used_pickles = [c for c in history.checkpoints if c.pickle and c.whole and allow_pickle]
    if used_pickles:
        notes.append(f"--allow-pickle: {', '.join(_name(c) for c in used_pickles)} may be loaded from pickle files "
                     "with torch.load(weights_only=True)")
    if decision.note:
        notes.append(decision.note)

    rule_step = decision.selected_step
    if rule_step is not None and history.checkpoint_at(rule_step) is None:
        rule_step = None  # a run without inventory selects over evaluations; never here (checked above)

    by_step: dict[int, Checkpoint] = {}
    for c in usable.checkpoints:  # one step, several layouts: the first listed (checkpoint-N) stands for it
        by_step.setdefault(c.step, c)
    good = [c for c in usable.checkpoints if c.whole and c.step in value_at and math.isfinite(value_at[c.step])]
    oriented = {c.step: (value_at[c.step] if objective.mode == "min" else -value_at[c.step]) for c in good}
    ranked = sorted(good, key=lambda c: (oriented[c.step], c.step))
    rank_of = {c.step: i + 1 for i, c in enumerate(ranked)}

    # What was wrong with the logged best, and what stands in for it.
    best = decision.best_step
    already_said = bool(decision.note) and f"step {best} " in f"{decision.note} "
    if best is not None and best not in rank_of and not already_said:
        orig = history.checkpoint_at(best)
        what = "is missing" if orig is None else (usable_problem(orig, allow_pickle=allow_pickle) or "is not usable")
        name = checkpoint_name(best) if orig is None else _name(orig)
        instead = ranked[0].step if ranked else None
        notes.append(f"the logged best {objective.metric} ({value_at.get(best):.6g} at step {best}) has no usable "
                     f"checkpoint: {name} {what}" + (f"; the best usable checkpoint is step {instead}"
                                                      if instead is not None else ""))

    if top_k is None:
        if rule_step is None or rule_step not in by_step or not by_step[rule_step].whole:
            raise CheckpointError(_nothing_usable(history, excluded, decision))
        chosen = [by_step[rule_step]]
    else:
        chosen = ranked[:top_k]
        if not chosen:
            raise CheckpointError(_nothing_usable(history, excluded, decision))
        if top_k > len(ranked):
            notes.append(f"--top-k {top_k}: only {len(ranked)} usable checkpoint(s) with a logged "
                         f"{objective.metric}")
    candidates: list[Candidate] = []
    for c in chosen:
        original = history.checkpoint_at(c.step)
        assert original is not None  # `chosen` comes from a copy of this very inventory
        candidates.append(Candidate(step=c.step, path=c.path, kind=c.kind, logged_value=value_at.get(c.step),
                                    logged_rank=rank_of.get(c.step, 0), rule_pick=c.step == rule_step,
                                    pickle=original.pickle))
    return Selection(run=history.path, rule=decision.rule, params=decision.params, metric=objective.metric,
                     mode=objective.mode, decision=decision, rule_step=rule_step, candidates=candidates,
                     notes=notes, excluded=excluded)


def _nothing_usable(history: History, excluded: list[dict[str, Any]], decision: Any) -> str:
    listed = "; ".join(f"{os.path.basename(os.path.normpath(e['path']))}: {e['problem']}" for e in excluded[:4])
    more = f" (+{len(excluded) - 4} more)" if len(excluded) > 4 else ""
    why = f" ({decision.note})" if decision.note else (f" ({decision.reason})" if not decision.decidable else "")
    return (f"{history.path}: no usable checkpoint to select{why}; {listed or 'no checkpoint has a logged value'}"
            f"{more}")


# ====================================================================== select + evaluate + export
@dataclass
class SelectResult:
    """What `logsage select` reports (and writes into the provenance file of an export)."""

    selection: Selection
    selected_step: int
    base: str | None = None
    base_source: str | None = None
    evaluation: dict[str, Any] | None = None  # logsage.ship.evaluate.EvalReport.to_dict()
    reevaluation_skipped: str | None = None  # why there was no re-evaluation
    differs_from_rule: bool | None = None
    logged_paired_test: dict[str, Any] | None = None  # from the run's own per-example eval losses
    export: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        sel = self.selection
        evals = {r["step"]: r for r in (self.evaluation or {}).get("results", [])}
        gen = {r["step"]: r for r in ((self.evaluation or {}).get("generation") or {}).get("results", [])}
        candidates = []
        for c in sel.candidates:
            d = c.to_dict()
            r = evals.get(c.step)
            if r is not None:
                d["reevaluated"] = {k: r.get(k) for k in ("loss", "perplexity", "n_examples", "n_tokens", "seconds")}
                d["reevaluated_rank"] = r.get("rank")
                if c.logged_value is not None and r.get("loss") is not None and _is_loss(sel.metric):
                    d["difference"] = r["loss"] - c.logged_value
                    d["relative_difference"] = (r["loss"] - c.logged_value) / abs(c.logged_value) \
                        if c.logged_value else None
            if self.evaluation and self.evaluation.get("ranking") and c.step in self.evaluation["ranking"]:
                d["reevaluated_rank"] = self.evaluation["ranking"].index(c.step) + 1  # under the objective
            g = gen.get(c.step)
            if g is not None:
                d["generated"] = g
            candidates.append(d)
        return json_safe({
            "run": sel.run,
            "rule": sel.rule,
            "params": sel.params,
            "metric": sel.metric,
            "mode": sel.mode,
            "selected_step": self.selected_step,
            "rule_step": sel.rule_step,
            "differs_from_rule": self.differs_from_rule,
            "candidates": candidates,
            "base": self.base,
            "base_source": self.base_source,
            "reevaluation": self.evaluation,
            "reevaluation_skipped": self.reevaluation_skipped,
            "logged_paired_test": self.logged_paired_test,
            "export": self.export,
            "notes": sel.notes,
            "warnings": self.warnings,
            "excluded": sel.excluded,
            "decision": sel.decision.to_dict(),
        })


def _logged_paired_test(history: History, selection: Selection) -> dict[str, Any] | None:
    """The paired test between the two best candidates from the per-example losses the run logged, if any."""
    steps = [c.step for c in sorted(selection.candidates, key=lambda c: c.logged_rank)][:2]
    if len(steps) < 2 or not all(s in history.per_example for s in steps):
        return None
    from logsage.ship.evaluate import paired_test  # numpy + scipy only at import

    return paired_test(history.per_example[steps[0]], history.per_example[steps[1]], steps[0], steps[1])


def _is_loss(metric: str) -> bool:
    from logsage.core.names import canonical_name

    return "loss" in canonical_name(metric)


@dataclass
class ReevalOptions:
    """How `select_checkpoint` re-evaluates the candidates with the real model (all optional).

    eval_data: eval data file(s) (JSON/JSONL, the formats `logsage train` reads); default: the eval set
        named in the run's manifest; with neither (and no `eval_generate`), re-evaluation is skipped
        and the result says so.
    base: the base model folder (default: the adapter's config, then the manifest).
    eval_generate: prompts file(s) to generate from with each candidate (`logsage.ship.generate`), scored
        by `gen_metric` (exact, contains, rouge-l, bleu, MODULE:FUNCTION) with at most `max_new_tokens`.
    select_by: the objective that ranks re-evaluated candidates: loss, gen (default with eval_generate)
        or gen-then-loss.
    eval_batch_size, max_length: re-evaluation settings (default: the manifest's, else 8 and 2048).
    allow_pickle: consider and load pickle-only checkpoints (torch.load(weights_only=True)).
    trust_remote_code: passed to transformers when loading models and tokenizers.
    """

    eval_data: Sequence[str] | None = None
    base: str | None = None
    eval_generate: Sequence[str] | None = None
    gen_metric: str = "exact"
    max_new_tokens: int | None = None
    select_by: str | None = None
    eval_batch_size: int | None = None
    max_length: int | None = None
    allow_pickle: bool = False
    trust_remote_code: bool = False


@dataclass
class ExportOptions:
    """Where and how `select_checkpoint` exports the winner.

    out: the export folder, written atomically; refused when it exists unless `force`, and never the
        run, a folder around it or inside it, a checkpoint, the base, the current directory or a root
        (checked before anything is loaded: `logsage.ship.atomic.check_export_target`).
    force: replace an existing folder that logsage exported; `force_any`: any other folder too.
    merge: export the base with the adapter merged (sharded safetensors) instead of the adapter;
        `dtype` the merged dtype (auto, bf16, fp16, fp32; default: the base's).
    carry_remote_code: copy a base's own modelling code (auto_map) into a merged export.
    """

    out: str | os.PathLike
    merge: bool = False
    dtype: str | None = None
    force: bool = False
    force_any: bool = False
    carry_remote_code: bool = False


def select_checkpoint(
    run: str | os.PathLike,
    rule: str,
    *,
    metric: str | None = None,
    mode: str | None = None,
    top_k: int | None = None,
    reeval: ReevalOptions | None = None,
    export_to: ExportOptions | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> SelectResult:
    """Choose a run's checkpoint under a rule, re-evaluate the candidates, and optionally export the winner.

    Args:
        run: the run folder (checkpoints are found under it, as given).
        rule: the rule spec, e.g. "hf:patience=3".
        metric, mode: the monitored metric and direction (defaults: the run's eval loss, min).
        top_k: re-evaluate the K best checkpoints by the logged metric; the export is the first after
            re-evaluation.
        reeval: how to re-evaluate (`ReevalOptions`; default: the run's manifest eval set, if any).
        export_to: export the selected checkpoint (`ExportOptions`); default: no export.
        progress: called as (label, done, total) during re-evaluation and export.
        warn: called with each warning as it happens (the result lists them too).
    """
    opts = reeval or ReevalOptions()
    eval_data, base, allow_pickle, trust_remote_code = opts.eval_data, opts.base, opts.allow_pickle, \
        opts.trust_remote_code
    eval_batch_size, max_length = opts.eval_batch_size, opts.max_length
    eval_generate, gen_metric, max_new_tokens, select_by = opts.eval_generate, opts.gen_metric, \
        opts.max_new_tokens, opts.select_by
    export = export_to.out if export_to is not None else None
    ship = export_to or ExportOptions(out="")
    merge, dtype, force, force_any, carry_remote_code = ship.merge, ship.dtype, ship.force, ship.force_any, \
        ship.carry_remote_code
    from logsage.ingest import load_history

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise UsageError(f"{run}: not a run folder; select needs the folder that holds the checkpoint-N folders")
    if export is not None:  # before anything is read or loaded: never an export over what we read
        from logsage.ship.atomic import check_export_target

        check_export_target(export, protect=[run_dir], force=force, force_any=force_any)
    history = load_history(run)
    if export is not None:  # checkpoints may be symbolic links to folders elsewhere: those are read too
        from logsage.ship.atomic import check_export_target

        check_export_target(export, protect=[run_dir, *(c.path for c in history.checkpoints)], force=force,
                            force_any=force_any)
    selection = choose_candidates(history, rule, metric=metric, mode=mode, top_k=top_k, allow_pickle=allow_pickle)
    manifest = read_manifest(run_dir)
    generation = None
    if eval_generate:  # prompts and metric are checked before any model is loaded
        from logsage.ship.generate import generation_task

        generation = generation_task(eval_generate, gen_metric, max_new_tokens, manifest, eval_batch_size)
    result = SelectResult(selection=selection, selected_step=selection.candidates[0].step)

    def note(msg: str) -> None:
        result.warnings.append(msg)
        if warn:
            warn(msg)

    first = Path(selection.candidates[0].path)
    needs_base = any(c.kind == "adapter" for c in selection.candidates)
    eval_source = None
    skipped = ("no --eval-data given and the run has no logsage train manifest naming an eval set; candidates "
               "are ranked by the logged metric only")
    if eval_data:
        from logsage.ship.evaluate import EvalData

        eval_source = EvalData(files=[str(f) for f in eval_data])
    else:
        eval_source, data_warnings = manifest_eval_data(manifest, run_dir)
        for w in data_warnings:
            note(w)
        if eval_source is None and data_warnings:
            skipped = data_warnings[-1]

    base_dir: Path | None = None
    if select_by is not None:
        from logsage.ship.generate import check_objective

        check_objective(select_by, generation is not None, eval_source is not None or _is_loss(selection.metric))
    if needs_base and (eval_source is not None or generation is not None or (export is not None and merge) or base):
        base_dir, source = resolve_base(base, first, run_dir, manifest)
        result.base, result.base_source = str(base_dir), source
        outside = base_warning(base_dir, source, run_dir)
        if outside:
            note(outside)

    if eval_source is not None or generation is not None:
        from logsage.ship.evaluate import EvalSettings, evaluate_checkpoints

        settings = EvalSettings.from_manifest(manifest, batch_size=eval_batch_size, max_length=max_length)
        report = evaluate_checkpoints(
            [(c.step, Path(c.path), c.kind) for c in selection.candidates], base=base_dir, eval_data=eval_source,
            settings=settings, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, progress=progress,
            logged={c.step: c.logged_value for c in selection.candidates}, metric=selection.metric,
            generation=generation, select_by=select_by)
        result.evaluation = report.to_dict()
        for w in report.warnings:
            note(w)
        if top_k is not None:
            result.selected_step = report.ranked_steps()[0]
    else:
        result.reevaluation_skipped = skipped
        result.logged_paired_test = _logged_paired_test(history, selection)
    if top_k is not None:
        result.differs_from_rule = (None if selection.rule_step is None
                                    else result.selected_step != selection.rule_step)
        if result.differs_from_rule:
            note(f"the export candidate (step {result.selected_step}) differs from the rule's pick "
                 f"(step {selection.rule_step})")

    if export is not None:
        from logsage.ship.export import export_checkpoint

        chosen = next(c for c in selection.candidates if c.step == result.selected_step)
        if chosen.kind == "adapter" and base_dir is None:
            try:
                base_dir, source = resolve_base(base, Path(chosen.path), run_dir, manifest)
                result.base, result.base_source = str(base_dir), source
                outside = base_warning(base_dir, source, run_dir)
                if outside:
                    note(outside)
            except LogsageError:
                if merge:
                    raise
                # An adapter export needs the base only for its tokenizer, when the checkpoint has none.
        provenance = {k: v for k, v in result.to_dict().items() if k != "export"}
        provenance["manifest"] = manifest
        generations = None
        if generation is not None:
            from logsage.ship.generate import split_generations

            provenance["reevaluation"], generations = split_generations(provenance["reevaluation"])
        exp = export_checkpoint(
            Path(chosen.path), export, kind=chosen.kind, base_dir=base_dir, merge=merge, dtype=dtype, force=force,
            force_any=force_any, protect=[run_dir, *(c.path for c in history.checkpoints)],
            allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, carry_remote_code=carry_remote_code,
            provenance=provenance, manifest=manifest, progress=progress, warn=note)
        result.export = exp.to_dict()
        if generations is not None:
            from logsage.ship.generate import PER_EXAMPLE_NAME, write_per_example

            result.export["generations_file"] = str(write_per_example(Path(export) / PER_EXAMPLE_NAME, generations))
    return result
