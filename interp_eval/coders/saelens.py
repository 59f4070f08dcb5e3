"""SAELens compatibility: save coders as SAELens folders, load any SAELens folder as a coder.

Continuous TopK SAEs are saved as sae-lens' own `topk` architecture and load in stock sae-lens.
The variants stock sae-lens lacks are registered with its class registry on import of
`interp_eval` (architecture names below), then load with `SAE.load_from_disk` and encode
identically to `SparseCoder`:

| ours | architecture           | sae-lens base class |
| bae  | binary_topk            | SAE                 |
| tc   | topk_skip_transcoder   | SkipTranscoder      |
| btc  | binary_skip_transcoder | SkipTranscoder      |
| (tc/btc without skip: topk_transcoder, binary_transcoder on Transcoder)

Binary coders store `threshold` (theta, not its log) like sae-lens' JumpReLU.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from sae_lens import SAE
from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
from sae_lens.saes.sae import SAEConfig
from sae_lens.saes.topk_sae import TopK, TopKSAE, TopKSAEConfig
from sae_lens.saes.transcoder import (
    SkipTranscoder,
    SkipTranscoderConfig,
    Transcoder,
    TranscoderConfig,
)
from torch import nn

from ..errors import UserError
from .coder import CoderConfig, Encoded, SparseCoder

SAE_CFG = "cfg.json"
SAE_WEIGHTS = "sae_weights.safetensors"
SPARSITY = "sparsity.safetensors"


# --------------------------------------------------------------------------- registered classes
def _binary_acts(pre: torch.Tensor, threshold: torch.Tensor, k: int) -> torch.Tensor:
    v, idx = torch.topk(pre - threshold, k, dim=-1, sorted=False)
    return torch.zeros_like(pre).scatter_(-1, idx, (v > 0).to(pre.dtype))


class _BinaryEncodeMixin:
    """encode() = top k of (pre - threshold), then a hard 0/1 (no ReLU before the top-k)."""

    threshold: nn.Parameter

    def _add_threshold(self) -> None:
        self.threshold = nn.Parameter(torch.full((self.cfg.d_sae,), 0.004, dtype=self.dtype, device=self.device))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        sae_in = self.process_sae_in(x)
        hidden_pre = self.hook_sae_acts_pre(sae_in @ self.W_enc + self.b_enc)
        return self.hook_sae_acts_post(_binary_acts(hidden_pre, self.threshold, self.cfg.k))


@dataclass
class BinarySAEConfig(TopKSAEConfig):
    @classmethod
    def architecture(cls) -> str:
        return "binary_topk"


class BinarySAE(_BinaryEncodeMixin, TopKSAE):
    def initialize_weights(self) -> None:
        super().initialize_weights()
        self._add_threshold()


@dataclass
class TopKTranscoderConfig(TranscoderConfig):
    k: int = 32

    @classmethod
    def architecture(cls) -> str:
        return "topk_transcoder"


class TopKTranscoder(Transcoder):
    def get_activation_fn(self):
        return TopK(self.cfg.k)


@dataclass
class TopKSkipTranscoderConfig(SkipTranscoderConfig):
    k: int = 32

    @classmethod
    def architecture(cls) -> str:
        return "topk_skip_transcoder"


class TopKSkipTranscoder(SkipTranscoder):
    def get_activation_fn(self):
        return TopK(self.cfg.k)


@dataclass
class BinaryTranscoderConfig(TopKTranscoderConfig):
    @classmethod
    def architecture(cls) -> str:
        return "binary_transcoder"


class BinaryTranscoder(_BinaryEncodeMixin, Transcoder):
    def initialize_weights(self) -> None:
        super().initialize_weights()
        self._add_threshold()


@dataclass
class BinarySkipTranscoderConfig(TopKSkipTranscoderConfig):
    @classmethod
    def architecture(cls) -> str:
        return "binary_skip_transcoder"


class BinarySkipTranscoder(_BinaryEncodeMixin, SkipTranscoder):
    def initialize_weights(self) -> None:
        super().initialize_weights()
        self._add_threshold()


# the classes from_dict must build: sae-lens' Transcoder.from_dict hard-codes its own config class
for _cls, _cfg_cls in (
    (TopKTranscoder, TopKTranscoderConfig),
    (TopKSkipTranscoder, TopKSkipTranscoderConfig),
    (BinaryTranscoder, BinaryTranscoderConfig),
    (BinarySkipTranscoder, BinarySkipTranscoderConfig),
):
    _cls.from_dict = classmethod(lambda cls, d, _c=_cfg_cls: cls(_c.from_dict(d)))  # type: ignore[assignment]

_REGISTERED: dict[str, tuple[type, type]] = {
    "binary_topk": (BinarySAE, BinarySAEConfig),
    "topk_transcoder": (TopKTranscoder, TopKTranscoderConfig),
    "topk_skip_transcoder": (TopKSkipTranscoder, TopKSkipTranscoderConfig),
    "binary_transcoder": (BinaryTranscoder, BinaryTranscoderConfig),
    "binary_skip_transcoder": (BinarySkipTranscoder, BinarySkipTranscoderConfig),
}


def register_architectures() -> None:
    """Register our architectures with sae-lens (idempotent)."""
    for arch, (cls, cfg_cls) in _REGISTERED.items():
        if arch not in SAE_CLASS_REGISTRY:
            register_sae_class(arch, cls, cfg_cls)


def architecture_of(cfg: CoderConfig) -> str:
    if cfg.kind == "sae":
        return "topk" if cfg.activation == "topk" else "binary_topk"
    return f"{cfg.activation}_{'skip_' if cfg.skip else ''}transcoder"


# --------------------------------------------------------------------------- save
def save_coder(coder: SparseCoder, folder: Path, firing_frequency: torch.Tensor | None = None, extra_metadata: dict | None = None) -> None:
    """Write `folder` as a SAELens folder (atomically: a crash never leaves a half-written coder)."""
    cfg = coder.cfg
    arch = architecture_of(cfg)
    state = {
        "W_enc": coder.W_enc.detach().float().cpu().contiguous(),
        "b_enc": coder.b_enc.detach().float().cpu().contiguous(),
        "W_dec": coder.W_dec.detach().float().cpu().contiguous(),
        "b_dec": coder.b_dec.detach().float().cpu().contiguous(),
    }
    if coder.W_skip is not None:
        state["W_skip"] = coder.W_skip.detach().float().cpu().contiguous()
    if coder.log_threshold is not None:
        state["threshold"] = coder.threshold.detach().float().cpu().contiguous()
    metadata = {
        "model_name": cfg.model_name,
        "hook_name": cfg.hookpoint,
        "hook_site": "output" if cfg.kind == "sae" else "input",
        "interp_eval": {"coder": cfg.to_dict(), **(extra_metadata or {})},
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
    tmp = folder.with_name(f".{folder.name}.tmp")
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
_TL_HOOK = re.compile(r"^blocks\.(\d+)\.(hook_mlp_out|hook_mlp_in|ln2\.hook_normalized)$")


def hook_site(metadata: dict) -> tuple[str, str]:
    """(hookpoint in our naming, 'input'|'output') for a SAELens folder's metadata."""
    hook = metadata.get("hook_name") or ""
    site = metadata.get("hook_site")
    m = _TL_HOOK.match(hook)
    if m:  # TransformerLens naming, as SAEs trained by sae-lens itself carry
        return f"layers.{m.group(1)}.mlp", "output" if m.group(2) == "hook_mlp_out" else "input"
    return hook, site or "output"


