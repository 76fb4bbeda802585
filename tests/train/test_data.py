"""Training data: record formats, ids, response-only labels, truncation, and file:line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from logsage.core.errors import DataError
from logsage.train.data import (
    IGNORE_INDEX,
    check_eval_size,
    load_examples,
    read_records,
    record_to_messages,
    split_eval,
    tokenize_example,
    tokenize_examples,
)


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# ---------------------------------------------------------------------- formats
def test_the_three_formats_become_the_same_chat():
    alpaca = record_to_messages({"instruction": "Add.", "input": "2 + 3", "output": "5"}, "f:1")
    pc = record_to_messages({"prompt": "Add.\n2 + 3", "completion": "5"}, "f:2")
    msgs = record_to_messages({"messages": [{"role": "user", "content": "Add.\n2 + 3"},
                                            {"role": "assistant", "content": "5"}]}, "f:3")
    sharegpt = record_to_messages({"conversations": [{"from": "human", "value": "Add.\n2 + 3"},
                                                     {"from": "gpt", "value": "5"}]}, "f:4")
    assert alpaca == pc == msgs == sharegpt == [{"role": "user", "content": "Add.\n2 + 3"},
                                                {"role": "assistant", "content": "5"}]


def test_alpaca_system_and_empty_input():
    m = record_to_messages({"instruction": "Hi", "input": "", "output": "Hello", "system": "Be brief."}, "f:1")
    assert m == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                 {"role": "assistant", "content": "Hello"}]


@pytest.mark.parametrize("record, fragment", [
    ({"instruction": "Add.", "input": "2 + 3"}, 'no "output" field'),
    ({"prompt": "x"}, 'no "completion" field'),
    ({"messages": [{"role": "user", "content": "x"}]}, "no assistant response"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
    ({"text": "free text"}, "unknown record format"),
    (["a", "list"], "must be a JSON object"),
    ({"instruction": "x", "output": 5}, '"output" must be a string'),
])
def test_malformed_records_name_file_and_line(record, fragment):
    with pytest.raises(DataError, match=fragment) as e:
        record_to_messages(record, "data.jsonl:7")
    assert str(e.value).startswith("data.jsonl:7: ")
    assert "\n" not in str(e.value)


def test_forced_format_reports_the_missing_field(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}])
    with pytest.raises(DataError, match=r'd.jsonl:1: prompt-completion record has no "prompt" field'):
        load_examples([f], "prompt-completion")


# ---------------------------------------------------------------------- files and ids
def test_jsonl_and_json_array_give_line_numbers(tmp_path):
    jl = _jsonl(tmp_path / "a.jsonl", [{"instruction": "a", "output": "b"}, "", {"instruction": "c", "output": "d"}])
    assert [line for line, _ in read_records(jl)] == [1, 3]
    arr = tmp_path / "a.json"
    arr.write_text('[\n  {"instruction": "a", "output": "b"},\n\n  {"instruction": "c",\n   "output": "d"}\n]\n')
    assert [line for line, _ in read_records(arr)] == [2, 4]
    bad = tmp_path / "bad.json"
    bad.write_text('[\n {"instruction": "a", "output": "b"},\n {"instruction": "c" "output": "d"}\n]')
    with pytest.raises(DataError, match=r"bad.json:3: not valid JSON"):
        read_records(bad)


def test_broken_jsonl_line(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"instruction": "a", "output": "b"}, '{"instruction": "a", "output": '])
    with pytest.raises(DataError, match=r"d.jsonl:2: not valid JSON"):
        read_records(f)


@pytest.mark.parametrize("content", ["", "\n\n  \n", "[]"])
def test_empty_files_are_errors(tmp_path, content):
    f = tmp_path / "empty.jsonl"
    f.write_text(content)
    with pytest.raises(DataError, match="empty.jsonl: (the file is empty|holds no records)"):
        load_examples([f])


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such data file"):
        load_examples([tmp_path / "nope.jsonl"])


def test_ids_come_from_the_record_else_the_line(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"id": "q1", "instruction": "a", "output": "b"}, "",
                                      {"instruction": "c", "output": "d"}, {"id": 7, "prompt": "e", "completion": "f"}])
    assert [e.id for e in load_examples([f])] == ["q1", 3, 7]
    g = _jsonl(tmp_path / "g.jsonl", [{"instruction": "c", "output": "d"}])
    # several files: line-number ids carry the file name so they stay unique
    assert [e.id for e in load_examples([f, g])] == ["q1", "d.jsonl:3", 7, "g.jsonl:1"]


def test_duplicate_ids_are_errors(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"id": "x", "instruction": "a", "output": "b"},
                                      {"id": "x", "instruction": "c", "output": "d"}])
    with pytest.raises(DataError, match=r"d.jsonl:2: id 'x' repeats the id of .*d.jsonl:1"):
        load_examples([f])


def test_eval_split_is_reproducible_and_disjoint(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"instruction": f"q{i}", "output": "a"} for i in range(40)])
    ex = load_examples([f])
    train, evals = split_eval(ex, 0.1, seed=3)
    assert len(evals) == 4 and len(train) == 36
    assert {e.id for e in train}.isdisjoint({e.id for e in evals})
    assert [e.id for e in split_eval(ex, 0.1, seed=3)[1]] == [e.id for e in evals]
    assert len(split_eval(ex, 5, seed=3)[1]) == 5
    with pytest.raises(DataError, match="leaves none to train on"):
        split_eval(ex, 40, seed=0)


def test_eval_smaller_than_a_batch():
    ex = [object()] * 3
    with pytest.raises(DataError, match=r"val.jsonl: the eval set has 3 example\(s\), fewer than one eval batch \(4\)"):
        check_eval_size(ex, 4, source="val.jsonl")
    with pytest.raises(DataError, match=r"\(2 x 2 processes\)"):
        check_eval_size(ex, 2, world_size=2, source="val.jsonl")
    check_eval_size(ex, 3, source="val.jsonl")


# ---------------------------------------------------------------------- tokenization
@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_labels_cover_exactly_the_responses(tokenizer, tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add the two numbers. 2 + 3"}, {"role": "assistant", "content": "5"},
        {"role": "user", "content": "Name the color of the thing. grass"}, {"role": "assistant", "content": "green"},
    ]}])
    (ex,) = tokenize_examples(tokenizer, load_examples([f]), 2048)
    trained = tokenizer.decode([t for t in ex.labels if t != IGNORE_INDEX])
    # both assistant turns with their end-of-turn token, nothing of the prompts or the template glue
    assert trained == "5<|im_end|>green<|im_end|>"
    full = tokenizer.decode(ex.input_ids)
    assert full == tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Add the two numbers. 2 + 3"},
         {"role": "assistant", "content": "5"}, {"role": "user", "content": "Name the color of the thing. grass"},
         {"role": "assistant", "content": "green"}], tokenize=False)
    # labels are aligned with input ids where set
    assert all(lab == tok for lab, tok in zip(ex.labels, ex.input_ids) if lab != IGNORE_INDEX)


def test_truncation_keeps_the_prefix_and_fails_without_response(tokenizer, tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"instruction": "Translate the word into French.", "input": "cat",
                                       "output": "chat chat chat chat chat chat"}])
    (example,) = load_examples([f])
    full = tokenize_example(tokenizer, example, 0, 2048)
    prompt_len = next(i for i, lab in enumerate(full.labels) if lab != IGNORE_INDEX)
    cut = tokenize_example(tokenizer, example, 0, prompt_len + 2)
    assert cut.input_ids == full.input_ids[: prompt_len + 2]
    assert cut.n_target_tokens == 2
    with pytest.raises(DataError, match=r"d.jsonl:1: no response tokens left after truncation to --max-length"):
        tokenize_example(tokenizer, example, 0, prompt_len)


def test_data_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, logsage.train.data, logsage.train.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
