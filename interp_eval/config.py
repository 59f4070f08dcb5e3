"""Named presets: one place that says what `reproduce` runs at each scale.

- tiny:  seconds-scale, for tests (layer 3, expansion 2, a few thousand tokens).
- demo:  the offline default behind `make demo`: 2 CPU cores, < 30 minutes after set-up, the
         packaged SmolLM2-135M-Instruct and BBC News corpus, the packaged Qwen2.5-Coder-1.5B as
         explainer and scorer. Large enough to show the reconstruction trade-off; far too small for
         statistically meaningful interpretability differences (a handful of latents per coder).
- paper: the paper's setup (PAPER.md) for a GPU machine and an API key. Where PAPER.md is silent
         (training tokens, latents explained per coder) the values here are our assumptions and are
         marked as such.

Every preset also trains `control_coders`: those coder kinds, at the same hookpoints, ks and seeds
and with the same settings, on a randomly initialised copy of the subject model (the random-model
control of Heap et al. 2025; named `<coder>-randmodel`). `reproduce --no-control` skips them.

Scoring in every preset: `free_scorers` (no LLM: embedding, example-embedding) on every latent the
token-table explainer covers or every live one; the LLM `scorers` on the first `explain_latents`
latents of each coder, with the LLM explainer's explanations. Every score run carries its shuffled
control. `windows_per_prompt=None` takes the backend's default (1 offline, 5 hosted); the offline
model also sees each test window cut to its 16 tokens around the peak (scoring.stage.LOCAL_WINDOW_TOKENS).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace


@dataclass(frozen=True)
class Preset:
    name: str
    model: str | None  # subject model; None = the packaged default
    dataset: str
    hookpoints: tuple[str, ...]
    coders: tuple[str, ...]
    control_coders: tuple[str, ...]  # coder kinds also trained on the random-model control
    ks: tuple[int, ...]
    seeds: tuple[int, ...]
    expansion: int
    train_tokens: int
    batch_size: int
    ctx_len: int
    optimizer: str
    eval_tokens: int
    mine_tokens: int
    mine_ctx_len: int
    n_explain: int
    n_test: int
    n_negative: int
    min_examples: int
    explain_latents: int  # latents per coder explained by the LLM and scored by the LLM scorers
    windows_per_prompt: int | None  # LLM scorers; None: the backend's default (offline 1, hosted 5)
    scorers: tuple[str, ...]  # LLM scorers, on the LLM explainer's explanations
    free_scorers: tuple[str, ...]  # scorers without an LLM, on every token-table-explained (or live) latent
    llm_model: str | None  # None = the offline local model
    embedding_latents: int | None = None  # latents per coder for free scorers that read an explanation (None: all)
    llm_test_windows: int | None = None  # activating and non-activating test windows each for LLM scorers (None: n_test/n_negative)
    intruder_trials: int = 4  # intruder prompts per latent, when `scorers` holds the intruder
    assumptions: tuple[str, ...] = field(default=())

    def with_overrides(self, **kw) -> "Preset":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny", model=None, dataset="bbc-news", hookpoints=("layers.3.mlp",), coders=("sae", "bae", "tc", "btc"),
        control_coders=("sae", "bae"),
        ks=(8,), seeds=(1,), expansion=2, train_tokens=8192, batch_size=256, ctx_len=256, optimizer="signum",
        eval_tokens=1024, mine_tokens=16384, mine_ctx_len=256, n_explain=10, n_test=10, n_negative=10, min_examples=20,
        explain_latents=2, windows_per_prompt=None, scorers=("detection", "fuzzing"), free_scorers=("embedding", "example-embedding"),
        llm_model=None,
    ),
    "demo": Preset(
        name="demo", model=None, dataset="bbc-news", hookpoints=("layers.9.mlp",), coders=("sae", "bae", "tc", "btc"),
        control_coders=("sae", "bae"),
        ks=(32,), seeds=(1,), expansion=8, train_tokens=300_000, batch_size=1024, ctx_len=256, optimizer="signum",
        eval_tokens=8192, mine_tokens=200_000, mine_ctx_len=256, n_explain=20, n_test=10, n_negative=10,
        min_examples=200, explain_latents=5, windows_per_prompt=None, scorers=("detection", "intruder"),
        free_scorers=("embedding", "example-embedding"), llm_model=None, embedding_latents=500, llm_test_windows=5,
        intruder_trials=2,
    ),
    "paper": Preset(
        name="paper", model="HuggingFaceTB/SmolLM2-135M", dataset="bbc-news",
        hookpoints=("layers.0.mlp", "layers.9.mlp", "layers.18.mlp", "layers.27.mlp"), coders=("sae", "bae", "tc", "btc"),
        control_coders=("sae", "bae", "tc", "btc"),
        ks=(16, 32, 64, 128), seeds=(1, 2, 3), expansion=64, train_tokens=500_000_000, batch_size=65_536, ctx_len=2048,
        optimizer="signum", eval_tokens=1_048_576, mine_tokens=10_000_000, mine_ctx_len=256, n_explain=40, n_test=50,
        n_negative=50, min_examples=200, explain_latents=100, windows_per_prompt=5, scorers=("detection", "fuzzing"),
        free_scorers=("embedding", "example-embedding"), llm_model="claude",
        assumptions=(
            "training tokens per coder (500M) are not given in PAPER.md",
            "latents explained per coder (the first 100 live ones) are not given in PAPER.md",
            "the paper's corpus is not named in PAPER.md: pass --dataset with your pretraining-like corpus",
        ),
    ),
}


def get_preset(name: str) -> Preset:
    from .errors import UserError

    if name not in PRESETS:
        raise UserError(f"--preset {name}: use one of {', '.join(PRESETS)}")
    return PRESETS[name]
