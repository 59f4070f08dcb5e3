"""SAELens compatibility: save coders as SAELens folders, load any SAELens folder as a coder.

Continuous TopK SAEs are saved as sae-lens' own `topk` architecture and load in stock sae-lens. The
variants stock sae-lens lacks (binary_topk, topk/binary[_skip]_transcoder) have sae-lens classes in
`saelens_classes.py`, registered lazily: when a folder is loaded through sae-lens here, or by
`interp_eval.register_architectures()` for code that calls `sae_lens.SAE.load_from_disk` itself.

Our own folders (cfg.json's metadata carries `interp_eval.coder`) load straight from the
safetensors file into a `SparseCoder`, without importing sae-lens; any other SAELens folder is
loaded by sae-lens. Binary coders store `threshold` (theta, not its log) like sae-lens' JumpReLU.

Sparse fast paths for sae-lens's own folders: a plain TopK SAE loads as a `SparseCoder` (its encoder is ours);
a plain JumpReLU SAE or transcoder (sae-lens saves BatchTopK and Matryoshka BatchTopK SAEs as JumpReLU too)
is encoded by `jumprelu_sparse` over the sae-lens module's weights, which yields each row's nonzero pairs
without the dense [N, d_sae] code. Every other architecture runs sae-lens's `encode`, then a top-k of its
dense code.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from torch import nn

from ..errors import UserError
from . import topk
from .coder import CoderConfig, Encoded, SparseCoder

SAE_CFG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"
SPARSITY = "sparsity.safetensors"


def architecture_of(cfg: CoderConfig) -> str:
    if cfg.kind == "sae":
        return "topk" if cfg.activation == "topk" else "binary_topk"
    return f"{cfg.activation}_{'skip_' if cfg.skip else ''}transcoder"


# --------------------------------------------------------------------------- save
def _saved_config(coder: SparseCoder) -> dict:
    """The coder's config as the folder holds it: a learned decoder scale is folded into W_dec, so the folder is a
    coder with free decoder rows (and the scale it learned is recorded)."""
    d = coder.cfg.to_dict()
    if coder.log_decoder_scale is not None:
        d.update(decoder_scale=False, normalize_decoder=False, folded_decoder_scale=float(coder.log_decoder_scale.detach().exp()))
    return d


def save_coder(coder: SparseCoder, folder: Path, firing_frequency: torch.Tensor | None = None, extra_metadata: dict | None = None) -> None:
    """Write `folder` as a SAELens folder (atomically: a crash never leaves a half-written coder)."""
    cfg = coder.cfg
    arch = architecture_of(cfg)
    state = {
        "W_enc": coder.W_enc.detach().float().cpu().contiguous(),
        "b_enc": coder.b_enc.detach().float().cpu().contiguous(),
        "W_dec": coder.folded_decoder().float().cpu().contiguous(),
        "b_dec": coder.b_dec.detach().float().cpu().contiguous(),
    }
    if coder.W_skip is not None:
        state["W_skip"] = coder.W_skip.detach().float().cpu().contiguous()
    if coder.log_threshold is not None:
        state["threshold"] = coder.threshold.detach().float().cpu().contiguous()
    metadata = {
        "model_name": cfg.model_name,
        "hook_name": cfg.hookpoint,
        "hook_site": cfg.site if cfg.kind == "sae" else "input",
        "interp_eval": {"coder": _saved_config(coder), **(extra_metadata or {})},
    }
    if cfg.kind == "transcoder":
        metadata["hook_name_out"] = cfg.hookpoint
        metadata["hook_site_out"] = "output"
    cfg_dict: dict[str, Any] = {
        "architecture": arch,
        "d_in": cfg.d_in,
        "d_sae": cfg.d_sae,
        "k": cfg.k,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": cfg.kind == "sae",
        "normalize_activations": "none",
        "reshape_activations": "none",
        "metadata": metadata,
    }
    if cfg.kind == "transcoder":
        cfg_dict["d_out"] = cfg.d_out
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / SAE_WEIGHTS))
    (tmp / SAE_CFG).write_text(json.dumps(cfg_dict, indent=2, default=str) + "\n")
    if firing_frequency is not None:
        sparsity = torch.log10(firing_frequency.float().cpu().clamp_min(1e-10))
        save_file({"sparsity": sparsity.contiguous()}, str(tmp / SPARSITY))
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


# --------------------------------------------------------------------------- load
def hook_site(metadata: dict) -> tuple[str, str]:
    """(hookpoint name, 'input'|'output') of a SAELens folder's metadata. The name stays as the folder gives it (ours,
    sparsify's or TransformerLens's, as SAEs trained by sae-lens carry); the subject's hookpoint table
    (subject/hookpoints.py) resolves it, and a TransformerLens name fixes its own side there."""
    return metadata.get("hook_name") or "", metadata.get("hook_site") or "output"


@dataclass
class LoadedCoder:
    """A coder ready for the later stages: ours, any SAELens folder, or a sparsify folder."""

    name: str
    folder: Path
    hookpoint: str
    site: str  # which side of its hookpoint's module it reads: 'input' or 'output'
    binary: bool
    d_in: int
    d_sae: int
    model_name: str | None
    ours: SparseCoder | None  # our k-sparse encoder, when the coder is one (the fast path)
    dense: Callable[[torch.Tensor], torch.Tensor] | None = None  # else: x [N, d_in] -> dense code [N, d_sae]
    module: nn.Module | None = None  # what `dense` runs (a sae-lens SAE, a sparsify coder), for .to()/.eval()
    source: str = "saelens"  # the folder's format: saelens | sparsify
    # x [N, d_in] -> the sparse code straight from `module`'s weights, where its encode is a threshold (JumpReLU)
    sparse: Callable[[torch.Tensor], Encoded] | None = None
    transcoder: bool = False  # its decoder predicts another tensor (the MLP's output) than the one it reads
    out_hookpoint: str | None = None  # where a transcoder's output goes, when its folder names it (sae-lens's hook_name_out)

    def decoder(self) -> torch.Tensor:
        """The decoder rows [d_sae, d_out], as the coder decodes with them (a learned scale folded in)."""
        if self.ours is not None:
            return self.ours.folded_decoder()
        assert self.module is not None
        return self.module.W_dec.detach()

    @torch.no_grad()
    def encode_sparse(self, x: torch.Tensor) -> Encoded:
        """Per row, the nonzero (value, latent) pairs, padded with zeros to a common width."""
        if self.ours is not None:
            code = self.ours.encode(x)
            return Encoded(code.values.detach(), code.indices)
        if self.sparse is not None:
            return self.sparse(x)
        assert self.dense is not None
        dense = self.dense(x).float()
        width = max(1, int((dense != 0).sum(-1).max().item()))
        values, indices = torch.topk(dense, width, dim=-1)
        return Encoded(values, indices)

    def to(self, device) -> "LoadedCoder":
        for m in (self.module, self.ours):
            if m is not None:
                m.to(device)
        return self

    def eval(self) -> "LoadedCoder":
        for m in (self.module, self.ours):
            if m is not None:
                m.eval()
        return self


def _read_cfg(folder: Path) -> dict:
    cfg_path = folder / SAE_CFG
    if not folder.is_dir() or not cfg_path.exists() or not (folder / SAE_WEIGHTS).exists():
        raise UserError(f"{folder} is not a SAELens coder folder (needs {SAE_CFG} and {SAE_WEIGHTS})")
    try:
        return json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{cfg_path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def _check_shapes(folder: Path, cfg: dict) -> None:
    """cfg.json's sizes against the weights' shapes, read from the safetensors header.

    sae-lens reports a mismatch only as "Error(s) in loading state_dict"; this names both shapes. An
    unreadable weights file is left for sae-lens to report.
    """
    try:
        with safe_open(str(folder / SAE_WEIGHTS), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception:
        return
    d_in, d_sae = cfg.get("d_in"), cfg.get("d_sae")
    want = {"W_enc": (d_in, d_sae), "W_dec": (d_sae, cfg.get("d_out", d_in))}
    for tensor, shape in want.items():
        if tensor in shapes and shapes[tensor] != shape:
            raise UserError(
                f"{folder}: {SAE_CFG} says d_in {d_in}, d_sae {d_sae}, so {tensor} should have shape {list(shape)}, "
                f"but {SAE_WEIGHTS} holds {tensor} of shape {list(shapes[tensor])}: the config and the weights "
                "come from different coders"
            )


def register_architectures() -> None:
    """Register our architectures with sae-lens (idempotent); imports sae-lens."""
    from .saelens_classes import register_architectures as register

    register()


def coder_config_of(saved: dict) -> CoderConfig:
    """The CoderConfig of a folder's `interp_eval.coder` metadata (fields it records beside the config, such as a
    folded decoder scale, are left out)."""
    names = {f.name for f in fields(CoderConfig)}
    return CoderConfig(**{k: v for k, v in saved.items() if k in names})


def _plain_topk(cfg: dict) -> bool:
    """A sae-lens TopK SAE whose encode is ours: ReLU of the top k of (x - b_dec) W_enc + b_enc, no input
    normalisation or reshaping, no rescaling by decoder norms."""
    return (cfg.get("architecture") == "topk" and cfg.get("apply_b_dec_to_input", True) is True
            and cfg.get("normalize_activations", "none") == "none" and cfg.get("reshape_activations", "none") == "none"
            and not cfg.get("rescale_acts_by_decoder_norm", False) and isinstance(cfg.get("k"), int))


@torch.no_grad()
def jumprelu_sparse(x: torch.Tensor, W_enc: torch.Tensor, b_enc: torch.Tensor, threshold: torch.Tensor,
                    b_dec: torch.Tensor | None = None) -> Encoded:
    """sae-lens's JumpReLU encode, relu(pre) * (pre > threshold) with pre = (x - b_dec) @ W_enc + b_enc, as each
    row's nonzero (value, latent) pairs (latents ascending), padded with (0, 0) to the widest row (at least 1).

    A JumpReLU code is a selection by threshold, so it needs no top-k: the product is taken a block of rows at a
    time into a reused scratch buffer (as `topk.dense_topk` does), and each block's entries above max(threshold, 0)
    (relu(pre) * (pre > threshold) is nonzero exactly there, and equals pre) are picked out while it is in cache.
    The dense [N, d_sae] code never exists whole. Computed in W_enc's dtype, the values returned as float32.
    """
    n, m = x.shape[0], W_enc.shape[1]
    if n == 0:
        return Encoded(torch.zeros(0, 1, device=x.device), torch.zeros(0, 1, dtype=torch.long, device=x.device))
    x = x.to(W_enc.dtype)
    if b_dec is not None:
        x = x - b_dec
    floor = threshold.clamp_min(0)
    blocked = (topk.ENCODE_CHUNK_ROWS > 0 and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")
               and n > topk.ENCODE_CHUNK_ROWS)
    rows = topk.ENCODE_CHUNK_ROWS if blocked else n
    if blocked:
        pre_buf = topk._buffer("jumprelu_pre", (rows, m), W_enc.dtype, x.device)
        mask_buf = topk._buffer("jumprelu_mask", (rows, m), torch.bool, x.device)
    flat_parts, value_parts = [], []
    for i in range(0, n, rows):
        c = min(rows, n - i)
        # the product, then the bias, as sae-lens rounds them (an addmm can round an entry at the threshold otherwise)
        if blocked:
            pre = torch.mm(x[i : i + c], W_enc, out=pre_buf[:c]).add_(b_enc)
            above = torch.gt(pre, floor, out=mask_buf[:c])
        else:
            pre = (x[i : i + c] @ W_enc).add_(b_enc)
            above = pre > floor
        flat = above.view(-1).nonzero().squeeze(1)  # row-major: by row, then latent
        value_parts.append(pre.view(-1).index_select(0, flat).float())
        flat_parts.append(flat + i * m)
    flat, vals = torch.cat(flat_parts), torch.cat(value_parts)
    row = flat.div(m, rounding_mode="floor")
    counts = torch.bincount(row, minlength=n)
    width = max(1, int(counts.max()))
    pos = torch.arange(flat.numel(), device=x.device) - (counts.cumsum(0) - counts).index_select(0, row)
    values = torch.zeros(n, width, dtype=torch.float32, device=x.device)
    indices = torch.zeros(n, width, dtype=torch.long, device=x.device)
    values[row, pos] = vals
    indices[row, pos] = flat - row * m
    return Encoded(values, indices)


def _jumprelu_encoder(module: nn.Module) -> Callable[[torch.Tensor], Encoded] | None:
    """`jumprelu_sparse` over `module`'s weights where its encode is exactly that: stock sae-lens JumpReLU SAEs and
    transcoders (not subclasses) with no input normalisation or reshaping (a hook_z SAE's reshaping is turned off on
    load: it reads the heads concatenated, as captured). The weights are read at each call, so
    the encoder follows `module` through .to(). None where sae-lens's own encode must run."""
    from sae_lens import JumpReLUSAE, JumpReLUSkipTranscoder, JumpReLUTranscoder

    cfg = module.cfg
    if (type(module) not in (JumpReLUSAE, JumpReLUTranscoder, JumpReLUSkipTranscoder)
            or cfg.normalize_activations != "none" or cfg.reshape_activations not in ("none", "hook_z")
            or getattr(cfg, "rescale_acts_by_decoder_norm", False)):
        return None
    subtract_b_dec = type(module) is JumpReLUSAE and cfg.apply_b_dec_to_input  # a transcoder never subtracts it

    def encode(x: torch.Tensor, m=module) -> Encoded:
        return jumprelu_sparse(x, m.W_enc, m.b_enc, m.threshold, m.b_dec if subtract_b_dec else None)

    return encode


