"""The encoder's selection: the k largest entries of each row of x @ W^T + bias, exactly.

Two ways to the same answer:

- dense fp32 (`dense_topk`): the [N, M] product a block of rows at a time into a reused scratch
  buffer, then a two-stage top-k (`topk_rows`) of each block while it is still in cache.
- bf16 candidates, verified (`candidate_topk`): on hardware whose bf16 products are several times
  faster than fp32 (Intel AMX: 8x; AVX512-BF16 without AMX, as on the AMD EPYC of this project's
  machines: 4x), the product is taken in bf16 only to find each row's
  `n_cand` best candidates; the candidates are then rescored in fp32 (a k-sparse gather, not a
  product) and the row's top k taken among them. A rigorous error bound on the bf16 scores proves, row
  by row, that no latent outside the candidates can reach the k-th rescored value; a row whose proof
  fails (near-ties, too few candidates, NaN) is recomputed by the dense path. So the selection and the
  fp32 values are those of the dense path (up to the rounding any two fp32 GEMMs differ by), on every
  row, whatever the data.

The bound. Write x' = [x, 1] and w'_j = [w_j, b_j] (the bias rides in the product as one more
column). bf16 rounding gives x^ = x' + dx and w^_j = w'_j + dw_j with |dw_j| <= u |w'_j| (u = 2^-8);
the product accumulates in fp32 (error <= gamma sum |x^_i w^_ij|, gamma = d u32 / (1 - d u32)). As
x'.w'_j = x^.w^_j - x^.dw_j - dx.w'_j, by Cauchy-Schwarz the accumulated score p_j of latent j is
within
    e_j <= |x^| |dw_j| + (|dx| + gamma (1 + u) |x^|) r_j = |x^| |dw_j| + A r_j,    r_j = |w'_j|,
of the exact x'.w'_j. Both |dw_j| (the rounding latent j actually got, about 0.4 u r_j on average
rather than the worst case u r_j) and |dx| are measured, not assumed. Two more product columns carry
that per-(row, latent) slack: x^ gets |x^| and A (rounded up), w^_j gets |dw_j| and r_j (rounded
up), so the bf16 product returns o_j = round(p_j + e_j), an upper bound of x'.w'_j up to the one
output rounding: x'.w'_j <= o_j + u / (1 - u) |o_j|.
Candidates are the n_cand largest o_j; every other latent has o_j <= m (the smallest candidate's), so
    x'.w'_j <= m + u / (1 - u) |m| = U         for every non-candidate j.
A row is proved when its k-th fp32-rescored value, less the rescoring's own error (gamma |x'| max r),
exceeds U.

Flushed denormals. bf16 dot-product instructions (AVX512-BF16's vdpbf16ps, AMX's tdpbf16ps) treat
denormal inputs as zero and flush denormal results: each of the d + 3 terms can lose up to 2^-126
that way, and the inputs' flushed parts (|x_i| or |w_ij| below 2^-126) cost at most
2^-126 sqrt(d + 3) (|x^| + r_j); the fp32 rescoring's underflow is smaller still. That absolute slack
joins the bound (it is ~1e-35: it never decides a row, but the proof does not assume normal numbers).

`ENCODE_PRECISION` (env INTERP_EVAL_ENCODE): "bf16" forces the candidates (any device), "fp32" never
uses them, "auto" (the default) uses them for fp32 coders on CPU where they are measured to be faster.
"auto" first asks whether the CPU runs bf16 products natively (x86: AVX512-BF16 or AMX; other
architectures are not ruled out); if so, the first calls of each encoder shape alternate the two
selections on their real batches (`AutoChoice`: one untimed call of each, then `AUTO_TRIALS` timed
calls of each) and every later call takes the one with the lower time per row. While a shape can go
either way its codes are made canonical on both paths (latents in ascending order, values the
per-pair fp32 dot products `gather_dots` gives, and the ranking by those products too: the dense branch
hands its top k + a margin to `select_by_dots`), so the choice, which depends on the machine's load
while it is timed, changes nothing but the speed: the same codes bit for bit. (Ranking the dense branch
by its own block product decided k-th place ties within fp32 rounding otherwise than the candidates, and
two trainings of one coder drifted apart from the first such tie: bench/selection_divergence.py.)
Why real calls rather than CPU flags alone: the flags say what the hardware has, not what torch's
kernels do with it at this shape, nor what the path's own costs (converting W, selecting and
rescoring candidates) add. Why real calls rather than a separate probe: a probe on a slice of rows
overweights the path's per-call costs, and on a busy machine each of its parallel ops can wait for a
descheduled thread; real calls measure what is kept, at no extra work. On the AMD EPYC (AVX512-BF16,
no AMX) of this project's machines the bf16 product is 4x faster than the fp32 one (README, "Tuned
constants (measured)").
"""

