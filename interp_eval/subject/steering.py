"""Steering the subject model along a latent's decoder direction, and greedy continuations with and without it.

A latent's effect on what the model writes (Gur-Arieh et al. 2025, the output-centric evaluation): its decoder row
is added, at the site the coder writes to (`logit_lens.written_site`: the site it reads, or for a transcoder the
MLP output it predicts), to every position of a prompt and of the continuation being generated, as if the latent
fired there with a large activation. The added vector is

    v = scale * norm(site) * row / |row|,

where norm(site) is the median L2 norm of the site's activations over the steering prompts' tokens after their first
(`site_norm`, measured once per site and model): one `scale` means the same relative push at every kind of site, in
every model, for binary and continuous latents alike (a binary latent's own output is its row; a continuous latent's,
its row times its value, so the row's norm alone would put the two kinds on different footings). Continuations are
greedy, and the caller generates steered and clean ones in batches of one shape (scoring/steering_texts.py), so the
two continuations of one prompt differ only through v.

Prompts of one batch are left-padded to a common length; a padded position is masked in attention and never read.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Sequence

import torch

from .hookpoints import Site, capture_site, splice_input, splice_output
from .model import SubjectModel


def steered(subject: SubjectModel, site: Site, vectors: torch.Tensor | None) -> ContextManager:
    """Within the block, `vectors` [batch, d] (one per batch row) is added at `site` at every position; None: no change."""
    if vectors is None:
        return nullcontext()

    def add(x: torch.Tensor) -> torch.Tensor:
        return x + vectors.to(device=x.device, dtype=x.dtype)[: x.shape[0], None, :]

    if site.side == "output":
        return splice_output(subject, site.module, lambda _input, output: add(output))
    return splice_input(subject, site.module, add)


def encode_prompts(subject: SubjectModel, prompts: Sequence[str]) -> list[list[int]]:
    """Each prompt's token ids, as the model's tokenizer writes them (no special tokens added)."""
    return [subject.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def _left_padded(ids: Sequence[Sequence[int]], pad: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
    mask = torch.zeros(len(ids), width, dtype=torch.long)
    for i, x in enumerate(ids):
        input_ids[i, width - len(x):] = torch.tensor(x, dtype=torch.long)
        mask[i, width - len(x):] = 1
    return input_ids.to(device), mask.to(device)


@torch.no_grad()
def site_norm(subject: SubjectModel, site: Site, prompt_ids: Sequence[Sequence[int]]) -> float:
    """The median L2 norm of the site's activations over the prompts' tokens after their first (each prompt run on its
    own). A prompt's first token carries the attention-sink activations, 10-100x the others' norms (SmolLM2-135M:
    504 vs a median of 31 at layer 9's MLP output, 24,011 vs 238 at layer 20's output): a mean would be set by them."""
    norms = []
    for ids in prompt_ids:
        x = capture_site(subject, torch.tensor([list(ids)], dtype=torch.long), site)
        norms.append(x[0, 1:].float().norm(dim=-1))
    found = torch.cat(norms)
    if found.numel() == 0:
        raise ValueError("steering prompts of one token each leave no token to measure the site's norm on")
    return float(found.median())


@torch.no_grad()
def continue_prompts(subject: SubjectModel, prompt_ids: Sequence[Sequence[int]], n_tokens: int, site: Site | None = None,
                     vectors: torch.Tensor | None = None) -> list[list[int]]:
    """Greedy continuations of `n_tokens` new tokens, one per prompt; with `vectors` [len(prompt_ids), d], row i
    added at `site` while prompt i is read and continued. Generation stops early only at the end-of-text token."""
    model = subject.model
    tok = subject.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    input_ids, mask = _left_padded(prompt_ids, pad, subject.device)
    with steered(subject, site, vectors), subject.autocast:
        out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=n_tokens, do_sample=False,
                             pad_token_id=pad, num_beams=1, temperature=None, top_p=None, top_k=None)
    new = out[:, input_ids.shape[1]:].tolist()
    eos = tok.eos_token_id
    return [row[: row.index(eos)] if eos is not None and eos in row else row for row in new]


__all__ = ["continue_prompts", "encode_prompts", "site_norm", "steered"]
