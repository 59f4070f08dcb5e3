"""Plain dense references the tests check the sparse coder against; nothing in interp_eval uses them."""

from __future__ import annotations

import torch

from interp_eval.coders.coder import SparseCoder


class BinaryTopK(torch.autograd.Function):
    """Hard top-k 0/1 code with a sigmoid straight-through gradient (PAPER.md, "Binary selection").

    forward: (v, idx) = topk(pre - theta, k); a = 1[v > 0]
    backward: s = sigmoid(v / T); grad_pre = grad_a * s * (1 - s) at the selected latents only;
              grad_theta = -grad_pre summed over the rows where the latent was selected.
    """

    @staticmethod
    def forward(ctx, pre: torch.Tensor, theta: torch.Tensor, k: int, temperature: float):
        v, idx = torch.topk(pre - theta, k, dim=-1, sorted=False)
        ctx.save_for_backward(v, idx)
        ctx.temperature = temperature
        ctx.shape = pre.shape
        return (v > 0).to(pre.dtype), idx

    @staticmethod
    def backward(ctx, grad_a: torch.Tensor, _grad_idx):
        v, idx = ctx.saved_tensors
        s = torch.sigmoid(v / ctx.temperature)
        g = grad_a * s * (1 - s)
        grad_pre = torch.zeros(ctx.shape, dtype=g.dtype, device=g.device).scatter_(-1, idx, g)
        grad_theta = -grad_pre.sum(0)
        return grad_pre, grad_theta, None, None


def pre_activations(coder: SparseCoder, x: torch.Tensor) -> torch.Tensor:
    """W_enc (x - b_dec) + b_enc for SAEs, W_enc x + b_enc for transcoders: the dense [N, d_sae] product."""
    bias = coder.b_enc
    if coder.cfg.kind == "sae":
        bias = bias - coder.W_enc_t @ coder.b_dec  # (x - b_dec) W = x W - b_dec W, without an [N, d] copy
    return torch.addmm(bias, x.reshape(-1, x.shape[-1]), coder.W_enc_t.T).reshape(*x.shape[:-1], -1)


def dense_activations(coder: SparseCoder, x: torch.Tensor) -> torch.Tensor:
    """[N, d_sae] activations (zeros off the code), as sae-lens' encode() returns them."""
    code = coder.encode(x)
    out = torch.zeros(x.shape[0], coder.cfg.d_sae, dtype=code.values.dtype, device=x.device)
    return out.scatter_(-1, code.indices, code.values)
