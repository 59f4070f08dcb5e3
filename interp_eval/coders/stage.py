"""The `train` stage: cache activations once, train each requested coder, evaluate, save SAELens folders.

Each coder is recorded (its folder, metric rows, reconstruction eval and manifest line) as soon as it is
trained, so a crash while training the next one loses nothing finished: a re-run skips it. Nothing of the
run directory changes before the options, the hookpoints, the held-out split and the size of the training split
were checked.

`control="random-model"` trains the same coders, on the same corpus split and with the same settings,
on a randomly initialised copy of the subject model (Heap et al. 2025, arXiv 2501.17727): the coders
are named with RANDOM_MODEL_SUFFIX, record the random model (`random:<base>:0`) as their model, and
are evaluated against it.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.distributed as dist

from ..artifacts import RunDir, config_hash
from ..config_fields import NOT_AN_OPTION, flags
from ..errors import UserError
from ..catalog import RECON_EVAL, TRAIN_METRICS
from ..subject.activations import CacheKey, build_activation_caches
from ..subject.corpus import CorpusConfig, split_tokens, take_contexts
from ..subject.hookpoints import Site, resolve_site, site_dim
from ..subject.model import RANDOM_MODEL_SUFFIX, SubjectModel, load_subject_model, parse_random_spec, random_model_spec
from .coder import CODER_KINDS
from .evaluate import evaluate_reconstruction
from .saelens import is_saelens_folder, save_coder
from ..distributed import init_distributed
from .train import TrainConfig, remove_checkpoint, train_coder

log = logging.getLogger(__name__)

RANDOM_MODEL_CONTROL = "random-model"
CONTROLS = (RANDOM_MODEL_CONTROL,)


def control_name(name: str) -> str:
    """The name of a coder trained on the random-model control: `<name>-randmodel`."""
    return name if name.endswith(RANDOM_MODEL_SUFFIX) else name + RANDOM_MODEL_SUFFIX


def train_site(subject: SubjectModel, c: TrainConfig) -> Site:
    """The site a coder trains at: any hookpoint for an SAE; for a transcoder, an MLP (it reads the MLP's input and
    predicts its output), refused in one line elsewhere."""
    site = resolve_site(subject, c.hookpoint)
    if CODER_KINDS[c.coder][0] == "transcoder" and site.kind not in ("mlp_out", "mlp_in"):
        raise UserError(
            f"--coder {c.coder} --hookpoint {c.hookpoint}: a transcoder reads an MLP's input and predicts its output, "
            f"so it needs an MLP hookpoint (e.g. layers.{site.layer}.mlp), not a {site.kind} site"
        )
    return site


@dataclass(frozen=True)
class CoderGrid:
    """The coders `interp-eval train` trains: every kind x hookpoint x k, each with the same other settings."""

    kinds: tuple[str, ...] = field(default=(TrainConfig.coder,), metadata=flags("--coder"))
    """sae, bae (binary SAE), tc (skip transcoder), btc (binary skip transcoder); repeat for several."""
    hookpoints: tuple[str, ...] = field(default=(TrainConfig.hookpoint,), metadata=flags("--hookpoint"))
    """Hookpoint(s): layers.9.mlp (MLP output; transcoders: MLP input to output), layers.9 (residual stream),
    layers.9.self_attn, or a TransformerLens name such as blocks.9.hook_resid_pre (subject/hookpoints.py)."""
    ks: tuple[int, ...] = field(default=(TrainConfig.k,), metadata=flags("--k"))
    """Active latents per token (repeat for several)."""

    def configs(self, settings: TrainConfig) -> tuple[TrainConfig, ...]:
        """One TrainConfig per grid point, with `settings` for everything else."""
        combos = [(c, h, k) for c in self.kinds for h in self.hookpoints for k in self.ks]
        if settings.name and len(combos) > 1:
            raise UserError("--name names one coder; drop it when training several")
        return tuple(replace(settings, coder=c, hookpoint=h, k=k) for c, h, k in combos)


@dataclass(frozen=True)
class TrainStageConfig:
    """The `train` stage: `coders` trained from one activation pass per hookpoint, then evaluated."""

    coders: tuple[TrainConfig, ...] = field(default=(), metadata=NOT_AN_OPTION)
    """The coders to train (the command builds them from its CoderGrid)."""
    model: str | None = None
    """Subject model: the packaged default, a HF id or a local folder (random:<model>[:seed] is its randomly
    initialised copy)."""
    dataset: str = CorpusConfig.dataset
    """Corpus: the packaged BBC News, local .txt/.jsonl/.parquet files or folder (a .txt file holds one document
    per blank-line-separated paragraph), or a HF dataset name."""
    ctx_len: int = CorpusConfig.ctx_len
    """Tokens per context."""
    encoding: str = CorpusConfig.encoding
    """Text encoding of local .txt/.jsonl files, e.g. latin-1."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N."""
    eval_tokens: int = 16384
    """Held-out tokens for the reconstruction eval."""
    cache_dtype: str = "float16"
    """Activation cache dtype: float16, bfloat16, float32."""
    resume: bool = True
    """Continue from a checkpoint if one exists."""
    force: bool = False
    """Retrain even if the coder is already complete."""
    control: str | None = None
    """random-model: train on a randomly initialised copy of --model (same architecture, tokenizer, tokens,
    settings; Heap et al. 2025); coders are named <name>-randmodel."""

    @property
    def corpus(self) -> CorpusConfig:
        return CorpusConfig(dataset=self.dataset, ctx_len=self.ctx_len, encoding=self.encoding)


