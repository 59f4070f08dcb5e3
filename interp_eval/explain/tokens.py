"""The token look-up table (OpenAI's automated-interpretability baseline): a latent's most frequent marked tokens.

A token is "marked" exactly when the LLM explainer sees it marked: `prompting.active_mask`, >= 0.3 x
the window's maximum activation. Tokens are counted by their text without surrounding whitespace
(" year" and "year" are one entry) and listed by count, then alphabetically, so the table is
deterministic. The same table is both the `token-table` explainer's explanation and the summary line
the LLM explainer gets beside the windows.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

from ..prompting import active_mask, render

TOKEN_TABLE_SIZE = 8  # tokens listed per latent
TOKEN_TABLE_VERSION = f"token-table@v1-top{TOKEN_TABLE_SIZE}"  # recorded as the prompt_version of its rows


@dataclass(frozen=True)
class Window:
    """One explanation window: its decoded tokens and their activations."""

    tokens: Sequence[str]
    activations: Sequence[float]


@dataclass(frozen=True)
class TokenCount:
    token: str  # as counted and shown (see token_key)
    count: int


def token_key(token: str) -> str:
    """A token as counted and shown: without surrounding whitespace, on one line.

    A whitespace-only token is shown escaped (a newline as \\n); a chat-control token such as
    <|im_end|> as the paragraph break the windows show in its place (it must never reach a prompt).
    """
    shown = render([token])  # stripped, newlines escaped, < > as ‹ › (no forged marks), chat-control tokens replaced
    if shown:
        return shown
    if token.strip():  # a chat-control token: windows show it as a paragraph break
        token = "\n\n"
    return token.replace("\r", "").replace("\n", "\\n").replace("\t", "\\t")


def marked_token_counts(windows: Sequence[Window]) -> list[TokenCount]:
    """Every marked token of the windows with its count, most frequent first (ties alphabetically)."""
    counts: Counter[str] = Counter()
    for w in windows:
        counts.update(token_key(t) for t, on in zip(w.tokens, active_mask(w.activations)) if on)
    return [TokenCount(tok, n) for tok, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def format_counts(counts: Sequence[TokenCount]) -> str:
    """`"year" (12), "years" (7), "months" (3)`; a quotation mark token is shown as `"\\""`."""
    return ", ".join('"' + c.token.replace('"', '\\"') + f'" ({c.count})' for c in counts)


def token_summary(windows: Sequence[Window], size: int = TOKEN_TABLE_SIZE) -> str:
    """The LLM explainer's summary line: the `size` most frequent marked tokens with counts."""
    return format_counts(marked_token_counts(windows)[:size]) or "(none)"


def token_table_explanation(windows: Sequence[Window], size: int = TOKEN_TABLE_SIZE) -> str | None:
    """The token-table explainer's explanation, e.g. `the tokens "year" (12), "years" (7)`; None without marked tokens."""
    counts = marked_token_counts(windows)[:size]
    return f"the tokens {format_counts(counts)}" if counts else None
