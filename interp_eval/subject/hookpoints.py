"""Hookpoints in the paper's naming (`layers.9.mlp`, the MLP module of block 9).

One forward pass captures the MLP input (what transcoders read) and output (what SAEs read and
transcoders predict) at every requested hookpoint, and stops right after the deepest one, so the
rest of the network and the 49k-vocab logits are never computed.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from ..errors import UserError
from .model import SubjectModel

_MLP_RE = re.compile(r"^(?:.*\.)?(?:layers|h|blocks)\.(\d+)\.mlp$")


def valid_hookpoints(subject: SubjectModel) -> list[str]:
    """Every MLP module of the base model, in execution order (e.g. layers.0.mlp ... layers.29.mlp)."""
    return [name for name, _ in subject.model.base_model.named_modules() if _MLP_RE.match(name)]


def resolve(subject: SubjectModel, hookpoint: str) -> torch.nn.Module:
    valid = valid_hookpoints(subject)
    if hookpoint not in valid:
        shown = ", ".join(valid[:3] + ["..."] + valid[-1:]) if len(valid) > 5 else ", ".join(valid)
        raise UserError(f"unknown hookpoint {hookpoint!r} for {subject.name}: valid ones are {shown}")
    return subject.model.base_model.get_submodule(hookpoint)


class _StopForward(Exception):
    pass


@dataclass
class Captured:
    """MLP input and output per hookpoint, each [batch, seq, d]."""

    mlp_in: dict[str, torch.Tensor] = field(default_factory=dict)
    mlp_out: dict[str, torch.Tensor] = field(default_factory=dict)


@torch.no_grad()
def capture(subject: SubjectModel, input_ids: torch.Tensor, hookpoints: list[str]) -> Captured:
    """Run the model on `input_ids` and return MLP inputs/outputs, stopping after the last hookpoint."""
    order = valid_hookpoints(subject)
    modules = {hp: resolve(subject, hp) for hp in hookpoints}
    deepest = max(hookpoints, key=order.index)
    out = Captured()
    handles = []

    def make_hook(hp: str) -> Callable:
        def hook(_module, args, output):
            out.mlp_in[hp] = args[0].float()
            out.mlp_out[hp] = output.float()
            if hp == deepest:
                raise _StopForward

        return hook

    for hp, module in modules.items():
        handles.append(module.register_forward_hook(make_hook(hp)))
    try:
        with subject.autocast:
            subject.model.base_model(input_ids=input_ids.to(subject.device), use_cache=False)
    except _StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
    return out


@contextmanager
def splice_mlp(subject: SubjectModel, hookpoint: str, replace: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the context, the MLP output at `hookpoint` is replaced by replace(mlp_in, mlp_out)."""
    module = resolve(subject, hookpoint)

    def hook(_module, args, output):
        return replace(args[0], output).to(output.dtype)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
