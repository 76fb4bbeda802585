"""Generation re-evaluation (select/evaluate --eval-generate) on a real tiny run whose checkpoints differ in exact match.

The run: the tiny Qwen2 with LoRA learns 12 English->French word pairs
(examples/data/tiny_translate.jsonl) for 180 steps, evaluated every 30 steps on the
unrelated tiny_alpaca_eval.jsonl. Its eval loss there is lowest early while the
translations (the prompts file is the training file) get right later, so the loss
and exact match pick different checkpoints - measured here, not assumed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES_DATA, train_tiny_cli
from logsage.cli.main import cli

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning"), pytest.mark.filterwarnings("ignore::UserWarning")]
PROMPTS = os.path.join(EXAMPLES_DATA, "tiny_translate.jsonl")
LOSS_EVAL = os.path.join(EXAMPLES_DATA, "tiny_alpaca_eval.jsonl")
MAX_NEW = "8"


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Generate on one thread: on a small shared CPU, two threads contend and run many times slower."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def gen_run(tmp_path_factory, tiny_model_dir):
    out = tmp_path_factory.mktemp("gen-run") / "run"
    code, doc = train_tiny_cli([
        "--model", str(tiny_model_dir), "--data", PROMPTS, "--eval-data", LOSS_EVAL, "--output", str(out),
        "--save-all", "--num-train-epochs", "60", "--per-device-train-batch-size", "4",
        "--per-device-eval-batch-size", "4", "--eval-steps", "30", "--logging-steps", "10",
        "--learning-rate", "5e-3", "--warmup-ratio", "0", "--lr-scheduler-type", "constant",
        "--seed", "0", "--device", "cpu",
    ])
    assert code == 0, doc
    return out


def logged_losses(run: Path) -> dict[int, float]:
    state = json.loads((run / "trainer_state.json").read_text())
    return {int(r["step"]): float(r["eval_loss"]) for r in state["log_history"] if "eval_loss" in r}


def plain_generate(base_dir: Path, adapter: Path, prompts: list[dict]) -> list[str]:
    """The reference: a fresh base + adapter, one prompt at a time, plain model.generate, no batching."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(adapter if (adapter / "tokenizer_config.json").exists() else base_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter).eval()
    out = []
    for p in prompts:
        text = tok.apply_chat_template([{"role": "user", "content": f"{p['instruction']}\n{p['input']}"}],
                                       add_generation_prompt=True, tokenize=False)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**ids, do_sample=False, max_new_tokens=int(MAX_NEW))
        out.append(tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    return out


class CountLoads:
    def __init__(self, monkeypatch):
        import transformers

        self.calls: list[str] = []
        real = transformers.AutoModelForCausalLM.from_pretrained.__func__

        def counting(cls, *args, **kwargs):
            self.calls.append(str(args[0]))
            return real(cls, *args, **kwargs)

        monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(counting))


def invoke(args: list[str]):
    return CliRunner().invoke(cli, args, catch_exceptions=False)


