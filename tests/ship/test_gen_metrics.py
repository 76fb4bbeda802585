"""Generation metrics, paired tests, prompt files and the selection objective (no model needed)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from logsage.core.errors import DataError, UsageError
from logsage.ship.gen_metrics import paired_metric_test, resolve_metric
from logsage.ship.generate import load_prompts, rank_steps


def test_exact_and_contains_normalise_whitespace_only():
    exact, contains = resolve_metric("exact"), resolve_metric("contains")
    assert exact.binary and contains.binary
    assert exact.score("  chat \n", "chat", "f:1") == 1.0
    assert exact.score("Chat", "chat", "f:1") == 0.0  # case is kept
    assert exact.score("le  chat", "le chat", "f:1") == 1.0
    assert contains.score("the answer is chat.", "chat", "f:1") == 1.0
    assert contains.score("chien", "chat", "f:1") == 0.0


def test_rouge_l_is_the_lcs_f_measure_and_bleu_is_sacrebleu_over_100():
    rouge = resolve_metric("rouge-l")
    # LCS("the cat sat", "the cat sat on the mat") = 3 tokens: P = 3/3, R = 3/6, F = 2PR/(P+R) = 2/3
    assert rouge.score("the cat sat", "the cat sat on the mat", "f:1") == pytest.approx(2 / 3)
    assert rouge.score("dog", "cat", "f:1") == 0.0 and not rouge.binary
    bleu = resolve_metric("bleu")
    assert bleu.score("the cat sat on the mat", "the cat sat on the mat", "f:1") == pytest.approx(1.0)
    assert bleu.score("a b c d", "w x y z", "f:1") == 0.0


@pytest.mark.parametrize("name, module", [("rouge-l", "rouge_score.rouge_scorer"), ("bleu", "sacrebleu")])
def test_a_missing_extra_names_it(monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # what Python does when the package is not installed
    with pytest.raises(UsageError, match=r"pip install 'logsage\[gen\]'"):
        resolve_metric(name)


def test_unknown_metric_and_user_functions(tmp_path):
    with pytest.raises(UsageError, match="unknown metric; use one of exact, contains, rouge-l, bleu"):
        resolve_metric("accuracy")
    f = tmp_path / "scorers.py"
    f.write_text("def length_ratio(prediction, reference):\n    return len(prediction) / len(reference)\n"
                 "def nan(prediction, reference):\n    return float('nan')\n")
    m = resolve_metric(f"{f}:length_ratio")
    assert m.score("ab", "abcd", "f:1") == 0.5 and not m.binary
    with pytest.raises(DataError, match=r"p\.jsonl:7: --gen-metric .* returned nan"):
        resolve_metric(f"{f}:nan").score("a", "b", "p.jsonl:7")
    with pytest.raises(UsageError, match="has no function missing"):
        resolve_metric(f"{f}:missing")
    with pytest.raises(UsageError, match="no such file"):
        resolve_metric(f"{tmp_path / 'nope.py'}:f")


def test_mcnemar_is_the_exact_binomial_test_on_discordant_prompts():
    a = np.array([1] * 10 + [1, 0, 0])
    b = np.array([0] * 10 + [1, 0, 1])
    t = paired_metric_test(a, b, binary=True)
    assert (t["only_a"], t["only_b"]) == (10, 1)
    # two-sided exact binomial, n = 11 discordant, k = 10: 2 * P(X >= 10) = 2 * (11 + 1) / 2**11
    assert t["p"] == pytest.approx(2 * 12 / 2 ** 11)
    assert paired_metric_test(a, a, binary=True)["p"] == 1.0


def test_paired_bootstrap_is_seeded_and_separates_a_gap_from_noise():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 60)
    gap = paired_metric_test(base + 0.1 + rng.normal(0, 0.02, 60), base, binary=False)
    assert gap["test"] == "paired-bootstrap" and gap["p"] < 0.01 and gap["mean_difference"] > 0
    noisy = base + rng.normal(0, 0.3, 60)
    one, two = paired_metric_test(noisy, base, binary=False), paired_metric_test(noisy, base, binary=False)
    assert one == two and one["p"] > 0.05  # same seed, same answer
    assert paired_metric_test(base, base, binary=False)["p"] == 1.0


def _write(tmp_path, name, records):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in records))
    return p


def test_prompts_in_every_training_format_with_their_references(tmp_path):
    p = _write(tmp_path, "p.jsonl", [
        {"instruction": "Translate.", "input": "cat", "output": "chat"},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello"}]},
        {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]},
        {"prompt": "Capital of France?", "completion": "Paris"},
        {"prompt": [{"role": "user", "content": "Say yes"}], "completion": [{"role": "assistant", "content": "yes"}]},
    ])
    prompts = load_prompts([p])
    assert [x.reference for x in prompts] == ["chat", "Hello", "4", "Paris", "yes"]
    assert prompts[0].messages == ({"role": "user", "content": "Translate.\ncat"},)
    assert [m["role"] for m in prompts[1].messages] == ["system", "user"]
    assert [x.where for x in prompts] == [f"{p}:{i}" for i in range(1, 6)]
    assert [x.index for x in prompts] == list(range(5))


def test_a_multi_turn_record_keeps_the_earlier_turns_in_the_prompt(tmp_path):
    p = _write(tmp_path, "p.jsonl", [{"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}])
    (prompt,) = load_prompts([p])
    assert prompt.reference == "d" and [m["content"] for m in prompt.messages] == ["a", "b", "c"]


def _summary(best, ranking, indistinguishable):
    return {"ranking": ranking, "best_step": best, "indistinguishable_from_best": indistinguishable,
            "metric_label": "exact match", "alpha": 0.05}


def test_objectives_rank_as_stated():
    order = [100, 200, 300, 400]
    loss = {100: 1.0, 200: 1.2, 300: 1.5, 400: 1.1}
    s = _summary(300, [300, 200, 400, 100], [200])
    assert rank_steps("gen", s, loss, order)[0] == [300, 200, 400, 100]
    assert rank_steps("loss", s, loss, order)[0] == [100, 400, 200, 300]
    assert rank_steps("gen-then-loss", s, loss, order)[0] == [200, 300, 400, 100]  # 200 ties 300, lower loss
    with pytest.raises(UsageError, match="needs a loss"):
        rank_steps("gen-then-loss", s, {}, order)


def test_report_refuses_a_selection_file_without_results_before_writing(tmp_path):
    from click.testing import CliRunner

    from logsage.cli.main import cli

    bad = tmp_path / "selection.json"
    bad.write_text(json.dumps({"run": "runs/x", "selected_step": 3}))
    out = tmp_path / "r.html"
    res = CliRunner().invoke(cli, ["report", str(tmp_path), "--selection", str(bad), "--out", str(out)])
    assert res.exit_code == 1 and not out.exists()
    assert res.stderr.strip() == (f"Error: {bad}: holds no re-evaluation results; re-run select with "
                                  "--eval-data/--eval-generate (or logsage evaluate --out) and pass that file")