def _commit(rd: RunDir, c: TrainConfig, coder, rows: list[dict], fires: torch.Tensor, recon: list[dict], cfg_hash: str,
            record: dict) -> None:
    """Record one trained coder, the moment it is done: a crash while training the next one keeps it.

    Order: the folder (atomically), its metric and evaluation rows, run.json, the manifest line (from here on
    a re-run skips it), and only then its checkpoint goes: a crash before the line resumes from that checkpoint.
    """
    n_tok = max(rows[-1]["tokens"], 1) if rows else 1
    save_coder(coder, rd.coder_dir(c.coder_name), fires.double() / n_tok, {"train": asdict(c)})
    rd.append(TRAIN_METRICS, rows, replace=["coder"])
    rd.append(RECON_EVAL, recon, replace=["coder"])
    rd.init(record)
    rd.mark_complete(f"train:{c.coder_name}", cfg_hash, [f"coders/{c.coder_name}", TRAIN_METRICS.name, RECON_EVAL.name])
    remove_checkpoint(rd.root, c.coder_name)


def check_train_split(corpus: CorpusConfig, tokenizer, tokens: int) -> None:
    """Refuse `tokens` beyond the training split before any model pass: caching would find out only at its end.

    `tokens` counts distinct training tokens (the activation cache holds them; --epochs passes over them again),
    so epochs do not change what the split must hold. A streamed Hugging Face dataset is not counted: caching
    stops when it runs out, as before.
    """
    have = split_tokens(corpus, tokenizer, "train", tokens)
    if have is None or have >= tokens // corpus.ctx_len * corpus.ctx_len:
        return
    if have == 0:
        raise UserError(f"--dataset {corpus.dataset}: the train split is empty (no documents with text)")
    raise UserError(
        f"--dataset {corpus.dataset}: the train split holds {have} tokens at --ctx-len {corpus.ctx_len}, --tokens {tokens} "
        f"asked for: pass --tokens {have} or fewer, with --epochs E to train on them E times (--tokens counts distinct "
        "tokens, each epoch repeats them), or add data"
    )


def run_train_stage(run: str | Path, cfg: TrainStageConfig) -> list[str]:
    """Train `cfg.coders` (all from one activation pass per hookpoint); returns the coder names.

    `cfg.control="random-model"` trains them on the random-model control of `cfg.model` instead (see
    the module docstring). Coders of any random model are named `<name>-randmodel`.
    """
    configs, model, corpus = list(cfg.coders), cfg.model, cfg.corpus
    if cfg.control is not None:
        if cfg.control not in CONTROLS:
            raise UserError(f"--control {cfg.control}: use {' or '.join(CONTROLS)} (coders of a randomly initialised subject model)")
        model = random_model_spec(model)
    rd = RunDir(run)
    d = init_distributed()
    if d.is_main:
        rd.prepare()
    subject = load_subject_model(model, cfg.device)
    if parse_random_spec(subject.name) is not None:
        configs = [replace(c, name=control_name(c.coder_name)) for c in configs]
    dev = subject.device
    if d.world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", d.local_rank)
    names = [c.coder_name for c in configs]
    if len(set(names)) != len(names):
        raise UserError(f"two coders would share a name ({', '.join(names)}): give --name or distinct settings")
    sites = {c.coder_name: train_site(subject, c) for c in configs}  # fail on bad options before any model pass
    for c in configs:
        c.coder_config(site_dim(subject, sites[c.coder_name]), subject.d_model, subject.name, sites[c.coder_name].side)
    hashes = {
        c.coder_name: config_hash({"train": asdict(c), "model": subject.name, "corpus": asdict(corpus), "cache_dtype": cfg.cache_dtype})
        for c in configs
    }
    todo = [
        c for c in configs
        if cfg.force or not (rd.is_complete(f"train:{c.coder_name}", hashes[c.coder_name]) and is_saelens_folder(rd.coder_dir(c.coder_name)))
    ]
    for c in configs:
        if c not in todo:
            log.info("%s is already trained with this config: skipped", c.coder_name)
    if not todo:
        return names
    # the held-out tokens of the evaluation, taken (and checked) before anything of the run changes
    heldout = take_contexts(corpus, subject.tokenizer, "heldout", cfg.eval_tokens)
    tokens = max(c.tokens for c in todo)
    check_train_split(corpus, subject.tokenizer, tokens)
    key = CacheKey(model=subject.name, corpus=corpus, split="train", n_tokens=tokens, dtype=cfg.cache_dtype)
    hookpoints = sorted({c.hookpoint for c in todo})
    if d.is_main:
        caches = build_activation_caches(rd.root, subject, key, hookpoints)
    if d.world > 1:
        dist.barrier()
        if not d.is_main:
            caches = build_activation_caches(rd.root, subject, key, hookpoints)
    stage = "train" if parse_random_spec(subject.name) is None else f"train-{RANDOM_MODEL_CONTROL}"
    record = {stage: {"model": subject.name, "corpus": asdict(corpus), "coders": [asdict(c) for c in configs]}}
    for c in todo:
        coder, rows, fires = train_coder(rd.root, c, caches[c.hookpoint], subject.name, dev, resume=cfg.resume, dist_info=d,
                                           site=sites[c.coder_name].side)
        if d.is_main:
            _commit(rd, c, coder, rows, fires, evaluate_reconstruction(subject, c.hookpoint, {c.coder_name: coder}, heldout),
                    hashes[c.coder_name], record)
    if d.world > 1:
        dist.barrier()
    return names
