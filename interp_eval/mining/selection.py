"""Which kept windows become rows of contexts.parquet, and each latent's status.

Per latent: its top-N windows (`top` / `display`); its explanation and test windows, drawn from
the reservoir over equal-count bins of window max activation (`quantile` / `explain` and `test`);
and its non-activating windows from the shared pool (`random_negative` / `test`), plus with the hard-negative
inputs the pool windows a neighbour latent fires in, or most like its own (`neighbour_negative`, `similar_negative`;
hard_negatives.py). See catalog.CONTEXTS for
what each kind is for. While rows are tensors and numpy arrays, kinds, splits and statuses are the
int8 codes below: their positions in catalog.KINDS, SPLITS and STATUSES, which label them when the
tables are written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import Sampling
from .hard_negatives import HardNegativeInputs, pick_neighbour_negatives, pick_similar_negatives
from ..catalog import (
    KIND_NEGATIVE, KIND_NEIGHBOUR, KIND_QUANTILE, KIND_SIMILAR, KIND_TOP, KINDS, SPLIT_DISPLAY, SPLIT_EXPLAIN, SPLIT_TEST, SPLITS, STATUS_DEAD, STATUS_OK,
    STATUS_TOO_RARE, STATUSES,
)
from .state import EMPTY_LOW, EMPTY_TOP, CoderState, best_keys

TOP, QUANTILE, NEGATIVE, NEIGHBOUR, SIMILAR = (KINDS.index(k) for k in (KIND_TOP, KIND_QUANTILE, KIND_NEGATIVE,
                                                                        KIND_NEIGHBOUR, KIND_SIMILAR))
DISPLAY, EXPLAIN, TEST = (SPLITS.index(s) for s in (SPLIT_DISPLAY, SPLIT_EXPLAIN, SPLIT_TEST))
OK, TOO_RARE, DEAD = (STATUSES.index(s) for s in (STATUS_OK, STATUS_TOO_RARE, STATUS_DEAD))


@dataclass
class Rows:
    """Rows of contexts.parquet for a block of latents (numpy, one entry per row)."""

    latent: np.ndarray  # int64
    window_id: np.ndarray  # int64
    kind: np.ndarray  # int8: TOP, QUANTILE, NEGATIVE, NEIGHBOUR or SIMILAR
    split: np.ndarray  # int8: DISPLAY, EXPLAIN or TEST
    quantile: np.ndarray  # int8, -1 = null
    rank: np.ndarray  # int32
    activations: np.ndarray  # [rows, W] float32
    max_activation: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.latent)


def _rows(latents, wins, kind, split, quantile, rank, acts, maxes) -> dict[str, torch.Tensor]:
    n = latents.numel()
    return {
        "latent": latents,
        "window_id": wins,
        "kind": torch.full((n,), kind, dtype=torch.int8),
        "split": torch.full((n,), split, dtype=torch.int8),
        "quantile": quantile.to(torch.int8),
        "rank": rank.to(torch.int32),
        "activations": acts,
        "max_activation": maxes,
    }


def _per_bin(total: torch.Tensor, room: torch.Tensor) -> torch.Tensor:
    """[L, nb] counts, each within `room`, summing to min(total, room's row sum): the even split
    total*(q+1)//nb - total*q//nb, with what a bin has no room for handed to the bins that have, one per bin
    per round, highest bin first.

    The even split puts a total below nb in the upper bins; a latent with fewer sampled windows than bins has
    some of those empty, and capping alone lost their share (an `ok` latent could get no explanation or no
    test window). Where every bin has room (e.g. n_explain 20 + n_test 10 and 30+ sampled windows), nothing
    is handed on: the split is the plain even one.
    """
    nb = room.shape[1]
    qs = torch.arange(nb)[None, :]
    want = (total[:, None] * (qs + 1)) // nb - (total[:, None] * qs) // nb
    got = torch.minimum(want, room)
    short = ((got.sum(1) < total) & (got < room).any(1)).nonzero().squeeze(1)  # rows with a share to hand on
    if short.numel() == 0:
        return got
    g, r = got[short], room[short]
    left = total[short] - g.sum(1)
    while True:
        open_ = (g < r) & (left > 0)[:, None]
        if not open_.any():
            break
        above = open_.flip(1).long().cumsum(1).flip(1)  # open bins at or above q
        add = open_ & (above <= left[:, None])
        g += add
        left -= add.sum(1)
    got[short] = g
    return got


@torch.no_grad()
def select_rows(state: CoderState, sampling: Sampling, binary: bool, lo: int = 0, hi: int | None = None,
                hard: HardNegativeInputs | None = None) -> Rows:
    """The top, explain, test and negative rows of latents [lo, hi), ordered by latent then kind (`hard`: also the
    hard negatives)."""
    s = sampling
    hi = state.d_sae if hi is None else hi
    L, W = hi - lo, state.window
    lat0 = torch.arange(lo, hi, dtype=torch.long)
    blocks = []

    # top-N, best first
    key = best_keys(state.top_key[lo:hi].cpu(), state.n_top, largest=True, empty=EMPTY_TOP)
    order = key.sort(dim=1, descending=True, stable=True).indices
    valid = key.gather(1, order) != EMPTY_TOP
    r, p = valid.nonzero(as_tuple=True)
    slot = order[r, p]
    blocks.append(_rows(
        lat0[r], state.top_win[lo:hi].cpu()[r, slot], TOP, DISPLAY,
        torch.full_like(r, -1), p, state.top_acts[lo:hi].cpu()[r, slot], state.top_val[lo:hi].cpu()[r, slot],
    ))

    # explain / test from the reservoir, over equal-count bins of window max activation
    rkey = best_keys(state.res_key[lo:hi].cpu(), state.reservoir, largest=False, empty=EMPTY_LOW)
    rval = state.res_val[lo:hi].cpu()
    R = rkey.shape[1]
    valid = rkey != EMPTY_LOW
    n = valid.sum(1)
    nb = 1 if binary else s.n_quantiles
    o1 = rkey.sort(dim=1, stable=True).indices
    v1 = rval.gather(1, o1).masked_fill(~valid.gather(1, o1), float("inf"))
    by_val = o1.gather(1, v1.sort(dim=1, stable=True).indices)  # slots sorted by (max activation, key)
    rank = torch.empty_like(by_val).scatter_(1, by_val, torch.arange(R).expand(L, R).contiguous())
    q = torch.where(valid, rank * nb // n.clamp(min=1)[:, None], 0)
    comp = torch.where(valid, (q << 32) | rkey, EMPTY_LOW)
    by_bin = comp.sort(1).indices  # slots sorted by (bin, key): bins in order, random order within
    q_s, valid_s = q.gather(1, by_bin), valid.gather(1, by_bin)
    size = torch.zeros(L, nb, dtype=torch.long).scatter_add_(1, q, valid.long())
    start = size.cumsum(1) - size
    i_in_bin = torch.arange(R)[None, :] - start.gather(1, q_s)
    full = n >= s.n_explain + s.n_test
    tot = max(s.n_explain + s.n_test, 1)
    # too few for both: split in proportion, but at least one of each when there are two windows
    few = (n * s.n_explain // tot).clamp(max=n - ((n >= 2) & (s.n_test > 0)).long())
    few = torch.maximum(few, (n > 0).long() * min(s.n_explain, 1))
    n_exp = torch.where(full, torch.full_like(n, s.n_explain), few)
    n_tst = torch.where(full, torch.full_like(n, s.n_test), n - n_exp)
    e = _per_bin(n_exp, size)
    t = _per_bin(n_tst, size - e)
    e_s, t_s = e.gather(1, q_s), t.gather(1, q_s)
    is_exp = valid_s & (i_in_bin < e_s)
    is_tst = valid_s & (i_in_bin >= e_s) & (i_in_bin < e_s + t_s)
    res_win, res_acts = state.res_win[lo:hi].cpu(), state.res_acts[lo:hi].cpu()
    for mask, split in ((is_exp, EXPLAIN), (is_tst, TEST)):
        rnk = mask.long().cumsum(1) - 1
        r, p = mask.nonzero(as_tuple=True)
        slot = by_bin[r, p]
        quant = q_s[r, p] if not binary else torch.full_like(r, -1)
        blocks.append(_rows(
            lat0[r], res_win[r, slot], QUANTILE, split,
            quant, rnk[r, p], res_acts[r, slot], rval[r, slot],
        ))

    # negatives: the first n_negative pool windows (in random key order) where the latent never fires
    pkey = state.pool_key.cpu()
    porder = pkey.argsort()
    pvalid = pkey[porder] != EMPTY_LOW
    quiet = (~state.pool_fire[:, lo:hi].cpu()[porder]) & pvalid[:, None]  # [P, L]
    quiet = quiet.T.contiguous() & (state.firing_count[lo:hi].cpu() > 0)[:, None]  # [L, P]; none for dead latents
    count = quiet.long().cumsum(1)
    pick = quiet & (count <= s.n_negative)
    r, p = pick.nonzero(as_tuple=True)
    pool_win = state.pool_win.cpu()[porder]
    blocks.append(_rows(
        lat0[r], pool_win[p], NEGATIVE, TEST,
        torch.full_like(r, -1), count[r, p] - 1, torch.zeros(r.numel(), W), torch.zeros(r.numel()),
    ))
    if hard is not None:  # from the same pool, in the same random order, where the latent fires nowhere
        fire = state.pool_fire.cpu()[porder] & pvalid[:, None]  # [P, every latent]
        picks = [(NEIGHBOUR, pick_neighbour_negatives(quiet, fire, hard.neighbours[lo:hi], s.n_negative))]
        if hard.pool_embeddings is not None:
            emb = hard.pool_embeddings[porder] * pvalid[:, None]
            picks.append((SIMILAR, pick_similar_negatives(quiet, fire[:, lo:hi].T, emb, s.n_negative)))
        for kind, (r, p, rank) in picks:
            blocks.append(_rows(lat0[r], pool_win[p], kind, TEST, torch.full_like(r, -1), rank,
                                torch.zeros(r.numel(), W), torch.zeros(r.numel())))

    cat = {k: torch.cat([b[k] for b in blocks]) for k in blocks[0]}
    # latent-major order, stable so kinds stay top, explain, test, negative within a latent
    order = torch.sort(cat["latent"], stable=True).indices
    return Rows(**{k: v[order].numpy() for k, v in cat.items()})


def latent_status(state: CoderState, min_examples: int) -> np.ndarray:
    """Each latent's status code (OK, TOO_RARE or DEAD)."""
    fc = state.firing_count.cpu().numpy()
    nw = state.n_windows.cpu().numpy()
    status = np.where(nw < min_examples, TOO_RARE, OK)
    return np.where(fc == 0, DEAD, status).astype(np.int8)


__all__ = ["Rows", "select_rows", "latent_status", "TOP", "QUANTILE", "NEGATIVE", "DISPLAY", "EXPLAIN", "TEST", "OK", "TOO_RARE", "DEAD"]
