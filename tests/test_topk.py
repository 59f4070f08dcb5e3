"""The encoder's selection: bf16 candidates proved against the dense fp32 top-k."""

import math

import pytest
import torch

from interp_eval.coders import topk as topk_mod
from interp_eval.coders.coder import CoderConfig, SparseCoder
from interp_eval.coders.topk import candidate_topk, dense_topk

_U = 2.0**-8


def _same_sets(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.sort(-1).values == b.sort(-1).values).all(-1)


def _assert_same_up_to_fp32_ties(a: torch.Tensor, b: torch.Tensor, scores: torch.Tensor, k: int) -> None:
    """Index sets a and b [N, k] equal, except where the row's k-th and (k+1)-th exact scores (float64
    `scores` [N, M]) are closer than fp32 can tell: there either latent is a right answer."""
    same = _same_sets(a, b)
    if same.all():
        return
    rows = (~same).nonzero().squeeze(1)
    top = torch.topk(scores[rows], k + 1, dim=-1).values
    kth, next_ = top[:, k - 1], top[:, k]
    assert ((kth - next_).abs() <= 4e-7 * kth.abs().clamp_min(1.0)).all(), rows


def _problem(n=600, d=48, m=1536, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * scale
    W_t = torch.empty(m, d).uniform_(-1 / math.sqrt(d), 1 / math.sqrt(d), generator=g)
    bias = torch.randn(m, generator=g) * 0.05
    return x, W_t, bias


@pytest.mark.parametrize("chunk", [0, 128])
def test_candidates_equal_dense_selection(chunk, monkeypatch):
    monkeypatch.setattr(topk_mod, "CANDIDATE_CHUNK_ROWS", chunk)
    x, W_t, bias = _problem()
    k = 16
    before = dict(topk_mod.CANDIDATE_STATS)
    v, i = candidate_topk(x, W_t, bias, k, n_cand=2 * k)
    ref_v, ref_i = torch.topk(x @ W_t.T + bias, k, dim=-1)
    _assert_same_up_to_fp32_ties(i, ref_i, x.double() @ W_t.double().T + bias.double(), k)
    assert torch.allclose(v.sort(-1).values, ref_v.sort(-1).values, rtol=1e-5, atol=1e-6)
    assert torch.allclose(v, (x @ W_t.T + bias).gather(1, i), atol=1e-6)  # fp32 values of the chosen
    rows = topk_mod.CANDIDATE_STATS["rows"] - before["rows"]
    fallback = topk_mod.CANDIDATE_STATS["fallback_rows"] - before["fallback_rows"]
    assert rows == 600 and fallback <= 6  # the proof holds for almost every row of random data


def test_candidate_count_adapts_to_the_failed_rows():
    """More than max_fallback(latents) of a call's rows failing their proof raises the encoder's count
    for the next call (which then needs the dense product for far fewer rows); a call where almost
    none fail lowers it by k/8, down to k + k/8."""
    x, W_t, bias = _problem(m=4096)
    key = (W_t.data_ptr(), 4096, 16)
    topk_mod._n_cand[key] = 20
    fallbacks, counts = [], []
    for _ in range(2):
        before = topk_mod.CANDIDATE_STATS["fallback_rows"]
        candidate_topk(x, W_t, bias, 16)
        fallbacks.append(topk_mod.CANDIDATE_STATS["fallback_rows"] - before)
        counts.append(topk_mod._n_cand[key])
    assert fallbacks[0] > topk_mod.max_fallback(4096) * 600 and counts[0] > 20
    assert fallbacks[1] < fallbacks[0] / 10
    topk_mod._n_cand[key] = 40  # far more than this problem needs: no row fails, the count steps down
    for expected in (38, 36, 34):
        candidate_topk(x, W_t, bias, 16)
        assert topk_mod._n_cand[key] == expected
    assert topk_mod._next_count(18, 16, 4096, 0.0) == 18  # never below k + k/8
    topk_mod._n_cand.pop(key, None)


def test_unprovable_rows_fall_back_and_stay_exact():
    """Latents that bf16 cannot tell apart (duplicates perturbed below bf16 resolution), exact ties and
    NaN rows: the proof fails there, the dense path decides, and the answer is still the dense one."""
    x, W_t, bias = _problem(n=300, m=512)
    W_t[256:] = W_t[:256] * (1 + 1e-4)  # each latent has a near-twin 1e-4 above it
    x[5] = 0.0  # every score equals its bias: exact ties among the biases' duplicates
    bias[256:] = bias[:256]
    x[7, 3] = float("nan")
    k = 8
    before = topk_mod.CANDIDATE_STATS["fallback_rows"]
    v, i = candidate_topk(x, W_t, bias, k, n_cand=k + 1)
    assert topk_mod.CANDIDATE_STATS["fallback_rows"] - before > 0
    ref_v, ref_i = dense_topk(x, W_t, bias, k)
    ok = torch.ones(300, dtype=torch.bool)
    ok[[5, 7]] = False  # exact ties (either twin may be chosen) and a NaN row (indices arbitrary)
    assert _same_sets(i[ok], ref_i[ok]).all()
    ok[5] = True
    assert torch.equal(v[5].sort().values, ref_v[5].sort().values)
    full = x @ W_t.T + bias
    kth = torch.topk(full, k, dim=-1).values[:, -1]
    # every chosen latent is at least the row's k-th largest score (ties may pick either twin)
    assert (full.gather(1, i)[ok] >= kth[ok, None] - 1e-6).all()
    assert torch.isnan(v[7]).any()


def test_bf16_product_error_is_within_the_bound():
    """The proof's premise on this machine: bf16 GEMM with fp32 accumulation and one output rounding."""
    x, W_t, bias = _problem(n=256, d=96, m=1024, scale=3.0)
    d = x.shape[1]
    xb, wb = x.bfloat16(), W_t.bfloat16()
    s = (xb @ wb.T).double()
    exact = x.double() @ W_t.double().T
    dx = (xb.double() - x.double()).norm(dim=1, keepdim=True)
    dw = (wb.double() - W_t.double()).norm(dim=1)
    xbn = xb.double().norm(dim=1, keepdim=True)
    wn = W_t.double().norm(dim=1)
    gamma = d * 2.0**-24 / (1 - d * 2.0**-24)
    pre_round = xbn * dw + dx * wn + gamma * xbn * wb.double().norm(dim=1)
    bound = pre_round + _U / (1 - _U) * s.abs()
    assert ((s - exact).abs() <= bound).all()


@pytest.mark.parametrize("short", ["sae", "bae", "tc", "btc"])
def test_coder_encode_same_code_either_way(short, monkeypatch):
    from interp_eval.coders.coder import CODER_KINDS

    kind, act = CODER_KINDS[short]
    c = SparseCoder(CoderConfig(kind, act, 64, 1024, 16), seed=3)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        c.b_enc.normal_(0, 0.02, generator=g)
        c.b_dec.normal_(0, 0.1, generator=g)
    x = torch.randn(512, 64, generator=g)
    codes = {}
    for precision in ("fp32", "bf16"):
        monkeypatch.setattr(topk_mod, "ENCODE_PRECISION", precision)
        with torch.no_grad():
            codes[precision] = c.encode(x)
    a, b = codes["fp32"], codes["bf16"]
    x_in = (x - c.b_dec).double() if kind == "sae" else x.double()
    bias = c.b_enc.double() - (c.threshold.double() if c.threshold is not None else 0)
    scores = x_in @ c.W_enc_t.detach().double().T + bias
    _assert_same_up_to_fp32_ties(a.indices, b.indices, scores, 16)
    same = _same_sets(a.indices, b.indices)
    oa, ob = a.indices[same].argsort(-1), b.indices[same].argsort(-1)
    assert torch.allclose(a.values[same].gather(1, oa), b.values[same].gather(1, ob), atol=1e-5)


def test_auto_mode_and_small_problems(monkeypatch):
    x, W_t, bias = _problem(n=100, m=256)
    monkeypatch.setattr(topk_mod, "ENCODE_PRECISION", "auto")
    monkeypatch.setattr(topk_mod, "AUTO_CHOICES", {})
    monkeypatch.setattr(topk_mod, "bf16_hardware", lambda device: True)
    assert not topk_mod.use_candidates(x, W_t, 8)  # too few rows to pay for converting W
    assert not topk_mod.use_candidates(x.double(), W_t.double(), 8)
    assert not topk_mod.AUTO_CHOICES  # nothing to choose: no trial started
    monkeypatch.setattr(topk_mod, "ENCODE_PRECISION", "fp32")
    assert not topk_mod.use_candidates(torch.randn(4096, 48), W_t, 8)
    monkeypatch.setattr(topk_mod, "ENCODE_PRECISION", "bf16")
    assert topk_mod.use_candidates(x, W_t, 8) and not topk_mod.use_candidates(x, W_t, 64)  # M < 8k


def test_bf16_hardware_is_a_cpu_question():
    assert not topk_mod.bf16_hardware(torch.device("cuda"))
    assert not topk_mod.bf16_hardware(torch.device("meta"))
    assert isinstance(topk_mod.bf16_hardware(torch.device("cpu")), bool)


class _Clock:
    """A fake perf_counter for topk.py: each selection advances it by its set cost per row."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def _timed_paths(monkeypatch, dense_cost: float, cand_cost: float) -> list[str]:
    """Make the two selections take dense_cost / cand_cost seconds a row on the fake clock (the
    first call of each 10x as long, as a first call can be); returns the log of paths taken."""
    clock, taken, inside = _Clock(), [], []
    real_dense, real_cand = topk_mod.dense_topk, topk_mod.candidate_topk

    def dense(x, W_t, bias, k):
        if not inside:  # not the candidates' own recomputation of unproved rows
            clock.now += dense_cost * x.shape[0] * (10 if "dense" not in taken else 1)
            taken.append("dense")
        return real_dense(x, W_t, bias, k)

    def cand(x, W_t, bias, k, n_cand=None):
        clock.now += cand_cost * x.shape[0] * (10 if "candidates" not in taken else 1)
        taken.append("candidates")
        inside.append(1)
        try:
            return real_cand(x, W_t, bias, k, n_cand)
        finally:
            inside.pop()

    monkeypatch.setattr(topk_mod, "time", clock)
    monkeypatch.setattr(topk_mod, "dense_topk", dense)
    monkeypatch.setattr(topk_mod, "candidate_topk", cand)
    monkeypatch.setattr(topk_mod, "ENCODE_PRECISION", "auto")
    monkeypatch.setattr(topk_mod, "AUTO_CHOICES", {})
    monkeypatch.setattr(topk_mod, "bf16_hardware", lambda device: True)
    return taken


@pytest.mark.parametrize("dense_cost,cand_cost,chosen", [
    (2e-6, 1e-6, "candidates"),  # candidates twice as fast: kept
    (1e-6, 2e-6, "dense"),  # slower: dense
    (1.02e-6, 1e-6, "dense"),  # within AUTO_MARGIN: the plain path
])
def test_auto_tries_both_on_real_calls_then_keeps_the_faster(dense_cost, cand_cost, chosen, monkeypatch):
    """"auto" on bf16 hardware alternates the selections (one untimed call of each, then AUTO_TRIALS
    timed calls each), keeps the one with the lower time per row for every later call of that shape,
    and every call returns the same code bit for bit (both paths canonical)."""
    taken = _timed_paths(monkeypatch, dense_cost, cand_cost)
    x, W_t, bias = _problem(n=300, m=1024)
    k = 8
    trial = 2 * (topk_mod.AUTO_TRIALS + 1)
    outs = [topk_mod.encoder_topk(x, W_t, bias, k) for _ in range(trial + 3)]
    assert taken[:trial] == ["candidates", "dense"] * (trial // 2)
    assert taken[trial:] == [chosen] * 3
    assert not topk_mod.auto_pending()
    (choice,) = topk_mod.AUTO_CHOICES.values()
    assert choice.candidates == (chosen == "candidates")
    assert choice.summary()["dense_s_per_row"] == pytest.approx(dense_cost)
    for v, i in outs[1:]:
        assert torch.equal(i, outs[0][1]) and torch.equal(v, outs[0][0])
    ref_v, ref_i = torch.topk(x @ W_t.T + bias, k, dim=-1)
    _assert_same_up_to_fp32_ties(outs[0][1], ref_i, x.double() @ W_t.double().T + bias.double(), k)
    # a second shape has its own trial; a batch below CANDIDATE_MIN_ROWS takes dense without one
    topk_mod.encoder_topk(x, W_t[:512], bias[:512], k)
    assert len(topk_mod.AUTO_CHOICES) == 2 and topk_mod.auto_pending()
    taken.clear()
    topk_mod.encoder_topk(x[:100], W_t, bias, k)
    assert taken == ["dense"]


def test_auto_without_bf16_hardware_is_dense_without_a_trial(monkeypatch):
    taken = _timed_paths(monkeypatch, 2e-6, 1e-6)
    monkeypatch.setattr(topk_mod, "bf16_hardware", lambda device: False)
    x, W_t, bias = _problem(n=300, m=1024)
    v, i = topk_mod.encoder_topk(x, W_t, bias, 8)
    assert taken == ["dense"] and not topk_mod.AUTO_CHOICES
    ref_v, ref_i = dense_topk(x, W_t, bias, 8)  # the module's own, not the timed wrapper
    assert torch.equal(i, ref_i) and torch.equal(v, ref_v)


def test_canonical_dense_is_the_candidates_code_bit_for_bit():
    """The dense selection made canonical gives the same (values, indices) as the candidates, so
    "auto" may pick either without changing a code."""
    x, W_t, bias = _problem(n=500, m=2048, seed=3)
    k = 16
    cv, ci = candidate_topk(x, W_t, bias, k)
    dv, di = topk_mod.canonical_dense_topk(x, W_t, bias, k)
    same = (ci == di).all(1)
    assert same.float().mean() > 0.99  # the rest: latents tied at the k-th value within fp32 rounding
    _assert_same_up_to_fp32_ties(ci, di, x.double() @ W_t.double().T + bias.double(), k)
    assert torch.equal(cv[same], dv[same])
    assert (di.diff(dim=1) > 0).all()


def test_flushed_denormals_stay_exact():
    """Inputs so small that their products are denormal: bf16 dot-product units (AVX512-BF16, AMX)
    flush them to zero, so the bf16 scores say nothing there. The bound's absolute terms fail those
    rows' proofs and the dense fp32 path decides, so the selection is still the exact one."""
    x, W_t, bias = _problem(n=300, m=1024, seed=4)
    x[:100] *= 2.0**-128  # products ~1e-39: below the smallest normal
    bias[:] = 0.0
    k = 8
    before = topk_mod.CANDIDATE_STATS["fallback_rows"]
    v, i = candidate_topk(x, W_t, bias, k, n_cand=12)
    assert topk_mod.CANDIDATE_STATS["fallback_rows"] - before >= 100
    exact = x.double() @ W_t.double().T
    _assert_same_up_to_fp32_ties(i, torch.topk(exact, k, dim=-1).indices, exact, k)
    assert torch.equal(v, topk_mod.gather_dots(i, W_t, x)) and v[:100].abs().max() > 0


def test_state_dict_is_in_saelens_layout():
    c = SparseCoder(CoderConfig("sae", "topk", 32, 128, 4), seed=0)
    state = c.state_dict()
    assert "W_enc_t" not in state and state["W_enc"].shape == (32, 128)
    d = SparseCoder(CoderConfig("sae", "topk", 32, 128, 4), seed=1)
    d.load_state_dict(state)
    assert torch.equal(d.W_enc, c.W_enc) and d.W_enc_t.is_contiguous()


def test_training_steps_agree_between_selections(monkeypatch):
    """Twenty Adam steps with each selection reach the same losses (up to fp32 rounding)."""
    from interp_eval.coders.coder import fvu
    from interp_eval.coders.optim import Optimizer

    g = torch.Generator().manual_seed(5)
    data = torch.randn(20, 512, 64, generator=g) @ torch.randn(64, 64, generator=g) * 0.3
    losses = {}
    for precision in ("fp32", "bf16"):
        monkeypatch.setattr(topk_mod, "ENCODE_PRECISION", precision)
        c = SparseCoder(CoderConfig("sae", "binary", 64, 1024, 16), seed=0)
        opt = Optimizer(c.parameters(), "adam", 1e-3, 20, 0)
        out = []
        for x in data:
            y_hat, _ = c(x)
            loss = fvu(x, y_hat)
            loss.backward()
            opt.step()
            opt.zero_grad()
            out.append(loss.item())
        losses[precision] = torch.tensor(out)
    assert torch.allclose(losses["fp32"], losses["bf16"], rtol=1e-3)
    assert losses["bf16"][-1] < losses["bf16"][0]


def test_code_does_not_depend_on_candidate_count_or_fallbacks(monkeypatch):
    """The adaptive candidate count depends on the process's history; the code must not: the same
    (values, indices) bit for bit whatever the count and whichever rows were recomputed densely."""
    x, W_t, bias = _problem(n=400, m=1536)
    W_t[768:] = W_t[:768] * (1 + 1e-4)  # near-twins: some rows fail their proof at small counts
    runs, fallbacks = [], []
    for n_cand in (17, 24, 40, 96):
        before = topk_mod.CANDIDATE_STATS["fallback_rows"]
        runs.append(candidate_topk(x, W_t, bias, 16, n_cand=n_cand))
        fallbacks.append(topk_mod.CANDIDATE_STATS["fallback_rows"] - before)
    monkeypatch.setattr(topk_mod, "_U", 0.5)  # a bound so loose that no row is proved
    before = topk_mod.CANDIDATE_STATS["fallback_rows"]
    runs.append(candidate_topk(x, W_t, bias, 16, n_cand=24))
    assert topk_mod.CANDIDATE_STATS["fallback_rows"] - before == 400
    assert fallbacks[0] > fallbacks[-1]  # different rows fell back
    for v, i in runs[1:]:
        assert torch.equal(i, runs[0][1]) and torch.equal(v, runs[0][0])
    assert (runs[0][1].diff(dim=1) > 0).all()  # latents in ascending order


def test_sampled_dots_are_per_pair_dot_products():
    """gather_dots on CPU takes each (row, latent) entry as one dot product (torch's sampled_addmm):
    the fp32 products to rounding, the same bits whatever else the row selects (the canonical codes
    depend on that), and the embedding-bag kernel where the table is not contiguous."""
    from interp_eval.coders.kernels import gather_dots, sampled_dots

    x, W_t, _ = _problem(n=200, d=96, m=3000, seed=6)
    g = torch.Generator().manual_seed(1)
    idx = torch.stack([torch.randperm(3000, generator=g)[:40] for _ in range(200)])
    got = sampled_dots(idx, W_t, x)
    exact = (W_t.double()[idx] * x.double()[:, None, :]).sum(-1)
    assert torch.allclose(got.double(), exact, rtol=1e-5, atol=1e-5)
    assert torch.equal(gather_dots(idx, W_t, x), got)
    assert torch.equal(sampled_dots(idx[:, 7:19].contiguous(), W_t, x), got[:, 7:19])  # subsets: same bits
    assert torch.equal(sampled_dots(idx.flip(1), W_t, x), got.flip(1))  # order: same bits
    strided = torch.cat([W_t, W_t], dim=1)[:, :96]  # not contiguous: the embedding-bag kernel
    assert torch.allclose(gather_dots(idx, strided, x), got, rtol=1e-5, atol=1e-5)
    assert gather_dots(idx[:0], W_t, x[:0]).shape == (0, 40)


def test_auto_dense_branch_ranks_a_kth_place_tie_as_the_candidates_do(monkeypatch):
    """Two latents tied at the k-th place within fp32 rounding are ranked by whichever fp32 computation a branch
    uses: the dense product of a block of rows (whose rounding depends on the block) or the per-pair dots of the
    candidates. Found in training (bench/selection_divergence.py): auto's timing-based choice then changed the
    code, and two trainings of one coder drifted apart. Here the dense product is made to rank every row's
    (k+1)-th latent above its k-th, as a block's rounding can; the dense branch must still give the candidates'
    code bit for bit."""
    x, W_t, bias = _problem(n=300, m=2048, seed=3)
    k = 16
    cv, ci = candidate_topk(x, W_t, bias, k)
    real = topk_mod.dense_topk

    def rounded_otherwise(x, W_t, bias, kk):
        v, i = real(x, W_t, bias, kk + 1)
        order = v.argsort(dim=1, descending=True)
        v, i = v.gather(1, order), i.gather(1, order)
        v[:, [kk - 1, kk]], i[:, [kk - 1, kk]] = v[:, [kk, kk - 1]], i[:, [kk, kk - 1]]
        return v[:, :kk], i[:, :kk]

    monkeypatch.setattr(topk_mod, "dense_topk", rounded_otherwise)
    monkeypatch.setattr(topk_mod, "ENCODE_PRECISION", "auto")
    monkeypatch.setattr(topk_mod, "bf16_hardware", lambda device: True)
    choice = topk_mod.AutoChoice()
    choice.candidates = False  # auto timed the dense branch faster
    monkeypatch.setattr(topk_mod, "AUTO_CHOICES", {("cpu", x.shape[1], W_t.shape[0], k, torch.get_num_threads()): choice})
    dv, di = topk_mod.encoder_topk(x, W_t, bias, k)
    assert torch.equal(di, ci) and torch.equal(dv, cv)
