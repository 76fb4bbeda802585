"""Instruction data for `logsage train`: records from JSON/JSONL files to token ids and response-only labels.

Three record formats, detected per record by their fields (or forced):

* **alpaca**: `instruction`, optional `input` (appended to the instruction after a
  newline, as ms-swift and LLaMA-Factory do), `output`, optional `system`;
* **messages**: `messages` as a list of `{"role", "content"}` (ms-swift / OpenAI
  style; roles system, user, assistant) or ShareGPT's `conversations` as a list of
  `{"from", "value"}` (human, gpt, system);
* **prompt-completion**: `prompt` and `completion` (strings, or TRL's
  conversational form: lists of messages).

Every record becomes a chat (a list of messages), rendered with the tokenizer's own
chat template; the loss is computed on the assistant responses only (each response's
content and its end-of-turn token; prompts and template glue get label -100), and
the tokens are truncated to `max_length` from the right.

Errors are found early and reported as one-line `DataError`s naming the file and
line: unreadable JSON, a missing field, an empty file, a record with no response
tokens left after truncation, an eval set smaller than one eval batch. Structural
checks (`load_examples`, `check_eval_size`) need no tokenizer, so they run before
any model is touched. Each example keeps a stable `id`: the record's own `id`
field, else its line number (`file:line` when several files are given). Nothing
here imports torch.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from logsage.core.errors import DataError, LogsageError

IGNORE_INDEX = -100
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "model": "assistant"}
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Example:
    """One record as a chat, with where it came from."""

    id: int | str
    file: str
    line: int
    messages: tuple[dict[str, str], ...]

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class TokenizedExample:
    """Token ids and labels (-100 outside the responses) of one example, ready for a collator."""

    id: int | str
    index: int  # position in its dataset (travels through the collator to name per-example losses)
    input_ids: list[int]
    labels: list[int]
    where: str

    @property
    def n_target_tokens(self) -> int:
        """Tokens the causal-LM loss counts: labels are shifted by one, so position 0 never is one."""
        return sum(1 for x in self.labels[1:] if x != IGNORE_INDEX)


# ---------------------------------------------------------------------- reading files
def _iter_json_array(text: str, file: str) -> Iterator[tuple[int, Any]]:
    """(line, element) for each element of a top-level JSON array, with the line where it starts."""
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    n = len(text)

    def skip_ws(j: int) -> int:
        while j < n and text[j] in " \t\r\n":
            j += 1
        return j

    i = skip_ws(i)
    if i < n and text[i] == "]":
        return
    while True:
        i = skip_ws(i)
        line = text.count("\n", 0, i) + 1
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            raise DataError(f"{file}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno}); fix the record") from None
        yield line, obj
        i = skip_ws(end)
        if i < n and text[i] == ",":
            i += 1
            continue
        if i < n and text[i] == "]":
            return
        line = text.count("\n", 0, i) + 1
        raise DataError(f"{file}:{line}: expected ',' or ']' between records; fix the JSON array")


def read_records(path: str | os.PathLike) -> list[tuple[int, Any]]:
    """(line number, parsed record) for every record of a JSONL file or a JSON array file."""
    p = Path(path)
    file = str(path)
    if not p.is_file():
        raise DataError(f"{file}: no such data file; check --data / --eval-data")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{file}: not UTF-8 text (byte {e.start}); save the data as UTF-8 JSON or JSONL") from None
    stripped = text.lstrip()
    if not stripped:
        raise DataError(f"{file}: the file is empty; it needs at least one record")
    records: list[tuple[int, Any]] = []
    if stripped.startswith("["):
        records = list(_iter_json_array(text, file))
    else:
        decoder = json.JSONDecoder()
        for lineno, line in enumerate(text.splitlines(), start=1):
            s = line.strip()
            if not s:
                continue
            try:
                obj, end = decoder.raw_decode(s)
            except json.JSONDecodeError as e:
                raise DataError(f"{file}:{lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                                "each line of a JSONL file must be one JSON object") from None
            if s[end:].strip():
                raise DataError(f"{file}:{lineno}: more than one JSON value on the line; "
                                "a JSONL file holds one record per line")
            records.append((lineno, obj))
    if not records:
        raise DataError(f"{file}: holds no records; it needs at least one")
    return records


# ---------------------------------------------------------------------- records to chats
def detect_format(record: dict[str, Any]) -> str | None:
    if "messages" in record or "conversations" in record:
        return "messages"
    if "instruction" in record or "output" in record:
        return "alpaca"
    if "prompt" in record or "completion" in record:
        return "prompt-completion"
    return None


def _text_field(record: dict, key: str, where: str, fmt: str, *, required: bool = True) -> str:
    if key not in record or record[key] is None:
        if not required:
            return ""
        keys = ", ".join(sorted(map(str, record))) or "none"
        raise DataError(f'{where}: {fmt} record has no "{key}" field (its keys: {keys}); add it or fix --data-format')
    value = record[key]
    if not isinstance(value, str):
        raise DataError(f'{where}: "{key}" must be a string, got {type(value).__name__}')
    return value


def _normalise_messages(raw: Any, where: str, key: str) -> list[dict[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise DataError(f'{where}: "{key}" must be a non-empty list of messages')
    out = []
    for k, m in enumerate(raw):
        if not isinstance(m, dict):
            raise DataError(f'{where}: message {k} of "{key}" must be an object with role and content')
        if "role" in m or "content" in m:
            role, content = m.get("role"), m.get("content")
        elif "from" in m or "value" in m:
            role, content = _SHAREGPT_ROLES.get(str(m.get("from")), m.get("from")), m.get("value")
        else:
            raise DataError(f'{where}: message {k} has no "role"/"content" (or ShareGPT "from"/"value") fields')
        if role not in _ROLES:
            raise DataError(f"{where}: message {k} has role {role!r}; use one of {', '.join(_ROLES)}")
        if not isinstance(content, str):
            raise DataError(f'{where}: message {k} ({role}) has no text "content"')
        out.append({"role": role, "content": content})
    return out


def record_to_messages(record: Any, where: str, fmt: str = "auto") -> list[dict[str, str]]:
    """The chat a record stands for; raises DataError naming `where` (file:line) when malformed."""
    if not isinstance(record, dict):
        raise DataError(f"{where}: a record must be a JSON object, got {type(record).__name__}")
    kind = detect_format(record) if fmt == "auto" else fmt
    if kind is None:
        keys = ", ".join(sorted(map(str, record))) or "none"
        raise DataError(f"{where}: unknown record format (its keys: {keys}); use alpaca (instruction/output), "
                        "messages, or prompt/completion")
    if kind == "alpaca":
        instruction = _text_field(record, "instruction", where, kind)
        extra = _text_field(record, "input", where, kind, required=False)
        output = _text_field(record, "output", where, kind)
        system = _text_field(record, "system", where, kind, required=False)
        user = f"{instruction}\n{extra}" if extra else instruction
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}, {"role": "assistant", "content": output}]
    elif kind == "messages":
        key = "messages" if "messages" in record else "conversations"
        if key not in record:
            raise DataError(f'{where}: messages record has no "messages" field; add it or fix --data-format')
        msgs = _normalise_messages(record[key], where, key)
    elif kind == "prompt-completion":
        prompt, completion = record.get("prompt"), record.get("completion")
        for key, value in (("prompt", prompt), ("completion", completion)):
            if value is None:
                keys = ", ".join(sorted(map(str, record))) or "none"
                raise DataError(f'{where}: prompt-completion record has no "{key}" field (its keys: {keys}); add it')
        if isinstance(prompt, list) or isinstance(completion, list):
            p = _normalise_messages(prompt, where, "prompt") if isinstance(prompt, list) else \
                [{"role": "user", "content": _text_field(record, "prompt", where, kind)}]
            c = _normalise_messages(completion, where, "completion") if isinstance(completion, list) else \
                [{"role": "assistant", "content": _text_field(record, "completion", where, kind)}]
            msgs = p + c
        else:
            msgs = [{"role": "user", "content": _text_field(record, "prompt", where, kind)},
                    {"role": "assistant", "content": _text_field(record, "completion", where, kind)}]
    else:
        raise DataError(f"{where}: unknown --data-format {fmt!r}")
    if not any(m["role"] == "assistant" for m in msgs):
        raise DataError(f"{where}: the record has no assistant response to train on; add one")
    if not any(m["content"] for m in msgs if m["role"] == "assistant"):
        raise DataError(f"{where}: every assistant response is empty; nothing to train on")
    return msgs


def load_examples(paths: Sequence[str | Path], fmt: str = "auto") -> list[Example]:
    """Read and check every record of the files (no tokenizer needed); DataError on the first problem.

    Ids: a record's own `id` (a string or integer) when present, else its line number;
    with several files, line-number ids are written `file:line` so that they stay unique.
    """
    examples: list[Example] = []
    seen: dict[Any, str] = {}
    many = len(paths) > 1
    for path in paths:
        file = str(path)
        for line, record in read_records(path):
            where = f"{file}:{line}"
            msgs = record_to_messages(record, where, fmt)
            rid = record.get("id") if isinstance(record, dict) else None
            if isinstance(rid, bool) or not isinstance(rid, (int, str)) or rid == "":
                rid = f"{Path(file).name}:{line}" if many else line
            if rid in seen:
                raise DataError(f"{where}: id {rid!r} repeats the id of {seen[rid]}; ids must be unique")
            seen[rid] = where
            examples.append(Example(rid, file, line, tuple(msgs)))
    return examples


def split_eval(examples: list[Example], split: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out a fraction (<1) or a number (>=1) of examples for evaluation, reproducibly for a seed.

    Both parts keep the file order of the records.
    """
    n = len(examples)
    k = int(split) if split >= 1 else max(1, int(round(split * n)))
    if k >= n:
        raise DataError(f"{examples[0].file}: --eval-split {split} holds out {k} of {n} examples and leaves none to "
                        "train on; lower it or pass --eval-data")
    chosen = set(random.Random(seed).sample(range(n), k))
    train = [e for i, e in enumerate(examples) if i not in chosen]
    evals = [e for i, e in enumerate(examples) if i in chosen]
    return train, evals