def _load_ours(folder: Path, coder_cfg: CoderConfig, device) -> SparseCoder:
    state = load_file(str(folder / SAE_WEIGHTS), device=str(device))
    keep = {k: v for k, v in state.items() if k in ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip")}
    if coder_cfg.activation == "binary":
        keep["log_threshold"] = state["threshold"].log()
    ours = SparseCoder(coder_cfg, device=device)
    ours.load_state_dict(keep)
    return ours.requires_grad_(False)


def load_coder(folder: str | Path, name: str | None = None, device: str | torch.device = "cpu") -> LoadedCoder:
    """Load a SAELens folder (ours or saved by sae-lens itself) for encoding."""
    folder = Path(folder)
    cfg = _read_cfg(folder)
    _check_shapes(folder, cfg)
    metadata = cfg.get("metadata") or {}
    ours_cfg = (metadata.get("interp_eval") or {}).get("coder")
    ours = module = sparse = None
    who = "interp-eval" if ours_cfg else "sae-lens"
    try:
        if ours_cfg:
            ours = _load_ours(folder, coder_config_of(ours_cfg), device)
        elif _plain_topk(cfg):  # sae-lens's own TopK SAE: the same encoder as ours, so our fast sparse path
            ours = _load_ours(folder, CoderConfig("sae", "topk", int(cfg["d_in"]), int(cfg["d_sae"]), int(cfg["k"]),
                                                  normalize_decoder=False, hookpoint=metadata.get("hook_name") or "",
                                                  model_name=metadata.get("model_name") or ""), device)
        else:
            register_architectures()
            from sae_lens import SAE

            module = SAE.load_from_disk(folder, device=str(device))
            # a hook_z SAE reshapes [..., heads, d_head] itself; our capture at attention's output projection is
            # already the heads concatenated, head-major, as that reshape makes them
            module.turn_off_forward_pass_hook_z_reshaping()
            sparse = _jumprelu_encoder(module)
    except Exception as exc:
        raise UserError(f"{folder}: {who} cannot load this coder ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    hookpoint, site = hook_site(metadata)
    arch = cfg.get("architecture", "")
    return LoadedCoder(
        name=name or folder.name,
        folder=folder,
        hookpoint=hookpoint,
        site=site,
        binary=arch.startswith("binary"),
        d_in=int(cfg["d_in"]),
        d_sae=int(cfg["d_sae"]),
        model_name=metadata.get("model_name"),
        ours=ours,
        dense=None if module is None else (lambda x, m=module: m.encode(x.to(m.W_enc.dtype))),
        module=module,
        sparse=sparse,
        transcoder=(ours.cfg.kind == "transcoder") if ours is not None else "transcoder" in type(module).__name__.lower(),
        out_hookpoint=cfg.get("hook_name_out") or metadata.get("hook_name_out"),
    )


def is_saelens_folder(folder: Path) -> bool:
    return (Path(folder) / SAE_CFG).exists() and (Path(folder) / SAE_WEIGHTS).exists()


__all__ = ["load_coder", "save_coder", "register_architectures", "LoadedCoder", "is_saelens_folder"]
