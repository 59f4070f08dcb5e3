"""Detection and fuzzing prompts: build a request for a group of windows, parse the 0/1 answer.

Templates (interp_eval/prompts/), by format (`templates`): one window a prompt (the offline model's) is
`<scorer>_system` + `<scorer>_fewshot_single` (`### user` / `### assistant` blocks); several windows a prompt
(the hosted models' 5) is `<scorer>_system_multi` alone, no few-shot; both end in `<scorer>_user` ($explanation,
$windows, $n), with `score_retry` ($n, $example) for a corrective turn. System + few-shot are the same bytes in
every call and marked as the fixed prefix (`cache_prefix`).

Why the hosted format has no few-shot: at 5 windows a prompt a scoring call is about 200 tokens of windows and
explanation, and every fixed token is paid 40 times a latent (20 detection + 20 fuzzing calls). A provider
caches a prefix only from 1,024 tokens (Claude Sonnet; 4,096 for Haiku 4.5 and Opus 4.5) and bills a read at
0.1x, so a cached prefix costs at least 102 tokens a call; the compact instruction costs about 50 uncached and
keeps what the scorer is asked: the explanation, the numbered windows, one 0/1 digit each (bench/llm_cost.py
prices both). Measured with the offline model in this format (bench/scorer_power.py, 30 latents, 5 + 5 test
windows): detection power +0.029 [-0.016, +0.069] with the old system prompt and 5-window example, +0.047
[-0.005, +0.104] with this one; fuzzing +0.011 [-0.045, +0.068], then +0.028 [-0.009, +0.065].

An answer is valid when it holds a bracketed list of exactly n digits 0/1 ("[1,0,0,1,0]"; spaces
tolerated); the last such list in the text counts. Anything else is asked again with the bad answer
and a corrective user turn appended (a different request, so the response cache never replays the
bad answer), up to max_retries times.
"""

from __future__ import annotations

import re
from typing import Sequence

from ..llm import LLMRequest, LLMResponse, choice_probabilities
from ..prompting import load_dialogue, load_prompt
from .registry import Job, LLMScorer, ScorePrompt, register_scorer
from .testset import ScoreWindow

LLM_SCORERS = ("detection", "fuzzing")
LIST_RE = re.compile(r"\[\s*([^\[\]]*?)\s*\]")
DIGITS_RE = re.compile(r"^[01](\s*,\s*[01])*$")


def wants_logprobs(backend: str, model: str) -> bool:
    """Ask for token logprobs where the backend gives them: OpenAI-compatible and local, not Anthropic;
    OpenAI's reasoning models (o1/o3/o4, gpt-5) refuse the parameter."""
    if backend == "anthropic":
        return False
    m = model.lower().rsplit("/", 1)[-1]
    if backend == "openai" and (m.startswith("gpt-5") or re.match(r"o\d", m)):
        return False
    return True


def templates(scorer: str, n: int) -> tuple[str, str | None]:
    """(system prompt, few-shot or None) of an n-window prompt. One window a prompt (the offline model) gets
    one-window examples (a small model shown 5-digit answers answers a single window with 5 digits); several
    windows a prompt (hosted models) get the compact system prompt alone (see the module docstring)."""
    return (f"{scorer}_system", f"{scorer}_fewshot_single") if n == 1 else (f"{scorer}_system_multi", None)


def prompt_version(scorer: str) -> str:
    names = (*templates(scorer, 1), templates(scorer, 2)[0], f"{scorer}_user", "score_retry")
    return "+".join(load_prompt(n).version for n in names)


def format_windows(windows: Sequence[ScoreWindow], marked: bool) -> str:
    return "\n".join(f"{i}. {w.text(marked)}" for i, w in enumerate(windows, 1))


def build_request(scorer: str, explanation: str, windows: Sequence[ScoreWindow], *, logprobs: bool = True) -> LLMRequest:
    """System (+ few-shot, one window a prompt) as the fixed prefix, then one user turn with the explanation and the
    numbered windows."""
    if scorer not in LLM_SCORERS:
        raise ValueError(f"not an LLM scorer: {scorer!r}")
    n = len(windows)
    system, shots = templates(scorer, n)
    fewshot = load_dialogue(shots) if shots else []
    user = load_prompt(f"{scorer}_user").render(
        explanation=" ".join(str(explanation).split()), windows=format_windows(windows, scorer == "fuzzing"), n=n
    )
    return LLMRequest(
        messages=[*fewshot, {"role": "user", "content": user}],
        system=load_prompt(system).text,
        max_tokens=4 * n + 8,
        temperature=0.0,
        logprobs=logprobs,
        top_logprobs=5 if logprobs else 0,
        cache_prefix=len(fewshot),
        stage=scorer,
        expected_output_tokens=2 * n + 1,
    )


def example_answer(n: int) -> str:
    return "[" + ",".join(("10010" * n)[:n]) + "]"


def retry_request(request: LLMRequest, bad_answer: str | None, n: int) -> LLMRequest:
    """The conversation so far + the bad answer + a corrective turn."""
    fix = load_prompt("score_retry").render(n=n, example=example_answer(n))
    messages = [*request.messages, {"role": "assistant", "content": (bad_answer or "").strip() or "(empty)"},
                {"role": "user", "content": fix}]
    return LLMRequest(
        messages=messages, system=request.system, max_tokens=request.max_tokens, temperature=request.temperature,
        logprobs=request.logprobs, top_logprobs=request.top_logprobs, cache_prefix=request.cache_prefix,
        stage=request.stage, expected_output_tokens=request.expected_output_tokens,
    )


def parse_answer(text: str | None, n: int) -> list[int] | None:
    """The n 0/1 digits of the last bracketed list in the answer, or None when there is no such list."""
    if not text:
        return None
    for inner in reversed(LIST_RE.findall(text)):
        if DIGITS_RE.match(inner):
            digits = [int(d) for d in re.findall(r"[01]", inner)]
            return digits if len(digits) == n else None
    return None


def answer_probabilities(response: LLMResponse, n: int) -> list[float] | None:
    """P("1") per window from the answer's token logprobs; None without logprobs or when they do not line up."""
    if response.logprobs is None:
        return None
    try:
        found = choice_probabilities(response.logprobs, ("0", "1"))
    except ValueError:
        return None
    if len(found) != n:
        return None
    return [float(p["1"]) for p in found]


class _Classifier(LLMScorer):
    """Detection / fuzzing: the LLM says for each window whether the explanation fits (0/1 digits)."""

    def version(self) -> str:
        return prompt_version(self.name)

    def prompts(self, job: Job, cfg, logprobs: bool) -> list[ScorePrompt]:
        return [ScorePrompt(job, i, group, build_request(self.name, job.tests.explanation, group, logprobs=logprobs), len(group))
                for i, group in enumerate(job.tests.prompts(cfg.windows_per_prompt))]

    def parse(self, text: str | None, prompt: ScorePrompt) -> list[int] | None:
        return parse_answer(text, prompt.answer_size)

    def retry(self, request: LLMRequest, bad_answer: str | None, prompt: ScorePrompt) -> LLMRequest:
        return retry_request(request, bad_answer, prompt.answer_size)

    def probabilities(self, response: LLMResponse, prompt: ScorePrompt) -> list[float] | None:
        return answer_probabilities(response, prompt.answer_size)


@register_scorer
class Detection(_Classifier):
    name = "detection"
    description = "the LLM reads each test window and the explanation and says whether the latent fires (0/1)"


@register_scorer
class Fuzzing(_Classifier):
    name = "fuzzing"
    needs_marks = True
    description = "the LLM says whether a window's highlighted tokens match the explanation (0/1)"
