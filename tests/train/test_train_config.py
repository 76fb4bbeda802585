"""`logsage train` configuration and command line: layers, preset, YAML, --help, early errors.

Nothing here trains; every error must come before a model is loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES_DATA
from logsage.cli.main import cli
from logsage.core.errors import DataError, UsageError
from logsage.train.config import DEFAULT_EVAL_SPLIT, PRESETS, TrainConfig, load_yaml, resolve_config

TRAIN = str(Path(EXAMPLES_DATA, "tiny_alpaca.jsonl"))
EVAL = str(Path(EXAMPLES_DATA, "tiny_alpaca_eval.jsonl"))


def test_layers_default_preset_yaml_command_line(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("preset: qwen2.5-7b-lora\nlearning-rate: 2e-4\nlora_r: 16\neval_steps: 10\n")
    cfg, origin = resolve_config({"data": [TRAIN], "output": "out", "lora_r": 4}, config_file=y)
    assert cfg.learning_rate == 2e-4 and origin["learning_rate"] == f"config:{y}"
    assert cfg.lora_r == 4 and origin["lora_r"] == "command line"
    assert cfg.num_train_epochs == 10.0 and origin["num_train_epochs"] == "preset:qwen2.5-7b-lora"
    assert cfg.gradient_accumulation_steps == 16 and cfg.bf16 is True
    assert cfg.lora_dropout == TrainConfig().lora_dropout and origin["lora_dropout"] == "default"


def test_preset_matches_the_guide():
    # the numbers of shared/reference/seed-rules.md (ms-swift guide for Qwen2.5-7B LoRA)
    p = PRESETS["qwen2.5-7b-lora"].values
    assert (p["learning_rate"], p["lora_r"], p["lora_alpha"], p["target_modules"], p["num_train_epochs"],
            p["per_device_train_batch_size"], p["gradient_accumulation_steps"], p["warmup_ratio"], p["bf16"],
            p["max_length"]) == (1e-4, 8, 32, "all-linear", 10, 1, 16, 0.05, True, 2048)
    assert set(PRESETS["qwen2.5-7b-lora"].sources) == set(p)  # every number says where it comes from


def test_unknown_yaml_key_names_the_closest(tmp_path):
    y = tmp_path / "run.yaml"
    y.write_text("learnig_rate: 1e-4\n")
    with pytest.raises(UsageError, match=r"unknown key 'learnig_rate'; did you mean 'learning_rate'\?"):
        load_yaml(y)
    y.write_text("lora_r: eight\n")
    with pytest.raises(UsageError, match=r"lora_r must be an int, got 'eight'"):
        load_yaml(y)


@pytest.mark.parametrize("overrides, fragment", [
    ({"bf16": True, "fp16": True}, "exclude each other"),
    ({"eval_split": 0.1, "eval_data": [EVAL]}, "--eval-data and --eval-split"),
    ({"save_all": True, "save_steps": 100, "eval_steps": 50}, "--save-steps 100 must equal --eval-steps 50"),
    ({"save_steps": 75, "eval_steps": 50}, "multiple of --eval-steps"),
    ({"learning_rate": 0}, "--learning-rate must be > 0"),
    ({"max_steps": 0}, "--max-steps must be > 0"),
    ({"device": "tpu"}, "device must be one of"),
])
def test_contradictions_are_usage_errors(overrides, fragment):
    with pytest.raises(UsageError, match=fragment):
        resolve_config({"data": [TRAIN], "output": "o", **overrides})


def test_eval_split_default():
    cfg, _ = resolve_config({"data": [TRAIN], "output": "o"})
    assert cfg.effective_eval_split == DEFAULT_EVAL_SPLIT
    cfg, _ = resolve_config({"data": [TRAIN], "eval_data": [EVAL], "output": "o"})
    assert cfg.effective_eval_split is None
    assert cfg.effective_save_steps == cfg.eval_steps


def test_help_shows_the_defaults_and_starts_without_torch():
    code = ("import sys\nfrom click.testing import CliRunner\nfrom logsage.cli.main import cli\n"
            "r = CliRunner().invoke(cli, ['train', '--help'])\nprint(r.output)\n"
            "print('TORCH', 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "TORCH False False" in out
    flat = " ".join(out.split())
    for text in ("--lora-r INTEGER LoRA rank. [default: 8]", "[default: 32]", "Dropout on the LoRA input. [default: 0.05]",
                 "--lr-scheduler-type", "[default: cosine]", "[default: 0.05]", "--per-device-eval-batch-size",
                 "Evaluate every N optimizer steps (and at the last step). [default: 50]", "--save-all",
                 "--early-stop RULE[:k=v,...]", "--preset [qwen2.5-7b-lora]", "[default: all-linear]",
                 "--resume-from-checkpoint [PATH|latest]"):
        assert text in flat, text


# ---------------------------------------------------------------------- CLI errors, before any model load
def _invoke(args):
    return CliRunner().invoke(cli, ["train", *args])


@pytest.mark.parametrize("rows, fragment", [
    ([{"instruction": "a"}], r'train.jsonl:1: alpaca record has no "output" field'),
    ([], "train.jsonl: the file is empty"),
])
def test_data_errors_win_over_a_missing_model(tmp_path, rows, fragment):
    f = tmp_path / "train.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = _invoke(["--model", str(tmp_path / "no-such-model"), "--data", str(f), "--eval-data", EVAL,
                 "--output", str(tmp_path / "run")])
    assert r.exit_code == 1
    assert r.output.startswith("Error: ") and fragment.replace("\\", "") in r.output
    assert len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_eval_set_smaller_than_a_batch_wins_over_a_missing_model(tmp_path):
    r = _invoke(["--model", str(tmp_path / "no-such-model"), "--data", TRAIN, "--eval-data", EVAL,
                 "--per-device-eval-batch-size", "16", "--output", str(tmp_path / "run")])
    assert r.exit_code == 1
    assert "the eval set has 8 example(s), fewer than one eval batch (16)" in r.output


def test_missing_model_folder_is_one_line(tmp_path):
    r = _invoke(["--model", str(tmp_path / "no-such-model"), "--data", TRAIN, "--eval-data", EVAL,
                 "--output", str(tmp_path / "run")])
    assert r.exit_code == 1 and "no such model folder" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_bad_live_rule_is_a_usage_error(tmp_path):
    r = _invoke(["--model", str(tmp_path / "m"), "--data", TRAIN, "--output", str(tmp_path / "run"),
                 "--early-stop", "hf:patiense=2"])
    assert r.exit_code == 2 and "unknown parameter 'patiense'" in r.output


def test_existing_run_needs_resume(tmp_path):
    (tmp_path / "run" / "checkpoint-4").mkdir(parents=True)
    r = _invoke(["--model", str(tmp_path / "m"), "--data", TRAIN, "--output", str(tmp_path / "run")])
    assert r.exit_code == 2 and "--resume-from-checkpoint latest" in r.output


def test_truncation_error_comes_before_the_model_is_loaded(tmp_path, tiny_model_dir, monkeypatch):
    import transformers

    def no_model(*a, **k):  # the model must never be loaded for a data error
        raise AssertionError("model loaded before the data was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    f = tmp_path / "train.jsonl"
    f.write_text(json.dumps({"instruction": "Translate the word into French. " * 20, "output": "chat"}) + "\n")
    from logsage.train.recipe import run_training

    with pytest.raises(DataError, match=r"train.jsonl:1: no response tokens left after truncation to --max-length 16"):
        run_training(model=str(tiny_model_dir), data=[str(f)], eval_data=[EVAL], output=str(tmp_path / "run"),
                     max_length=16, device="cpu")


def test_docs_list_every_option():
    from logsage.train.config import FIELDS, cli_flag

    doc = (Path(__file__).resolve().parents[2] / "docs" / "train.md").read_text()
    missing = [cli_flag(n) for n in FIELDS if f"`{cli_flag(n)}`" not in doc]
    assert not missing, f"docs/train.md lacks {missing}"


def test_example_config_is_valid():
    cfg, origin = resolve_config({"output": "o"}, config_file=Path(__file__).resolve().parents[2] / "examples" / "train_tiny.yaml")
    assert cfg.model == "tiny-random-qwen2" and cfg.save_all and cfg.device == "cpu"
    assert origin["model"].startswith("config:")


def test_paths_in_a_yaml_file_are_relative_to_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project" / "configs"
    (folder / "data").mkdir(parents=True)
    for name in ("train.jsonl", "eval.jsonl"):
        (folder / "data" / name).write_text(Path(TRAIN).read_text())
    (folder / "ds.json").write_text("{}")
    y = folder / "run.yaml"
    y.write_text("data: [data/train.jsonl]\neval_data: data/eval.jsonl\noutput: ../runs/a\n"
                 f"deepspeed: ds.json\nmodel: tiny-random-qwen2\nresume_from_checkpoint: latest\n")
    monkeypatch.chdir(tmp_path)  # anywhere but the YAML's folder
    cfg, origin = resolve_config({}, config_file=y)
    assert cfg.data == [str(folder / "data" / "train.jsonl")]
    assert cfg.eval_data == [str(folder / "data" / "eval.jsonl")]
    assert Path(cfg.output).resolve() == (tmp_path / "project" / "runs" / "a").resolve()
    assert cfg.deepspeed == str(folder / "ds.json")
    assert cfg.model == "tiny-random-qwen2" and cfg.resume_from_checkpoint == "latest"  # not paths
    # the command line stays relative to the working directory
    cfg2, _ = resolve_config({"output": "here"}, config_file=y)
    assert cfg2.output == "here"


def test_the_example_config_works_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg, _ = resolve_config({"output": "o"}, config_file=Path(__file__).resolve().parents[2] / "examples" / "train_tiny.yaml")
    assert all(Path(p).is_file() for p in [*cfg.data, *cfg.eval_data])
