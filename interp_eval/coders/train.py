"""Training loop for one sparse coder from a cached activation stream (CPU, CUDA, torchrun DDP)."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from ..artifacts import RunDir, atomic_path
from ..config_fields import NOT_AN_OPTION
from ..distributed import DistInfo, all_reduce
from ..errors import UserError
from ..subject.activations import ActivationCache
from ..subject.allocator import reuse_freed_memory
from ..progress import progress_bar
from .coder import CODER_KINDS, CoderConfig, Encoded, SparseCoder, fvu
from .optim import Optimizer, default_lr

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """One coder's training settings. `coder`, `hookpoint` and `k` name the coder; `interp-eval train`
    sets them from its --coder, --hookpoint and --k grid (coders/stage.py, CoderGrid); every other field
    is an option of that command (cli_options.py), its docstring the help text."""

    coder: str = field(default="sae", metadata=NOT_AN_OPTION)
    """sae | bae | tc | btc."""
    hookpoint: str = field(default="layers.9.mlp", metadata=NOT_AN_OPTION)
    """Hookpoint, e.g. layers.9.mlp (subject/hookpoints.py lists every name)."""
    k: int = field(default=32, metadata=NOT_AN_OPTION)
    """Active latents per token."""
    expansion: int = 8
    """Latents = expansion x d_model (paper: 64)."""
    tokens: int = 300_000
    """Training tokens."""
    batch_size: int = 1024
    """Tokens per step (per process under torchrun)."""
    epochs: int = 1
    """Passes over the training tokens."""
    optimizer: str = "adam"
    """adam (warm-up + linear decay) or signum (schedule-free; the paper's)."""
    lr: float | None = None
    """Learning rate; default: the paper's rule base/sqrt(M/2^14)."""
    warmup_steps: int = 1000
    """Adam warm-up steps (capped at 10% of the steps)."""
    seed: int = 1
    """Seed of the coder's initialisation and the order of training tokens."""
    temperature: float = 1.0
    """Binary coders: straight-through sigmoid temperature T."""
    theta_init: float = 0.004
    """Binary coders: initial per-latent threshold."""
    normalize_decoder: bool | None = None
    """Unit-norm decoder rows (default: SAEs yes, transcoders no)."""
    decoder_scale: bool = False
    """A learned global scale on the decoder's output (with unit-norm rows, a binary code's output norm is otherwise
    fixed by k); saved folded into W_dec."""
    skip: bool | None = None
    """Transcoder skip connection (default on)."""
    auxk_alpha: float = 0.0
    """AuxK dead-latent loss weight (paper: off; sparsify uses 1/32)."""
    dead_tokens: int = 1_000_000
    """A latent is dead after this many tokens without firing."""
    checkpoint_every: int = 100
    """Save a training checkpoint every N steps."""
    name: str | None = None
    """Coder folder name (one coder only)."""

    def __post_init__(self):
        if self.coder not in CODER_KINDS:
            raise UserError(f"--coder {self.coder}: use one of {', '.join(CODER_KINDS)}")
        if self.optimizer not in ("adam", "signum"):
            raise UserError(f"--optimizer {self.optimizer}: use adam or signum")
        for field in ("k", "expansion", "tokens", "batch_size", "epochs"):
            if getattr(self, field) <= 0:
                raise UserError(f"--{field.replace('_', '-')} must be positive, got {getattr(self, field)}")

    @property
    def coder_name(self) -> str:
        return self.name or f"{self.coder}-{self.hookpoint}-k{self.k}"

    def coder_config(self, d_in: int, d_out: int, model_name: str, site: str = "output") -> CoderConfig:
        kind, activation = CODER_KINDS[self.coder]
        d_sae = d_in * self.expansion
        if self.k > d_sae:
            raise UserError(f"--k {self.k} is larger than the number of latents ({d_sae} = {d_in} x {self.expansion})")
        return CoderConfig(
            kind=kind,
            activation=activation,
            d_in=d_in,
            d_sae=d_sae,
            d_out=d_out if kind == "transcoder" else d_in,
            k=self.k,
            skip=self.skip if kind == "transcoder" else False,
            normalize_decoder=self.normalize_decoder,
            decoder_scale=self.decoder_scale,
            theta_init=self.theta_init,
            temperature=self.temperature,
            hookpoint=self.hookpoint,
            site=site if kind == "sae" else "input",
            model_name=model_name,
        )


METRICS_FLUSH_STEPS = 32  # on a GPU, steps whose metrics are read in one transfer


def metrics_flush_steps(device: torch.device) -> int:
    """Steps whose metrics are read from the device at once: 1 on CPU (reading costs nothing there, and
    `on_step` sees each step as it ends), METRICS_FLUSH_STEPS on a GPU."""
    return METRICS_FLUSH_STEPS if device.type == "cuda" else 1


def optimizer_step(coder: SparseCoder, opt: Optimizer) -> None:
    """One update after backward: the gradient parallel to each unit-norm decoder row removed, the step, the rows
    put back on the unit sphere (coders whose decoder is normalised)."""
    if coder.cfg.normalize_decoder:
        coder.remove_gradient_parallel_to_decoder_directions()
    opt.step()
    opt.zero_grad()
    if coder.cfg.normalize_decoder:
        coder.set_decoder_norm_to_unit_norm()


def dead_latents(since_fired: torch.Tensor, tokens_seen: int, dead_tokens: int) -> torch.Tensor:
    """Latents silent for `dead_tokens` tokens (or for every token so far, early in training)."""
    return since_fired >= min(dead_tokens, max(tokens_seen, 1))


def auxk_loss(coder: SparseCoder, code: Encoded, y: torch.Tensor, y_hat: torch.Tensor, dead: torch.Tensor) -> torch.Tensor:
    """Gao et al.'s AuxK: the top k_aux = d/2 dead latents (ReLU of their pre-activations) reconstruct the
    residual; scaled by min(n_dead / k_aux, 1) and normalised by the batch's total variance of y."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return y.new_zeros(())
    k_aux = min(y.shape[-1] // 2, n_dead)
    pre = code.pre.masked_fill(~dead, float("-inf"))
    values, indices = torch.topk(pre, k_aux, dim=-1, sorted=False)
    e = (y - y_hat).detach()
    e_hat = F.embedding_bag(indices, coder.W_dec, per_sample_weights=F.relu(values), mode="sum")
    scale = min(n_dead / k_aux, 1.0)
    total_variance = (y - y.mean(0)).pow(2).sum()
    return scale * (e_hat - e).pow(2).sum() / total_variance


def _checkpoint_path(root: Path, name: str) -> Path:
    return RunDir(root).checkpoints_dir / f"{name}.pt"


def train_coder(
    run_root: Path,
    cfg: TrainConfig,
    cache: ActivationCache,
    model_name: str,
    device: torch.device,
    resume: bool = True,
    dist_info: DistInfo | None = None,
    on_step: Callable[[dict], None] | None = None,
    site: str = "output",
) -> tuple[SparseCoder, list[dict], torch.Tensor]:
    """Train one coder; returns (coder in inference state, per-step metric rows, firing counts).

    `site`: the side of the hookpoint's module an SAE reads (a transcoder reads the input, predicts the output).
    `on_step(row)` is called after every step with that step's metrics (for notebooks and loggers).
    """
    d = dist_info or DistInfo()
    # each step allocates its [latents, d_in] gradients afresh (85 MB each at 36,864 latents, above
    # glibc's mmap threshold): without reuse, every step faults ~460 MB back in (115k page faults a step
    # there). The train stage has this on already (loading the subject model turns it on); a notebook
    # that trains from a cache gets it here.
    reuse_freed_memory()
    reads_input = site == "input" or CODER_KINDS[cfg.coder][0] == "transcoder"
    ccfg = cfg.coder_config(cache.d_in if reads_input else cache.d_out, cache.d_out, model_name, site)
    torch.manual_seed(cfg.seed)
    coder = SparseCoder(ccfg, device=device, seed=cfg.seed)
    lr = cfg.lr if cfg.lr is not None else default_lr(ccfg.activation, cfg.optimizer, ccfg.d_sae)
    # the cache may hold more tokens than this coder asks for (several coders share it)
    total = min(
        cache.total_steps(cfg.batch_size, cfg.seed, cfg.epochs, world=d.world),
        cfg.tokens * cfg.epochs // (cfg.batch_size * d.world),
    )
    if total == 0:
        raise UserError(
            f"--batch-size {cfg.batch_size} x {d.world} process(es) is larger than the {cache.n_tokens} cached tokens"
        )
    opt = Optimizer(coder.parameters(), cfg.optimizer, lr, total, cfg.warmup_steps)
    since_fired = torch.zeros(ccfg.d_sae, dtype=torch.long, device=device)
    fire_counts = torch.zeros(ccfg.d_sae, dtype=torch.long, device=device)
    rows: list[dict] = []
    start = 0
    ckpt_path = _checkpoint_path(run_root, cfg.coder_name)
    if resume and ckpt_path.exists():
        start = _load_checkpoint(ckpt_path, coder, opt, ccfg, cfg, since_fired, fire_counts, rows)
        log.info("resuming %s from step %d of %d", cfg.coder_name, start, total)
    ddp = None
    if d.world > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(coder, device_ids=[d.local_rank] if device.type == "cuda" else None)
    model = ddp or coder
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    tokens_seen = start * cfg.batch_size * d.world
    t0 = time.time()
    # each step's metrics stay on the device until a flush reads a block of them in one transfer: on a GPU a
    # read per step would stall the host until the step ran, so it could never queue the next one meanwhile
    flush_every = metrics_flush_steps(device)
    pending: list[tuple[int, int, float, float, torch.Tensor]] = []  # step, tokens, lr, elapsed, [fvu, l0, dead]
    with progress_bar(f"train {cfg.coder_name}", total=total) as bar:
        bar.advance(start)

        def flush() -> None:
            values = torch.stack([m for *_, m in pending]).cpu().tolist() if pending else []
            for (step_i, tokens_i, lr_i, elapsed_i, _), (fvu_i, l0_i, dead_i) in zip(pending, values):
                row = {"coder": cfg.coder_name, "step": step_i, "tokens": tokens_i, "fvu": fvu_i, "l0": l0_i,
                       "dead_fraction": dead_i, "lr": lr_i, "elapsed_s": elapsed_i}
                rows.append(row)
                bar.advance(1)
                bar.set_postfix(f"fvu {row['fvu']:.3f}  L0 {row['l0']:.1f}  dead {row['dead_fraction']:.1%}")
                if on_step is not None:
                    on_step(row)
            pending.clear()

        for step, xin, xout in cache.batches(cfg.batch_size, cfg.seed, cfg.epochs, start, d.rank, d.world):
            if step >= total:
                break
            x = (xin if reads_input else xout).to(device, non_blocking=True)
            y = xout.to(device, non_blocking=True)
            if step == 0 and start == 0:
                coder.init_from_batch(all_reduce(x.mean(0), d, average=True), all_reduce(y.mean(0), d, average=True))
            with autocast:
                y_hat, code = model(x, keep_pre=cfg.auxk_alpha > 0)
                loss_fvu = fvu(y.float(), y_hat.float())
                loss = loss_fvu
                if cfg.auxk_alpha > 0:
                    dead = dead_latents(since_fired, tokens_seen, cfg.dead_tokens)
                    loss = loss + cfg.auxk_alpha * auxk_loss(coder, code, y.float(), y_hat.float(), dead)
            loss.backward()
            optimizer_step(coder, opt)
            with torch.no_grad():
                # no boolean indexing (its output size would need a sync): silent entries add 0
                active = code.values > 0
                fired = torch.zeros_like(fire_counts).index_add_(0, code.indices.reshape(-1), active.reshape(-1).long())
                fired = all_reduce(fired, d)
                fire_counts += fired
                batch_tokens = x.shape[0] * d.world
                tokens_seen += batch_tokens
                since_fired += batch_tokens
                since_fired.masked_fill_(fired > 0, 0)
                l0 = all_reduce(active.sum(-1).float().mean(), d, average=True)
                fvu_val = all_reduce(loss_fvu.detach().float(), d, average=True)
                dead_frac = dead_latents(since_fired, tokens_seen, cfg.dead_tokens).float().mean()
            pending.append((step, tokens_seen, opt.lr, time.time() - t0, torch.stack([fvu_val, l0, dead_frac])))
            checkpoint_due = (step + 1) % cfg.checkpoint_every == 0 and step + 1 < total
            if len(pending) >= flush_every or checkpoint_due:
                flush()
            if checkpoint_due and d.is_main:
                _save_checkpoint(ckpt_path, coder, opt, ccfg, cfg, step + 1, since_fired, fire_counts, rows)
        flush()
    opt.eval()
    coder.requires_grad_(False)
    return coder, rows, fire_counts.cpu()


def _save_checkpoint(path, coder, opt, ccfg, cfg, step, since_fired, fire_counts, rows) -> None:
    state = {
        "step": step,
        "coder_config": ccfg.to_dict(),
        "train_config": asdict(cfg),
        "coder": coder.state_dict(),
        "optimizer": opt.state_dict(),
        "since_fired": since_fired.cpu(),
        "fire_counts": fire_counts.cpu(),
        "rows": rows,
        "rng": torch.get_rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path, coder, opt, ccfg, cfg, since_fired, fire_counts, rows) -> int:
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it or pass --no-resume") from exc
    saved = state["coder_config"]
    for key in ("kind", "activation", "d_in", "d_sae", "d_out", "k", "skip"):
        if saved.get(key) != getattr(ccfg, key):
            raise UserError(
                f"checkpoint {path} is for a different coder ({key}={saved.get(key)}, asked {getattr(ccfg, key)}): "
                "delete it or pass --no-resume"
            )
    saved_train = state["train_config"]
    for key in ("batch_size", "seed", "optimizer", "tokens", "epochs"):
        if saved_train.get(key) != getattr(cfg, key):
            raise UserError(
                f"checkpoint {path} was trained with {key}={saved_train.get(key)}, asked {getattr(cfg, key)}: "
                "delete it or pass --no-resume"
            )
    coder.load_state_dict(state["coder"])
    opt.load_state_dict(state["optimizer"])
    since_fired.copy_(state["since_fired"])
    fire_counts.copy_(state["fire_counts"])
    rows.extend(state["rows"])
    torch.set_rng_state(state["rng"])
    return int(state["step"])


def remove_checkpoint(run_root: Path, name: str) -> None:
    path = _checkpoint_path(run_root, name)
    if path.exists():
        path.unlink()
