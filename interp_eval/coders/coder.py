"""One sparse coder module for the paper's four kinds (PAPER.md, "Coders").

| short name | kind       | activation | input x    | target y |
| sae        | sae        | topk       | MLP output | x        |
| bae        | sae        | binary     | MLP output | x        |
| tc         | transcoder | topk       | MLP input  | MLP out  |
| btc        | transcoder | binary     | MLP input  | MLP out  |

Parameters use sae-lens' names and shapes so saving is a rename-free copy: W_enc [d_in, d_sae]
(stored transposed as W_enc_t, see SparseCoder.W_enc), b_enc [d_sae], W_dec [d_sae, d_out],
b_dec [d_out], W_skip [d_out, d_in], log_threshold [d_sae] (binary only; theta = exp(log_threshold)).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import gather_dots, scatter_rows
from .topk import encoder_topk, topk_rows

Kind = Literal["sae", "transcoder"]
Activation = Literal["topk", "binary"]

# short names used on the command line -> (kind, activation)
CODER_KINDS: dict[str, tuple[Kind, Activation]] = {
    "sae": ("sae", "topk"),
    "bae": ("sae", "binary"),
    "tc": ("transcoder", "topk"),
    "btc": ("transcoder", "binary"),
}


@dataclass
class CoderConfig:
    kind: Kind
    activation: Activation
    d_in: int
    d_sae: int
    k: int
    d_out: int | None = None  # defaults to d_in
    skip: bool | None = None  # skip connection; defaults to True for transcoders (the paper's TC/BTC)
    normalize_decoder: bool | None = None  # unit-norm decoder rows; defaults to True for SAEs only
    theta_init: float = 0.004  # binary: initial per-latent threshold
    temperature: float = 1.0  # binary: straight-through sigmoid temperature T
    decoder_scale: bool = False  # one learned scalar multiplying the decoded sum (saved folded into W_dec)
    hookpoint: str = ""
    site: str = "output"  # the side of the hookpoint's module an SAE reads (transcoders: the MLP input)
    model_name: str = ""

    def __post_init__(self):
        if self.kind not in ("sae", "transcoder"):
            raise ValueError(f"kind must be sae or transcoder, got {self.kind!r}")
        if self.activation not in ("topk", "binary"):
            raise ValueError(f"activation must be topk or binary, got {self.activation!r}")
        if self.d_out is None:
            self.d_out = self.d_in
        if self.skip is None:
            self.skip = self.kind == "transcoder"
        if self.normalize_decoder is None:
            self.normalize_decoder = self.kind == "sae"
        if self.kind == "sae" and (self.d_out != self.d_in or self.skip):
            raise ValueError("an SAE reconstructs its input: d_out must equal d_in and skip must be off")
        if not 0 < self.k <= self.d_sae:
            raise ValueError(f"k={self.k} must be between 1 and the number of latents ({self.d_sae})")

    def to_dict(self) -> dict:
        return asdict(self)


class Encoded(NamedTuple):
    """A sparse code: for each row, k (value, latent index) pairs. Binary values are 0.0 or 1.0."""

    values: torch.Tensor  # [N, k] float
    indices: torch.Tensor  # [N, k] long
    pre: torch.Tensor | None = None  # [N, d_sae] pre-activations (training only, for AuxK)


class SparseEncode(torch.autograd.Function):
    """pre = x' @ W_enc + b_enc (x' = x - b_dec for SAEs, x for transcoders), then the k-sparse code, in
    one function whose backward never forms an [N, M] tensor: only the k selected latents of a row get
    gradient, so grad W_enc = x'^T G with G holding N * k entries is a sparse accumulation.

    Takes the encoder as W_enc_t = W_enc^T [M, d] (one row per latent): the selection's fp32 rescoring
    gathers those rows and the gradient is accumulated into them, neither needing a transpose.

    TopK:   values = relu(v) with (v, idx) = topk(pre, k); gradient passes where v > 0.
    binary: (v, idx) = topk(pre - theta, k), theta = exp(log_threshold), values = 1[v > 0]; a sigmoid
            straight-through gradient (PAPER.md, "Binary selection") at the selected latents only:
            grad_v = grad_a * s * (1 - s), s = sigmoid(v / T); grad_theta = -sum of grad_v.
    keep_pre: also returns pre [N, M] (with gradient, for AuxK); its gradient is dense, so that
            backward takes the dense product.
    """

    @staticmethod
    def forward(ctx, x, W_enc_t, b_enc, b_dec, log_threshold, k: int, temperature: float, keep_pre: bool):
        binary = log_threshold is not None
        if b_dec is not None:
            x = x - b_dec  # x' = x - b_dec: an [N, d] pass, cheaper than folding b_dec @ W_enc into the bias
        bias = b_enc
        theta = log_threshold.exp() if binary else None
        pre = None
        if keep_pre:
            pre = torch.addmm(bias, x, W_enc_t.T)
            v, idx = topk_rows(pre - theta if binary else pre, k)
        else:
            # the threshold folds into the bias: top k of (pre - theta) straight out of the selection
            v, idx = encoder_topk(x, W_enc_t, bias - theta if binary else bias, k)
        values = (v > 0).to(v.dtype) if binary else v.clamp_min(0)
        ctx.save_for_backward(x, W_enc_t, b_dec, log_threshold, v, idx)
        ctx.temperature = temperature
        ctx.mark_non_differentiable(idx)
        return (values, idx) if pre is None else (values, idx, pre)

    @staticmethod
    def backward(ctx, grad_values, _grad_idx, *grad_pre):
        x, W_enc_t, b_dec, log_threshold, v, idx = ctx.saved_tensors
        need_x, need_w, need_b, need_bdec, need_th = ctx.needs_input_grad[:5]
        dtype = W_enc_t.dtype
        if log_threshold is not None:
            s = torch.sigmoid(v.to(dtype) / ctx.temperature)
            g = grad_values.to(dtype) * s * (1 - s)
        else:
            g = grad_values.to(dtype) * (v > 0)
        m = W_enc_t.shape[0]
        xs = x.to(dtype)  # x' (x - b_dec for SAEs)
        dense = grad_pre[0] if grad_pre else None
        g_sum = torch.zeros(m, dtype=dtype, device=g.device).index_add_(0, idx.reshape(-1), g.reshape(-1))
        grad_x = grad_w = None
        if dense is not None:  # AuxK: pre's own (dense) gradient joins the code's
            dense = dense.to(dtype).scatter_add(1, idx, g)
            bias_grad = dense.sum(0)
            if need_w:
                grad_w = dense.T @ xs
            if need_x:
                grad_x = dense @ W_enc_t
        else:
            bias_grad = g_sum
            if need_w:
                grad_w = scatter_rows(idx, g, xs, m)  # [M, d], W_enc_t's layout
            if need_x:
                grad_x = F.embedding_bag(idx, W_enc_t, per_sample_weights=g, mode="sum")
        grad_b = bias_grad if need_b else None
        grad_bdec = -(bias_grad @ W_enc_t) if need_bdec else None
        grad_th = -(g_sum * log_threshold.exp()) if need_th else None
        if grad_x is not None:
            grad_x = grad_x.to(x.dtype)
        return grad_x, grad_w, grad_b, grad_bdec, grad_th, None, None, None


class SparseDecode(torch.autograd.Function):
    """y = sum_j values[n, j] W_dec[idx[n, j]] (an embedding bag) with a backward that stays k-sparse:
    grad W_dec = scatter of grad_y rows into the selected decoder rows, grad values = W_dec[idx] . grad_y."""

    @staticmethod
    def forward(ctx, values, indices, W_dec):
        values = values.to(W_dec.dtype)
        ctx.save_for_backward(values, indices, W_dec)
        return F.embedding_bag(indices, W_dec, per_sample_weights=values, mode="sum")

    @staticmethod
    def backward(ctx, grad_y):
        values, indices, W_dec = ctx.saved_tensors
        grad_y = grad_y.to(W_dec.dtype)
        grad_values = gather_dots(indices, W_dec, grad_y) if ctx.needs_input_grad[0] else None
        grad_w = scatter_rows(indices, values, grad_y, W_dec.shape[0]) if ctx.needs_input_grad[2] else None
        return grad_values, None, grad_w


class SparseCoder(nn.Module):
    def __init__(self, cfg: CoderConfig, device: str | torch.device = "cpu", seed: int | None = None):
        super().__init__()
        self.cfg = cfg
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        d_in, m, d_out = cfg.d_in, cfg.d_sae, cfg.d_out
        # encoder init as nn.Linear's default (kaiming uniform, bound 1/sqrt(d_in)); bias zero
        bound = 1.0 / math.sqrt(d_in)
        w_enc = torch.empty(m, d_in).uniform_(-bound, bound, generator=gen)
        # stored as W_enc^T [d_sae, d_in], one row per latent (nn.Linear's layout): the encoder's
        # selection and gradient work on rows; `W_enc` is the sae-lens view, and state dicts carry W_enc.
        self.W_enc_t = nn.Parameter(w_enc)
        self.b_enc = nn.Parameter(torch.zeros(m))
        if cfg.kind == "sae":
            w_dec = w_enc.clone()  # decoder starts as the encoder's copy, rows unit-norm
            w_dec /= w_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)
        else:
            w_dec = torch.zeros(m, d_out)  # transcoders: zero decoder, never normalised by default
        self.W_dec = nn.Parameter(w_dec)
        self.b_dec = nn.Parameter(torch.zeros(d_out))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(d_out, d_in))
        else:
            self.register_parameter("W_skip", None)
        # a binary code's output scale comes from its decoder rows alone: with unit-norm rows, a learned global
        # scale (stored as its log, starting at 1) lets the output match the target's norm without freeing the rows
        if cfg.decoder_scale:
            self.log_decoder_scale = nn.Parameter(torch.zeros(1))  # shape [1]: schedule-free swaps cannot view a 0-d tensor
        else:
            self.register_parameter("log_decoder_scale", None)
        if cfg.activation == "binary":
            self.log_threshold = nn.Parameter(torch.full((m,), math.log(cfg.theta_init)))
        else:
            self.register_parameter("log_threshold", None)
        self._register_state_dict_hook(SparseCoder._state_dict_to_saelens)
        self._register_load_state_dict_pre_hook(self._load_saelens_state)
        self.to(device)

    # ------------------------------------------------------------------ sae-lens layout
    @property
    def W_enc(self) -> torch.Tensor:
        """The encoder in sae-lens' orientation [d_in, d_sae] (a view of W_enc_t)."""
        return self.W_enc_t.T

    @staticmethod
    def _state_dict_to_saelens(module, state, prefix, local_metadata):
        """State dicts (checkpoints) carry sae-lens' W_enc [d_in, d_sae], not the internal transpose."""
        key = prefix + "W_enc_t"
        if key in state:
            state[prefix + "W_enc"] = state.pop(key).T.contiguous()
        return state

    def _load_saelens_state(self, state, prefix, *args):
        if prefix + "W_enc" in state:
            state[prefix + "W_enc_t"] = state.pop(prefix + "W_enc").T.contiguous()

    # ------------------------------------------------------------------ forward pieces
    @property
    def threshold(self) -> torch.Tensor | None:
        return None if self.log_threshold is None else self.log_threshold.exp()

    def encode(self, x: torch.Tensor, keep_pre: bool = False) -> Encoded:
        lead = x.shape[:-1]
        out = SparseEncode.apply(
            x.reshape(-1, x.shape[-1]),
            self.W_enc_t,
            self.b_enc,
            self.b_dec if self.cfg.kind == "sae" else None,
            self.log_threshold,
            self.cfg.k,
            self.cfg.temperature,
            keep_pre,
        )
        values, indices = out[0].reshape(*lead, -1), out[1].reshape(*lead, -1)
        return Encoded(values, indices, out[2].reshape(*lead, -1) if keep_pre else None)

    def decode(self, code: Encoded, x: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of the selected decoder rows weighted by their values (an embedding bag), + b_dec (+ skip)."""
        y = SparseDecode.apply(code.values, code.indices, self.W_dec)
        if self.log_decoder_scale is not None:
            y = y * self.log_decoder_scale.exp()
        y = y + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("a skip transcoder needs its input x to decode")
            y = y + x @ self.W_skip.T
        return y

    def forward(self, x: torch.Tensor, keep_pre: bool = False) -> tuple[torch.Tensor, Encoded]:
        code = self.encode(x, keep_pre=keep_pre)
        return self.decode(code, x), code

    def folded_decoder(self) -> torch.Tensor:
        """W_dec with the learned global scale (if any) multiplied in: the decoder a saved folder holds."""
        w = self.W_dec.detach()
        return w if self.log_decoder_scale is None else w * self.log_decoder_scale.detach().exp()

    # ------------------------------------------------------------------ decoder constraints
    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(torch.finfo(self.W_dec.dtype).eps)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self) -> None:
        if self.W_dec.grad is None:
            return
        w, grad = self.W_dec, self.W_dec.grad
        # grad -= (grad . w_hat) w_hat with w_hat = w / |w|, as one in-place pass: coef = (grad . w) / |w|^2
        coef = torch.linalg.vecdot(grad, w).div_(torch.linalg.vector_norm(w, dim=1).clamp_min(1e-8).square_())
        grad.addcmul_(w, coef.unsqueeze(1), value=-1)

    # ------------------------------------------------------------------ first-batch init
    @torch.no_grad()
    def init_from_batch(self, x_mean: torch.Tensor, y_mean: torch.Tensor) -> None:
        """First batch: b_dec = mean(y); transcoders also b_enc = -mean(x) @ W_enc."""
        self.b_dec.copy_(y_mean)
        if self.cfg.kind == "transcoder":
            self.b_enc.copy_(-(self.W_enc_t @ x_mean))


def fvu(y: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
    """Fraction of variance unexplained over a batch: sum ||y - y_hat||^2 / sum ||y - mean(y)||^2."""
    total = (y - y.mean(0)).pow(2).sum()
    return (y - y_hat).pow(2).sum() / total.clamp_min(torch.finfo(y.dtype).tiny)
