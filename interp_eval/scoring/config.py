"""The score stage's options (`ScoreConfig`) and the prompt format each backend gets by default."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..config_fields import NOT_AN_OPTION, count_or_all, flags
from ..errors import UserError
from ..catalog import NEGATIVES
from .registry import get_scorer, scorer_names

LOCAL_WINDOWS_PER_PROMPT = 1  # the offline model's format, chosen by measured power (README)
HOSTED_WINDOWS_PER_PROMPT = 5  # the paper's
LOCAL_WINDOW_TOKENS = 16  # the offline model sees 16 of a window's 32 tokens around its peak: more power, faster (README)


def scorers_help() -> str:
    return "Scorer (repeatable): " + ", ".join(scorer_names()) + "."


@dataclass
class ScoreConfig:
    scorers: tuple[str, ...] = field(default=("detection", "fuzzing"), metadata=flags("--scorer", help=scorers_help))
    """Scorers to run (registry.py)."""
    coders: tuple[str, ...] | None = field(default=None, metadata=flags("--coder"))
    """Only these coders (repeatable)."""
    latents: int | tuple[int, ...] | None = field(default=None, metadata=flags("--latents", parser=count_or_all))  # or indices
    """Score the first N explained latents of each coder (default: all explained; example-embedding: all live)."""
    sample: int | None = None
    """Or a seeded random sample of N live latents of each coder (the latents `explain --sample N` explained with the
    same seed; latent_selection.py): the same latents for every scorer and its control."""
    sample_seed: int = 0
    """Seed of --sample (explain's --seed)."""
    windows_per_prompt: int | None = None
    """Test windows per LLM prompt (default: 5, the paper's, for hosted models; 1 for the offline model, chosen by
    measured power)."""
    n_activating: int = 50
    """Activating test windows per latent (at most)."""
    n_negative: int = 50
    """Non-activating test windows per latent (at most)."""
    seed: int = 0
    """Seed of window order, subsampling, fuzzing marks and bootstrap intervals."""
    freq_adjust: bool = field(default=False, metadata=flags("--freq-adjust"))
    """Also report the frequency-weighted F1 and scores by firing-frequency bin."""
    max_retries: int = 2
    """Corrective re-asks after an answer that is not a list of 0/1 digits."""
    control_latents: int | None = None
    """Latents per coder scored again with another latent's explanation (the shuffled control; default: all, 0: none)."""
    explainers: tuple[str, ...] | None = field(default=None, metadata=flags("--explainer"))
    """Only these explainers' explanations (default: every explainer in explanations.parquet)."""
    intruder_windows: int = 5
    """Windows per intruder prompt (chance 1/n)."""
    intruder_trials: int = 4
    """Intruder prompts per latent."""
    steering_prompts: int = 8
    """Steering: neutral openings (prompts/steering_prompts.txt) each latent's direction is steered on: its trials."""
    steering_tokens: int = 16
    """Steering: tokens each continuation generates (greedy)."""
    steering_scale: float = 4.0
    """Steering: the added vector's norm, in units of the median activation norm of the site the coder writes to
    (subject/steering.py)."""
    negatives: str = "random"
    """Non-activating test windows: random (the paper's), neighbours (windows where a latent with a near decoder
    direction fires) or similar (text most like the latent's own): hard negatives test whether an explanation is
    specific. A hard-negative score is reported as its own scorer, e.g. detection@neighbours."""
    window_tokens: int | None = None
    """LLM scorers: cut each test window to N tokens around its highest activation; 0: whole windows (default: 16
    for the offline model, chosen by measured power; whole windows for hosted models)."""
    chunk: int = field(default=64, metadata=NOT_AN_OPTION)
    """Finished jobs (a latent's scoring by one scorer, explainer and control) per part file (or fewer, every
    parts.WRITE_SECONDS): the resume granularity."""

    def __post_init__(self):  # sequences given in code (lists) become the tuples the config hash and the CLI use
        self.scorers = tuple(self.scorers)
        self.coders = tuple(self.coders) if self.coders else None
        self.explainers = tuple(self.explainers) if self.explainers else None
        if self.latents is not None and not isinstance(self.latents, int):
            self.latents = tuple(int(x) for x in self.latents)

    def validate(self) -> None:
        if not self.scorers:
            raise UserError("--scorer: name at least one scorer")
        for s in self.scorers:
            if "@" in s:
                raise UserError(f"--scorer {s}: name the scorer alone and its negatives with --negatives")
            get_scorer(s)
        if self.negatives not in NEGATIVES:
            raise UserError(f"--negatives {self.negatives}: use one of {', '.join(NEGATIVES)}")
        if self.negatives != "random" and "intruder" in self.scorers:
            raise UserError(f"--negatives {self.negatives}: the intruder scorer reads no non-activating windows; score it "
                            "in a run of its own")
        if len(set(self.scorers)) != len(self.scorers):
            raise UserError("--scorer: each scorer once")
        for name in ("n_activating", "n_negative", "intruder_trials"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.windows_per_prompt is not None and self.windows_per_prompt < 1:
            raise UserError("--windows-per-prompt must be at least 1")
        if self.window_tokens is not None and self.window_tokens < 0:
            raise UserError("--window-tokens must be >= 0 (0: whole windows)")
        if self.intruder_windows < 2:
            raise UserError("--intruder-windows must be at least 2")
        if "intruder" in self.scorers and self.n_activating < self.intruder_windows - 1:
            raise UserError(
                f"--intruder-windows {self.intruder_windows} needs {self.intruder_windows - 1} activating test windows a "
                f"latent (--n-activating {self.n_activating}): no intruder trial could be formed; lower "
                "--intruder-windows or raise --n-activating")
        if self.steering_prompts < 1 or self.steering_tokens < 1:
            raise UserError("--steering-prompts and --steering-tokens must be at least 1")
        if not self.steering_scale >= 0:
            raise UserError(f"--steering-scale must be >= 0, got {self.steering_scale}")
        if self.max_retries < 0:
            raise UserError("--max-retries must be >= 0")
        if self.control_latents is not None and self.control_latents < 0:
            raise UserError("--control-latents must be >= 0 (0: no control)")
        if isinstance(self.latents, int) and self.latents < 1:
            raise UserError("--latents must be at least 1")
        if self.sample is not None and self.latents is not None:
            raise UserError("give --latents or --sample, not both")
        if self.sample is not None and self.sample < 1:
            raise UserError("--sample must be at least 1")


def with_backend_format(cfg: ScoreConfig, backend: str) -> ScoreConfig:
    """Fill the prompt format the user left open with the backend's default: the offline model gets one window a
    prompt cut to 16 tokens (chosen by measured power, README), hosted models the paper's 5 whole windows."""
    local = backend == "local"
    wpp = cfg.windows_per_prompt or (LOCAL_WINDOWS_PER_PROMPT if local else HOSTED_WINDOWS_PER_PROMPT)
    cut = cfg.window_tokens if cfg.window_tokens is not None else (LOCAL_WINDOW_TOKENS if local else 0)
    return replace(cfg, windows_per_prompt=wpp, window_tokens=cut or None)
