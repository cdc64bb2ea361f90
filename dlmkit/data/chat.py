"""Chat prompts and where an answer ends: one user turn through a model's chat template, the
end-of-turn token ids, and the answer length before the first of them."""

from __future__ import annotations


def chat_prompt_ids(tokenizer, text: str) -> list[int]:
    """One user turn through the model's chat template, with the generation prompt."""
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         return_dict=True)["input_ids"]


def known_token_id(tokenizer, token: str) -> int | None:
    """The id of `token`, or None when the tokenizer lacks it (convert_tokens_to_ids then answers
    the unknown token's id, or None). A token that is itself the unknown token keeps its id:
    transformers' Qwen2 tokenizer makes <|endoftext|> the unknown token unless the tokenizer
    config says `"unk_token": null`."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(tid, int) or (tid == getattr(tokenizer, "unk_token_id", None)
                                    and token != getattr(tokenizer, "unk_token", None)):
        return None
    return tid


def end_token_ids(tokenizer) -> set[int]:
    """The tokenizer's end of text and end of turn (<|im_end|>, Qwen-style chat)."""
    ids = {tokenizer.eos_token_id, known_token_id(tokenizer, "<|im_end|>")}
    return {i for i in ids if i is not None}


def default_end_token_ids(model, tokenizer=None) -> list[int]:
    """End tokens of a generating model: its eos id(s), plus <|endoftext|> and <|im_end|> when
    the tokenizer knows them (Qwen2 chat models end turns with <|im_end|>)."""
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        eos = getattr(source, "eos_token_id", None)
        if eos is not None:
            ids.update([eos] if isinstance(eos, int) else eos)
    if tokenizer is not None:
        for name in ("<|endoftext|>", "<|im_end|>"):
            tid = known_token_id(tokenizer, name)
            if tid is not None:
                ids.add(tid)
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def response_length(tokens: list[int], end_ids: set[int]) -> int:
    """Answer tokens before the first end marker (the published `gen_len`)."""
    for i, token in enumerate(tokens):
        if token in end_ids:
            return i
    return len(tokens)
