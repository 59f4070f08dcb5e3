"""The simulation scorer (Bills et al. 2023, "Language models can explain neurons in language models"; delphi's
OpenAISimulator): a simulator reads the explanation and predicts the latent's activation on every token of a test
window; the score is the correlation of the predictions with the truth.

The all-at-once method: one prompt per test window (`simulation_prompt.txt`: an instruction, two worked examples,
then the explanation and the window as `token<tab>unknown` lines). The simulator's prediction for a token is the
expected value of the 0-9 digit it would write in place of that line's "unknown", from the next-token
distribution at that point: sum_d d p(d) / sum_d p(d) over the digits among the `TOP_LOGPROBS` most likely tokens
(0 where no digit is among them; the prompt says most activations are 0). Nothing is generated: the whole window is
read in one forward pass (`LLMRequest.echo_marker`), so this needs a backend that returns the prompt's token
logprobs: the offline model, or an OpenAI-compatible server whose /v1/completions echoes them (vLLM). Anthropic
and OpenAI's own models cannot, and the stage refuses the scorer with them before any work
(`llm/backends/openai_backend.py` `prompt_logprobs_refusal`).

Per latent (aggregate.py, `simulation_metrics`), over all tokens of its test windows together (activating and
non-activating, as Bills et al. score top and random sequences together):
- `correlation`: Pearson correlation of the predictions with the true activations (a negative window's are 0);
- `correlation_firing`: the same against the 0/1 firing pattern (activation > 0). For a binary latent the two are
  the same target; reporting both puts binary and continuous coders on equal terms.
A simulator that predicts the same value everywhere carries no information: its correlation is 0 (Pearson's is
undefined there); a latent whose true values are constant over its test tokens has no correlation (NaN).
The shuffled control scores each latent again with another latent's explanation; power = own - control, paired.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..llm import LLMRequest, LLMResponse
from ..prompting import load_prompt, token_line
from .registry import Job, LLMScorer, ScorePrompt, register_scorer
from .testset import ScoreWindow

MARK = "\ue000"  # a private-use character: the read points of the prompt (token_line removes any from the corpus)
PLACEHOLDER = "unknown"
DIGITS = tuple(str(d) for d in range(10))
TOP_LOGPROBS = 20  # alternatives per read point: the most an OpenAI-compatible server returns
TEMPLATE = "simulation_prompt"


def simulation_text(explanation: str, window: ScoreWindow) -> str:
    """The raw prompt of one window, a MARK after each token's tab (where the simulator's digit is read)."""
    lines = "\n".join(f"{token_line(t)}\t{MARK}{PLACEHOLDER}" for t in window.tokens)
    return load_prompt(TEMPLATE).render(explanation=" ".join(str(explanation).split()).replace(MARK, ""), lines=lines)


def build_request(explanation: str, window: ScoreWindow) -> LLMRequest:
    return LLMRequest.user(simulation_text(explanation, window), max_tokens=1, temperature=0.0, logprobs=True,
                           top_logprobs=TOP_LOGPROBS, stage="simulation", expected_output_tokens=0, echo_marker=MARK)


def expected_digit(top: Sequence[tuple[str, float]]) -> float:
    """sum_d d p(d) / sum_d p(d) over the digit tokens among the alternatives (0 when there is none)."""
    probs: dict[int, float] = {}
    for token, logprob in top:
        t = token.strip()
        if t in DIGITS and math.isfinite(logprob):
            probs[int(t)] = probs.get(int(t), 0.0) + math.exp(logprob)
    total = sum(probs.values())
    return sum(d * p for d, p in probs.items()) / total if total > 0 else 0.0


def pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pearson's r; 0 for a constant prediction (no information), NaN for a constant truth (nothing to predict)."""
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if len(truth) < 2 or np.ptp(truth) == 0:
        return float("nan")
    if np.ptp(pred) == 0:
        return 0.0
    p, t = pred - pred.mean(), truth - truth.mean()
    return float((p * t).sum() / math.sqrt((p * p).sum() * (t * t).sum()))


def simulation_metrics(simulated: Sequence[Any], actual: Sequence[Any]) -> dict[str, float]:
    """A latent's two correlations over the tokens of its windows that got predictions (None: a failed window)."""
    pairs = [(np.asarray(s, np.float64), np.asarray(a, np.float64)) for s, a in zip(simulated, actual) if s is not None]
    if not pairs:
        return {"correlation": float("nan"), "correlation_firing": float("nan")}
    pred = np.concatenate([s for s, _ in pairs])
    truth = np.concatenate([a for _, a in pairs])
    return {"correlation": pearson(pred, truth), "correlation_firing": pearson(pred, (truth > 0).astype(np.float64))}


@register_scorer
class Simulation(LLMScorer):
    name = "simulation"
    description = "the LLM predicts the latent's activation on every token from the explanation; Pearson r with the truth"
    metrics = ("correlation", "correlation_firing")
    needs_prompt_logprobs = True

    def version(self) -> str:
        return load_prompt(TEMPLATE).version

    def headline(self, has_probabilities: bool) -> str:
        return "correlation"

    def prompts(self, job: Job, cfg, logprobs: bool) -> list[ScorePrompt]:
        return [ScorePrompt(job, i, [w], build_request(job.tests.explanation, w), len(w.tokens))
                for i, w in enumerate(job.tests.windows)]

    def parse(self, text: str | None, prompt: ScorePrompt) -> list[int] | None:
        return []  # nothing is generated: the answer is the logprobs (probabilities)

    def retry(self, request: LLMRequest, bad_answer: str | None, prompt: ScorePrompt) -> LLMRequest:
        return request

    def probabilities(self, response: LLMResponse, prompt: ScorePrompt) -> list[float] | None:
        """The simulated activation of every token of the window (None when the read points do not line up)."""
        if response.logprobs is None or len(response.logprobs) != prompt.answer_size:
            return None
        return [expected_digit(t.top) for t in response.logprobs]

    def window_rows(self, prompt: ScorePrompt, answer: list[int] | None, probs: list[float] | None) -> list[dict]:
        w = prompt.windows[0]
        failed = None if probs is not None else "parse: the simulator's logprobs do not cover the window's tokens"
        return [{
            "window_id": w.window_id, "label": w.label, "quantile": w.quantile, "position": 1, "prediction": None,
            "probability": None, "answer": None, "simulated": probs, "actual": [float(a) for a in w.activations],
            **({"parse_ok": False, "failure": failed} if failed else {}),
        }]
