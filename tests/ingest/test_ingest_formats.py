"""The text-log readers on the real runs of the shared corpus ../shared/real-runs/ (ms-swift, LLaMA-Factory,
Lightning CSV, TensorBoard long CSV, wide CSV, axolotl model card).

Expected figures come from each run's SOURCE.txt / INDEX.md (written from the source
repositories, independently of logsage) or from a second log of the same run.
Edge cases on synthetic files are in test_text_layouts.py; fixtures written by the
real Lightning / Keras / MLflow writers are in test_ingest_writers.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import logsage
from corpus import REAL_RUNS, needs_corpus

REAL = REAL_RUNS

# format folder -> reader name, and the log file of each run (for single-file and forced-format reads)
FORMAT_OF = {
    "msswift_logging_jsonl": "swift",
    "llamafactory_trainer_log": "llamafactory",
    "lightning_csv": "lightning",
    "tb_scalars_long_csv": "tb-csv",
    "wide_metrics_csv": "wide",
    "axolotl_model_card": "model-card",
}
LOG_GLOB = {"swift": "logging.jsonl", "llamafactory": "trainer_log.jsonl", "lightning": "metrics.csv",
            "tb-csv": "*.csv", "wide": "*.csv", "model-card": "README.md"}


def _source(run_dir: Path) -> dict:
    """Facts stated in a run's SOURCE.txt."""
    text = (run_dir / "SOURCE.txt").read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("primary eval series: "))
    series = line[len("primary eval series: "):].split(" (")[0]
    n_evals = int(re.search(r"\((\d+) eval points", line)[1])
    fbl = re.search(r"first / best / last: ([\d.e+-]+) / ([\d.e+-]+) \(eval #(\d+)\) / ([\d.e+-]+)", text)
    train = re.search(r"train loss present: yes \((\d+) train-loss points\)", text)
    return {"series": series, "n_evals": n_evals,
            "first": float(fbl[1]), "best": float(fbl[2]), "best_at": int(fbl[3]), "last": float(fbl[4]),
            "n_train": int(train[1]) if train else None}


RUNS = sorted((d.parent.name, d) for fmt in FORMAT_OF for d in (REAL / fmt).glob("*/") if (d / "SOURCE.txt").exists())


@needs_corpus
def test_all_real_runs_of_these_formats_are_copied():
    # INDEX.md: 2 swift, 1 LLaMA-Factory, 6 Lightning, 2 TB long CSV, 3 wide CSV, 6 model cards.
    counts = {fmt: sum(1 for f, _ in RUNS if f == fmt) for fmt in FORMAT_OF}
    assert counts == {"msswift_logging_jsonl": 2, "llamafactory_trainer_log": 1, "lightning_csv": 6,
                      "tb_scalars_long_csv": 2, "wide_metrics_csv": 3, "axolotl_model_card": 6}


@needs_corpus
@pytest.mark.parametrize("fmt,run_dir", RUNS, ids=[f"{FORMAT_OF[f]}:{d.name}" for f, d in RUNS])
def test_real_run_folder_matches_its_source(fmt, run_dir):
    src = _source(run_dir)
    h = logsage.load_history(run_dir)
    assert h.format == FORMAT_OF[fmt]
    assert h.path == str(run_dir)
    s = h.metric(src["series"])
    assert s.kind == "eval"
    assert len(s) == src["n_evals"]
    assert s.values[0] == pytest.approx(src["first"], rel=1e-4)
    assert s.values[-1] == pytest.approx(src["last"], rel=1e-4)
    assert s.values[src["best_at"] - 1] == pytest.approx(src["best"], rel=1e-4)
    # "Training Loss" of a model card is blank ("No log") in every row of one run: no series then.
    if src["n_train"] and run_dir.name != "internvl2-2b-full-8ep":  # that one counts raw (doubled) lines; see below
        assert len(h.train_loss()) == src["n_train"]
    assert np.all(np.diff(s.steps) > 0)


