"""Explainer prompts: the fixed system + few-shot prefix, the latent's windows and token summary, and the answer checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ..llm import LLMRequest
from ..prompting import active_mask, load_dialogue, load_prompt, render
from .copies import fewshot_copy
from .tokens import Window, token_key, token_summary

__all__ = ["Window", "Verdict", "prompt_version", "fewshot_explanations", "format_windows", "build_request",
           "retry_request", "parse_explanation", "judge_answer"]

EXPLANATION_RE = re.compile(r"^\s*\[?explanation\]?\s*:\s*(.+?)\s*$", re.IGNORECASE)
PROMPTS = ("explain_system", "explain_fewshot", "explain_user", "explain_retry", "explain_copy_retry")


@dataclass(frozen=True)
class Verdict:
    """What an answer is worth: an accepted explanation, or the reason it is asked again."""

    explanation: str | None  # accepted: parseable and not a few-shot copy
    copied: str | None = None  # the few-shot answer it repeats (then explanation is None)


def prompt_version() -> str:
    return "+".join(load_prompt(n).version for n in PROMPTS)


def fewshot_explanations() -> tuple[str, ...]:
    """The explanations the few-shot assistant turns give (what a lazy model copies)."""
    found = (parse_explanation(m["content"]) for m in load_dialogue("explain_fewshot") if m["role"] == "assistant")
    return tuple(e for e in found if e)


def _activation_note(window: Window) -> str:
    """Marked tokens with activations scaled to 0-10 (continuous coders, when asked)."""
    peak = max(window.activations, default=0.0)
    mask = active_mask(window.activations)
    pairs = [f"({token_key(tok)!r}, {round(10 * a / peak)})" for tok, a, on in zip(window.tokens, window.activations, mask) if on]
    return "   activations: " + ", ".join(pairs)


def format_windows(windows: Sequence[Window], show_activations: bool = False) -> str:
    lines = []
    for i, w in enumerate(windows, 1):
        lines.append(f"{i}. {render(w.tokens, active_mask(w.activations))}")
        if show_activations:
            lines.append(_activation_note(w))
    return "\n".join(lines)


def build_request(windows: Sequence[Window], show_activations: bool = False, max_tokens: int = 200) -> LLMRequest:
    """System + few-shot (a fixed, cacheable prefix) + this latent's windows and marked-token summary."""
    fewshot = load_dialogue("explain_fewshot")
    user = load_prompt("explain_user").render(examples=format_windows(windows, show_activations),
                                              tokens=token_summary(windows))
    return LLMRequest(
        messages=[*fewshot, {"role": "user", "content": user}],
        system=load_prompt("explain_system").text,
        max_tokens=max_tokens,
        temperature=0.0,
        cache_prefix=len(fewshot),
        stage="explain",
        expected_output_tokens=60,
    )


def retry_request(request: LLMRequest, bad_answer: str, copied: str | None = None) -> LLMRequest:
    """The same conversation plus the rejected answer and a corrective turn (a new cache key).

    The turn says what was wrong: no `[EXPLANATION]:` line, or (with `copied`) a few-shot answer repeated.
    """
    if copied is None:
        correction = load_prompt("explain_retry").text
    else:
        correction = load_prompt("explain_copy_retry").render(copied=copied)
    messages = [*request.messages, {"role": "assistant", "content": bad_answer or "(empty)"},
                {"role": "user", "content": correction}]
    return LLMRequest(
        messages=messages, system=request.system, max_tokens=request.max_tokens, temperature=request.temperature,
        cache_prefix=request.cache_prefix, stage=request.stage, expected_output_tokens=request.expected_output_tokens,
    )


def parse_explanation(text: str | None) -> str | None:
    """The text after the last `[EXPLANATION]:` line, or None when there is none (or it is empty).

    Quotes around the whole answer are dropped; quotes inside it (`"to" before an infinitive`) are kept.
    """
    if not text:
        return None
    for line in reversed(text.strip().splitlines()):
        m = EXPLANATION_RE.match(line)
        if m:
            found = m.group(1).strip()
            if len(found) >= 2 and found[0] == found[-1] == '"' and '"' not in found[1:-1]:
                found = found[1:-1].strip()
            return found or None
    return None


def judge_answer(text: str | None, fewshot: Sequence[str]) -> Verdict:
    """Parse an answer; one that repeats a few-shot explanation counts as a failed parse."""
    explanation = parse_explanation(text)
    if explanation is None:
        return Verdict(None)
    copied = fewshot_copy(explanation, fewshot)
    return Verdict(None, copied) if copied is not None else Verdict(explanation)