@pytest.mark.slow
def test_select_top_k_ranks_by_exact_match_like_a_plain_generate_loop(gen_run, tmp_path, monkeypatch):
    loads = CountLoads(monkeypatch)
    export = tmp_path / "ship"
    res = invoke(["select", str(gen_run), "--rule", "hf:patience=3", "--top-k", "3", "--eval-generate", PROMPTS,
                  "--max-new-tokens", MAX_NEW, "--export", str(export), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert len(loads.calls) == 1  # K=3 candidates, loss and generation: one model load
    gen = doc["reevaluation"]["generation"]
    steps = [c["step"] for c in doc["candidates"]]
    assert len(steps) == 3

    # The same ranking from a plain generate loop, candidate by candidate.
    manifest = json.loads((gen_run / "logsage_run.json").read_text())
    base_dir = Path(manifest["model"]["path"])
    prompts = [json.loads(line) for line in Path(PROMPTS).read_text().splitlines()]
    logged = logged_losses(gen_run)
    plain = {s: plain_generate(base_dir, gen_run / f"checkpoint-{s}", prompts) for s in steps}
    em = {s: sum(p == r["output"] for p, r in zip(plain[s], prompts)) / len(prompts) for s in steps}
    assert len(set(em.values())) == 3, em  # the checkpoints really differ in exact match
    expected = sorted(steps, key=lambda s: (-em[s], logged[s]))
    assert gen["ranking"] == expected == doc["reevaluation"]["ranking"]
    assert doc["selected_step"] == expected[0]
    assert {r["step"]: r["mean"] for r in gen["results"]} == pytest.approx(em)

    # Per-example records: every candidate x prompt, the batched predictions equal the plain loop's.
    records = doc["reevaluation"]["generations"]
    assert sorted((r["step"], r["index"]) for r in records) == sorted((s, i) for s in steps
                                                                      for i in range(len(prompts)))
    for r in records:
        assert r["prediction"] == plain[r["step"]][r["index"]]
        assert r["score"] == float(r["prediction"] == prompts[r["index"]]["output"])
        assert r["id"] == prompts[r["index"]]["id"] and r["reference"] == prompts[r["index"]]["output"]

    # ... and the same records beside the export's selection file, named there with their sha256.
    import hashlib

    jsonl = export / "logsage_generations.jsonl"
    assert [json.loads(x) for x in jsonl.read_text().splitlines()] == records
    selection = json.loads((export / "logsage_selection.json").read_text())
    named = selection["reevaluation"]["generations_file"]
    assert named["records"] == len(records) and "generations" not in selection["reevaluation"]
    assert named["sha256"] == hashlib.sha256(jsonl.read_bytes()).hexdigest()

    # The report shows the table from the selection file.
    html_out = tmp_path / "report.html"
    res = invoke(["report", str(gen_run), "--selection", str(export / "logsage_selection.json"),
                  "--out", str(html_out)])
    assert res.exit_code == 0, res.output
    page = html_out.read_text()
    assert '<section class="reeval">' in page and "exact match" in page
    for s in steps:
        assert f'<td class="num" data-v="{s}">{s}</td>' in page


@pytest.mark.slow
def test_loss_and_exact_match_disagree_and_the_output_says_so(gen_run, tmp_path, monkeypatch):
    loads = CountLoads(monkeypatch)
    logged = logged_losses(gen_run)
    steps = sorted(logged)  # every checkpoint: K = 6
    out_file = tmp_path / "eval.json"
    res = invoke(["evaluate", str(gen_run), "--checkpoints", ",".join(map(str, steps)), "--eval-generate", PROMPTS,
                  "--max-new-tokens", MAX_NEW, "--out", str(out_file)])
    assert res.exit_code == 0, res.output
    assert len(loads.calls) == 1  # six adapters, one base load
    doc = json.loads(out_file.read_text())
    gen = doc["reevaluation"]["generation"]
    loss = {r["step"]: r["loss"] for r in doc["reevaluation"]["results"]}
    for s in steps:  # the re-evaluated loss is the logged one (the run's own eval set from its manifest)
        assert loss[s] == pytest.approx(logged[s], rel=1e-4)
    loss_best = min(loss, key=loss.get)
    em = {r["step"]: r["mean"] for r in gen["results"]}
    em_best = gen["best_step"]
    assert em[em_best] == max(em.values()) and em[loss_best] < em[em_best]  # they disagree, measured
    said = f"eval_loss picks {loss_best}; exact match picks {em_best}: {em[em_best]:.2f} vs {em[loss_best]:.2f}, p = "
    assert said in res.output and "loss and exact match disagree" in res.output
    assert gen["disagreement"].startswith(f"re-evaluated {said}")
    test = next(t for t in gen["paired_tests"] if t["b_step"] == loss_best)
    assert test["test"] == "mcnemar-exact" and test["p"] < 0.05
    # Every candidate x prompt beside the --out file.
    side = out_file.parent / "eval.generations.jsonl"
    rows = [json.loads(x) for x in side.read_text().splitlines()]
    assert len(rows) == len(steps) * 12 and {r["step"] for r in rows} == set(steps)
    # Not distinguishable from the best: exactly those whose McNemar p >= 0.05, and said so.
    same = [t["b_step"] for t in gen["paired_tests"] if t["p"] >= 0.05]
    assert gen["indistinguishable_from_best"] == same
    if same:
        assert f"not distinguishable from it at p<0.05: step(s) {', '.join(map(str, same))}" in res.output

    # --select-by loss ranks the same candidates by the loss, and gen-then-loss by loss within the tie group.
    res = invoke(["evaluate", str(gen_run), "--checkpoints", ",".join(map(str, steps)), "--eval-generate", PROMPTS,
                  "--max-new-tokens", MAX_NEW, "--select-by", "gen-then-loss", "--json"])
    doc2 = json.loads(res.stdout)
    pool = [em_best] + same
    assert doc2["ranking"][0] == min(pool, key=loss.get)
    assert doc2["reevaluation"]["generation"]["ranking"] == gen["ranking"]


@pytest.mark.slow
def test_generation_of_k_by_n_prompts_is_fast_on_the_tiny_model(gen_run):
    from logsage.ship.evaluate import evaluate_checkpoints
    from logsage.ship.generate import GenerationTask

    manifest = json.loads((gen_run / "logsage_run.json").read_text())
    steps = sorted(logged_losses(gen_run))[:3]
    task = GenerationTask(files=[PROMPTS], max_new_tokens=int(MAX_NEW))
    report = evaluate_checkpoints([(s, gen_run / f"checkpoint-{s}", "adapter") for s in steps],
                                  base=manifest["model"]["path"], eval_data=None, generation=task)
    assert report.results == [] and report.model_loads == 1
    seconds = sum(r["seconds"] for r in report.generation["results"])
    assert seconds < 20, seconds  # 3 x 12 prompts; about a second on an idle 2-core machine
    assert len(report.per_example) == 36


# ====================================================================== bad input
def _one_line_error(res, *needles):
    assert res.exit_code in (1, 2), res.output
    lines = [x for x in res.stderr.splitlines() if x.strip()]  # progress lines may come first
    errors = [x for x in lines if x.startswith("Error")]
    assert len(errors) == 1 and lines[-1] == errors[0], res.stderr
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


@pytest.mark.slow
@pytest.mark.parametrize("record, needle", [
    ({"instruction": "Translate the word into French.", "input": "sun"}, 'alpaca "output"'),
    ({"prompt": "Translate: sun"}, '"completion"'),
    ({"messages": [{"role": "user", "content": "Translate: sun"}]}, "the last message must be the assistant"),
    ({"messages": [{"role": "user", "content": "Translate: sun"}, {"role": "assistant", "content": "  "}]},
     "the last message must be the assistant"),
])
def test_a_prompt_without_a_reference_is_one_line_and_nothing_is_exported(gen_run, tmp_path, record, needle):
    prompts = tmp_path / "prompts.jsonl"
    good = Path(PROMPTS).read_text().splitlines()[:2]
    prompts.write_text("\n".join(good + [json.dumps(record)]) + "\n")
    export = tmp_path / "ship"
    res = invoke(["select", str(gen_run), "--rule", "hf:patience=3", "--top-k", "2", "--eval-generate",
                  str(prompts), "--export", str(export)])
    _one_line_error(res, f"{prompts}:3", needle, "add the expected answer")
    assert not export.exists() and not list(tmp_path.glob("ship*"))


@pytest.mark.slow
def test_an_unknown_metric_or_a_missing_extra_is_one_line(gen_run, tmp_path, monkeypatch):
    export = tmp_path / "ship"
    base = ["select", str(gen_run), "--rule", "hf:patience=3", "--top-k", "2", "--eval-generate", PROMPTS,
            "--export", str(export)]
    _one_line_error(invoke(base + ["--gen-metric", "accuracy"]), "--gen-metric accuracy: unknown metric",
                    "exact, contains, rouge-l, bleu", "MODULE:FUNCTION")
    _one_line_error(invoke(base + ["--gen-metric", "no_such_module_xyz:score"]), "cannot import no_such_module_xyz")
    import sys

    monkeypatch.setitem(sys.modules, "sacrebleu", None)  # as if the gen extra were not installed
    _one_line_error(invoke(base + ["--gen-metric", "bleu"]), "sacrebleu", "pip install 'logsage[gen]'")
    monkeypatch.delitem(sys.modules, "sacrebleu")
    no_prompts = [a for a in base if a not in ("--eval-generate", PROMPTS)]
    _one_line_error(invoke(no_prompts + ["--select-by", "gen"]), "--select-by gen", "add --eval-generate")
    assert not export.exists()


@pytest.mark.slow
def test_a_scorer_that_raises_names_the_record_and_nothing_is_exported(gen_run, tmp_path):
    scorer = tmp_path / "my_scorer.py"
    scorer.write_text("def score(prediction, reference):\n"
                      "    if reference == 'lune':\n"
                      "        raise ValueError('cannot score the moon')\n"
                      "    return float(prediction == reference)\n")
    export = tmp_path / "ship"
    res = invoke(["select", str(gen_run), "--rule", "hf:patience=3", "--top-k", "2", "--eval-generate", PROMPTS,
                  "--max-new-tokens", MAX_NEW, "--gen-metric", f"{scorer}:score", "--export", str(export)])
    line_no = next(i for i, x in enumerate(Path(PROMPTS).read_text().splitlines(), 1) if '"lune"' in x)
    _one_line_error(res, f"{PROMPTS}:{line_no}", "raised ValueError: cannot score the moon", "fix the scorer")
    assert not export.exists() and not list(tmp_path.glob("ship*"))


@pytest.mark.slow
def test_a_user_scorer_returning_no_number_and_a_working_one(gen_run, tmp_path):
    scorer = tmp_path / "scorers.py"
    scorer.write_text("def bad(prediction, reference):\n    return 'yes'\n\n"
                      "def first_letter(prediction, reference):\n"
                      "    return float(prediction[:1] == reference[:1])\n")
    base = ["evaluate", str(gen_run), "--checkpoints", "30,150", "--eval-generate", PROMPTS,
            "--max-new-tokens", MAX_NEW]
    _one_line_error(invoke(base + ["--gen-metric", f"{scorer}:bad"]), "returned str", "make it return a float")
    res = invoke(base + ["--gen-metric", f"{scorer}:first_letter", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    for r in doc["reevaluation"]["generations"]:  # anyone can recompute a score from the records
        assert r["score"] == float(r["prediction"][:1] == r["reference"][:1])
    assert doc["reevaluation"]["generation"]["paired_tests"][0]["test"] == "paired-bootstrap"  # not known 0/1