@dataclass
class LoadedCoder:
    """A coder ready for the later stages: ours or any SAELens folder."""

    name: str
    folder: Path
    hookpoint: str
    site: str  # which MLP activation it reads: 'input' or 'output'
    binary: bool
    d_in: int
    d_sae: int
    model_name: str | None
    sae: SAE
    ours: SparseCoder | None

    @torch.no_grad()
    def encode_sparse(self, x: torch.Tensor) -> Encoded:
        """Per row, the nonzero (value, latent) pairs, padded with zeros to a common width."""
        if self.ours is not None:
            code = self.ours.encode(x)
            return Encoded(code.values.detach(), code.indices)
        dense = self.sae.encode(x.to(self.sae.W_enc.dtype)).float()
        width = max(1, int((dense != 0).sum(-1).max().item()))
        values, indices = torch.topk(dense, width, dim=-1)
        return Encoded(values, indices)

    def to(self, device) -> "LoadedCoder":
        self.sae.to(device)
        if self.ours is not None:
            self.ours.to(device)
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


def load_coder(folder: str | Path, name: str | None = None, device: str | torch.device = "cpu") -> LoadedCoder:
    """Load a SAELens folder (ours or saved by sae-lens itself) for encoding."""
    register_architectures()
    folder = Path(folder)
    cfg = _read_cfg(folder)
    _check_shapes(folder, cfg)
    try:
        sae = SAE.load_from_disk(folder, device=str(device))
    except Exception as exc:
        raise UserError(f"{folder}: sae-lens cannot load this coder ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    metadata = cfg.get("metadata") or {}
    hookpoint, site = hook_site(metadata)
    ours = None
    ours_cfg = (metadata.get("interp_eval") or {}).get("coder")
    if ours_cfg:
        coder_cfg = CoderConfig(**ours_cfg)
        ours = SparseCoder(coder_cfg, device=device)
        state = {k: v for k, v in sae.state_dict().items() if k in ("W_enc", "b_enc", "W_dec", "b_dec", "W_skip")}
        if coder_cfg.activation == "binary":
            state["log_threshold"] = sae.threshold.detach().log()
        ours.load_state_dict(state)
        ours.requires_grad_(False)
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
        sae=sae,
        ours=ours,
    )


def is_saelens_folder(folder: Path) -> bool:
    return (Path(folder) / SAE_CFG).exists() and (Path(folder) / SAE_WEIGHTS).exists()


__all__ = ["SAEConfig", "load_coder", "save_coder", "register_architectures", "LoadedCoder", "is_saelens_folder"]
