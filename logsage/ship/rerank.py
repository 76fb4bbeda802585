"""`logsage evaluate`: re-evaluate named checkpoints of a run (loss and/or generation) and rank them; never exports.

`evaluate_run` finds the checkpoints under the run folder (the inventory
`load_history` builds), checks each asked step is there and usable, resolves the
base model and the eval set as `logsage select` does (`logsage.ship.select`), and
runs `logsage.ship.evaluate.evaluate_checkpoints` with one base load. With `out`,
the result document is written there and the per-example generations beside it
(`<out stem>.generations.jsonl`); `logsage report --selection OUT` shows them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from logsage.core.runfolder import CHECKPOINT_PREFIX
from logsage.core.errors import CheckpointError, UsageError


def parse_steps(spec: str | None) -> list[int] | None:
    """"200,400,600" -> [200, 400, 600]; None or "all" -> None (every usable checkpoint)."""
    if spec is None or spec.strip().lower() == "all":
        return None
    steps = []
    for part in spec.split(","):
        part = part.strip().removeprefix(CHECKPOINT_PREFIX)
        if not (part.isascii() and part.isdigit()):  # int() would also take "١٢" (Arabic-Indic digits)
            raise UsageError(f"--checkpoints {spec}: {part!r} is not a step; give steps like 200,400,600 (or all)")
        steps.append(int(part))
    if len(set(steps)) != len(steps):
        raise UsageError(f"--checkpoints {spec}: a step is repeated")
    return steps


def evaluate_run(
    run: str | os.PathLike,
    *,
    checkpoints: Sequence[int] | None = None,
    eval_data: Sequence[str] | None = None,
    eval_generate: Sequence[str] | None = None,
    gen_metric: str = "exact",
    max_new_tokens: int | None = None,
    select_by: str | None = None,
    metric: str | None = None,
    base: str | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    eval_batch_size: int | None = None,
    max_length: int | None = None,
    out: str | os.PathLike | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    warn: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The re-evaluation of `checkpoints` (steps; default every usable one) of `run` as a JSON-able dict."""
    from logsage.core.objective import resolve_objective
    from logsage.ingest import load_history
    from logsage.core.runfolder import RUN_MANIFEST
    from logsage.ship.runfacts import manifest_eval_data, read_manifest, resolve_base
    from logsage.ship.select import usable_problem

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise UsageError(f"{run}: not a run folder; evaluate needs the folder that holds the checkpoint-N folders")
    history = load_history(run)
    by_step = {c.step: c for c in history.checkpoints}
    if not by_step:
        raise CheckpointError(f"{run}: no checkpoint-N folders in the run; evaluate needs the checkpoints on disk")
    steps = list(checkpoints) if checkpoints else sorted(
        s for s, c in by_step.items() if usable_problem(c, allow_pickle=allow_pickle) is None)
    for s in steps:
        c = by_step.get(s)
        if c is None:
            raise CheckpointError(f"{run}: no checkpoint-{s} in the run (there are: "
                                  f"{', '.join(map(str, sorted(by_step)))}); fix --checkpoints")
        problem = usable_problem(c, allow_pickle=allow_pickle)
        if problem:
            raise CheckpointError(f"{c.path}: {problem}")
    if not steps:
        raise CheckpointError(f"{run}: no usable checkpoint to evaluate")
    manifest = read_manifest(run_dir)
    notes: list[str] = []

    def note(msg: str) -> None:
        notes.append(msg)
        if warn:
            warn(msg)

    generation = None
    if eval_generate:
        from logsage.ship.generate import generation_task

        generation = generation_task(eval_generate, gen_metric, max_new_tokens, manifest, eval_batch_size)
    from logsage.ship.evaluate import EvalData, EvalSettings, evaluate_checkpoints

    if eval_data:
        source = EvalData(files=[str(f) for f in eval_data])
    else:
        source, data_warnings = manifest_eval_data(manifest, run_dir)
        for w in data_warnings:
            note(w)
    if source is None and generation is None:
        raise UsageError(f"{run}: nothing to evaluate with: pass --eval-data and/or --eval-generate "
                         f"(the run has no {RUN_MANIFEST} naming an eval set)")
    logged: dict[int, float | None] = {}
    metric_name = None
    try:
        objective = resolve_objective(history, metric, None)
        metric_name = objective.metric
        series = history.series[objective.metric]
        values = {int(s): float(v) for s, v in zip(series.steps, series.values)}
        logged = {s: values.get(s) for s in steps if values.get(s) is not None and math.isfinite(values[s])}
    except Exception:  # a run without an eval series: nothing logged to compare with
        pass
    if select_by is not None:
        from logsage.ship.generate import check_objective

        check_objective(select_by, generation is not None,
                        source is not None or bool(logged and metric_name and "loss" in metric_name))
    items = [(s, Path(by_step[s].path), by_step[s].kind) for s in steps]
    base_dir = None
    if any(k == "adapter" for _, _, k in items):
        base_dir, _ = resolve_base(base, items[0][1], run_dir, manifest)
    settings = EvalSettings.from_manifest(manifest, batch_size=eval_batch_size, max_length=max_length)
    report = evaluate_checkpoints(items, base=base_dir, eval_data=source, settings=settings,
                                  allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, progress=progress,
                                  logged=logged, metric=metric_name, generation=generation, select_by=select_by)
    for w in report.warnings:
        note(w)
    doc = {"run": str(run), "metric": metric_name, "logged": logged, "checkpoints": steps,
           "ranking": report.ranked_steps(), "reevaluation": report.to_dict(), "warnings": notes}
    if out is not None:
        doc["written"] = write_result(doc, Path(out))
    return doc


def write_result(doc: dict[str, Any], out: Path) -> list[str]:
    """Write `doc` as JSON to `out`, its per-example generations beside it; returns the paths written."""
    from logsage.core.history import json_safe
    from logsage.ship.generate import split_generations, write_per_example

    written = []
    body = dict(doc)
    records = None
    if (body.get("reevaluation") or {}).get("generation") is not None:
        body["reevaluation"], records = split_generations(body["reevaluation"])
        name = f"{out.stem}.generations.jsonl"
        body["reevaluation"]["generations_file"]["name"] = name
    out.parent.mkdir(parents=True, exist_ok=True)
    if records is not None:
        written.append(str(write_per_example(out.parent / name, records)))
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(json_safe(body), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, out)
    return [str(out), *written]
