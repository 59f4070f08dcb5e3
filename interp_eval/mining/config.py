"""What the `mine` stage is asked to do: `Sampling` (what it keeps per latent) and `MineConfig` (the whole stage).

Every default and every option's help text is written here once; `interp-eval mine` builds its
options from these fields (cli_options.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from ..config_fields import flags
from ..errors import UserError
from ..subject.corpus import CorpusConfig

if TYPE_CHECKING:
    import torch

CPU_BATCH_CONTEXTS = 32
GPU_BATCH_CONTEXTS = 256  # 65,536 tokens: a GPU batch's launches and syncs cost the same at any size
GPU_PREFETCH = 2


@dataclass(frozen=True)
class Sampling:
    """What the mining pass keeps per latent (see catalog.CONTEXTS for what each kind is for)."""

    window: int = 32
    """Tokens per example window (windows never cross a context)."""
    n_top: int = 20
    """Top windows per latent, by max activation (feature browser only)."""
    n_explain: int = 40
    """Explanation windows per latent, over 10 activation quantiles."""
    n_test: int = 50
    """Activating test windows per latent (disjoint from the explanation ones)."""
    n_negative: int = 50
    """Non-activating test windows per latent."""
    reservoir: int = 200
    """Uniform sample of activating windows per latent that explain/test windows are drawn from: 20 per
    activation decile, enough for 4 + 5."""
    negative_pool: int = 500
    """Random windows (codes kept) that non-activating windows are drawn from: a latent firing on 3% of tokens
    is quiet in ~38% of 32-token windows, still ~190 of 500."""
    n_quantiles: int = 10
    """Activation quantiles the explanation and test windows are spread over."""
    min_examples: int = 200
    """Latents with fewer activating windows are marked too_rare (paper: 200)."""
    seed: int = 0
    """Sampling seed."""

    def __post_init__(self):
        for name in ("window", "n_top", "n_negative", "reservoir", "negative_pool", "n_quantiles"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("n_explain", "n_test", "min_examples"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.reservoir < self.n_explain + self.n_test:
            raise UserError(
                f"--reservoir {self.reservoir} cannot hold --n-explain {self.n_explain} + --n-test {self.n_test} "
                f"disjoint windows: raise --reservoir (default {Sampling.reservoir})"
            )
        if self.negative_pool < self.n_negative:
            raise UserError(f"--negative-pool {self.negative_pool} is smaller than --n-negative {self.n_negative}")


@dataclass(frozen=True)
class MineConfig(Sampling):
    """The `mine` stage: every coder of the run (plus `coders`) over `tokens` held-out tokens."""

    tokens: int = 200_000
    """Held-out tokens to mine (paper: 10M; the packaged corpus holds ~311k)."""
    coders: tuple[Path, ...] = field(default=(), metadata=flags("--coder"))
    """Extra coder to mine too (repeatable): a SAELens folder (e.g. one saved by sae-lens), a sparsify folder, or a
    sparsify root (one coder per hookpoint folder, named <root>.<hookpoint>)."""
    model: str | None = None
    """Subject model: the packaged default, a HF id or a local folder; coders of its random-model control
    (random:<model>:<seed>) are mined in the same pass."""
    allow_model_mismatch: bool = field(default=False, metadata=flags("--allow-model-mismatch"))
    """Run a coder trained on another model than the subject (e.g. a base-model coder on the instruct subject) on
    the subject model, with a warning; latents.parquet and the report record the mismatch. Width and hookpoint must
    still fit."""
    dataset: str = CorpusConfig.dataset
    """Corpus (its held-out split is mined): packaged BBC News, local files or folder (a .txt file holds one
    document per blank-line-separated paragraph), or a HF dataset."""
    ctx_len: int = CorpusConfig.ctx_len
    """Tokens per context (as in training)."""
    encoding: str = CorpusConfig.encoding
    """Text encoding of local .txt/.jsonl files (as in training), e.g. latin-1."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N."""
    batch_contexts: int | None = None
    """Contexts per forward pass (per process under torchrun); default 32 on CPU, 256 on a GPU, where each batch
    costs a fixed number of kernel launches and host syncs whatever its size. Results do not depend on it."""
    prefetch: int | None = None
    """Batches drawn and tokenised ahead in a background thread while the model runs; default 2 on a GPU, 0 on CPU
    (where the tokeniser would take a core from the forward pass). Results do not depend on it."""
    checkpoint_every: int = 100
    """Save the mining state every N batches (resume point)."""
    force: bool = False
    """Mine again even if this config is already complete."""
    output_tokens: int = 10
    """Per latent, the tokens its decoder row promotes and suppresses most through the unembedding (latents.parquet:
    what the output-centric explainers read); 0: none."""

    def __post_init__(self):
        super().__post_init__()
        if self.output_tokens < 0:
            raise UserError(f"--output-tokens must not be negative, got {self.output_tokens}")
        for name in ("tokens", "ctx_len", "batch_contexts", "checkpoint_every"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.tokens // self.ctx_len == 0:
            raise UserError(f"--tokens {self.tokens} is less than one context of {self.ctx_len} tokens")
        if self.prefetch is not None and self.prefetch < 0:
            raise UserError(f"--prefetch must not be negative, got {self.prefetch}")

    def batch_for(self, device: torch.device) -> int:
        """Contexts per batch on `device`: the one asked for, else the device's default."""
        if self.batch_contexts is not None:
            return self.batch_contexts
        return GPU_BATCH_CONTEXTS if device.type == "cuda" else CPU_BATCH_CONTEXTS

    def prefetch_for(self, device: torch.device) -> int:
        """Batches tokenised ahead on `device`: the number asked for, else the device's default."""
        if self.prefetch is not None:
            return self.prefetch
        return GPU_PREFETCH if device.type == "cuda" else 0

    @property
    def sampling(self) -> Sampling:
        """Only the sampling settings: what the states keep, and what the config hash records."""
        return Sampling(**{f.name: getattr(self, f.name) for f in fields(Sampling)})

    @property
    def corpus(self) -> CorpusConfig:
        return CorpusConfig(dataset=self.dataset, ctx_len=self.ctx_len, encoding=self.encoding)


__all__ = ["MineConfig", "Sampling"]
