"""SpecDiff's prompts: held-out tiny-world documents and chat turns (tiny: generation 2, the world
SpecDiff's tiny models read), the first tokens of OpenWebText documents and CNN/DailyMail articles
(paper), each after <|endoftext|>."""

from __future__ import annotations

from dlmkit.data.tinyworld2 import TinyWorld2
from dlmkit.errors import UserError
from dlmkit.experiments.specdiff.settings import PROMPT_SETS
from dlmkit.tokenizer import render_prompt


def tiny_world_prompts(tokenizer, sets, n: int, prompt_tokens: int) -> list[dict]:
    """Held-out (test-split) tiny-world text: the first tokens of documents drawn with their own
    seeds, and chat prompts about the held-out towns (one user turn and the generation prompt).
    Each starts with <|endoftext|>, the document start every tiny model was trained with."""
    world, bos = TinyWorld2(0), tokenizer.eos_token_id
    prompts = []
    if "documents" in sets:
        for i, text in enumerate(world.documents(n, "test")):
            prompts.append({"set": "documents", "index": i, "ids": [bos] + tokenizer(text)["input_ids"][:prompt_tokens]})
    if "chat" in sets:
        for i, item in enumerate(world.chat_examples(n, "test")):
            text = render_prompt(item)
            prompts.append({"set": "chat", "index": i, "ids": [bos] + tokenizer(text)["input_ids"]})
    return prompts


def web_prompts(tokenizer, sets, n: int, prompt_tokens: int) -> list[dict]:
    """The first prompt_tokens GPT-2 tokens of OpenWebText validation documents (MDLM's split)
    and of CNN/DailyMail test articles, after <|endoftext|>."""
    bos = tokenizer.eos_token_id
    prompts = []
    if "owt" in sets:
        from dlmkit.data.owt import load_owt_documents

        documents = load_owt_documents("validation")
        for row in documents:
            ids = tokenizer(row["text"])["input_ids"]
            if len(ids) >= prompt_tokens:
                prompts.append({"set": "owt", "index": len([p for p in prompts if p["set"] == "owt"]),
                                "ids": [bos] + ids[:prompt_tokens]})
            if sum(p["set"] == "owt" for p in prompts) == n:
                break
    if "cnn_dm" in sets:
        from dlmkit.data.cnn_dm import load_articles

        for i, row in enumerate(load_articles(n)):
            prompts.append({"set": "cnn_dm", "index": i, "ids": [bos] + tokenizer(row["article"])["input_ids"][:prompt_tokens]})
    return prompts


def load_prompts(preset: str, tokenizer, sets, n: int, prompt_tokens: int) -> list[dict]:
    unknown = [s for s in sets if s not in PROMPT_SETS[preset]]
    if unknown:
        raise UserError(f"prompt set(s) {', '.join(unknown)} do not exist on the {preset} preset; "
                        f"choose from {', '.join(PROMPT_SETS[preset])}")
    load = tiny_world_prompts if preset == "tiny" else web_prompts
    return load(tokenizer, sets, n, prompt_tokens)
