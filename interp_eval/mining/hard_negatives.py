"""Hard negatives: non-activating test windows that a vague explanation would still claim (delphi's neighbour and
similarity negatives), for `score --negatives neighbours|similar`.

Both kinds come from the pool of random windows whose full codes the pass keeps (state.py), the same pool the
random negatives come from, so "the latent fires at no token of this window" is read from its recorded codes,
never assumed, and a hard negative can never be one of the latent's activating (explanation or test) windows:
- `neighbour_negative`: pool windows where one of the latent's `N_NEIGHBOURS` nearest latents by decoder cosine
  fires (dead latents are never neighbours), windows of the nearest neighbour first, then the next one's, each in
  the pool's random order;
- `similar_negative`: pool windows ranked by the cosine of their MiniLM embedding (the embedding scorer's model, on
  the window's plain text) to the mean embedding of the pool windows where the latent fires: text like its own
  contexts, without it. A latent firing in no pool window has none (raise `--negative-pool`).
The pool is shared by every coder of the pass (its windows are chosen by a hash of the window id alone), so its
windows are embedded once (about 3 seconds for 500 windows on 2 cores).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..prompting import render

log = logging.getLogger(__name__)

N_NEIGHBOURS = 10


@dataclass
class HardNegativeInputs:
    """What select_rows needs for one coder's hard negatives."""

    neighbours: torch.Tensor  # [L, m] int64: each latent's nearest live latents by decoder cosine, nearest first
    pool_embeddings: torch.Tensor | None  # [P, D] float32, aligned with state.pool_win slots (None: no embedder)


@torch.no_grad()
def decoder_neighbours(rows: torch.Tensor, live: torch.Tensor, m: int = N_NEIGHBOURS, chunk: int = 1024) -> torch.Tensor:
    """[L, m] for decoder rows [L, d]: the m other latents with the most similar rows by cosine, nearest first,
    among the `live` ones ([L] bool; a dead latent fires nowhere, so it cannot give a negative). Rows with fewer
    live others than m are padded with -1."""
    w = F.normalize(rows.detach().float().cpu(), dim=-1)
    alive = live.cpu().bool()
    L = w.shape[0]
    m = max(0, min(m, L - 1))
    out = torch.full((L, m), -1, dtype=torch.long)
    if m == 0:
        return out
    for lo in range(0, L, chunk):
        sim = w[lo : lo + chunk] @ w.T
        n = sim.shape[0]
        sim[:, ~alive] = -torch.inf
        sim[torch.arange(n), torch.arange(lo, lo + n)] = -torch.inf  # never itself
        top = torch.topk(sim, m, dim=1)
        out[lo : lo + n] = torch.where(torch.isfinite(top.values), top.indices, -1)
    return out


def embed_windows(tokens: list[list[str]]) -> np.ndarray | None:
    """MiniLM embeddings [n, D] of windows' plain text (as the embedding scorer embeds them); None, with one
    warning, when the sentence embedder is not installed (then there are no `similar_negative` windows)."""
    from ..scoring.embedding import Embedder

    try:
        embedder = Embedder()
    except UserError as exc:
        log.warning("mine: no similar_negative windows: %s", exc)
        return None
    return embedder.encode([render(t) for t in tokens]).astype(np.float32)


def pick_neighbour_negatives(quiet: torch.Tensor, pool_fire: torch.Tensor, neighbours: torch.Tensor, n: int
                             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, pool position, rank) of each chosen window. quiet [Lc, P]: the latent fires nowhere in the window (and
    the pool slot is real); pool_fire [P, L] of every latent; neighbours [Lc, m] (-1: none). Pool positions are in
    the pool's random order."""
    Lc, P = quiet.shape
    m = neighbours.shape[1]
    if m == 0 or n == 0:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, empty
    has = neighbours >= 0
    fires = pool_fire[:, neighbours.clamp(min=0)].permute(1, 0, 2) & has[:, None, :]  # [Lc, P, m]
    any_nb = fires.any(-1)
    first = fires.to(torch.uint8).argmax(-1)  # the nearest neighbour firing in the window
    key = first * P + torch.arange(P)[None, :]
    never = m * P
    key = key.masked_fill(~(quiet & any_nb), never)
    return _first_n(key, never, n)


def pick_similar_negatives(quiet: torch.Tensor, fire: torch.Tensor, embeddings: torch.Tensor, n: int
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, pool position, rank) of each chosen window. quiet, fire [Lc, P] (the latent fires nowhere / somewhere in
    the window); embeddings [P, D] unit rows, zero for a slot that holds no window."""
    f = fire.float()
    centroid = F.normalize(f @ embeddings, dim=-1)  # [Lc, D]; zero for a latent firing in no pool window
    sim = centroid @ embeddings.T  # [Lc, P]
    ok = quiet & (f.sum(1) > 0)[:, None]
    order = torch.sort(sim.masked_fill(~ok, -torch.inf), dim=1, descending=True, stable=True).indices
    P = quiet.shape[1]
    rank_of = torch.empty_like(order).scatter_(1, order, torch.arange(P).expand_as(order).contiguous())
    key = rank_of.masked_fill(~ok, P)
    return _first_n(key, P, n)


def _first_n(key: torch.Tensor, never: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row, the positions of the n smallest keys below `never`, smallest first: (row, position, rank)."""
    k = min(n, key.shape[1])
    vals, pos = torch.topk(key, k, dim=1, largest=False, sorted=True)
    valid = vals < never
    r, rank = valid.nonzero(as_tuple=True)
    return r, pos[r, rank], rank


__all__ = ["HardNegativeInputs", "N_NEIGHBOURS", "decoder_neighbours", "embed_windows", "pick_neighbour_negatives",
           "pick_similar_negatives"]
