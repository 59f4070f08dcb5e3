"""Optimisers: Adam with warm-up and linear decay (default), or Signum in schedule-free (the paper's).

Learning-rate rule (PAPER.md): lr = base / sqrt(d_sae / ref), with
  binary coders: base 3e-3, ref 2^15;  TopK + Signum: base 5e-3, ref 2^14;  Adam: base 2e-4, ref 2^14.
"""

from __future__ import annotations

import math

import torch
from schedulefree import ScheduleFreeWrapper

SIGNUM_MOMENTUM = 0.95


def default_lr(activation: str, optimizer: str, d_sae: int) -> float:
    if optimizer == "adam":
        base, ref = 2e-4, 2**14
    elif activation == "binary":
        base, ref = 3e-3, 2**15
    else:
        base, ref = 5e-3, 2**14
    return base / math.sqrt(d_sae / ref)


class SignSGD(torch.optim.Optimizer):
    """p <- p - lr * sign(grad). Inside the schedule-free wrapper (momentum 0.95) this is Signum."""

    def __init__(self, params, lr: float):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])


class Optimizer:
    """One object for both recipes: step(), zero_grad(), eval()/train() for schedule-free, state."""

    def __init__(self, params, name: str, lr: float, total_steps: int, warmup_steps: int):
        params = list(params)
        self.name = name
        if name == "adam":
            # the fused kernel (CPU and CUDA) does the whole update in one pass, not one op per tensor
            self.inner = torch.optim.Adam(params, lr=lr, eps=1e-8, fused=True)
            warm = max(1, min(warmup_steps, total_steps // 10))
            decay = max(1, total_steps - warm)

            def factor(step: int) -> float:
                if step < warm:
                    return (step + 1) / warm
                return max(0.0, 1.0 - (step - warm) / decay)

            self.sched = torch.optim.lr_scheduler.LambdaLR(self.inner, factor)
            self.wrapper = None
        elif name == "signum":
            self.inner = SignSGD(params, lr=lr)
            self.wrapper = ScheduleFreeWrapper(self.inner, momentum=SIGNUM_MOMENTUM)
            self.wrapper.train()
            self.sched = None
        else:
            raise ValueError(f"unknown optimizer {name!r} (adam or signum)")

    @property
    def lr(self) -> float:
        return self.inner.param_groups[0]["lr"]

    def step(self) -> None:
        if self.wrapper is not None:
            self.wrapper.step()
        else:
            self.inner.step()
            self.sched.step()

    def zero_grad(self) -> None:
        self.inner.zero_grad(set_to_none=True)

    def eval(self) -> None:
        """Schedule-free: move the parameters to the averaged point used for inference and saving."""
        if self.wrapper is not None:
            self.wrapper.eval()

    def train(self) -> None:
        if self.wrapper is not None:
            self.wrapper.train()

    def state_dict(self) -> dict:
        return {
            "inner": self.inner.state_dict(),
            "sched": self.sched.state_dict() if self.sched is not None else None,
            "sf_train_mode": self.wrapper.train_mode if self.wrapper is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        if self.sched is not None and state.get("sched") is not None:
            self.sched.load_state_dict(state["sched"])
        if self.wrapper is not None:
            # the checkpoint holds the parameters at the point of its mode; don't lerp them again
            self.wrapper.train_mode = bool(state.get("sf_train_mode", True))