def check_eval_size(evals: list[Example], per_device_eval_batch_size: int, world_size: int = 1,
                    *, source: str) -> None:
    """An eval set smaller than one eval batch is a mistake (a typo'd file, a too-small split): fail early."""
    batch = per_device_eval_batch_size * max(world_size, 1)
    if len(evals) < batch:
        ranks = f" x {world_size} processes" if world_size > 1 else ""
        raise DataError(
            f"{source}: the eval set has {len(evals)} example(s), fewer than one eval batch "
            f"({per_device_eval_batch_size}{ranks}); add examples or lower --per-device-eval-batch-size")


# ---------------------------------------------------------------------- tokenization
def _response_spans(tokenizer: Any, messages: list[dict[str, str]], full: str, where: str) -> list[tuple[int, int]]:
    """Character spans of `full` that hold assistant responses (content + end-of-turn token)."""
    eos = tokenizer.eos_token or ""
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = tokenizer.apply_chat_template(list(messages[:i]), tokenize=False, add_generation_prompt=True)
        upto = tokenizer.apply_chat_template(list(messages[: i + 1]), tokenize=False)
        if not full.startswith(prefix) or not full.startswith(upto) or len(upto) < len(prefix):
            raise LogsageError(
                f"{where}: the model's chat template does not render conversations prefix by prefix, so the response "
                "tokens cannot be found; use a template that does (e.g. Qwen's ChatML)")
        end = len(upto)
        if eos:
            k = full.rfind(eos, len(prefix), end)
            if k >= 0:
                end = k + len(eos)  # the end-of-turn token is trained; the template's trailing newline is not
        spans.append((len(prefix), end))
    return spans