@needs_corpus
@pytest.mark.parametrize("fmt,run_dir", RUNS, ids=[f"{FORMAT_OF[f]}:{d.name}" for f, d in RUNS])
def test_real_run_description_is_strict_json(fmt, run_dir):
    # What `logsage ingest --json` prints: meta from YAML/JSON side files must serialize strictly.
    doc = logsage.load_history(run_dir).summary_dict()
    assert json.loads(json.dumps(doc, allow_nan=False))["format"] == FORMAT_OF[fmt]


@needs_corpus
@pytest.mark.parametrize("fmt,run_dir", RUNS, ids=[f"{FORMAT_OF[f]}:{d.name}" for f, d in RUNS])
def test_real_log_file_auto_and_forced_format_agree(fmt, run_dir):
    name = FORMAT_OF[fmt]
    log = next(run_dir.glob(LOG_GLOB[name]))
    auto = logsage.load_history(log)
    forced = logsage.load_history(log, format=name)
    assert auto.format == forced.format == name
    assert auto.series.keys() == forced.series.keys()
    primary = _source(run_dir)["series"]
    np.testing.assert_array_equal(auto.metric(primary).values, forced.metric(primary).values)


# ----------------------------------------------------------------------------- ms-swift
@needs_corpus
def test_swift3_steps_budget_wall_times_and_final_line():
    run = REAL / "msswift_logging_jsonl" / "deepseek-r1-qwen3-8b-lora-climate"
    h = logsage.load_history(run)
    ev = h.metric("eval_loss")
    assert ev.steps.tolist() == [100, 200, 300, 400, 438]  # eval_steps 100 + the final step
    assert h.max_steps == 438  # only stated inside "global_step/max_steps": "10/438"
    # The eval line at step 100 says "elapsed_time": "10m 52s" (seconds since the run started).
    assert ev.wall_times[0] == 652.0 and h.meta["wall_time_origin"] == "run_start"
    assert h.meta["best_model_checkpoint"].endswith("checkpoint-400")
    assert h.meta["best_metric"] == pytest.approx(0.129322, abs=1e-6)  # SOURCE: best 0.129322 (eval #4)
    assert h.summary["train_loss"] == pytest.approx(0.28420261)
    assert "train_runtime" in h.meta
    # The summary's embedded log_history repeats the curve: it is not read twice.
    assert len(h.metric("eval_token_acc")) == 5
    kinds = {c.kind for c in h.cleanups}
    assert "rounded" in kinds
    assert h.series["eval_loss"].precision == "rounded"


@needs_corpus
def test_swift3_agrees_with_the_trainer_state_of_the_same_run():
    # hf_trainer_state/deepseek-r1-qwen3-8b-lora-climate-msswift is checkpoint-400's trainer_state.json
    # of the same run (4 evals); ms-swift rounds to 8 decimals.
    swift = logsage.load_history(REAL / "msswift_logging_jsonl" / "deepseek-r1-qwen3-8b-lora-climate")
    state = logsage.load_history(REAL / "hf_trainer_state" / "deepseek-r1-qwen3-8b-lora-climate-msswift")
    a, b = swift.metric("eval_loss"), state.metric("eval_loss")
    assert b.steps.tolist() == a.steps[:4].tolist()
    np.testing.assert_allclose(a.values[:4], b.values, atol=5.1e-9, rtol=0)
    la, lb = swift.metric("loss"), state.metric("loss")
    common = np.intersect1d(la.steps, lb.steps)
    assert common.size >= 40
    np.testing.assert_allclose(la.values[np.isin(la.steps, common)], lb.values[np.isin(lb.steps, common)],
                               atol=5.1e-9, rtol=0)