from __future__ import annotations

import math
import os
import platform
import threading
import time

import torch

from .kernels import gather_dots  # the fp32 rescoring: a k-sparse gather of encoder rows

ENCODE_PRECISION = os.environ.get("INTERP_EVAL_ENCODE", "auto")
ENCODE_CHUNK_ROWS = 512  # rows of the product computed at a time into the scratch block; 0: all at once
CANDIDATE_CHUNK_ROWS = 1024  # the same for the bf16 scores (chosen by timing, as the other sizes here)
CANDIDATE_MIN_ROWS = 256  # fewer rows than this: converting W to bf16 would cost more than it saves
AUTO_TRIALS = 4  # "auto": timed calls of each selection (after one untimed) before choosing, per shape
AUTO_MARGIN = 1.05  # "auto" keeps the candidates only if their time per row is this much below dense's
_U = 2.0**-8  # bf16 unit roundoff
_U32 = 2.0**-24  # fp32 unit roundoff
_TINY = 2.0**-126  # smallest normal fp32 (and bf16): below it, bf16 dot-product units flush to zero

_scratch = threading.local()  # per thread: reused buffers, keyed by role
# rows handled by candidate_topk and how many of them needed the dense recomputation (for benches)
CANDIDATE_STATS = {"rows": 0, "fallback_rows": 0}
# candidates per row, per encoder (its storage address, latents, k): starts at k + k/4 (2k above
# 16,384 latents, see below); grows by k/8, or by the failed fraction of the count if more, while
# more than max_fallback(latents) of a call's rows fail their proof (up to 4k, or as far as
# topk_rows' two stages stay cheap), and shrinks by k/8 (down to k + k/8) while fewer than an eighth
# of that fail. The code is the same either way (candidate_topk returns it canonical); this is speed
# only: a failed row costs a dense row (in proportion to the latents), a candidate one gathered dot
# product, so growing pays once more than about 128 / latents of the rows fail (max_fallback).
# Trained coders settle a little above k + k/4, random-weight ones higher; with many latents a low
# count fails most rows, so a first call starting low would cost several times its settled time:
# hence the start at 2k there. Some rows fail whatever the count (tokens with huge norms), which can
# hold a count inside the band where it neither grows nor shrinks: the start is therefore low where
# that is cheap, rather than left to the shrinking.
_n_cand: dict[tuple[int, int, int], int] = {}


def max_fallback(m: int) -> float:
    return min(0.1, max(0.003, 128 / m))


