"""`logsage select`: which checkpoint is chosen, what is said about the ones left out, and the end-to-end command.

Run folders are written with the real writers: `transformers.TrainerState.save_to_json`
for the log, peft's `save_pretrained` for the adapters (one real adapter copied into
each checkpoint-N folder, then damaged on purpose where a case needs it). The
end-to-end tests use conftest's `tiny_run_dir`, a real `logsage train --save-all` run.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import cli
from logsage.core.errors import CheckpointError, UsageError
from logsage.ingest import load_history
from logsage.ship.runfacts import resolve_base
from logsage.ship.select import choose_candidates

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module")
def real_adapter(tiny_model_dir, tmp_path_factory):
    torch = pytest.importorskip("torch")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.fill_(0.01)
    folder = tmp_path_factory.mktemp("select-adapter") / "adapter"
    model.save_pretrained(folder)
    return folder


def make_run(root: Path, evals: list[tuple[int, float]], checkpoints: dict[int, str], adapter: Path,
             best_model_checkpoint: str | None = None) -> Path:
    """A run folder: trainer_state.json (TrainerState's own writer) and checkpoint-N folders in the given states."""
    from transformers import TrainerState

    root.mkdir(parents=True)
    log = [{"loss": 2.0, "step": s, "epoch": s / 100} for s, _ in evals]
    log += [{"eval_loss": v, "step": s, "epoch": s / 100} for s, v in evals]
    TrainerState(global_step=max(s for s, _ in evals), max_steps=max(s for s, _ in evals), log_history=log,
                 best_model_checkpoint=best_model_checkpoint).save_to_json(str(root / "trainer_state.json"))
    for step, state in checkpoints.items():
        ck = root / f"checkpoint-{step}"
        shutil.copytree(adapter, ck)
        weights = ck / "adapter_model.safetensors"
        if state == "truncated":
            data = weights.read_bytes()
            weights.write_bytes(data[: len(data) // 2])
        elif state == "empty":
            from safetensors.torch import save_file

            weights.unlink()
            save_file({}, str(weights))
        elif state == "pickle":
            import torch
            from safetensors.torch import load_file

            torch.save(load_file(str(weights)), ck / "adapter_model.bin")
            weights.unlink()
        elif state == "no-weights":
            weights.unlink()
        else:
            assert state == "ok", state
    return root


EVALS = [(10, 2.0), (20, 1.5), (30, 1.2), (40, 1.3), (50, 1.4), (60, 1.6)]


def test_rule_pick_when_everything_is_whole(real_adapter, tmp_path):
    run = make_run(tmp_path / "run", EVALS, {s: "ok" for s, _ in EVALS}, real_adapter)
    sel = choose_candidates(load_history(run), "hf:patience=2")
    assert sel.rule_step == 30 and [c.step for c in sel.candidates] == [30]
    assert sel.candidates[0].rule_pick and sel.candidates[0].logged_value == 1.2
    assert sel.notes == [] and sel.excluded == []


@pytest.mark.parametrize("damage, words", [
    ("truncated", "cut short"),
    ("empty", "empty"),
    ("no-weights", "adapter weights"),
])
def test_a_damaged_logged_best_is_never_chosen_and_the_output_says_why(real_adapter, tmp_path, damage, words):
    checkpoints = {s: "ok" for s, _ in EVALS}
    checkpoints[30] = damage
    run = make_run(tmp_path / "run", EVALS, checkpoints, real_adapter)
    sel = choose_candidates(load_history(run), "hf:patience=2")
    assert sel.rule_step == 40  # the best whole checkpoint up to the stop
    text = " ".join(sel.notes)
    assert "checkpoint-30" in text and words in text and "40" in text
    assert [e["step"] for e in sel.excluded] == [30] and words in sel.excluded[0]["problem"]


def test_missing_best_is_named_and_replaced(real_adapter, tmp_path):
    checkpoints = {s: "ok" for s, _ in EVALS if s != 30}
    run = make_run(tmp_path / "run", EVALS, checkpoints, real_adapter)
    sel = choose_candidates(load_history(run), "hf:patience=2", top_k=2)
    assert [c.step for c in sel.candidates] == [40, 50]
    assert any("checkpoint-30 is missing" in n and "step 40" in n for n in sel.notes)


def test_pickle_checkpoint_needs_the_opt_in_and_the_output_names_it(real_adapter, tmp_path):
    checkpoints = {s: "ok" for s, _ in EVALS}
    checkpoints[30] = "pickle"
    run = make_run(tmp_path / "run", EVALS, checkpoints, real_adapter)
    history = load_history(run)
    sel = choose_candidates(history, "hf:patience=2")
    assert sel.candidates[0].step == 40  # another checkpoint is chosen ...
    assert any("checkpoint-30" in n and "--allow-pickle" in n for n in sel.notes)  # ... and the output says so
    sel = choose_candidates(history, "hf:patience=2", allow_pickle=True)
    assert sel.candidates[0].step == 30 and sel.candidates[0].pickle
    assert any("--allow-pickle" in n and "weights_only=True" in n for n in sel.notes)


def test_non_finite_values_are_never_candidates(real_adapter, tmp_path):
    evals = [(10, 2.0), (20, float("nan")), (30, 1.5), (40, float("inf")), (50, 1.7)]
    run = make_run(tmp_path / "run", evals, {s: "ok" for s, _ in evals}, real_adapter)
    sel = choose_candidates(load_history(run), "hf:patience=5", top_k=5)
    assert [c.step for c in sel.candidates] == [30, 50, 10]
    assert all(math.isfinite(c.logged_value) for c in sel.candidates)
    assert any("only 3 usable" in n for n in sel.notes)


def test_max_mode_metric_ranks_highest_first(real_adapter, tmp_path):
    from transformers import TrainerState

    run = make_run(tmp_path / "run", EVALS, {s: "ok" for s, _ in EVALS}, real_adapter)
    state = json.loads((run / "trainer_state.json").read_text())
    for row in state["log_history"]:
        if "eval_loss" in row:
            row["eval_accuracy"] = 1.0 / row["eval_loss"]
    TrainerState(**{k: v for k, v in state.items() if k in ("global_step", "max_steps", "log_history")}
                 ).save_to_json(str(run / "trainer_state.json"))
    sel = choose_candidates(load_history(run), "hf:patience=2", metric="eval_accuracy", top_k=2)
    assert sel.mode == "max" and [c.step for c in sel.candidates] == [30, 40]


def test_no_usable_checkpoint_is_an_error_listing_each_problem(real_adapter, tmp_path):
    run = make_run(tmp_path / "run", EVALS[:2], {10: "truncated", 20: "empty"}, real_adapter)
    problems = "no usable checkpoint.*checkpoint-10: .*cut short.*checkpoint-20: .*empty"
    with pytest.raises(CheckpointError, match=problems):
        choose_candidates(load_history(run), "hf")
    bare = make_run(tmp_path / "bare", EVALS[:2], {}, real_adapter)
    with pytest.raises(CheckpointError, match="no checkpoint-N folders"):
        choose_candidates(load_history(bare), "hf")


def test_recorded_absolute_paths_are_never_followed(real_adapter, tmp_path):
    elsewhere = make_run(tmp_path / "elsewhere", EVALS, {30: "ok"}, real_adapter)
    run = make_run(tmp_path / "run", EVALS, {20: "ok", 40: "ok"}, real_adapter,
                   best_model_checkpoint=str(elsewhere / "checkpoint-30"))
    sel = choose_candidates(load_history(str(run)), "hf:patience=2")
    assert sel.candidates[0].path == str(run / "checkpoint-40")
    assert all(str(elsewhere) not in c.path for c in sel.candidates)


def test_base_model_resolution_order(real_adapter, tiny_model_dir, tmp_path):
    run = make_run(tmp_path / "run", EVALS[:1], {10: "ok"}, real_adapter)
    ck = run / "checkpoint-10"
    assert resolve_base(None, ck, run, None) == (tiny_model_dir, "checkpoint-10/adapter_config.json")
    other = tmp_path / "other-base"
    shutil.copytree(tiny_model_dir, other)
    assert resolve_base(str(other), ck, run, None) == (other, "--base")
    cfg = json.loads((ck / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "/nowhere/Qwen2.5-7B"
    (ck / "adapter_config.json").write_text(json.dumps(cfg))
    manifest = {"model": {"name": "tiny", "path": str(tiny_model_dir), "local": True, "kind": "lora"}}
    assert resolve_base(None, ck, run, manifest) == (tiny_model_dir, "logsage_run.json")
    with pytest.raises(CheckpointError, match="not found locally.*/nowhere/Qwen2.5-7B.*pass --base"):
        resolve_base(None, ck, run, None)
    with pytest.raises(UsageError, match="--base /missing"):
        resolve_base("/missing", ck, run, manifest)


def test_cli_without_eval_data_says_it_skipped_reevaluation(real_adapter, tmp_path):
    run = make_run(tmp_path / "run", EVALS, {s: "ok" for s, _ in EVALS if s != 30}, real_adapter)
    r = CliRunner().invoke(cli, ["select", str(run), "--rule", "hf:patience=2", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)  # exactly one strict JSON document on stdout
    assert doc["selected_step"] == 40 and isinstance(doc["selected_step"], int)
    assert "no --eval-data" in doc["reevaluation_skipped"] and doc["reevaluation"] is None
    assert any("checkpoint-30 is missing" in n for n in doc["notes"])
    assert doc["run"] == str(run)


def test_cli_usage_errors_exit_2(real_adapter, tmp_path):
    run = make_run(tmp_path / "run", EVALS[:1], {10: "ok"}, real_adapter)
    r = CliRunner().invoke(cli, ["select", str(run), "--rule", "hf", "--merge"])
    assert r.exit_code == 2 and "--merge needs --export" in r.output
    r = CliRunner().invoke(cli, ["select", str(run), "--rule", "nosuchrule"])
    assert r.exit_code == 2 and "unknown rule" in r.output


# ---------------------------------------------------------------------------- end to end on a trained run
@pytest.mark.slow
def test_select_top_k_reevaluates_with_the_run_eval_set_and_exports_merged(tiny_run_dir, tmp_path):
    out = tmp_path / "ship"
    t0 = time.perf_counter()
    r = CliRunner().invoke(cli, ["select", str(tiny_run_dir), "--rule", "hf:patience=1", "--top-k", "3",
                                 "--export", str(out), "--merge", "--json"])
    elapsed = time.perf_counter() - t0
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    ev = doc["reevaluation"]
    assert ev is not None and len(ev["results"]) == 3
    for c in doc["candidates"]:  # the manifest's eval set and settings reproduce the logged eval_loss
        assert abs(c["reevaluated"]["loss"] - c["logged_value"]) <= 1e-3 * abs(c["logged_value"])
        assert c["reevaluated"]["perplexity"] == pytest.approx(math.exp(c["reevaluated"]["loss"]))
        # the loss-only re-evaluation states its difference from the logged value (lost once behind generation)
        assert c["difference"] == pytest.approx(c["reevaluated"]["loss"] - c["logged_value"])
    assert doc["selected_step"] == ev["ranking"][0]
    assert doc["differs_from_rule"] == (doc["selected_step"] != doc["rule_step"])
    assert ev["paired_test"] is not None and ev["paired_test"]["n_examples"] == 8
    prov = json.loads((out / "logsage_selection.json").read_text())
    assert prov["selected_step"] == doc["selected_step"] and prov["rule"] == "hf"
    assert prov["params"]["patience"] == 1 and prov["export"]["kind"] == "merged"
    assert doc["export"]["verification"]["logits"]["passed"]
    print(f"select --top-k 3 --export --merge on the tiny run: {elapsed:.1f} s")
    assert elapsed < 120  # "well under a minute" on an idle machine; generous here for a shared CPU


@pytest.mark.slow
def test_select_exports_the_rule_pick_as_an_adapter(tiny_run_dir, tmp_path):
    out = tmp_path / "adapter"
    r = CliRunner().invoke(cli, ["select", str(tiny_run_dir), "--rule", "hf:patience=1", "--export", str(out),
                                 "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    step = doc["selected_step"]
    assert doc["rule_step"] == step and len(doc["candidates"]) == 1
    src = tiny_run_dir / f"checkpoint-{step}"
    assert (out / "adapter_model.safetensors").read_bytes() == (src / "adapter_model.safetensors").read_bytes()
    assert (out / "chat_template.jinja").exists() and (out / "tokenizer.json").exists()
    r = CliRunner().invoke(cli, ["select", str(tiny_run_dir), "--rule", "hf:patience=1", "--export", str(out)])
    assert r.exit_code == 1 and "already exists" in r.output and "--force" in r.output


def test_choosing_without_eval_or_export_never_imports_torch(real_adapter, tmp_path):
    import subprocess
    import sys

    run = make_run(tmp_path / "run", EVALS, {s: "ok" for s, _ in EVALS}, real_adapter)
    code = ("import sys, json\n"
            "from click.testing import CliRunner\n"
            "from logsage.cli.main import cli\n"
            "r = CliRunner().invoke(cli, ['select', '--help'])\n"
            "assert r.exit_code == 0\n"
            f"r = CliRunner().invoke(cli, ['select', {str(run)!r}, '--rule', 'hf:patience=2', '--json'])\n"
            "assert r.exit_code == 0, r.output\n"
            "assert json.loads(r.stdout)['selected_step'] == 30\n"
            "r = CliRunner().invoke(cli, ['prune', '--help'])\n"
            "print(','.join(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout}"


def test_manifest_eval_data_is_found_from_another_folder(tmp_path, monkeypatch):
    # Training ran in `work/` with a relative --eval-data; select runs from elsewhere.
    from logsage.ship.runfacts import manifest_eval_data
    from logsage.train.manifest import data_entry

    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "data" / "eval.jsonl").write_text('{"instruction": "hi", "output": "hello"}\n')
    monkeypatch.chdir(work)
    entry = data_entry("data/eval.jsonl", 1)
    manifest = {"config": {"eval_data": ["data/eval.jsonl"], "seed": 42}, "data": {"eval": [entry], "train": []}}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    data, warnings = manifest_eval_data(manifest, tmp_path / "run")
    assert warnings == [] and data is not None
    assert data.files == [str(work / "data" / "eval.jsonl")]


def test_generation_without_a_loss_reevaluation_reports_the_candidates(real_adapter, tiny_model_dir, tmp_path):
    """--eval-generate on a run with no eval data: generation results exist, loss results do not; the
    candidate rows get their generation scores and no loss difference (found by mypy: this crashed)."""
    from conftest import EXAMPLES_DATA

    run = make_run(tmp_path / "run", EVALS, {s: "ok" for s, _ in EVALS}, real_adapter)
    res = CliRunner().invoke(cli, [
        "select", str(run), "--rule", "hf:patience=2", "--top-k", "2", "--base", str(tiny_model_dir),
        "--eval-generate", str(Path(EXAMPLES_DATA) / "tiny_translate.jsonl"), "--max-new-tokens", "2", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["reevaluation"]["results"] == []
    rows = {c["step"]: c for c in doc["candidates"]}
    assert sorted(rows) == [30, 40]
    for c in rows.values():
        assert "generated" in c and "difference" not in c