@needs_corpus
def test_swift2_double_written_records_are_deduplicated_and_accounted_for():
    run = REAL / "msswift_logging_jsonl" / "internvl2-2b-full-8ep"
    h = logsage.load_history(run)
    ev = h.metric("eval_loss")
    assert ev.steps.tolist() == [6000, 12000, 14776]  # SOURCE: 6 eval lines for 3 evals
    assert ev.values.tolist() == pytest.approx([0.46174121, 0.53439045, 0.53410453])
    # Every raw line is either a kept point or a counted repeat: nothing dropped silently.
    lines = [json.loads(x) for x in (run / "logging.jsonl").read_text().splitlines()]
    raw_loss_lines = sum(1 for r in lines if "loss" in r)
    raw_eval_lines = sum(1 for r in lines if "eval_loss" in r)
    assert raw_loss_lines == 5911  # SOURCE.txt's "5911 train-loss points" counts the doubled lines
    repeated = sum(c.count for c in h.cleanups if c.kind == "duplicates" and c.metric is None)
    assert len(h.metric("loss")) + len(ev) + repeated == raw_loss_lines + raw_eval_lines
    assert h.meta["best_metric"] == pytest.approx(0.53410453)
    assert h.meta["train_runtime"] == pytest.approx(30049.8413)
    assert h.summary["train_loss"] == pytest.approx(0.08521508)
    assert h.max_steps == 14776  # no budget in 2.x lines: the last step


# ----------------------------------------------------------------------------- LLaMA-Factory
@needs_corpus
def test_llamafactory_budget_lr_alias_and_elapsed_time():
    run = REAL / "llamafactory_trainer_log" / "qwen2.5-7b-medical-lora"
    h = logsage.load_history(run)
    assert h.max_steps == 6750
    assert h.metric("learning_rate").name == "lr"
    ev = h.metric("eval_loss")
    assert ev.steps[0] == 500 and ev.wall_times[0] == 29 * 60 + 27  # "elapsed_time": "0:29:27"
    # The last progress line says 6:48:06; the run's all_results.json says train_runtime 24486.754 s.
    assert h.meta["elapsed_seconds_last"] == 6 * 3600 + 48 * 60 + 6
    assert h.meta["elapsed_seconds_last"] == pytest.approx(h.summary["train_runtime"], abs=1)
    assert h.epoch_at([6750])[0] == pytest.approx(3.0)


# ----------------------------------------------------------------------------- Lightning CSV
@needs_corpus
def test_lightning_sparse_rows_epoch_and_hparams():
    run = REAL / "lightning_csv" / "slm-sweep-v5"
    h = logsage.load_history(run)
    assert h.meta["hparams"]["d_model"] == 492 and h.meta["hparams"]["num_epochs"] == 20
    val = h.metric("val_loss")
    assert val.steps[0] == 286  # the first validation row: "0,,286,,,,,,580.756591796875,6.3643317222595215,..."
    assert h.epoch_at([286])[0] == 0.0  # Lightning's 0-based epoch index, as written
    assert h.series["val_loss"].precision == "float32"
    # No NaN is invented for the blank cells of the sparse rows.
    assert all(s.n_non_finite == 0 for s in h.series.values())


# ----------------------------------------------------------------------------- TB long CSV vs wide CSV
PAIRS = ["gner-zse-llama3.2-1b", "gner-zse-flan-t5-large"]
DATASETS = ["average", "mit-movie", "mit-restaurant", "crossner_ai", "crossner_literature", "crossner_music",
            "crossner_politics", "crossner_science"]


@needs_corpus
@pytest.mark.parametrize("run", PAIRS)
def test_tb_long_csv_and_wide_csv_of_one_run_give_the_same_curves(run):
    tb = logsage.load_history(REAL / "tb_scalars_long_csv" / run)
    wide = logsage.load_history(REAL / "wide_metrics_csv" / run)
    for ds in DATASETS:
        a, b = tb.series[f"eval/{ds}"], wide.series[f"eval_{ds}"]
        assert a.canonical == b.canonical
        np.testing.assert_array_equal(a.steps, b.steps)
        np.testing.assert_allclose(a.values, b.values, rtol=1e-6)  # float32 events vs float64 dump
    np.testing.assert_array_equal(tb.metric("loss").steps, wide.metric("loss").steps)
    np.testing.assert_allclose(tb.metric("loss").values, wide.metric("loss").values, rtol=1e-6, atol=1e-7)
    assert tb.series["eval/average"].precision == "float32"
    # The wall times are the long CSV's wall_time column for that tag (read here with the csv module).
    import csv

    with open(next((REAL / "tb_scalars_long_csv" / run).glob("*.csv")), newline="") as f:
        wall = {int(r["step"]): float(r["wall_time"]) for r in csv.DictReader(f) if r["tag"] == "eval/average"}
    s = tb.series["eval/average"]
    assert sorted(wall) == s.steps.tolist()
    np.testing.assert_array_equal(s.wall_times, [wall[t] for t in s.steps.tolist()])


