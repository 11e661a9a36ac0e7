"""Words of a transcript as the `q` search indexes and looks them up (`CallWord`).

One tokenizer for both sides, so a word is found as it was stored: lower case, accents folded
("Électricité" and "electricite" are one word), split on anything not a letter or digit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

# Longer "words" are ids, URLs or noise; the column holds this much.
MAX_LENGTH = 40
# Words a call stores at most: a transcript is bounded by the call's duration; this bounds a runaway one.
MAX_PER_CALL = 2_000
_WORD = re.compile(r"\w+")


def fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """The distinct words of `text`, in order of first appearance."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(fold(text)):
        if 1 < len(word) <= MAX_LENGTH and "_" not in word:
            seen.setdefault(word, None)
    return list(seen)


def of_texts(texts: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for text in texts:
        for word in words(text):
            seen.setdefault(word, None)
    return list(seen)[:MAX_PER_CALL]
