"""The steering scorer (output-centric, Gur-Arieh et al. 2025): does the explanation say what the latent *does*?

For each latent, each of `steering_prompts` neutral openings (prompts/steering_prompts.txt) is continued greedily by
the subject model twice: with the latent's decoder direction added at the site its coder writes to, and without
(steering_texts.py, subject/steering.py: the added vector is `steering_scale` x the site's median activation norm along
the unit decoder row). The LLM reads the explanation and the two continuations, in a seeded order, and names the one
the feature was switched on in. A trial's row has label 1 and prediction 1 when the LLM named the steered one, so
a latent's accuracy is the share of its trials judged right; chance is 1/2.

Power is measured against the shuffled control (controls.py): the same latent's continuation pairs judged with
another latent's explanation. An explanation that names what the latent writes beats the control; a judge that
picks by some other cue (the odder text, a position) scores the same with either explanation, so its power is 0.
When steering changes nothing (scale 0, or a latent whose direction the model ignores) the two continuations are
the same text, and any answer is right half the time over the seeded orders: the score says nothing, as it should.

Rows: `window_id` is the opening's index (a trial is not a corpus window), `position` where the steered continuation
was shown (1 or 2), `answer` the position the LLM named, `probability` P(the steered position) from the answer's
logprobs where the backend gives them.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Sequence

from ..llm import LLMRequest, LLMResponse
from ..prompting import load_dialogue, load_prompt, render
from .intruder import parse_choice, truth_probability
from .registry import Job, LLMScorer, ScorePrompt, register_scorer
from .steering_texts import Continuation, continuations, steering_prompts
from .testset import seeded_rng

TEMPLATES = ("steering_system", "steering_fewshot", "steering_user", "steering_retry", "steering_prompts")


@register_scorer
class Steering(LLMScorer):
    name = "steering"
    description = ("the subject model continues neutral openings with and without the latent's decoder direction; the "
                   "LLM names the steered continuation from the explanation (chance 1/2)")
    metrics = ("accuracy",)

    def version(self) -> str:
        return "+".join(load_prompt(n).version for n in TEMPLATES)

    def headline(self, has_probabilities: bool) -> str:
        return "accuracy"

    def expected_windows(self, job: Job) -> list[int]:
        return list(range(len(job.extra.get("trials", []))))

    def prepare_run(self, rd, jobs: Sequence[Job], cfg, dry_run: bool = False) -> None:
        """Attach each job's trials: (continuations, steered position 0 or 1). A dry run generates nothing: its trials
        hold stand-in continuations of ordinary words, as long as the real ones, so its token counts are right."""
        keys = {(j.tests.coder, j.tests.latent) for j in jobs}
        if dry_run:
            stand_in = [Continuation(p, [" word"] * cfg.steering_tokens, [" word"] * cfg.steering_tokens)
                        for p in steering_prompts(cfg.steering_prompts)]
            made = {k: stand_in for k in keys}
        else:
            made = continuations(rd, keys, cfg.steering_prompts, cfg.steering_tokens, cfg.steering_scale)
        for job in jobs:
            key = (job.tests.coder, job.tests.latent)
            rng = seeded_rng(cfg.seed, key[0], key[1], "steering")  # the same order for a latent's score and its control
            job.extra["trials"] = [(c, int(rng.integers(2))) for c in made[key]]

    def prompts(self, job: Job, cfg, logprobs: bool) -> list[ScorePrompt]:
        out = []
        for i, (c, pos) in enumerate(job.extra.get("trials", [])):
            request = build_request(job.tests.explanation, c, pos, logprobs=logprobs)
            out.append(ScorePrompt(job, i, [], request, 1, truth=pos))
        return out

    def parse(self, text: str | None, prompt: ScorePrompt) -> list[int] | None:
        return parse_choice(text, 2)

    def retry(self, request: LLMRequest, bad_answer: str | None, prompt: ScorePrompt) -> LLMRequest:
        messages = [*request.messages, {"role": "assistant", "content": (bad_answer or "").strip() or "(empty)"},
                    {"role": "user", "content": load_prompt("steering_retry").text}]
        return replace(request, messages=messages)

    def probabilities(self, response: LLMResponse, prompt: ScorePrompt) -> list[float] | None:
        """P(the steered position) from the answer's logprobs (None without logprobs)."""
        return truth_probability(response, 2, prompt.truth)

    def window_rows(self, prompt: ScorePrompt, answer: list[int] | None, probs: list[float] | None) -> list[dict]:
        return [{
            "window_id": prompt.index, "label": 1, "quantile": None, "position": prompt.truth + 1,
            "prediction": None if answer is None else int(answer[0] == prompt.truth + 1),
            "probability": probs[0] if probs is not None else None, "answer": None if answer is None else answer[0],
        }]


def build_request(explanation: str, c: Continuation, steered_position: int, *, logprobs: bool = True) -> LLMRequest:
    """The judge's prompt: the explanation, the opening and the two continuations (the steered one at
    `steered_position`, 0 or 1). The continuations are model text shown as data (prompting.render)."""
    pair = [render(c.steered), render(c.clean)]
    if steered_position == 1:
        pair.reverse()
    fewshot = load_dialogue("steering_fewshot")
    user = load_prompt("steering_user").render(explanation=" ".join(str(explanation).split()), prompt=render([c.prompt]),
                                               first=pair[0], second=pair[1])
    return LLMRequest(
        messages=[*fewshot, {"role": "user", "content": user}], system=load_prompt("steering_system").text,
        max_tokens=8, temperature=0.0, logprobs=logprobs, top_logprobs=5 if logprobs else 0,
        cache_prefix=len(fewshot), stage="steering", expected_output_tokens=3,
    )
