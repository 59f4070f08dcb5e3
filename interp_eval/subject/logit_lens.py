"""What a latent does to the next-token distribution: its decoder row read through the unembedding.

The output-centric view of a latent (Gur-Arieh et al. 2025; Neuronpedia's top positive and negative logits): the
latent's decoder row, as the direction it adds to the residual stream, through the final norm and the unembedding,
gives one logit per vocabulary token; its largest are the tokens the latent promotes, its smallest the ones it
suppresses. For a binary latent this is exactly what it adds every time it fires.

Where the decoder row lives decides how it reaches the residual stream (`residual_directions`):
- a residual-stream site (resid_pre / resid_mid / resid_post), or a sublayer's output that is added to it
  (attn_out, mlp_out): the row itself; where the family normalises the sublayer's output before adding it (Gemma
  2/3's post-attention and post-feedforward norms), through that norm;
- the heads' concatenated outputs (attn.hook_z): through attention's output projection;
- the MLP's input (mlp_in): a normalised space whose rows are not residual directions: refused, with the reason.
A transcoder writes where its output goes (the MLP's output), not where it reads.

Every map is applied as f(scale * row) - f(0), with the row scaled to the model's width (so a norm's epsilon is
negligible): a bias (LayerNorm's, an output projection's) adds the same vector to every latent and is left out, and
a norm's weight ((1 + w) in Gemma) is applied as the model applies it. The final norm is scale-free, so the logits
rank tokens by the row's direction; their values are those of a residual of RMS 1 along it (before any final
logit soft-capping, which keeps the order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import UserError
from .hookpoints import Site, layout, resolve_site
from .model import SubjectModel

RESIDUAL = ("resid_pre", "resid_mid", "resid_post", "attn_out_normed", "mlp_out_normed")  # already residual directions
_FINAL_NORMS = ("norm", "ln_f", "final_layer_norm", "final_norm")


@dataclass
class LogitEffects:
    """Per latent (rows in latent order): the `k` tokens its decoder row promotes most and suppresses most."""

    promoted: list[list[str]]
    promoted_logits: np.ndarray  # [latents, k] float32, descending
    suppressed: list[list[str]]
    suppressed_logits: np.ndarray  # [latents, k] float32, ascending (most suppressed first)


def written_site(subject: SubjectModel, hookpoint: str, side: str, transcoder: bool, out_hookpoint: str | None = None) -> Site:
    """The site a coder's decoder writes to: the one it reads, or for a transcoder the output it predicts (its
    `out_hookpoint` when the folder names one, else the output of the MLP whose input it reads)."""
    if transcoder and out_hookpoint:
        return resolve_site(subject, out_hookpoint)
    site = resolve_site(subject, hookpoint, side)
    if transcoder and site.kind == "mlp_in":
        return Site(site.module, "output", "mlp_out", site.layer)
    return site


def why_not(site: Site) -> str | None:
    """Why rows written at `site` have no logit effect to read (None: they have one)."""
    if site.kind == "mlp_in":
        return (f"its decoder writes to the MLP's input ({site.module}), a normalised space whose directions are not "
                "residual-stream directions")
    return None


def _final_norm(model: nn.Module) -> nn.Module:
    base = model.base_model
    for name in _FINAL_NORMS:
        mod = getattr(base, name, None)
        if isinstance(mod, nn.Module):
            return mod
    raise UserError(f"{type(model).__name__}: no final norm found (looked for {', '.join(_FINAL_NORMS)} on the base model)")


def _minus_zero(f, x: torch.Tensor) -> torch.Tensor:
    """f(x) - f(0), row by row: the part of f's output that depends on x (a bias left out)."""
    return f(x) - f(torch.zeros_like(x[:1]))


@torch.no_grad()
def residual_directions(subject: SubjectModel, site: Site, rows: torch.Tensor) -> torch.Tensor:
    """[n, d_model] residual-stream directions of decoder rows [n, d] written at `site` (unit RMS)."""
    reason = why_not(site)
    if reason:
        raise UserError(f"no output-token view: {reason}")
    base = subject.model.base_model
    x = rows.to(next(base.parameters()).dtype)
    if site.kind == "attn_z":
        x = _minus_zero(base.get_submodule(site.module), x)
    elif site.kind in ("attn_out", "mlp_out"):
        lay = layout(subject.model)
        post = lay.attn_post_norm if site.kind == "attn_out" else lay.mlp_post_norm
        if post is not None:
            block = site.module.rsplit(".", 1)[0]
            x = _minus_zero(base.get_submodule(f"{block}.{post}"), _unit_rms(x))
    elif site.kind not in RESIDUAL:
        raise UserError(f"no output-token view for a coder at a {site.kind} site")
    return _unit_rms(x)


def _unit_rms(x: torch.Tensor) -> torch.Tensor:
    return x / x.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-12)


def vocabulary(tokenizer, size: int) -> list[str]:
    """Each token id decoded on its own, as windows.parquet decodes them (mining/windows.py decode_tokens)."""
    return tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False, clean_up_tokenization_spaces=False)


@torch.no_grad()
def logit_effects(subject: SubjectModel, site: Site, rows: torch.Tensor, k: int, chunk: int = 256,
                  vocab: list[str] | None = None) -> LogitEffects:
    """The `k` most promoted and most suppressed tokens of each decoder row [n, d] written at `site`."""
    model = subject.model
    norm = _final_norm(model)
    head = model.get_output_embeddings()
    size = int(head.weight.shape[0])
    vocab = vocab if vocab is not None else vocabulary(subject.tokenizer, size)
    k = min(k, size)
    up_ids, up_vals, down_ids, down_vals = [], [], [], []
    dev = next(model.parameters()).device
    logits_of = lambda x: head(norm(x)).float()  # noqa: E731
    zero = logits_of(torch.zeros(1, subject.d_model, device=dev))
    for lo in range(0, rows.shape[0], chunk):
        x = residual_directions(subject, site, rows[lo : lo + chunk].to(dev))
        logits = logits_of(x) - zero  # fp32 on every device: the ranking of near-equal logits must not depend on it
        top = torch.topk(logits, k, dim=-1)
        bottom = torch.topk(logits, k, dim=-1, largest=False)
        up_ids.append(top.indices.cpu())
        up_vals.append(top.values.cpu())
        down_ids.append(bottom.indices.cpu())
        down_vals.append(bottom.values.cpu())
    cat = lambda parts: torch.cat(parts).numpy() if parts else np.zeros((0, k))  # noqa: E731
    up, down = cat(up_ids), cat(down_ids)
    return LogitEffects(
        promoted=[[vocab[i] for i in row] for row in up],
        promoted_logits=cat(up_vals).astype(np.float32),
        suppressed=[[vocab[i] for i in row] for row in down],
        suppressed_logits=cat(down_vals).astype(np.float32),
    )


__all__ = ["LogitEffects", "logit_effects", "residual_directions", "vocabulary", "why_not", "written_site"]