@needs_corpus
@pytest.mark.parametrize("run", PAIRS + ["gner-zse-phi3-4b"])
def test_wide_final_reevaluation_row_is_summary_not_a_curve_point(run):
    path = next((REAL / "wide_metrics_csv" / run).glob("*.csv"))
    rows = path.read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(",")))  # the best model re-evaluated, after the summary row
    h = logsage.load_history(path)
    ev = h.metric("eval_average")
    assert ev.steps[-1] == int(last["step"])
    assert ev.values[-1] != pytest.approx(float(last["eval_average"]))
    assert h.summary["eval_average"] == pytest.approx(float(last["eval_average"]))
    assert "train_runtime" in h.summary and "train_loss" in h.summary
    assert "train_loss" not in h.series  # a summary value, not a curve (it would alias 'loss')
    dup = [c for c in h.cleanups if c.kind == "duplicates"]
    assert [c.count for c in dup] == [1]


@needs_corpus
def test_tb_long_csv_summary_scalars_are_not_curves():
    h = logsage.load_history(REAL / "tb_scalars_long_csv" / "gner-zse-llama3.2-1b")
    assert "train/train_runtime" not in h.series
    assert h.summary["train/train_runtime"] == pytest.approx(86151.92, rel=1e-6)
    # The wide dump of the same run states the same runtime.
    wide = logsage.load_history(REAL / "wide_metrics_csv" / "gner-zse-llama3.2-1b")
    assert h.meta["train_runtime"] == pytest.approx(wide.meta["train_runtime"], rel=1e-6)


# ----------------------------------------------------------------------------- model cards
@needs_corpus
def test_model_card_table_config_and_rounding():
    run = REAL / "axolotl_model_card" / "finlora-ner-llama3.1-8b-fp16-r8"
    h = logsage.load_history(run)
    assert h.primary_eval_metric() == "Validation Loss"
    assert h.series["Validation Loss"].canonical == "eval_loss"
    assert h.series["Validation Loss"].precision == "rounded"
    assert any(c.kind == "rounded" for c in h.cleanups)
    # INDEX.md: axolotl LoRA r=8, 4 epochs, evals_per_epoch 4; the first eval is at step 1.
    assert h.meta["lora_r"] == 8 and h.meta["num_epochs"] == 4 and h.meta["evals_per_epoch"] == 4
    assert h.meta["axolotl_version"].startswith("0.9.1")  # the card says `0.9.1.post1`
    assert h.series["Validation Loss"].steps[0] == 1
    # "It achieves the following results on the evaluation set: - Loss: ..." is the final eval.
    assert h.summary["eval_loss"] == pytest.approx(h.series["Validation Loss"].values[-1])


@needs_corpus
def test_model_card_without_train_loss_has_no_train_series():
    h = logsage.load_history(REAL / "axolotl_model_card" / "finlora-financebench-llama3.1-8b-8bits-r8-dora")
    assert h.train_loss() is None  # every "Training Loss" cell is "No log"
    assert len(h.metric("eval_loss")) == 17


def test_readme_without_training_results_is_not_claimed(tmp_path):
    from logsage.ingest.readers import model_card

    card = tmp_path / "README.md"
    card.write_text("# my model\n\n| a | b |\n|---|---|\n| 1 | 2 |\n")
    assert not model_card.claims(card, card.read_bytes()[:4096])
    with pytest.raises(logsage.LogsageError, match="not a log format"):
        logsage.load_history(card)

