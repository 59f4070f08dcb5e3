"""Cutting the held-out token stream into windows, and reading chosen windows back as tokens.

Contexts are numbered 0, 1, ... in the order `iter_contexts(corpus, tokenizer, "heldout", n)` yields
them; each holds `ctx_len // window` non-overlapping windows, so a window's id fixes its context and
position. The mining pass keeps no tokens: once it knows which windows it needs, `fetch_windows`
re-reads the (deterministic) token stream and picks them out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from ..errors import UserError
from ..subject.corpus import CorpusConfig, iter_contexts
from ..catalog import WINDOWS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowLayout:
    ctx_len: int
    window: int

    def __post_init__(self):
        if self.window <= 0:
            raise UserError(f"--window must be positive, got {self.window}")
        if self.window > self.ctx_len:
            raise UserError(f"--window {self.window} is longer than a context ({self.ctx_len} tokens): lower --window")

    @property
    def per_context(self) -> int:
        return self.ctx_len // self.window

    def batch_window_ids(self, first_context: int, n_contexts: int, device=None) -> torch.Tensor:
        """Global ids of the windows of `n_contexts` consecutive contexts starting at `first_context`."""
        start = first_context * self.per_context
        return torch.arange(start, start + n_contexts * self.per_context, dtype=torch.long, device=device)

    def context_of(self, window_ids: np.ndarray) -> np.ndarray:
        return window_ids // self.per_context

    def position_of(self, window_ids: np.ndarray) -> np.ndarray:
        return (window_ids % self.per_context) * self.window


def decode_tokens(tokenizer, token_ids: np.ndarray) -> pa.Array:
    """Each token decoded on its own, as a flat string array (each distinct id decoded once)."""
    flat = np.asarray(token_ids).reshape(-1)
    if flat.size == 0:
        return pa.array([], type=pa.string())
    uniq, inverse = np.unique(flat, return_inverse=True)
    texts = tokenizer.batch_decode(
        [[int(i)] for i in uniq], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    return pa.array(texts, type=pa.string()).take(pa.array(inverse.astype(np.int64)))


def fetch_windows(
    corpus: CorpusConfig, tokenizer, layout: WindowLayout, n_tokens: int, window_ids: np.ndarray
) -> np.ndarray:
    """Token ids [len(window_ids), window] of the given (sorted, unique) windows, re-read from the stream."""
    window_ids = np.asarray(window_ids, dtype=np.int64)
    out = np.zeros((len(window_ids), layout.window), dtype=np.int32)
    if len(window_ids) == 0:
        return out
    contexts = layout.context_of(window_ids)
    last = int(contexts.max())
    wanted = np.unique(contexts)
    got = 0
    for c, ctx in enumerate(iter_contexts(corpus, tokenizer, "heldout", n_tokens)):
        if c > last:
            break
        lo, hi = np.searchsorted(contexts, [c, c + 1])
        if lo == hi:
            continue
        toks = ctx.numpy().astype(np.int32)
        starts = (window_ids[lo:hi] % layout.per_context) * layout.window
        out[lo:hi] = toks[starts[:, None] + np.arange(layout.window)]
        got += 1
    if got != len(wanted):
        raise RuntimeError(f"the token stream changed while mining: found {got} of {len(wanted)} contexts again")
    return out


def windows_table(tokenizer, layout: WindowLayout, window_ids: np.ndarray, token_ids: np.ndarray) -> pa.Table:
    window_ids = np.asarray(window_ids, dtype=np.int64)
    n, w = token_ids.shape
    flat_ids = token_ids.reshape(-1)
    strings = decode_tokens(tokenizer, flat_ids)
    offsets = pa.array(np.arange(0, n * w + 1, w, dtype=np.int32))
    return pa.Table.from_arrays(
        [
            pa.array(window_ids),
            pa.array(layout.context_of(window_ids).astype(np.int64)),
            pa.array(layout.position_of(window_ids).astype(np.int32)),
            pa.ListArray.from_arrays(offsets, pa.array(flat_ids.astype(np.int32))),
            pa.ListArray.from_arrays(offsets, strings),
        ],
        schema=WINDOWS.schema,
    )
