"""The sae-lens classes of the architectures stock sae-lens lacks, and their registration.

Imported only when a coder is loaded through sae-lens (or by `interp_eval.register_architectures()`),
so `import interp_eval` does not pay for importing sae-lens and transformer-lens.

| ours | architecture           | sae-lens base class |
| bae  | binary_topk            | SAE                 |
| tc   | topk_skip_transcoder   | SkipTranscoder      |
| btc  | binary_skip_transcoder | SkipTranscoder      |
| (tc/btc without skip: topk_transcoder, binary_transcoder on Transcoder)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
from sae_lens.saes.topk_sae import TopK, TopKSAE, TopKSAEConfig
from sae_lens.saes.transcoder import (
    SkipTranscoder,
    SkipTranscoderConfig,
    Transcoder,
    TranscoderConfig,
)
from torch import nn


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
