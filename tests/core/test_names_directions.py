"""Directions of RL / preference metrics (TRL, ms-swift: DPO, ORPO, KTO, PPO, GRPO) and the inferred
direction printed by ingest, replay and tune."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import cli
from logsage.core.names import canonical_name, default_mode, direction, kind_of

# Metric names as TRL's trainers log them (dpo_trainer, kto_trainer, orpo_trainer, ppo_trainer,
# grpo_trainer) and ms-swift's GRPO (reward, reward_std, rewards/<ORM>/mean), with the direction a
# user stopping on them wants.
MIN = ["kl", "objective/kl", "policy/approxkl_avg", "completions/clipped_ratio", "clip_ratio/low_mean",
       "clip_ratio/region_mean", "policy/clipfrac_avg", "val/clipfrac_avg", "frac_reward_zero_std",
       "rewards/rejected", "eval_rewards/rejected", "eval_logps/rejected", "logps/rejected", "val/ratio_var",
       "loss/value_avg", "loss/policy_avg", "nll_loss", "eval_loss", "eval_perplexity", "train/kl"]
MAX = ["rewards/chosen", "eval_rewards/chosen", "logps/chosen", "rewards/margins", "eval_rewards/margins",
       "rewards/accuracies", "eval_rewards/accuracies", "log_odds_ratio", "log_odds_chosen", "reward",
       "rewards/Stage3QualityORM/mean", "objective/rlhf_reward", "objective/scores", "objective/entropy",
       "eval_accuracy", "val_score"]


@pytest.mark.parametrize("name", MIN)
def test_min_metrics(name):
    assert default_mode(name) == "min", direction(name)


@pytest.mark.parametrize("name", MAX)
def test_max_metrics(name):
    assert default_mode(name) == "max", direction(name)


def test_ppo_value_head_metrics_are_not_validation():
    for name in ("val/ratio", "val/clipfrac_avg", "val/num_eos_tokens"):
        assert kind_of(canonical_name(name)) == "train"
    assert canonical_name("val/loss") == "eval_loss"  # a plain validation loss still is one


SHARED = Path(__file__).resolve().parents[2].parent / "shared"
GRPO = SHARED / "real-runs-2" / "msswift_logging_jsonl" / "qwen3-1.7b-grpo-20steps"
needs_corpus = pytest.mark.skipif(not GRPO.is_dir(), reason="the real-run corpus ../shared/real-runs-2 (logs copied "
                                  "from public repositories, kept outside the project) is not beside this checkout")


@needs_corpus
def test_replay_prints_the_inferred_direction_and_why():
    res = CliRunner().invoke(cli, ["replay", str(GRPO), "--metric", "kl", "--rule", "hf", "--no-cache"])
    assert res.exit_code == 0, res.output
    assert "mode min, inferred: a KL divergence" in res.output
    forced = CliRunner().invoke(cli, ["replay", str(GRPO), "--metric", "kl", "--mode", "max", "--rule", "hf",
                                      "--no-cache"])
    assert "(mode max)" in forced.output and "inferred" not in forced.output.split("\n")[0]


@needs_corpus
def test_ingest_prints_directions_in_the_table_and_json():
    res = CliRunner().invoke(cli, ["ingest", str(GRPO), "--no-cache"])
    row = next(ln for ln in res.output.splitlines() if ln.startswith("completions/clipped_ratio "))
    assert " min " in row
    doc = json.loads(CliRunner().invoke(cli, ["ingest", str(GRPO), "--json", "--no-cache"]).stdout)
    d = doc["runs"][0]["metrics"]["frac_reward_zero_std"]["direction"]
    assert d["mode"] == "min" and d["inferred"] is True and d["why"]


def test_tune_header_says_the_direction_was_inferred(tmp_path):
    for i in range(3):
        f = tmp_path / f"run{i}" / "training.log"
        f.parent.mkdir()
        vals = [1.0, 0.8, 0.7 + i / 100, 0.75, 0.8, 0.9]
        f.write_text("epoch,loss,val_loss\n" + "".join(f"{e},{1 - e / 10},{v}\n" for e, v in enumerate(vals)))
    res = CliRunner().invoke(cli, ["tune", *[str(tmp_path / f"run{i}") for i in range(3)], "--rule", "hf",
                                   "--grid", "patience=1,2", "--no-cache"])
    assert "metric: val_loss (mode min, inferred: a loss/error-like name" in res.output, res.output