def tokenize_example(tokenizer: Any, example: Example, index: int, max_length: int) -> TokenizedExample:
    """Render one chat with the tokenizer's template and mark the response tokens as labels."""
    if not getattr(tokenizer, "chat_template", None):
        raise LogsageError("the tokenizer has no chat template; use an instruct/chat model (e.g. Qwen2.5-*-Instruct)")
    messages = list(example.messages)
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = _response_spans(tokenizer, messages, full, example.where)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(ids)
    for t, (a, b) in enumerate(offsets):
        if b <= a:
            continue
        for s, e in spans:
            if s <= a < e:
                labels[t] = ids[t]
                break
    n_before = sum(1 for x in labels if x != IGNORE_INDEX)
    ids, labels = ids[:max_length], labels[:max_length]
    out = TokenizedExample(example.id, index, ids, labels, example.where)
    if out.n_target_tokens == 0:
        if n_before:
            raise DataError(
                f"{example.where}: no response tokens left after truncation to --max-length {max_length} (the prompt "
                "alone fills it); raise --max-length or shorten the record")
        raise DataError(f"{example.where}: the response renders to no tokens; check the record and the chat template")
    return out


def tokenize_examples(tokenizer: Any, examples: Sequence[Example], max_length: int) -> list[TokenizedExample]:
    return [tokenize_example(tokenizer, e, i, max_length) for i, e in enumerate(examples)]
