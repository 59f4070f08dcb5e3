"""Per-coder streaming state of the mining pass: update from one batch, merge two states, select rows.

Everything is a fixed-size tensor ([latents] or [latents, kept windows]); nothing grows with the
number of tokens. Per latent:

- firing_count, max_act, n_windows: summed / maxed over batches.
- top-N windows by window max activation: keys = (float bits of the window max << 32) | hash,
  largest kept. Binary coders, whose maxima all tie at 1, get a seeded random choice.
- a reservoir of R activating windows: the R smallest hash keys of (window_id, latent). Each hash
  is a bijection of the window id for a given latent, so keys within a latent are unique and the
  order is total. Whatever batches or ranks saw which windows, the kept set is the R smallest keys of
  all activating windows: a uniform sample that merges exactly.
- one pool (shared by all latents) of P random windows, the P smallest hash keys of the window id,
  with a [P, L] mask of the latents firing anywhere in the window: the source of non-activating
  (negative) windows, read from the codes.

Each kept (latent, window) entry also holds the latent's activation at every token of the window.

The top-N and the reservoir rows are lazily compacted buffers of capacity(N) and capacity(R) slots
holding a superset of the best N / R keys (see `_insert`): a batch's new keys go into empty slots,
and only a row that would overflow pays for a selection. Readers take each row's N / R best
(`best_keys`). No Python loop runs over latents, tokens or windows. `merge` is a plain function (top-N
of top-Ns, bottom-R of reservoirs, summed counts), used for torchrun ranks and testable without
processes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from .config import Sampling

_M32 = 0xFFFFFFFF
EMPTY_TOP = -1  # below every real top key (real keys are >= 2^32)
EMPTY_LOW = 1 << 62  # above every real reservoir / pool key (real keys are < 2^32)

_SALT_TOP, _SALT_RES, _SALT_POOL = 0x5EED0001, 0x5EED0002, 0x5EED0003


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


# --------------------------------------------------------------------------- kept keys
def _insert(keys: torch.Tensor, thr: torch.Tensor, rows: torch.Tensor, cand: torch.Tensor, keep: int, largest: bool,
            empty: int):
    """Insert candidate keys (row, key), `rows` sorted, into a lazily compacted row buffer.

    keys [L, C] holds, per row, a superset of the `keep` best keys seen so far (C >= keep slots, empty
    slots = `empty`, which loses to every real key); thr [L] is a bound no key can beat and still be
    among the best `keep`: the keep-th best key at the row's last compaction (`empty` before the first).
    Callers pass only candidates that beat thr. A row with room for its candidates takes them all into
    its first empty slots, no selection; only a row that would overflow is compacted: its `keep` best
    of kept + new keys stay, the rest are emptied, and thr becomes the keep-th best. So a row pays for a
    selection once per C - keep new keys instead of on every batch. Mutates keys and thr; returns
    (rows, slots, candidate indices) whose payloads the caller writes.
    """
    if cand.numel() == 0:
        z = torch.zeros(0, dtype=torch.long, device=keys.device)
        return z, z, z
    dev = keys.device
    C = keys.shape[1]
    urows, counts = torch.unique_consecutive(rows, return_counts=True)
    group = torch.repeat_interleave(torch.arange(urows.numel(), device=dev), counts)
    old = keys.index_select(0, urows)
    free = old == empty  # [U, C]
    fits = counts <= free.sum(1)
    out_rows, out_slots, out_cand = [], [], []
    if fits.any():
        f = fits.nonzero().squeeze(1)
        ff = free.index_select(0, f)
        take = ff & (ff.cumsum(1) <= counts.index_select(0, f)[:, None])  # the first count empty slots
        fr, fs = take.nonzero(as_tuple=True)  # row-major, count per row: pairs with the candidates below
        out_rows.append(urows.index_select(0, f).index_select(0, fr))
        out_slots.append(fs)
        out_cand.append(fits.index_select(0, group).nonzero().squeeze(1))
    if not fits.all():
        o = (~fits).nonzero().squeeze(1)
        which = (~fits).index_select(0, group).nonzero().squeeze(1)  # their candidates, row by row
        o_counts = counts.index_select(0, o)
        o_group = torch.repeat_interleave(torch.arange(o.numel(), device=dev), o_counts)
        rank = torch.arange(which.numel(), device=dev) - (o_counts.cumsum(0) - o_counts).index_select(0, o_group)
        width = int(o_counts.max())
        new = torch.full((o.numel(), width), empty, dtype=keys.dtype, device=dev)
        new[o_group, rank] = cand.index_select(0, which)
        src = torch.full((o.numel(), width), -1, dtype=torch.long, device=dev)
        src[o_group, rank] = which
        both = torch.cat([old.index_select(0, o), new], 1)
        best, sel = both.topk(keep, dim=1, largest=largest, sorted=False)  # all real: the row overflowed
        chosen = torch.zeros_like(both, dtype=torch.bool).scatter_(1, sel, True)
        kept_old = chosen[:, :C]
        n_new = chosen[:, C:].sum(1)
        room = ~kept_old
        take = room & (room.cumsum(1) <= n_new[:, None])
        fr, fs = take.nonzero(as_tuple=True)
        nr, nc = chosen[:, C:].nonzero(as_tuple=True)  # row-major, n_new per row: pairs with (fr, fs)
        o_rows = urows.index_select(0, o)
        keys[o_rows] = both[:, :C].masked_fill(room, empty)  # evicted (and still empty) slots
        thr[o_rows] = best.amin(1) if largest else best.amax(1)
        out_rows.append(o_rows.index_select(0, fr))
        out_slots.append(fs)
        out_cand.append(src[nr, nc])
    r, slots, c = (torch.cat(parts) for parts in (out_rows, out_slots, out_cand))
    keys[r, slots] = cand.index_select(0, c)
    return r, slots, c


def capacity(keep: int) -> int:
    """Slots per latent for its `keep` best keys: room for a quarter more (at least 8) between
    compactions. Timed on the demo's coders, a quarter and an eighth are about equal, a half slower
    (larger rows to scan), and all beat compacting every batch."""
    return keep + max(8, keep // 4)


_LAYOUTS: dict[tuple, tuple] = {}


def _layout(n: int, width: int, ctx_len: int, window: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """For a batch of n tokens (whole contexts) coded `width` entries wide: each token's window in the
    batch, each entry's position in its window, and (if contexts end in a partial window) a 0/1 float
    mask of the entries whose token is in a window, else None. Cached: every batch has the same shape."""
    key = (n, width, ctx_len, window, str(device))
    if key not in _LAYOUTS:
        t = torch.arange(n, device=device)
        in_ctx = t % ctx_len
        per_ctx = ctx_len // window
        inside = in_ctx < per_ctx * window
        win = torch.where(inside, (t // ctx_len) * per_ctx + in_ctx // window, 0)
        pos = (in_ctx % window).repeat_interleave(width)
        mask = None if bool(inside.all()) else inside.float().repeat_interleave(width)
        if len(_LAYOUTS) > 8:
            _LAYOUTS.clear()
        _LAYOUTS[key] = (win, pos, mask)
    return _LAYOUTS[key]


def best_keys(keys: torch.Tensor, keep: int, largest: bool, empty: int) -> torch.Tensor:
    """keys [L, C] with every key but each row's `keep` best replaced by `empty`."""
    order = keys.sort(dim=1, descending=largest, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(keys.shape[1]).expand_as(order).contiguous())
    return keys.masked_fill(rank >= keep, empty)


