"""Per-coder streaming state of the mining pass: update from one batch, merge two states, select rows.

Everything is a fixed-size tensor ([latents] or [latents, kept windows]); nothing grows with the
number of tokens. Per latent:

- firing_count, max_act, n_windows: summed / maxed over batches.
- top-N windows by window max activation: keys [L, N] = (float bits of the window max << 32) | hash,
  largest kept. Binary coders, whose maxima all tie at 1, get a seeded random choice.
- a reservoir of R activating windows: the R smallest hash keys of (window_id, latent). Each hash
  is a bijection of the window id for a given latent, so keys within a latent are unique and the
  order is total. Whatever batches or ranks saw which windows, the kept set is the R smallest keys of
  all activating windows: a uniform sample that merges exactly.
- one pool (shared by all latents) of P random windows, the P smallest hash keys of the window id,
  with a [P, L] mask of the latents firing anywhere in the window: the source of non-activating
  (negative) windows, read from the codes.

Each kept (latent, window) entry also holds the latent's activation at every token of the window.

Batch updates use top-k over [L, kept + batch windows] and replace only the slots that changed; no
Python loop runs over latents, tokens or windows. `merge` is a plain function (top-N of top-Ns,
bottom-R of reservoirs, summed counts), used for torchrun ranks and testable without processes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from ..errors import UserError

_M32 = 0xFFFFFFFF
_EMPTY_TOP = -1  # below every real top key (real keys are >= 2^32)
_EMPTY_LOW = 1 << 62  # above every real reservoir / pool key (real keys are < 2^32)

_SALT_TOP, _SALT_RES, _SALT_POOL = 0x5EED0001, 0x5EED0002, 0x5EED0003


@dataclass(frozen=True)
class Sampling:
    """What the mining pass keeps per latent (see schema.py for what each kind is for)."""

    window: int = 32
    n_top: int = 20
    n_explain: int = 40
    n_test: int = 50
    n_negative: int = 50
    reservoir: int = 200
    negative_pool: int = 500
    n_quantiles: int = 10
    min_examples: int = 200
    seed: int = 0

    def __post_init__(self):
        for name in ("window", "n_top", "n_negative", "reservoir", "negative_pool", "n_quantiles"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        for name in ("n_explain", "n_test", "min_examples"):
            if getattr(self, name) < 0:
                raise UserError(f"--{name.replace('_', '-')} must not be negative, got {getattr(self, name)}")
        if self.reservoir < self.n_explain + self.n_test:
            raise UserError(
                f"--reservoir {self.reservoir} cannot hold --n-explain {self.n_explain} + --n-test {self.n_test} "
                "disjoint windows: raise --reservoir (default 200)"
            )
        if self.negative_pool < self.n_negative:
            raise UserError(f"--negative-pool {self.negative_pool} is smaller than --n-negative {self.n_negative}")


# --------------------------------------------------------------------------- hashing
def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijection of [0, 2^32) with good avalanche (xor-shift / odd multiply, all in int64 without overflow)."""
    x = x & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    x = (((x >> 16) ^ x) * 0x45D9F3B) & _M32
    return (x >> 16) ^ x


def latent_salts(d_sae: int, seed: int, salt: int, device=None) -> torch.Tensor:
    """One 32-bit salt per latent (for a given seed and purpose)."""
    base = int(_mix32(torch.tensor([(seed * 0x9E3779B1 + salt) & _M32]))[0])
    lat = torch.arange(d_sae, dtype=torch.long, device=device)
    return _mix32(_mix32(lat * 0x9E3779B1 + base) ^ base)


def window_hash(window_ids: torch.Tensor, salts: torch.Tensor | int) -> torch.Tensor:
    """A 32-bit hash of window ids; a bijection of ids < 2^32 for each salt, so keys never tie."""
    return _mix32(window_ids ^ salts)


