"""Explainer prompts: the fixed system + few-shot prefix, the latent's windows and token summary, and the answer checks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from ..llm import LLMRequest
from ..prompting import active_mask, load_dialogue, load_prompt, render
from .copies import fewshot_copy
from .tokens import Window, token_key, token_summary

__all__ = ["Window", "Verdict", "OutputTokens", "prompt_version", "fewshot_explanations", "format_windows",
           "format_output_tokens", "build_request", "build_output_request", "retry_request", "parse_explanation",
           "judge_answer"]

EXPLANATION_RE = re.compile(r"^\s*\[?explanation\]?\s*:\s*(.+?)\s*$", re.IGNORECASE)
PROMPTS = ("explain_system", "explain_fewshot", "explain_user", "explain_retry", "explain_copy_retry")
# the output-centric explainers: `llm-outputs` adds one prompt to the windows' (explain_outputs); `output` reads the
# output tokens alone, with its own system prompt and few-shot
OUTPUT_PROMPTS = ("output_explain_system", "output_explain_fewshot", "output_explain_user", "explain_retry", "output_copy_retry")
FEWSHOT = {False: "explain_fewshot", True: "output_explain_fewshot"}  # by "reads output tokens alone"


@dataclass(frozen=True)
class OutputTokens:
    """What a latent's decoder row does to the next token (latents.parquet: promotes, suppresses)."""

    promotes: Sequence[str]
    suppresses: Sequence[str]


@dataclass(frozen=True)
class Verdict:
    """What an answer is worth: an accepted explanation, or the reason it is asked again."""

    explanation: str | None  # accepted: parseable and not a few-shot copy
    copied: str | None = None  # the few-shot answer it repeats (then explanation is None)


def prompt_version(outputs: bool = False, alone: bool = False) -> str:
    """The explainer's prompt versions: the windows' prompts (plus explain_outputs with `outputs`), or with `alone` the
    output-token prompts."""
    names = OUTPUT_PROMPTS if alone else PROMPTS + (("explain_outputs",) if outputs else ())
    return "+".join(load_prompt(n).version for n in names)


def fewshot_explanations(alone: bool = False) -> tuple[str, ...]:
    """The explanations the few-shot assistant turns give (what a lazy model copies)."""
    found = (parse_explanation(m["content"]) for m in load_dialogue(FEWSHOT[alone]) if m["role"] == "assistant")
    return tuple(e for e in found if e)


def format_output_tokens(tokens: Sequence[str]) -> str:
    """`"minister", "MP", "000"`: each token as the token table shows it (no surrounding whitespace, escaped, no
    forged marks), repeats after stripping dropped, a quotation mark as `"\\""`."""
    shown = list(dict.fromkeys(k for k in (token_key(t) for t in tokens) if k))
    return ", ".join('"' + t.replace('"', '\\"') + '"' for t in shown) or "(none)"


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


def build_request(windows: Sequence[Window], show_activations: bool = False, max_tokens: int = 200,
                  outputs: OutputTokens | None = None) -> LLMRequest:
    """System + few-shot (a fixed, cacheable prefix) + this latent's windows and marked-token summary (+ with
    `outputs`, the tokens it promotes and suppresses: the paper's prompt otherwise unchanged)."""
    user = load_prompt("explain_user").render(examples=format_windows(windows, show_activations),
                                              tokens=token_summary(windows))
    if outputs is not None:
        user += "\n" + _outputs_text("explain_outputs", outputs)
    return _request("explain_system", "explain_fewshot", user, max_tokens)


def build_output_request(outputs: OutputTokens, max_tokens: int = 200) -> LLMRequest:
    """The `output` explainer: system + few-shot + the tokens the latent promotes and suppresses, nothing else."""
    return _request("output_explain_system", "output_explain_fewshot", _outputs_text("output_explain_user", outputs), max_tokens)


def _outputs_text(template: str, outputs: OutputTokens) -> str:
    return load_prompt(template).render(promotes=format_output_tokens(outputs.promotes),
                                        suppresses=format_output_tokens(outputs.suppresses))


def _request(system: str, fewshot_name: str, user: str, max_tokens: int) -> LLMRequest:
    fewshot = load_dialogue(fewshot_name)
    return LLMRequest(
        messages=[*fewshot, {"role": "user", "content": user}],
        system=load_prompt(system).text,
        max_tokens=max_tokens,
        temperature=0.0,
        cache_prefix=len(fewshot),
        stage="explain",
        expected_output_tokens=60,
    )


def retry_request(request: LLMRequest, bad_answer: str, copied: str | None = None, alone: bool = False) -> LLMRequest:
    """The same conversation plus the rejected answer and a corrective turn (a new cache key).

    The turn says what was wrong: no `[EXPLANATION]:` line, or (with `copied`) a few-shot answer repeated (`alone`:
    the output-token explainer's wording).
    """
    if copied is None:
        correction = load_prompt("explain_retry").text
    else:
        correction = load_prompt("output_copy_retry" if alone else "explain_copy_retry").render(copied=copied)
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
