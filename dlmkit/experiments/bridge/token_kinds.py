"""Structural vs content tokens.

A token is structural when it is a special token (the end-of-turn marker), or its text,
stripped and lowercased, is empty (whitespace, a newline, an indent), made only of
punctuation, or one of FUNCTION_WORDS; everything else (names, numbers, code identifiers,
answer letters) is content. Structural tokens are the
"framing" a layer can predict from syntax alone; content tokens carry the answer.
"""

from __future__ import annotations

import string

STRUCTURAL = "structural"
CONTENT = "content"
KINDS = (STRUCTURAL, CONTENT)

# English closed-class words: articles, the commonest prepositions, conjunctions, pronouns
# and auxiliaries. The list extends the published script's (articles, prepositions,
# be/do/have, modals) with pronouns and a few connectives; it is fixed so that counts are
# comparable across models and runs, not tuned to any tokenizer.
FUNCTION_WORDS = frozenset("""
a an the
of in to for on with at by from into onto about over under after before between through
during without within up down out off than
is are was were be been being am
do does did done have has had having
will would can could should may might shall must
and or but nor so yet if then else because while although as that which who whom whose
what when where why how
not no
it its this these those there here
i me my you your he him his she her we us our they them their
""".split())

# ASCII punctuation plus the typographic marks a chat model emits.
PUNCTUATION = frozenset(string.punctuation) | frozenset("‘’“”–—…·•")


def kind_of_text(text: str) -> str:
    """"structural" or "content" for one token's decoded text."""
    word = text.strip().lower()
    if not word or all(c in PUNCTUATION for c in word) or word in FUNCTION_WORDS:
        return STRUCTURAL
    return CONTENT


def token_kind(token_id: int, tokenizer) -> str:
    if int(token_id) in set(tokenizer.all_special_ids):
        return STRUCTURAL
    return kind_of_text(tokenizer.decode([int(token_id)], skip_special_tokens=False,
                                         clean_up_tokenization_spaces=False))


__all__ = ["CONTENT", "FUNCTION_WORDS", "KINDS", "PUNCTUATION", "STRUCTURAL", "kind_of_text", "token_kind"]