# --------------------------------------------------------------------------- slot replacement
def _replace(old: torch.Tensor, cand: torch.Tensor, largest: bool, empty: int):
    """Merge candidate keys into kept keys [L, K]; return (rows, slots, cand columns) to overwrite.

    The kept set becomes the K largest (smallest) of old + cand. Each row has as many losing kept
    slots as winning candidates; listing both row by row (nonzero is row-major) pairs them up.
    Candidates equal to `empty` are placeholders, never written.
    """
    L, K = old.shape
    sel = torch.cat([old, cand], 1).topk(K, dim=1, largest=largest, sorted=False).indices
    is_new = sel >= K
    kept = torch.zeros(L, K + 1, dtype=torch.bool, device=old.device)
    kept.scatter_(1, sel.clamp(max=K), True)
    rows, slots = (~kept[:, :K]).nonzero(as_tuple=True)
    new_rows, new_pos = is_new.nonzero(as_tuple=True)
    cols = sel[new_rows, new_pos] - K
    real = cand[rows, cols] != empty
    return rows[real], slots[real], cols[real]


def _merge_sparse(old: torch.Tensor, rows: torch.Tensor, keys: torch.Tensor, largest: bool, empty: int):
    """Merge candidates (row, key), `rows` sorted, into kept keys [L, K].

    Returns (rows, slots, candidate indices) to write. Only rows with candidates are touched. A row
    with at least as many empty slots as candidates (most rows while a run is young: a reservoir of
    200 fills slowly) keeps every candidate and takes its first empty slots, no selection needed.
    """
    if keys.numel() == 0:
        z = torch.zeros(0, dtype=torch.long, device=old.device)
        return z, z, z
    dev = old.device
    urows, counts = torch.unique_consecutive(rows, return_counts=True)
    group = torch.repeat_interleave(torch.arange(urows.numel(), device=dev), counts)
    free = old[urows] == empty  # [U, K]
    fits = counts <= free.sum(1)
    out = []
    if fits.any():
        f = fits.nonzero().squeeze(1)
        take = free[f] & (free[f].cumsum(1) <= counts[f, None])  # the first count empty slots of a row
        fr, fs = take.nonzero(as_tuple=True)  # row-major, count per row: pairs with the candidates below
        out.append((urows[f][fr], fs, fits[group].nonzero().squeeze(1)))
    if not fits.all():
        full = (~fits).nonzero().squeeze(1)
        sel = (~fits)[group].nonzero().squeeze(1)
        r, slots, c = _select_sparse(old, urows[full], counts[full], keys[sel], largest, empty)
        out.append((r, slots, sel[c]))
    return tuple(torch.cat(parts) for parts in zip(*out))


def _select_sparse(old: torch.Tensor, urows: torch.Tensor, counts: torch.Tensor, keys: torch.Tensor, largest: bool,
                   empty: int):
    """_merge_sparse's general case: rows `urows` with `counts` candidates each (`keys`, row by row),
    a selection over kept + candidate keys per row. Returns (rows, slots, indices into keys)."""
    dev = old.device
    group = torch.repeat_interleave(torch.arange(urows.numel(), device=dev), counts)
    rank = torch.arange(keys.numel(), device=dev) - (counts.cumsum(0) - counts)[group]
    width = int(counts.max())
    cand = torch.full((urows.numel(), width), empty, dtype=old.dtype, device=dev)
    cand[group, rank] = keys
    which = torch.zeros((urows.numel(), width), dtype=torch.long, device=dev)
    which[group, rank] = torch.arange(keys.numel(), device=dev)
    r, slots, cols = _replace(old[urows], cand, largest=largest, empty=empty)
    return urows[r], slots, which[r, cols]