# --------------------------------------------------------------------------- state
@dataclass
class CoderState:
    n_tokens: torch.Tensor  # [] int64
    firing_count: torch.Tensor  # [L] int64
    max_act: torch.Tensor  # [L] float32
    n_windows: torch.Tensor  # [L] int64
    keep_top: torch.Tensor  # [] int64: N
    keep_res: torch.Tensor  # [] int64: R
    top_key: torch.Tensor  # [L, capacity(N)] int64: a superset of the N best (see _insert)
    top_thr: torch.Tensor  # [L] int64: no key below this can enter the top N
    top_win: torch.Tensor  # [L, capacity(N)] int64
    top_val: torch.Tensor  # [L, capacity(N)] float32
    top_acts: torch.Tensor  # [L, capacity(N), W] float32
    res_key: torch.Tensor  # [L, capacity(R)] int64: a superset of the R smallest
    res_thr: torch.Tensor  # [L] int64: no key above this can enter the reservoir
    res_win: torch.Tensor  # [L, capacity(R)] int64
    res_val: torch.Tensor  # [L, capacity(R)] float32
    res_acts: torch.Tensor  # [L, capacity(R), W] float32
    pool_key: torch.Tensor  # [P] int64
    pool_win: torch.Tensor  # [P] int64
    pool_fire: torch.Tensor  # [P, L] bool

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, d_sae: int, sampling: Sampling, device: str | torch.device = "cpu") -> "CoderState":
        L, P, W = d_sae, sampling.negative_pool, sampling.window
        N, R = capacity(sampling.n_top), capacity(sampling.reservoir)
        i64 = dict(dtype=torch.long, device=device)
        f32 = dict(dtype=torch.float32, device=device)
        # torch.zeros/full write every page now, so memory use is fixed from the first batch on
        return cls(
            n_tokens=torch.zeros((), **i64),
            firing_count=torch.zeros(L, **i64),
            max_act=torch.zeros(L, **f32),
            n_windows=torch.zeros(L, **i64),
            keep_top=torch.tensor(sampling.n_top, **i64),
            keep_res=torch.tensor(sampling.reservoir, **i64),
            top_key=torch.full((L, N), EMPTY_TOP, **i64),
            top_thr=torch.full((L,), EMPTY_TOP, **i64),
            top_win=torch.full((L, N), -1, **i64),
            top_val=torch.zeros(L, N, **f32),
            top_acts=torch.zeros(L, N, W, **f32),
            res_key=torch.full((L, R), EMPTY_LOW, **i64),
            res_thr=torch.full((L,), EMPTY_LOW, **i64),
            res_win=torch.full((L, R), -1, **i64),
            res_val=torch.zeros(L, R, **f32),
            res_acts=torch.zeros(L, R, W, **f32),
            pool_key=torch.full((P,), EMPTY_LOW, **i64),
            pool_win=torch.full((P,), -1, **i64),
            pool_fire=torch.zeros(P, L, dtype=torch.bool, device=device),
        )

    @property
    def d_sae(self) -> int:
        return self.firing_count.shape[0]

    @property
    def n_top(self) -> int:
        return int(self.keep_top)

    @property
    def reservoir(self) -> int:
        return int(self.keep_res)

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
        n, width = values.shape
        n_win = window_ids.numel()
        self.n_tokens += n

        # The whole code at once, no filtering pass: entries that do not fire (padding, values <= 0)
        # count 0 and carry 0, which changes no maximum (all start at 0).
        val = values.float().clamp_min(0).reshape(-1)
        lat = indices.long().reshape(-1)
        fires = val > 0
        self.firing_count += torch.bincount(lat, weights=fires, minlength=L).long()
        self.max_act.scatter_reduce_(0, lat, val, reduce="amax")

        win_of_row, pos_of_entry, in_window = _layout(n, width, ctx_len, W, dev)
        if in_window is not None:  # the tail of each context belongs to no window
            val = val * in_window
        flat = (lat.view(n, width) * n_win + win_of_row[:, None]).view(-1)  # (latent, window in batch)
        wmax = torch.zeros(L * n_win, dtype=torch.float32, device=dev)
        wmax.scatter_reduce_(0, flat, val, reduce="amax")
        pair = (wmax > 0).nonzero().squeeze(1)  # active (latent, window) pairs, by latent (bool: 2x faster)
        pl = pair.div(n_win, rounding_mode="floor")
        pv = wmax.index_select(0, pair)
        gw = window_ids.index_select(0, pair - pl * n_win)
        self.n_windows += torch.bincount(pl, minlength=L)

        # top-N by window max; only pairs that can beat the row's threshold are hashed and inserted
        thr = self.top_thr.index_select(0, pl)
        bits = pv.view(torch.int32).long()
        idx = (bits >= (thr >> 32)).nonzero().squeeze(1)
        key = (bits.index_select(0, idx) << 32) | window_hash(
            gw.index_select(0, idx), latent_salts(L, seed, _SALT_TOP, dev).index_select(0, pl.index_select(0, idx))
        )
        better = (key > thr.index_select(0, idx)).nonzero().squeeze(1)
        top_idx, top_key = idx.index_select(0, better), key.index_select(0, better)
        t_rows, t_slots, t_c = _insert(
            self.top_key, self.top_thr, pl.index_select(0, top_idx), top_key, self.n_top, largest=True, empty=EMPTY_TOP
        )
        t_pairs = top_idx.index_select(0, t_c)

        # reservoir: the R smallest hash keys
        key = window_hash(gw, latent_salts(L, seed, _SALT_RES, dev).index_select(0, pl))
        res_idx = (key < self.res_thr.index_select(0, pl)).nonzero().squeeze(1)
        r_rows, r_slots, r_c = _insert(
            self.res_key, self.res_thr, pl.index_select(0, res_idx), key.index_select(0, res_idx), self.reservoir,
            largest=False, empty=EMPTY_LOW,
        )
        r_pairs = res_idx.index_select(0, r_c)

        self.top_win[t_rows, t_slots] = gw.index_select(0, t_pairs)
        self.top_val[t_rows, t_slots] = pv.index_select(0, t_pairs)
        self.res_win[r_rows, r_slots] = gw.index_select(0, r_pairs)
        self.res_val[r_rows, r_slots] = pv.index_select(0, r_pairs)

        # per-token activations of the newly kept (latent, window) pairs, read off the sparse code
        wanted = torch.cat([pair.index_select(0, t_pairs), pair.index_select(0, r_pairs)])
        if wanted.numel():
            lookup = torch.full((L * n_win,), -1, dtype=torch.int32, device=dev)  # int32: half the bytes to gather
            lookup[wanted] = torch.arange(wanted.numel(), dtype=torch.int32, device=dev)
            pos = lookup.index_select(0, flat)
            hit = ((pos >= 0) & (val > 0)).nonzero().squeeze(1)
            acts = torch.zeros(wanted.numel() * W, dtype=torch.float32, device=dev)
            acts.index_put_(
                (pos.index_select(0, hit).long() * W + pos_of_entry.index_select(0, hit),), val.index_select(0, hit)
            )
            # a pair kept both as top and in the reservoir was filled once (at its last listing)
            acts = acts.view(-1, W).index_select(0, lookup.index_select(0, wanted))
            nt = t_pairs.numel()
            N, R = self.top_acts.shape[1], self.res_acts.shape[1]
            self.top_acts.view(L * N, W).index_copy_(0, t_rows * N + t_slots, acts[:nt])
            self.res_acts.view(L * R, W).index_copy_(0, r_rows * R + r_slots, acts[nt:])

        # negative pool: the P windows with the smallest window-only hash, with their firing masks
        # (one row with no slack: every batch's windows compete with it, so no threshold is kept)
        wkey = window_hash(window_ids, int(latent_salts(1, seed, _SALT_POOL)[0]))
        no_bound = torch.full((1,), EMPTY_LOW, dtype=torch.long, device=dev)
        _, p_slots, p_cols = _insert(
            self.pool_key[None, :], no_bound, torch.zeros_like(wkey), wkey, self.pool_key.numel(), largest=False,
            empty=EMPTY_LOW,
        )
        if p_slots.numel():  # _insert wrote the keys
            self.pool_win[p_slots] = window_ids[p_cols]
            self.pool_fire[p_slots] = (wmax.view(L, n_win)[:, p_cols] > 0).T