def _next_count(kc: int, k: int, m: int, failed: float) -> int:
    """The candidate count for an encoder's next call, after a call with kc that failed this share of rows."""
    step = max(1, k // 8)
    if failed > max_fallback(m):
        grown = min(m, 4 * k, kc + max(step, math.ceil(kc * failed)))
        return grown if m // select_block(m) >= 4 * grown else kc
    if failed < max_fallback(m) / 8:
        return max(k + step, kc - step)
    return kc


# topk_rows' group width for the candidates: the first of these that divides the latents (the
# fastest widths when timed for 40-80 candidates of 4,096 to 36,864 latents).
SELECT_BLOCKS = (6, 8, 4)


def select_block(m: int) -> int:
    return next((b for b in SELECT_BLOCKS if m % b == 0), 1)


def _buffer(role: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A per-thread scratch tensor reused across calls (no fresh page-faulted allocation each step)."""
    bufs = _scratch.__dict__.setdefault("bufs", {})
    buf = bufs.get(role)
    if buf is None or buf.shape != shape or buf.dtype != dtype or buf.device != device:
        bufs[role] = None
        buf = bufs[role] = torch.empty(shape, dtype=dtype, device=device)
    return buf


def topk_rows(s: torch.Tensor, k: int, block: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest entries of each row of s [N, M], unsorted; exact.

    Two stages instead of a selection over all M columns: split each row into M / block groups of
    `block` columns (group j = columns j, j + M/block, ...), take each group's max (an elementwise max of
    `block` contiguous slices, a vectorised pass), pick the k groups with the largest maxima, and take
    the top k of those k * block candidates. Exact: the k chosen group maxima are k entries at least as
    large as every entry of an unchosen group, so the row's top k lies inside the chosen groups (ties
    at the boundary resolve arbitrarily, as torch.topk's do). Falls back to torch.topk where the
    two stages would not pay (few groups, M not a multiple of block, or not on CPU).
    """
    n, m = s.shape
    groups = m // block if block > 1 else 0
    if s.device.type != "cpu" or groups < 4 * k or m % block:
        return torch.topk(s, k, dim=-1, sorted=False)
    gmax = s.view(n, block, groups).amax(1)  # [N, groups]
    _, gi = torch.topk(gmax, k, dim=-1, sorted=False)  # [N, k]
    cols = (gi.unsqueeze(-1) + torch.arange(0, m, groups, device=s.device)).view(n, k * block)
    v, j = torch.topk(s.gather(1, cols), k, dim=-1, sorted=False)
    return v, cols.gather(1, j)


def dense_topk(x: torch.Tensor, W_t: torch.Tensor, bias: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """topk_rows(x @ W_t^T + bias, k), a block of rows at a time into one reused scratch buffer, so
    the [N, M] product is never held whole and each block's selection reads it while in cache."""
    n, m = x.shape[0], W_t.shape[0]
    dtype = torch.result_type(x, W_t) if not torch.is_autocast_enabled(x.device.type) else None
    rows = n if ENCODE_CHUNK_ROWS <= 0 or x.device.type != "cpu" or dtype is None else ENCODE_CHUNK_ROWS
    if rows >= n:
        return topk_rows(torch.addmm(bias, x, W_t.T), k)
    buf = _buffer("dense", (rows, m), dtype, x.device)
    values = torch.empty(n, k, dtype=dtype, device=x.device)
    indices = torch.empty(n, k, dtype=torch.long, device=x.device)
    for i in range(0, n, rows):
        c = min(rows, n - i)
        v, j = topk_rows(torch.addmm(bias, x[i : i + c], W_t.T, out=buf[:c]), k)
        values[i : i + c] = v
        indices[i : i + c] = j
    return values, indices


def bf16_hardware(device: torch.device) -> bool:
    """Whether bf16 products can be faster than fp32 here: on x86, CPUs with AVX512-BF16 or AMX (without
    either, torch converts bf16 to fp32 and the path only adds work); other CPUs are left to the timing.
    Not CUDA: torch may reduce bf16 partial sums in bf16 there, which the bound does not cover."""
    if device.type != "cpu":
        return False
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return True
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class AutoChoice:
    """"auto"'s choice for one encoder shape: alternate the selections on the first calls, then keep
    the faster. The first call of each path is not timed (scratch buffers, the product kernels' set-up,
    the candidate count's first adaptation); then AUTO_TRIALS timed calls each, the fastest time per
    row of each counting (a call slowed by the machine's other work does not)."""

    def __init__(self) -> None:
        self.calls = {False: 0, True: 0}
        self.per_row: dict[bool, list[float]] = {False: [], True: []}
        self.candidates: bool | None = None

    def next(self) -> bool:
        if self.candidates is not None:
            return self.candidates
        return self.calls[True] <= self.calls[False]  # candidates first, then alternate

    def record(self, candidates: bool, seconds: float, rows: int) -> None:
        if self.candidates is not None:
            return
        self.calls[candidates] += 1
        if self.calls[candidates] > 1:
            self.per_row[candidates].append(seconds / rows)
        if min(len(t) for t in self.per_row.values()) >= AUTO_TRIALS:
            self.candidates = min(self.per_row[False]) >= AUTO_MARGIN * min(self.per_row[True])

    def summary(self) -> dict:
        best = {("candidates" if c else "dense") + "_s_per_row": min(t) if t else None for c, t in self.per_row.items()}
        return {"candidates": self.candidates, **best}


# "auto": (device type, d, latents, k, threads) -> its AutoChoice
AUTO_CHOICES: dict[tuple, AutoChoice] = {}


def auto_pending() -> bool:
    """Whether some encoder shape is still alternating its selections (benches warm up until not)."""
    return any(c.candidates is None for c in AUTO_CHOICES.values())


def _eligible(x: torch.Tensor, W_t: torch.Tensor, k: int) -> bool:
    """Whether the candidates can run here at all (fp32, no autocast, at least 8k latents)."""
    if ENCODE_PRECISION == "fp32" or x.dtype != torch.float32 or W_t.dtype != torch.float32:
        return False
    return not torch.is_autocast_enabled(x.device.type) and W_t.shape[0] >= 8 * k


def _auto(x: torch.Tensor, W_t: torch.Tensor, k: int) -> AutoChoice | None:
    """This call's AutoChoice under "auto" (None: dense, no choice to make)."""
    if ENCODE_PRECISION != "auto" or x.shape[0] < CANDIDATE_MIN_ROWS or not bf16_hardware(x.device):
        return None
    key = (x.device.type, x.shape[1], W_t.shape[0], k, torch.get_num_threads())
    return AUTO_CHOICES.setdefault(key, AutoChoice())


def use_candidates(x: torch.Tensor, W_t: torch.Tensor, k: int) -> bool:
    """Whether the next call at this shape takes the candidates (under "auto": the choice made, or the
    path whose turn it is while both are tried)."""
    if not _eligible(x, W_t, k):
        return False
    if ENCODE_PRECISION == "bf16":
        return True
    auto = _auto(x, W_t, k)
    return auto is not None and auto.next()


def pool_size(k: int, m: int) -> int:
    """How many of the dense product's largest entries the dense branch hands to select_by_dots: k and a margin,
    so a latent tied at the k-th place within the product's rounding is in the pool whichever way it ranked."""
    return min(m, k + max(8, k // 4))


def select_by_dots(pool: torch.Tensor, x: torch.Tensor, W_t: torch.Tensor, bias: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices): the k latents of each row's `pool` [N, P] with the largest per-pair fp32 dot products
    (gather_dots) plus bias, in ascending latent order, those products as values. Both branches of "auto" rank by
    this one computation, so a tie at the k-th place within fp32 rounding goes the same way in each."""
    z = gather_dots(pool, W_t, x).add_(bias[pool])
    values, j = torch.topk(z, k, dim=-1, sorted=False)
    indices, order = pool.gather(1, j).sort(dim=1)
    return values.gather(1, order), indices


def canonical_dense_topk(x: torch.Tensor, W_t: torch.Tensor, bias: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The dense branch's code as the candidates give it: the dense product's top k + margin, ranked by per-pair
    dots. (The product of a block of rows rounds differently from a one-row product, so ranking by it would
    decide k-th place ties otherwise than the candidates do.)"""
    return select_by_dots(dense_topk(x, W_t, bias, pool_size(k, W_t.shape[0]))[1], x, W_t, bias, k)


def encoder_topk(x: torch.Tensor, W_t: torch.Tensor, bias: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, indices) of the k largest entries of each row of x @ W_t^T + bias, unsorted: the
    verified bf16-candidate path where it pays (see the module doc), the dense fp32 path otherwise."""
    if not _eligible(x, W_t, k):
        return dense_topk(x, W_t, bias, k)
    if ENCODE_PRECISION == "bf16":
        return candidate_topk(x, W_t, bias, k)
    auto = _auto(x, W_t, k)
    if auto is None:
        return dense_topk(x, W_t, bias, k)
    candidates = auto.next()
    t = time.perf_counter()
    if candidates:
        out = candidate_topk(x, W_t, bias, k)
    else:  # canonical, so that the codes do not depend on the choice (module doc)
        out = canonical_dense_topk(x, W_t, bias, k)
    auto.record(candidates, time.perf_counter() - t, x.shape[0])
    return out


def _rounding_norms(Wb: torch.Tensor, W: torch.Tensor, rows: int = 4096) -> torch.Tensor:
    """|Wb_j - W_j| per row j: the rounding each latent actually got, a block of rows at a time in a
    reused fp32 buffer (the whole difference at once would page-fault 85 MB a step at 36,864 latents)."""
    m, d = W.shape
    out = torch.empty(m, dtype=torch.float32, device=W.device)
    buf = _buffer("rounding", (min(rows, m), d), torch.float32, W.device)
    for i in range(0, m, rows):
        c = min(rows, m - i)
        diff = buf[:c].copy_(Wb[i : i + c]).sub_(W[i : i + c])
        torch.linalg.vector_norm(diff, dim=1, out=out[i : i + c])
    return out


def _first_count(k: int, m: int) -> int:
    """An encoder's first candidate count (see _n_cand)."""
    return k + k // 4 if m <= 16_384 else 2 * k


def candidate_topk(
    x: torch.Tensor, W_t: torch.Tensor, bias: torch.Tensor, k: int, n_cand: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact top k of x @ W_t^T + bias per row, found among bf16-scored candidates and proved."""
    n, d = x.shape
    m = W_t.shape[0]
    key = (W_t.data_ptr(), m, k)
    kc = min(m, n_cand or _n_cand.get(key, _first_count(k, m)))
    dev = x.device
    d_pad = -(-(d + 3) // 32) * 32  # bias and two slack columns, then zeros to whole AMX tiles of 32
    gamma = (d + 3) * _U32 / (1 - (d + 3) * _U32)
    up = 1 + 8 * _U  # rounding-up margin for the slack columns (covers their rounding and accumulation)
    with torch.no_grad():
        r = torch.sqrt(torch.linalg.vector_norm(W_t, dim=1).square() + bias.square())  # |w'_j|
        Wb = _buffer("w_bf16", (m, d_pad), torch.bfloat16, dev)
        Wb[:, :d].copy_(W_t)
        Wb[:, d].copy_(bias)
        dw = _rounding_norms(Wb[:, :d], W_t).square_().add_((Wb[:, d].float() - bias).square_()).sqrt_()
        Wb[:, d + 1].copy_(r * up)
        Wb[:, d + 2].copy_(dw * up)
        Wb[:, d + 3 :].zero_()
        xb = _buffer("x_bf16", (n, d_pad), torch.bfloat16, dev)
        xb[:, :d].copy_(x)
        xb[:, d] = 1.0
        xb[:, d + 3 :].zero_()
        xf = xb[:, :d].float()  # x^ without its bias column (an exact 1)
        xb_norm = torch.linalg.vector_norm(xf, dim=1).square_().add_(1.0).sqrt_()
        dx_norm = torch.linalg.vector_norm(xf.sub_(x), dim=1)
        del xf
        xb[:, d + 1].copy_((dx_norm + gamma * (1 + _U) * xb_norm) * up)  # A, rounded up: pairs with r_j
        xb[:, d + 2].copy_(xb_norm * up)  # |x^|, rounded up: pairs with |dw_j|
        # the fp32 rescoring's own error, charged to the candidates' side of the proof
        rescore_err = gamma * (torch.linalg.vector_norm(x, dim=1) + 1.0) * r.max()

        rows = n if CANDIDATE_CHUNK_ROWS <= 0 or dev.type != "cpu" else min(n, CANDIDATE_CHUNK_ROWS)
        buf = _buffer("scores_bf16", (rows, m), torch.bfloat16, dev)
        cand = torch.empty(n, kc, dtype=torch.long, device=dev)
        bound = torch.empty(n, dtype=torch.float32, device=dev)
        for i in range(0, n, rows):
            c = min(rows, n - i)
            o = torch.mm(xb[i : i + c], Wb.T, out=buf[:c])  # upper bounds of the scores (module doc)
            v, j = topk_rows(o, kc, block=select_block(m))
            cand[i : i + c] = j
            bound[i : i + c] = v.amin(1).float()
        # flushed denormals (module doc): per-term flushes, and the inputs' flushed parts
        flushed = _TINY * ((d + 4) + math.sqrt(d + 3) * (xb_norm + r.max()))
        bound += bound.abs() * (_U / (1 - _U)) + rescore_err + flushed

    # A canonical code: latents in ascending order, every value the same per-pair fp32 dot product
    # whichever rows were proved, so the result does not depend on the candidate count (which adapts
    # with the process's history) or on which rows fell back: a resumed run repeats an uninterrupted one.
    values, indices = select_by_dots(cand, x, W_t, bias, k)  # the candidates rescored in fp32, the top k kept
    bad = ~(values.amin(1) > bound)  # not proved (includes NaN)
    rows_bad = bad.nonzero().squeeze(1)
    CANDIDATE_STATS["rows"] += n
    CANDIDATE_STATS["fallback_rows"] += int(rows_bad.numel())
    if n_cand is None:
        _n_cand[key] = _next_count(kc, k, m, rows_bad.numel() / n)
    if rows_bad.numel():  # ranked by the same per-pair dots as the proved rows
        values[rows_bad], indices[rows_bad] = canonical_dense_topk(x[rows_bad], W_t, bias, k)
    return values, indices