# --------------------------------------------------------------------------- state
@dataclass
class CoderState:
    n_tokens: torch.Tensor  # [] int64
    firing_count: torch.Tensor  # [L] int64
    max_act: torch.Tensor  # [L] float32
    n_windows: torch.Tensor  # [L] int64
    top_key: torch.Tensor  # [L, N] int64
    top_win: torch.Tensor  # [L, N] int64
    top_val: torch.Tensor  # [L, N] float32
    top_acts: torch.Tensor  # [L, N, W] float32
    res_key: torch.Tensor  # [L, R] int64
    res_win: torch.Tensor  # [L, R] int64
    res_val: torch.Tensor  # [L, R] float32
    res_acts: torch.Tensor  # [L, R, W] float32
    pool_key: torch.Tensor  # [P] int64
    pool_win: torch.Tensor  # [P] int64
    pool_fire: torch.Tensor  # [P, L] bool

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, d_sae: int, sampling: Sampling, device: str | torch.device = "cpu") -> "CoderState":
        L, N, R, P, W = d_sae, sampling.n_top, sampling.reservoir, sampling.negative_pool, sampling.window
        i64 = dict(dtype=torch.long, device=device)
        f32 = dict(dtype=torch.float32, device=device)
        # torch.zeros/full write every page now, so memory use is fixed from the first batch on
        return cls(
            n_tokens=torch.zeros((), **i64),
            firing_count=torch.zeros(L, **i64),
            max_act=torch.zeros(L, **f32),
            n_windows=torch.zeros(L, **i64),
            top_key=torch.full((L, N), _EMPTY_TOP, **i64),
            top_win=torch.full((L, N), -1, **i64),
            top_val=torch.zeros(L, N, **f32),
            top_acts=torch.zeros(L, N, W, **f32),
            res_key=torch.full((L, R), _EMPTY_LOW, **i64),
            res_win=torch.full((L, R), -1, **i64),
            res_val=torch.zeros(L, R, **f32),
            res_acts=torch.zeros(L, R, W, **f32),
            pool_key=torch.full((P,), _EMPTY_LOW, **i64),
            pool_win=torch.full((P,), -1, **i64),
            pool_fire=torch.zeros(P, L, dtype=torch.bool, device=device),
        )

    @property
    def d_sae(self) -> int:
        return self.firing_count.shape[0]

    @property
    def window(self) -> int:
        return self.top_acts.shape[2]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device) -> "CoderState":
        return CoderState(**{k: v.to(device) for k, v in self.tensors().items()})

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in self.tensors().items()}

    @classmethod
    def from_state_dict(cls, d: dict[str, torch.Tensor], device="cpu") -> "CoderState":
        return cls(**{f.name: d[f.name].to(device) for f in fields(cls)})

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    # ------------------------------------------------------------------ one batch
    @torch.no_grad()
    def update(self, values: torch.Tensor, indices: torch.Tensor, ctx_len: int, window_ids: torch.Tensor, seed: int = 0) -> None:
        """Fold in one batch of sparse codes.

        values, indices: [B * ctx_len, w] from `encode_sparse` (rows = tokens of B whole contexts, in
        order); a value > 0 means the latent fires. window_ids: global ids of the batch's
        B * (ctx_len // window) windows, in order.
        """
        L, W = self.d_sae, self.window
        dev = values.device
        per_ctx = ctx_len // W
        n_win = window_ids.numel()
        n = values.shape[0]
        self.n_tokens += n

        fired = (values > 0).view(-1).nonzero().squeeze(1)  # one pass, then plain takes
        lat = indices.reshape(-1)[fired].long()
        val = values.reshape(-1)[fired].float()
        tok = fired // values.shape[1]
        self.firing_count += torch.bincount(lat, minlength=L)
        self.max_act.scatter_reduce_(0, lat, val, reduce="amax")

        t = tok % ctx_len
        if per_ctx * W < ctx_len:  # the tail of each context belongs to no window
            keep = t < per_ctx * W
            tok, lat, val, t = tok[keep], lat[keep], val[keep], t[keep]
        flat = lat * n_win + (tok // ctx_len) * per_ctx + t // W  # (latent, window in batch), latent-major
        wmax = torch.zeros(L * n_win, dtype=torch.float32, device=dev)
        wmax.scatter_reduce_(0, flat, val, reduce="amax")
        pair = wmax.nonzero().squeeze(1)  # active (latent, window) pairs, grouped by latent
        pl, pv = pair // n_win, wmax[pair]
        gw = window_ids[pair % n_win]
        self.n_windows += torch.bincount(pl, minlength=L)

        # top-N by window max; only pairs that can beat the current N-th are hashed and merged
        thr = self.top_key.min(1).values
        bits = pv.view(torch.int32).long()
        idx = (bits >= (thr >> 32)[pl]).nonzero().squeeze(1)
        key = (bits[idx] << 32) | window_hash(gw[idx], latent_salts(L, seed, _SALT_TOP, dev)[pl[idx]])
        better = (key > thr[pl[idx]]).nonzero().squeeze(1)
        top_idx, top_key = idx[better], key[better]
        t_rows, t_slots, t_c = _merge_sparse(self.top_key, pl[top_idx], top_key, largest=True, empty=_EMPTY_TOP)
        t_pairs = top_idx[t_c]
        self.top_key[t_rows, t_slots] = top_key[t_c]

        # reservoir: the R smallest hash keys
        thr = self.res_key.max(1).values
        key = window_hash(gw, latent_salts(L, seed, _SALT_RES, dev)[pl])
        res_idx = (key < thr[pl]).nonzero().squeeze(1)
        r_rows, r_slots, r_c = _merge_sparse(self.res_key, pl[res_idx], key[res_idx], largest=False, empty=_EMPTY_LOW)
        r_pairs = res_idx[r_c]
        self.res_key[r_rows, r_slots] = key[r_pairs]

        self.top_win[t_rows, t_slots] = gw[t_pairs]
        self.top_val[t_rows, t_slots] = pv[t_pairs]
        self.res_win[r_rows, r_slots] = gw[r_pairs]
        self.res_val[r_rows, r_slots] = pv[r_pairs]

        # per-token activations of the newly kept (latent, window) pairs, read off the sparse code
        wanted = torch.cat([pair[t_pairs], pair[r_pairs]])
        if wanted.numel():
            lookup = torch.full((L * n_win,), -1, dtype=torch.long, device=dev)
            lookup[wanted] = torch.arange(wanted.numel(), device=dev)
            pos = lookup[flat]
            hit = (pos >= 0).nonzero().squeeze(1)
            acts = torch.zeros(wanted.numel() * W, dtype=torch.float32, device=dev)
            acts.index_put_((pos[hit] * W + t[hit] % W,), val[hit])
            # a pair kept both as top and in the reservoir was filled once (at its last listing)
            acts = acts.view(-1, W).index_select(0, lookup[wanted])
            nt = t_pairs.numel()
            N, R = self.top_acts.shape[1], self.res_acts.shape[1]
            self.top_acts.view(L * N, W).index_copy_(0, t_rows * N + t_slots, acts[:nt])
            self.res_acts.view(L * R, W).index_copy_(0, r_rows * R + r_slots, acts[nt:])

        # negative pool: the P windows with the smallest window-only hash, with their firing masks
        wkey = window_hash(window_ids, int(latent_salts(1, seed, _SALT_POOL)[0]))
        _, p_slots, p_cols = _replace(self.pool_key[None, :], wkey[None, :], largest=False, empty=_EMPTY_LOW)
        if p_slots.numel():
            self.pool_key[p_slots] = wkey[p_cols]
            self.pool_win[p_slots] = window_ids[p_cols]
            self.pool_fire[p_slots] = (wmax.view(L, n_win)[:, p_cols] > 0).T


# --------------------------------------------------------------------------- merge
def _keep(keys: torch.Tensor, k: int, largest: bool) -> torch.Tensor:
    return keys.topk(k, dim=-1, largest=largest, sorted=False).indices


@torch.no_grad()
def merge(a: CoderState, b: CoderState) -> CoderState:
    """The state of the union of the two token shards (exact: keys are a total order)."""
    if a.top_key.shape != b.top_key.shape or a.res_key.shape != b.res_key.shape or a.pool_fire.shape != b.pool_fire.shape:
        raise ValueError("cannot merge mining states of different shapes")
    W = a.window
    out = {
        "n_tokens": a.n_tokens + b.n_tokens,
        "firing_count": a.firing_count + b.firing_count,
        "max_act": torch.maximum(a.max_act, b.max_act),
        "n_windows": a.n_windows + b.n_windows,
    }
    for prefix, largest in (("top", True), ("res", False)):
        keys = torch.cat([getattr(a, f"{prefix}_key"), getattr(b, f"{prefix}_key")], 1)
        sel = _keep(keys, getattr(a, f"{prefix}_key").shape[1], largest)
        out[f"{prefix}_key"] = keys.gather(1, sel)
        for name in ("win", "val"):
            both = torch.cat([getattr(a, f"{prefix}_{name}"), getattr(b, f"{prefix}_{name}")], 1)
            out[f"{prefix}_{name}"] = both.gather(1, sel)
        acts = torch.cat([getattr(a, f"{prefix}_acts"), getattr(b, f"{prefix}_acts")], 1)
        out[f"{prefix}_acts"] = acts.gather(1, sel[:, :, None].expand(-1, -1, W))
    keys = torch.cat([a.pool_key, b.pool_key])
    sel = _keep(keys, a.pool_key.shape[0], largest=False)
    out["pool_key"] = keys[sel]
    out["pool_win"] = torch.cat([a.pool_win, b.pool_win])[sel]
    out["pool_fire"] = torch.cat([a.pool_fire, b.pool_fire])[sel]
    return CoderState(**out)


def merge_all(states: list[CoderState]) -> CoderState:
    out = states[0]
    for s in states[1:]:
        out = merge(out, s)
    return out


def all_gather_state(state: CoderState) -> CoderState:
    """Under torch.distributed: every rank gets the merge of all ranks' states."""
    import torch.distributed as dist

    world = dist.get_world_size()
    parts: list[dict[str, torch.Tensor]] = [{} for _ in range(world)]
    for name, t in state.tensors().items():
        send = t.to(torch.uint8) if t.dtype == torch.bool else t.contiguous()
        recv = [torch.empty_like(send) for _ in range(world)]
        dist.all_gather(recv, send)
        for r in range(world):
            parts[r][name] = recv[r].bool() if t.dtype == torch.bool else recv[r]
    return merge_all([CoderState(**p) for p in parts])


# --------------------------------------------------------------------------- selection
@dataclass
class Rows:
    """Rows of contexts.parquet for a block of latents (numpy, one entry per row)."""

    latent: np.ndarray  # int64
    window_id: np.ndarray  # int64
    kind: np.ndarray  # int8 code into schema.KINDS
    split: np.ndarray  # int8 code into schema.SPLITS
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


@torch.no_grad()
def select_rows(state: CoderState, sampling: Sampling, binary: bool, lo: int = 0, hi: int | None = None) -> Rows:
    """The top, explain, test and negative rows of latents [lo, hi), ordered by latent then kind."""
    from .schema import KINDS, SPLITS

    s = sampling
    hi = state.d_sae if hi is None else hi
    L, W = hi - lo, state.window
    lat0 = torch.arange(lo, hi, dtype=torch.long)
    blocks = []

    # top-N, best first
    key = state.top_key[lo:hi].cpu()
    order = key.sort(dim=1, descending=True, stable=True).indices
    valid = key.gather(1, order) != _EMPTY_TOP
    r, p = valid.nonzero(as_tuple=True)
    slot = order[r, p]
    blocks.append(_rows(
        lat0[r], state.top_win[lo:hi].cpu()[r, slot], KINDS.index("top"), SPLITS.index("display"),
        torch.full_like(r, -1), p, state.top_acts[lo:hi].cpu()[r, slot], state.top_val[lo:hi].cpu()[r, slot],
    ))

    # explain / test from the reservoir, over equal-count bins of window max activation
    rkey, rval = state.res_key[lo:hi].cpu(), state.res_val[lo:hi].cpu()
    R = rkey.shape[1]
    valid = rkey != _EMPTY_LOW
    n = valid.sum(1)
    nb = 1 if binary else s.n_quantiles
    o1 = rkey.sort(dim=1, stable=True).indices
    v1 = rval.gather(1, o1).masked_fill(~valid.gather(1, o1), float("inf"))
    by_val = o1.gather(1, v1.sort(dim=1, stable=True).indices)  # slots sorted by (max activation, key)
    rank = torch.empty_like(by_val).scatter_(1, by_val, torch.arange(R).expand(L, R).contiguous())
    q = torch.where(valid, rank * nb // n.clamp(min=1)[:, None], 0)
    comp = torch.where(valid, (q << 32) | rkey, _EMPTY_LOW)
    by_bin = comp.sort(1).indices  # slots sorted by (bin, key): bins in order, random order within
    q_s, valid_s = q.gather(1, by_bin), valid.gather(1, by_bin)
    size = torch.zeros(L, nb, dtype=torch.long).scatter_add_(1, q, valid.long())
    start = size.cumsum(1) - size
    i_in_bin = torch.arange(R)[None, :] - start.gather(1, q_s)
    full = n >= s.n_explain + s.n_test
    tot = max(s.n_explain + s.n_test, 1)
    n_exp = torch.where(full, torch.full_like(n, s.n_explain), n * s.n_explain // tot)
    n_tst = torch.where(full, torch.full_like(n, s.n_test), n - n_exp)
    qs = torch.arange(nb)[None, :]
    e = (n_exp[:, None] * (qs + 1)) // nb - (n_exp[:, None] * qs) // nb
    t = (n_tst[:, None] * (qs + 1)) // nb - (n_tst[:, None] * qs) // nb
    e = torch.minimum(e, size)
    t = torch.minimum(t, size - e)
    e_s, t_s = e.gather(1, q_s), t.gather(1, q_s)
    is_exp = valid_s & (i_in_bin < e_s)
    is_tst = valid_s & (i_in_bin >= e_s) & (i_in_bin < e_s + t_s)
    res_win, res_acts = state.res_win[lo:hi].cpu(), state.res_acts[lo:hi].cpu()
    for mask, split in ((is_exp, "explain"), (is_tst, "test")):
        rnk = mask.long().cumsum(1) - 1
        r, p = mask.nonzero(as_tuple=True)
        slot = by_bin[r, p]
        quant = q_s[r, p] if not binary else torch.full_like(r, -1)
        blocks.append(_rows(
            lat0[r], res_win[r, slot], KINDS.index("quantile"), SPLITS.index(split),
            quant, rnk[r, p], res_acts[r, slot], rval[r, slot],
        ))

    # negatives: the first n_negative pool windows (in random key order) where the latent never fires
    pkey = state.pool_key.cpu()
    porder = pkey.argsort()
    pvalid = pkey[porder] != _EMPTY_LOW
    quiet = (~state.pool_fire[:, lo:hi].cpu()[porder]) & pvalid[:, None]  # [P, L]
    quiet = quiet.T.contiguous() & (state.firing_count[lo:hi].cpu() > 0)[:, None]  # [L, P]; none for dead latents
    count = quiet.long().cumsum(1)
    pick = quiet & (count <= s.n_negative)
    r, p = pick.nonzero(as_tuple=True)
    blocks.append(_rows(
        lat0[r], state.pool_win.cpu()[porder][p], KINDS.index("random_negative"), SPLITS.index("test"),
        torch.full_like(r, -1), count[r, p] - 1, torch.zeros(r.numel(), W), torch.zeros(r.numel()),
    ))

    cat = {k: torch.cat([b[k] for b in blocks]) for k in blocks[0]}
    # latent-major order, stable so kinds stay top, explain, test, negative within a latent
    order = torch.sort(cat["latent"], stable=True).indices
    return Rows(**{k: v[order].numpy() for k, v in cat.items()})


def latent_status(state: CoderState, min_examples: int) -> np.ndarray:
    """0 ok, 1 too_rare, 2 dead (codes into schema.STATUSES)."""
    fc = state.firing_count.cpu().numpy()
    nw = state.n_windows.cpu().numpy()
    status = np.where(nw < min_examples, 1, 0)
    return np.where(fc == 0, 2, status).astype(np.int8)


__all__ = ["Sampling", "CoderState", "merge", "merge_all", "all_gather_state", "select_rows", "latent_status", "Rows"]