# --------------------------------------------------------------------------- merge
def _keep(keys: torch.Tensor, k: int, largest: bool) -> torch.Tensor:
    return keys.topk(k, dim=-1, largest=largest, sorted=False).indices


@torch.no_grad()
def merge(a: CoderState, b: CoderState) -> CoderState:
    """The state of the union of the two token shards (exact: keys are a total order)."""
    if (a.top_key.shape != b.top_key.shape or a.res_key.shape != b.res_key.shape or a.pool_fire.shape != b.pool_fire.shape
            or a.n_top != b.n_top or a.reservoir != b.reservoir):
        raise ValueError("cannot merge mining states of different shapes")
    W = a.window
    out = {
        "n_tokens": a.n_tokens + b.n_tokens,
        "firing_count": a.firing_count + b.firing_count,
        "max_act": torch.maximum(a.max_act, b.max_act),
        "n_windows": a.n_windows + b.n_windows,
        "keep_top": a.keep_top.clone(),
        "keep_res": a.keep_res.clone(),
        # each side's bound holds for the union too (its N-th best / R-th smallest can only improve)
        "top_thr": torch.maximum(a.top_thr, b.top_thr),
        "res_thr": torch.minimum(a.res_thr, b.res_thr),
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


__all__ = ["CoderState", "EMPTY_LOW", "EMPTY_TOP", "best_keys", "merge", "merge_all", "all_gather_state"]
