"""Few-shot copies: an explanation that repeats one of the explainer's own few-shot answers.

A small model left alone answers many latents with a few-shot answer word for word (11 of 24 on
the demo before this rule). The rule, kept simple on purpose: two explanations are the same when
their sets of lower-cased words have a Jaccard similarity of at least COPY_JACCARD. Normalised-equal
texts (same words, any case, spacing or punctuation) have similarity 1; changing one word of an
eight-word answer keeps it at 0.67 and still counts; an answer that shares only "the", "of" and a
topic word does not.
"""

from __future__ import annotations

import re
from typing import Iterable

COPY_JACCARD = 0.6
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalise(text: str) -> str:
    """Lower case, punctuation and spacing dropped: `The word "said".` -> `the word said`."""
    return " ".join(words(text))


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of the two texts' word sets (1.0 for two texts without words)."""
    sa, sb = set(words(a)), set(words(b))
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def fewshot_copy(explanation: str, fewshot: Iterable[str], threshold: float = COPY_JACCARD) -> str | None:
    """The few-shot answer that `explanation` repeats (verbatim or nearly), or None."""
    for answer in fewshot:
        if normalise(explanation) == normalise(answer) or similarity(explanation, answer) >= threshold:
            return answer
    return None
