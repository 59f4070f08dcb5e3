"""Scorers as plugins: one interface, one registry.

A scorer declares what it is (name, whether it calls an LLM, whether it needs an explanation, the
control its power is measured against, its headline metric, its version) and turns scoring jobs
into prediction rows (one row per test window, or per prompt for the intruder scorer). The stage,
the aggregates, the CLI's `--scorer` choices and the report read this registry, so adding a scorer
is one module that calls `register_scorer` (plus its prompt files):

    from interp_eval.scoring.registry import Scorer, register_scorer

    @register_scorer
    class MyScorer(Scorer):
        name = "my-scorer"
        ...

Two kinds of scorer:
- `LLMScorer`: builds one request per prompt (`prompts`) and parses the answer (`parse`); the stage
  sends the requests, retries unparseable answers with a corrective turn and writes the rows.
- `LocalScorer`: computes its rows itself (`score`), with no LLM call.

Controls (see controls.py): `control = "shuffled"` scorers are scored a second time on a sample of
latents with another latent's explanation (or reference windows); `control = "chance"` scorers are
compared with the chance level `chance(cfg)` (the intruder's 1/n).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Sequence

from ..catalog import CONTROL_NONE, CONTROL_SHUFFLED, NO_EXPLAINER
from ..errors import UserError

if TYPE_CHECKING:
    from ..llm import LLMRequest, LLMResponse
    from .testset import LatentTests, ScoreWindow

BUILTIN_MODULES = ("classifier", "embedding", "example_embedding", "intruder", "simulation", "steering")
EXPLAINED, LIVE = "explained", "live"


@dataclass
class Job:
    """One latent to score: its test set and what it is scored with.

    `tests.explanation` is the text the scorer sees: the latent's own explanation, or under the
    shuffled control the explanation of `source_latent`. `reference` is what a reference-based
    scorer compares with (example-embedding: window ids of the source latent's explanation windows).
    """

    tests: "LatentTests"
    explainer: str = NO_EXPLAINER
    control: str = CONTROL_NONE
    source_latent: int | None = None
    reference: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int, str, str]:
        return (self.tests.coder, self.tests.latent, self.explainer, self.control)


@dataclass
class ScorePrompt:
    """One LLM prompt of a job: the windows it shows and the request."""

    job: Job
    index: int
    windows: list["ScoreWindow"]
    request: "LLMRequest"
    answer_size: int  # how many answers the reply must hold (digits, or 1 for a choice)
    truth: Any = None  # scorer-specific ground truth (the intruder's position)


class Scorer:
    name: ClassVar[str]
    description: ClassVar[str] = ""
    uses_llm: ClassVar[bool] = False
    needs_explanation: ClassVar[bool] = True
    needs_marks: ClassVar[bool] = False  # reads ScoreWindow.fuzz_mask (highlighted windows)
    needs_prompt_logprobs: ClassVar[bool] = False  # reads the prompt's token logprobs (LLMRequest.echo_marker): not every backend can
    latents: ClassVar[str] = EXPLAINED  # which latents it scores: the explained ones, or every live one (LIVE)
    control: ClassVar[str] = CONTROL_SHUFFLED  # "shuffled" (own vs another latent's) or "chance"
    metrics: ClassVar[tuple[str, ...]] = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc")
    code_version: ClassVar[str] = "1"

    @property
    def label(self) -> str:
        """The scorer as its rows name it: its name, or `<name>@<negatives>` with hard negatives (`labelled`)."""
        return getattr(self, "_label", self.name)

    def version(self) -> str:
        """Recorded in every row; a changed version means the latent is scored anew."""
        return f"{self.name}@{self.code_version}"

    def model(self, llm_model: str) -> str:
        return llm_model

    def headline(self, has_probabilities: bool) -> str:
        """The metric power is measured on: AUC where the scorer gives scores, else balanced accuracy."""
        return "auc" if has_probabilities else "balanced_accuracy"

    def chance(self, cfg: Any) -> float | None:
        return None

    def expected_windows(self, job: Job) -> list[int]:
        """The window ids of a finished job's rows (for resume): its test windows, by default."""
        return sorted(w.window_id for w in job.tests.windows)


class LLMScorer(Scorer):
    uses_llm = True

    def prompts(self, job: Job, cfg: Any, logprobs: bool) -> list[ScorePrompt]:
        raise NotImplementedError

    def parse(self, text: str | None, prompt: ScorePrompt) -> list[int] | None:
        raise NotImplementedError

    def retry(self, request: "LLMRequest", bad_answer: str | None, prompt: ScorePrompt) -> "LLMRequest":
        raise NotImplementedError

    def probabilities(self, response: "LLMResponse", prompt: ScorePrompt) -> list[float] | None:
        return None

    def window_rows(self, prompt: ScorePrompt, answer: list[int] | None, probs: list[float] | None) -> list[dict]:
        """Per-window (label, prediction, probability, answer) of one prompt's parsed answer."""
        return [{
            "window_id": w.window_id, "label": w.label, "quantile": w.quantile, "position": j + 1,
            "prediction": answer[j] if answer is not None else None,
            "probability": probs[j] if probs is not None else None, "answer": None,
        } for j, w in enumerate(prompt.windows)]


class LocalScorer(Scorer):
    uses_llm = False

    def score(self, jobs: Sequence[Job], context: Any) -> list[list[dict]]:
        """Per job, its window rows (window_id, label, quantile, similarity, ...); the stage adds the rest."""
        raise NotImplementedError


_REGISTRY: dict[str, Scorer] = {}
_loaded = False


def register_scorer(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator: make a scorer available to the stage, the CLI and the report."""
    _REGISTRY[cls.name] = cls()
    return cls


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for mod in BUILTIN_MODULES:
            importlib.import_module(f"{__package__}.{mod}")


def scorers() -> dict[str, Scorer]:
    _load_builtins()
    return dict(_REGISTRY)


def scorer_names() -> tuple[str, ...]:
    return tuple(scorers())


def get_scorer(name: str) -> Scorer:
    """The scorer registered as `name`; a hard-negative label (`detection@neighbours`) gives its scorer."""
    found = scorers()
    base = name.partition("@")[0]
    if base not in found:
        raise UserError(f"--scorer {name}: unknown scorer (use one of {', '.join(found)})")
    return found[base]


def labelled(scorer: Scorer, negatives: str) -> Scorer:
    """The scorer as its rows name it: itself with random negatives, else a copy named `<name>@<negatives>`, so that
    its scores with hard negatives sit beside (never over) its scores with random ones."""
    if negatives == "random":
        return scorer
    import copy

    twin = copy.copy(scorer)
    twin._label = f"{scorer.name}@{negatives}"
    return twin


def preferred_metric(scorer: str, prefer: str) -> str:
    """`prefer` if the scorer reports it, else its first metric (`prefer` for a plugin scorer not loaded now)."""
    try:
        metrics = get_scorer(scorer).metrics
    except Exception:
        return prefer
    return prefer if prefer in metrics else metrics[0]
