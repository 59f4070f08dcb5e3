"""The intruder scorer (LLM, no explanation): can the LLM tell a latent's windows from another latent's?

Each trial shows `intruder_windows` (n) highlighted windows in a seeded order: n - 1 held-out
activating test windows of the latent (marks: its active tokens) and one activating test window of
another live latent of the same coder (marks: that latent's active tokens), which is not one of the
latent's own known activating windows. The LLM names the odd one out. Per latent, `intruder_trials`
trials; a trial's row has label 1, prediction 1 when the LLM named the intruder (so accuracy =
recall = the share of trials right), `answer` the position it named and `position` the true one.
Chance is 1/n; power is accuracy - 1/n over latents (controls.chance_power).

Written from the design of delphi's IntruderScorer and arXiv 2507.08473, not from their code.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Sequence

import numpy as np

from ..llm import LLMRequest, LLMResponse, choice_probabilities
from ..prompting import load_dialogue, load_prompt
from .registry import Job, LLMScorer, ScorePrompt, register_scorer
from .testset import LatentTests, ScoreWindow, seeded_rng

CHOICE_RE = re.compile(r"\[\s*(\d+)\s*\]")


@register_scorer
class Intruder(LLMScorer):
    name = "intruder"
    description = "the LLM picks the one window of another latent among n (chance 1/n); no explanation"
    needs_explanation = False
    needs_marks = True
    control = "chance"
    metrics = ("accuracy",)

    def version(self) -> str:
        names = ("intruder_system", "intruder_fewshot", "intruder_user", "intruder_retry")
        return "+".join(load_prompt(n).version for n in names)

    def headline(self, has_probabilities: bool) -> str:
        return "accuracy"

    def chance(self, cfg) -> float:
        return 1.0 / cfg.intruder_windows

    def expected_windows(self, job: Job) -> list[int]:
        return sorted(intruder.window_id for _, intruder, _ in job.extra.get("trials", []))

    def prepare(self, jobs: Sequence[Job], tests_of: dict[tuple[str, int], LatentTests], known: dict[tuple[str, int], set[int]], cfg) -> None:
        """Attach each job's trials: (own windows, intruder window, intruder position)."""
        by_coder: dict[str, list[int]] = {}
        for coder, latent in tests_of:
            by_coder.setdefault(coder, []).append(latent)
        n = cfg.intruder_windows
        for job in jobs:
            t = job.tests
            own = [w for w in t.windows if w.label == 1]
            others = [x for x in sorted(by_coder.get(t.coder, [])) if x != t.latent]
            trials = []
            rng = seeded_rng(cfg.seed, t.coder, t.latent, "intruder")
            if len(own) >= n - 1 and others:
                for i in range(cfg.intruder_trials):
                    picked = [own[(i * (n - 1) + j) % len(own)] for j in range(n - 1)]
                    intruder = self._intruder(t, others, tests_of, known.get((t.coder, t.latent), set()), rng)
                    if intruder is None:
                        break
                    trials.append((picked, intruder, int(rng.integers(n))))
            job.extra["trials"] = trials

    @staticmethod
    def _intruder(t: LatentTests, others: list[int], tests_of, own_known: set[int], rng: np.random.Generator) -> ScoreWindow | None:
        for _ in range(20):
            donor = tests_of[(t.coder, others[int(rng.integers(len(others)))])]
            cands = [w for w in donor.windows if w.label == 1 and w.window_id not in own_known]
            if cands:
                w = cands[int(rng.integers(len(cands)))]
                return replace(w, label=0)
        return None

    def prompts(self, job: Job, cfg, logprobs: bool) -> list[ScorePrompt]:
        out = []
        for i, (own, intruder, pos) in enumerate(job.extra.get("trials", [])):
            windows = [*own[:pos], intruder, *own[pos:]]
            out.append(ScorePrompt(job, i, windows, build_request(windows, logprobs=logprobs), 1, truth=pos))
        return out

    def parse(self, text: str | None, prompt: ScorePrompt) -> list[int] | None:
        return parse_choice(text, len(prompt.windows))

    def retry(self, request: LLMRequest, bad_answer: str | None, prompt: ScorePrompt) -> LLMRequest:
        n = len(prompt.windows)
        fix = load_prompt("intruder_retry").render(n=n, example=min(2, n))
        messages = [*request.messages, {"role": "assistant", "content": (bad_answer or "").strip() or "(empty)"},
                    {"role": "user", "content": fix}]
        return replace(request, messages=messages)

    def probabilities(self, response: LLMResponse, prompt: ScorePrompt) -> list[float] | None:
        return truth_probability(response, len(prompt.windows), prompt.truth)

    def window_rows(self, prompt: ScorePrompt, answer: list[int] | None, probs: list[float] | None) -> list[dict]:
        w = prompt.windows[prompt.truth]
        return [{
            "window_id": w.window_id, "label": 1, "quantile": None, "position": prompt.truth + 1,
            "prediction": None if answer is None else int(answer[0] == prompt.truth + 1),
            "probability": probs[0] if probs is not None else None, "answer": None if answer is None else answer[0],
        }]


def build_request(windows: Sequence[ScoreWindow], *, logprobs: bool = True) -> LLMRequest:
    fewshot = load_dialogue("intruder_fewshot")
    text = "\n".join(f"{i}. {w.text(True)}" for i, w in enumerate(windows, 1))
    user = load_prompt("intruder_user").render(windows=text, n=len(windows))
    return LLMRequest(
        messages=[*fewshot, {"role": "user", "content": user}], system=load_prompt("intruder_system").text,
        max_tokens=8, temperature=0.0, logprobs=logprobs, top_logprobs=5 if logprobs else 0,
        cache_prefix=len(fewshot), stage="intruder", expected_output_tokens=3,
    )


def truth_probability(response: LLMResponse, n: int, truth: int) -> list[float] | None:
    """[P(position truth + 1)] among the choices 1..n, from the answer's logprobs (None without them)."""
    if response.logprobs is None:
        return None
    try:
        found = choice_probabilities(response.logprobs, tuple(str(i) for i in range(1, n + 1)))
    except ValueError:
        return None
    return [float(found[0][str(truth + 1)])] if found else None


def parse_choice(text: str | None, n: int) -> list[int] | None:
    """[k] for the last bracketed number 1..n in the answer (a bare number is accepted too), else None."""
    if not text:
        return None
    found = CHOICE_RE.findall(text) or re.findall(r"\b(\d+)\b", text)
    for k in reversed(found):
        if 1 <= int(k) <= n:
            return [int(k)]
    return None
