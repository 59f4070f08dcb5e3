"""Prompt templates (files under interp_eval/prompts/, shipped in the wheel) and the one way windows are rendered as text.

Templates are plain text with `$name` placeholders (string.Template). A template's version is
`<name>@<first 8 hex of sha256(text)>`, recorded in every artifact that used it, so any edit to a
prompt is visible in the results.

Highlighting follows PAPER.md: tokens whose activation is >= 0.3 x the window's maximum are
marked `<<like this>>`, consecutive marked tokens merged into one span.

Window text is data, and `render` keeps it from changing the prompt around it: its own `<` and `>`
are shown as `‹` and `›`, so the only `<<`/`>>` in a rendered window are the true marks (a document
cannot forge one, nor blur a real one as in `<<<x>>`); every line break, of any kind, is written as a
literal backslash-n, so a window stays on its one numbered line whatever it says (a line such as
"Explanation: ..." or "4. ..." cannot start a line of its own); chat-control tokens cannot end a turn.
"""

from __future__ import annotations

import hashlib
import os
import re
import string
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

HIGHLIGHT_FRACTION = 0.3
OPEN, CLOSE = "<<", ">>"
_NO_MARKS = str.maketrans({"<": "\u2039", ">": "\u203a"})  # window text's own < > as ‹ ›: only render writes marks
# chat-control tokens such as <|im_end|> (the subject tokenizer's document separator) would end the
# explainer's or scorer's own chat turn: they are shown as a paragraph break instead
_SPECIAL = re.compile(r"^<\|[A-Za-z0-9_]{1,40}\|>$")
_LINE_BREAK = re.compile("\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # what str.splitlines splits at


def prompts_dir() -> Path:
    env = os.environ.get("INTERP_EVAL_PROMPTS")
    return Path(env) if env else Path(__file__).resolve().parent / "prompts"


@dataclass(frozen=True)
class Prompt:
    name: str
    text: str

    @property
    def version(self) -> str:
        return f"{self.name}@{hashlib.sha256(self.text.encode()).hexdigest()[:8]}"

    def render(self, **values: object) -> str:
        return string.Template(self.text).substitute({k: str(v) for k, v in values.items()})


@lru_cache(maxsize=None)
def load_prompt(name: str) -> Prompt:
    path = prompts_dir() / f"{name}.txt"
    if not path.exists():
        from .errors import UserError

        raise UserError(f"prompt template {path} is missing (set INTERP_EVAL_PROMPTS to a folder that has it)")
    return Prompt(name, path.read_text(encoding="utf-8").rstrip("\n"))


def load_dialogue(name: str) -> list[dict[str, str]]:
    """A few-shot template: blocks headed `### user` / `### assistant`, as chat messages."""
    messages: list[dict[str, str]] = []
    for line in load_prompt(name).text.splitlines():
        header = line.strip().lower()
        if header in ("### user", "### assistant"):
            messages.append({"role": header[4:], "content": ""})
        elif messages:
            messages[-1]["content"] += line + "\n"
    for m in messages:
        m["content"] = m["content"].strip("\n")
    return messages


def active_mask(activations: Sequence[float], fraction: float = HIGHLIGHT_FRACTION) -> list[bool]:
    """Tokens at or above `fraction` x the window's maximum activation (none if the window is silent)."""
    peak = max(activations, default=0.0)
    if peak <= 0:
        return [False] * len(activations)
    return [a >= fraction * peak and a > 0 for a in activations]


def render(tokens: Sequence[str], mask: Sequence[bool] | None = None) -> str:
    """The window as one line of text; masked tokens wrapped in <<...>>, adjacent ones merged.

    The text's own `<` `>` become `‹` `›` and its line breaks a literal backslash-n (see the module
    docstring), so that every window stays on its own numbered line with only its true marks.
    """
    tokens = ["\n\n" if _SPECIAL.match(t) else t.translate(_NO_MARKS) for t in tokens]
    if mask is None:
        return _one_line("".join(tokens))
    out: list[str] = []
    inside = False
    for tok, on in zip(tokens, mask):
        if on and not inside:
            lead = tok[: len(tok) - len(tok.lstrip())]  # keep the space outside the marks
            out.append(lead + OPEN + tok[len(lead):])
            inside = True
        elif on:
            out.append(tok)
        else:
            if inside:
                out.append(CLOSE)
                inside = False
            out.append(tok)
    if inside:
        out.append(CLOSE)
    return _one_line("".join(out))


def token_line(token: str) -> str:
    """One token as the first field of a `token<tab>value` line (the simulation prompt): chat-control tokens as a
    literal backslash-n pair, every kind of line break as a literal backslash-n, tabs as a space, `<` `>` as `‹` `›`,
    and no private-use characters (the prompt's own markers), so a document cannot add, end or split a line."""
    if _SPECIAL.match(token):
        return "\\n\\n"
    text = "\\n".join(_LINE_BREAK.split(token.translate(_NO_MARKS).replace("\t", " ")))
    return "".join(ch for ch in text if not 0xE000 <= ord(ch) <= 0xF8FF)


def _one_line(text: str) -> str:
    """Every kind of line break (\\r\\n, \\n, \\r, \\v, \\f, U+2028, ...) as a literal backslash-n."""
    return "\\n".join(text.strip().splitlines())


def highlighted(tokens: Sequence[str], activations: Sequence[float], fraction: float = HIGHLIGHT_FRACTION) -> str:
    return render(tokens, active_mask(activations, fraction))
