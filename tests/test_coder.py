"""The sparse coder's math, exactly as PAPER.md specifies it."""

import math

import pytest
import torch

from oracles import BinaryTopK, pre_activations

from interp_eval.coders.coder import CoderConfig, SparseCoder, fvu
from interp_eval.coders.optim import Optimizer, default_lr


def make(kind="sae", activation="topk", d=16, m=64, k=4, **kw):
    return SparseCoder(CoderConfig(kind, activation, d, m, k, **kw), seed=0)


def test_topk_keeps_k_relu_values():
    c = make()
    x = torch.randn(32, 16)
    code = c.encode(x)
    pre = pre_activations(c, x)
    expected = torch.topk(torch.relu(pre), 4, dim=-1).values
    assert torch.allclose(code.values.sort(-1).values, expected.sort(-1).values)
    assert (code.values >= 0).all()


def test_binary_selection_is_top_k_of_pre_minus_theta_then_hard_zero_one():
    c = make(activation="binary")
    with torch.no_grad():
        c.log_threshold.copy_(torch.randn(64).mul(0.5) + 0.5)  # thresholds ~1.6: some selected values fall below
        c.b_enc.copy_(torch.randn(64) - 1.0)
    x = torch.randn(50, 16)
    code = c.encode(x)
    shifted = pre_activations(c, x) - c.threshold
    v, idx = torch.topk(shifted, 4, dim=-1)
    assert set(code.values.unique().tolist()) <= {0.0, 1.0}
    # same selection, and a selected latent at or below its threshold outputs 0
    assert torch.equal(code.indices.sort(-1).values, idx.sort(-1).values)
    fired = torch.zeros_like(shifted).scatter(-1, code.indices, code.values)
    assert torch.equal(fired, torch.zeros_like(shifted).scatter(-1, idx, (v > 0).float()))
    assert ((code.values > 0).sum(-1) <= 4).all()
    assert (v <= 0).any(), "test input should include selected latents below threshold"


def test_binary_straight_through_gradient_matches_the_formula():
    torch.manual_seed(0)
    pre = torch.randn(8, 20, requires_grad=True)
    log_theta = torch.full((20,), math.log(0.004), requires_grad=True)
    T = 2.0
    a, idx = BinaryTopK.apply(pre, log_theta.exp(), 5, T)
    grad_a = torch.randn_like(a)
    a.backward(grad_a)
    v = torch.gather(pre.detach() - log_theta.exp().detach(), 1, idx)
    s = torch.sigmoid(v / T)
    g = grad_a * s * (1 - s)
    expected_pre = torch.zeros(8, 20).scatter(1, idx, g)
    assert torch.allclose(pre.grad, expected_pre)
    # only the selected latents get gradient
    assert (pre.grad[expected_pre == 0] == 0).all()
    # d/dtheta = -sum over rows where selected; through log: times theta
    expected_theta = -expected_pre.sum(0) * 0.004
    assert torch.allclose(log_theta.grad, expected_theta, atol=1e-9)


def test_decode_is_sum_of_selected_rows_plus_bias_and_skip():
    c = make(kind="transcoder", activation="topk", d_out=12)
    with torch.no_grad():
        for p in c.parameters():
            p.normal_()
    x = torch.randn(10, 16)
    code = c.encode(x)
    dense = torch.zeros(10, 64).scatter(-1, code.indices, code.values)
    expected = dense @ c.W_dec + c.b_dec + x @ c.W_skip.T
    assert torch.allclose(c.decode(code, x), expected, atol=1e-4)


def test_initialisation():
    sae = make()
    assert torch.allclose(sae.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)
    assert torch.allclose(sae.W_dec, sae.W_enc.T / sae.W_enc.T.norm(dim=1, keepdim=True), atol=1e-6)
    assert sae.W_skip is None and sae.cfg.normalize_decoder
    tc = make(kind="transcoder")
    assert (tc.W_dec == 0).all() and (tc.W_skip == 0).all() and not tc.cfg.normalize_decoder
    bae = make(activation="binary")
    assert torch.allclose(bae.threshold, torch.full((64,), 0.004))
    x, y = torch.randn(100, 16), torch.randn(100, 16)
    tc.init_from_batch(x.mean(0), y.mean(0))
    assert torch.allclose(tc.b_dec, y.mean(0))
    assert torch.allclose(tc.b_enc, -(x.mean(0) @ tc.W_enc))
    sae.init_from_batch(x.mean(0), x.mean(0))
    assert torch.allclose(sae.b_dec, x.mean(0)) and (sae.b_enc == 0).all()


def test_decoder_constraint_removes_parallel_gradient_and_renormalises():
    c = make()
    x = torch.randn(64, 16)
    y_hat, _ = c(x)
    fvu(x, y_hat).backward()
    c.remove_gradient_parallel_to_decoder_directions()
    assert torch.allclose((c.W_dec.grad * c.W_dec).sum(1), torch.zeros(64), atol=1e-6)
    with torch.no_grad():
        c.W_dec.mul_(3.0)
    c.set_decoder_norm_to_unit_norm()
    assert torch.allclose(c.W_dec.norm(dim=1), torch.ones(64), atol=1e-5)


def test_fvu_definition():
    y = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 0.0]])
    y_hat = torch.tensor([[1.0, 1.0], [3.0, 3.0], [4.0, 0.0]])
    total = ((y - y.mean(0)) ** 2).sum()
    assert fvu(y, y_hat).item() == pytest.approx(3.0 / total.item())
    assert fvu(y, y).item() == 0.0


def test_paper_learning_rate_rule():
    assert default_lr("binary", "signum", 2**15) == pytest.approx(3e-3)
    assert default_lr("topk", "signum", 2**14) == pytest.approx(5e-3)
    assert default_lr("topk", "adam", 2**16) == pytest.approx(2e-4 / 2)
    assert default_lr("binary", "signum", 36864) == pytest.approx(3e-3 / math.sqrt(36864 / 2**15))


def test_signum_moves_by_sign_and_adam_warms_up():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = Optimizer([p], "signum", lr=0.1, total_steps=10, warmup_steps=0)
    p.grad = torch.tensor([2.0, -0.5, 0.0])
    opt.step()
    opt.eval()  # schedule-free averaged point: moved against the gradient's sign
    assert p[0] < 0 < p[1] and p[2] == 0
    q = torch.nn.Parameter(torch.zeros(2))
    adam = Optimizer([q], "adam", lr=1.0, total_steps=100, warmup_steps=1000)
    assert adam.lr == pytest.approx(0.1)  # warm-up capped at 10% of the steps: lr/10 at step 0


def test_config_validation():
    with pytest.raises(ValueError):
        CoderConfig("sae", "topk", 16, 8, 9)
    with pytest.raises(ValueError):
        CoderConfig("sae", "topk", 16, 32, 4, d_out=8)
    with pytest.raises(ValueError):
        CoderConfig("mlp", "topk", 16, 32, 4)


def test_auxk_gives_dead_latents_gradient_and_is_zero_without_dead_ones():
    from interp_eval.coders.train import auxk_loss

    c = make(d=16, m=64, k=4)
    x = torch.randn(32, 16)
    y_hat, code = c(x, keep_pre=True)
    dead = torch.zeros(64, dtype=torch.bool)
    assert auxk_loss(c, code, x, y_hat, dead).item() == 0.0
    dead[:20] = True
    loss = auxk_loss(c, code, x, y_hat, dead)
    loss.backward()
    assert loss.item() > 0
    assert c.W_dec.grad[:20].abs().sum() > 0 and c.W_dec.grad[20:].abs().sum() == 0


# ---------------------------------------------------------------- sparse encoder/decoder gradients
from interp_eval.coders import kernels as kernels_mod  # noqa: E402
from interp_eval.coders import topk as topk_mod  # noqa: E402
from interp_eval.coders.kernels import gather_dots, gather_dots_chunked, scatter_rows  # noqa: E402
from interp_eval.coders.topk import topk_rows  # noqa: E402


def _randomised(short, m=512, k=6, d=16, d_out=None, skip=None, dtype=torch.float64, temperature=1.5):
    from interp_eval.coders.coder import CODER_KINDS

    kind, act = CODER_KINDS[short]
    kw = {} if kind == "sae" else {"d_out": d_out or d + 3, "skip": skip}
    c = SparseCoder(CoderConfig(kind, act, d, m, k, temperature=temperature, **kw), seed=0).to(dtype)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in c.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * 0.5)
        if c.log_threshold is not None:
            # theta between 0.5 and 8: some selected latents fall below their threshold and output 0
            c.log_threshold.copy_(torch.rand(m, generator=g, dtype=dtype) * math.log(16) + math.log(0.5))
            # shift the bias so about half the selected latents fall at or below their threshold (output 0)
            x = torch.randn(64, d, generator=g, dtype=dtype)
            v = torch.topk(pre_activations(c, x) - c.threshold, k, dim=-1).values
            c.b_enc -= v.median()
    return c


def _dense_reference(c, x, y, keep_pre=False, dead=None):
    """The same loss through plain dense autograd: dense pre, torch.topk / BinaryTopK, dense decode."""
    from interp_eval.coders.train import auxk_loss

    x_in = x - c.b_dec if c.cfg.kind == "sae" else x
    pre = x_in @ c.W_enc + c.b_enc
    if c.cfg.activation == "binary":
        values, idx = BinaryTopK.apply(pre, c.log_threshold.exp(), c.cfg.k, c.cfg.temperature)
    else:
        v, idx = torch.topk(pre, c.cfg.k, dim=-1)
        values = torch.relu(v)
    dense = torch.zeros_like(pre).scatter(1, idx, values)
    y_hat = dense @ c.W_dec + c.b_dec
    if c.W_skip is not None:
        y_hat = y_hat + x @ c.W_skip.T
    loss = fvu(y, y_hat) + (y_hat * torch.linspace(-1, 1, y_hat.shape[1], dtype=y.dtype)).sum() * 1e-2
    if keep_pre:
        from interp_eval.coders.coder import Encoded

        loss = loss + 0.5 * auxk_loss(c, Encoded(values, idx, pre), y, y_hat, dead)
    return loss, idx, values


def _ours(c, x, y, keep_pre=False, dead=None):
    from interp_eval.coders.train import auxk_loss

    y_hat, code = c(x, keep_pre=keep_pre)
    loss = fvu(y, y_hat) + (y_hat * torch.linspace(-1, 1, y_hat.shape[1], dtype=y.dtype)).sum() * 1e-2
    if keep_pre:
        loss = loss + 0.5 * auxk_loss(c, code, y, y_hat, dead)
    return loss, code


def _grads(c, fn, *args):
    c.zero_grad(set_to_none=True)
    out = fn(c, *args)
    out[0].backward()
    return out, {n: p.grad.clone() for n, p in c.named_parameters()}


CASES = [
    ("sae", {}), ("bae", {}),
    ("tc", {"skip": True}), ("tc", {"skip": False}),
    ("btc", {"skip": True}), ("btc", {"skip": False}),
]


@pytest.mark.parametrize("short,kw", CASES)
@pytest.mark.parametrize("keep_pre", [False, True])
@pytest.mark.parametrize("strategy,chunk", [("csr", 0), ("index_add", 0), ("csr", 7)])
def test_sparse_backward_equals_dense_autograd(short, kw, keep_pre, strategy, chunk, monkeypatch):
    monkeypatch.setattr(kernels_mod, "SPARSE_T_MM", strategy)
    monkeypatch.setattr(topk_mod, "ENCODE_CHUNK_ROWS", chunk)  # 7 rows at a time: 40 rows in 6 blocks
    c = _randomised(short, **kw)
    torch.manual_seed(2)
    x = torch.randn(40, 16, dtype=torch.float64)
    y = x if c.cfg.kind == "sae" else torch.randn(40, c.cfg.d_out, dtype=torch.float64)
    dead = torch.zeros(512, dtype=torch.bool)
    dead[::3] = True
    (ref_loss, ref_idx, ref_vals), ref = _grads(c, _dense_reference, x, y, keep_pre, dead)
    (loss, code), ours = _grads(c, _ours, x, y, keep_pre, dead)
    # same code (as sets per row), same loss, same gradient for every parameter
    assert torch.equal(code.indices.sort(-1).values, ref_idx.sort(-1).values)
    order, ref_order = code.indices.argsort(-1), ref_idx.argsort(-1)
    assert torch.allclose(code.values.gather(1, order), ref_vals.gather(1, ref_order), rtol=1e-12, atol=1e-12)
    assert torch.allclose(loss, ref_loss, rtol=1e-12, atol=1e-12)
    assert set(ours) == set(ref)
    for name in ref:
        assert torch.allclose(ours[name], ref[name], rtol=1e-9, atol=1e-11), name
        assert ours[name].shape == getattr(c, name).shape
    if c.cfg.activation == "binary":
        assert (code.values == 0).any() and (code.values == 1).any()
        assert ours["log_threshold"].abs().sum() > 0
    if c.cfg.kind == "sae":
        assert ours["b_dec"].abs().sum() > 0  # through the folded bias and the decoder's b_dec


@pytest.mark.parametrize("short", ["sae", "bae", "tc", "btc"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_sparse_backward_fp32_and_input_gradient(short, precision, monkeypatch):
    monkeypatch.setattr(topk_mod, "ENCODE_PRECISION", precision)  # bf16: candidates, proved, rescored
    c = _randomised(short, dtype=torch.float32, m=1024, k=8)
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(4))
    y = x.detach() if c.cfg.kind == "sae" else torch.randn(64, c.cfg.d_out)
    xa = x.clone().requires_grad_(True)
    (_, _, _), ref = _grads(c, _dense_reference, xa, y)
    ref_x, xa.grad = xa.grad.clone(), None
    (_, _), ours = _grads(c, _ours, xa, y)
    for name in ref:
        assert torch.allclose(ours[name], ref[name], rtol=1e-4, atol=1e-6), name
    assert torch.allclose(xa.grad, ref_x, rtol=1e-4, atol=1e-6)


def test_encode_without_grad_and_with_leading_dims():
    c = _randomised("bae", dtype=torch.float32)
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        code = c.encode(x)
    assert code.values.shape == (3, 5, 6) and code.indices.shape == (3, 5, 6) and code.pre is None
    flat = c.encode(x.reshape(15, 16))
    assert torch.equal(code.indices.reshape(15, 6), flat.indices)


@pytest.mark.parametrize("block", [2, 4, 8, 16])
@pytest.mark.parametrize("m", [256, 512, 500])
def test_two_stage_topk_is_exact(block, m):
    torch.manual_seed(block + m)
    s = torch.randn(64, m)
    s[:8] = torch.randint(0, 4, (8, m)).float()  # heavy ties
    s[8, :] = -1.0
    s[9, 7] = 5.0
    for k in (1, 5, 16):
        v, i = topk_rows(s, k, block=block)
        ref = torch.topk(s, k, dim=-1).values
        assert torch.equal(v.sort(-1, descending=True).values, ref)
        assert torch.equal(s.gather(1, i), v)
        assert (i.sort(-1).values.diff(dim=-1) > 0).all()  # distinct columns


def test_scatter_rows_and_gather_dots(monkeypatch):
    torch.manual_seed(0)
    idx = torch.randint(0, 50, (30, 4))
    w = torch.randn(30, 4, dtype=torch.float64)
    rows = torch.randn(30, 7, dtype=torch.float64)
    dense = torch.zeros(30, 50, dtype=torch.float64)
    for n in range(30):
        for j in range(4):
            dense[n, idx[n, j]] += w[n, j]
    for strategy in ("csr", "index_add"):
        monkeypatch.setattr(kernels_mod, "SPARSE_T_MM", strategy)
        assert torch.allclose(scatter_rows(idx, w, rows, 50), dense.T @ rows)
    table = torch.randn(50, 7, dtype=torch.float64)
    expected = (table[idx] * rows[:, None, :]).sum(-1)
    assert torch.allclose(gather_dots(idx, table, rows), expected)
    monkeypatch.setattr(kernels_mod, "_CHUNK_ELEMENTS", 4 * 7 * 3)  # 3 rows a block: 30 rows in 10
    assert torch.allclose(gather_dots_chunked(idx, table, rows), expected)
    # the chunked loops in blocks of 3 rows and in the GPU's one block: the same sums
    monkeypatch.setattr(kernels_mod, "SPARSE_T_MM", "index_add")
    for limit in (4 * 7 * 3, kernels_mod._CHUNK_ELEMENTS_GPU):
        monkeypatch.setattr(kernels_mod, "chunk_elements", lambda device, limit=limit: limit)
        assert torch.allclose(scatter_rows(idx, w, rows, 50), dense.T @ rows)
        assert torch.allclose(gather_dots_chunked(idx, table, rows), expected)
    monkeypatch.undo()
    assert kernels_mod.chunk_elements(torch.device("cpu")) == kernels_mod._CHUNK_ELEMENTS
    assert kernels_mod.chunk_elements(torch.device("cuda")) == kernels_mod._CHUNK_ELEMENTS_GPU


def test_parallel_gradient_removal_is_the_projection():
    c = make()
    with torch.no_grad():
        c.W_dec.mul_(torch.rand(64, 1) + 0.5)  # rows not unit-norm
    g = torch.randn(64, 16)
    c.W_dec.grad = g.clone()
    c.remove_gradient_parallel_to_decoder_directions()
    w = c.W_dec / c.W_dec.norm(dim=1, keepdim=True)
    assert torch.allclose(c.W_dec.grad, g - (g * w).sum(1, keepdim=True) * w, atol=1e-6)


def test_learned_decoder_scale_multiplies_the_decoded_sum_and_is_saved_folded(tmp_path):
    from interp_eval.coders.saelens import load_coder, save_coder

    c = make(activation="binary", decoder_scale=True, hookpoint="layers.3.mlp", model_name="m")
    with torch.no_grad():
        c.log_decoder_scale.fill_(math.log(3.0))
        c.b_dec.normal_()
    x = torch.randn(10, 16)
    code = c.encode(x)
    dense = torch.zeros(10, 64).scatter(-1, code.indices, code.values)
    y = c.decode(code)
    assert torch.allclose(y, 3.0 * dense @ c.W_dec + c.b_dec, atol=1e-5)
    ((y - x) ** 2).sum().backward()
    assert c.log_decoder_scale.grad is not None and c.log_decoder_scale.grad.abs() > 0  # the scale learns
    save_coder(c, tmp_path / "bae")
    loaded = load_coder(tmp_path / "bae")
    assert loaded.ours.log_decoder_scale is None  # folded: a coder with free rows, readable without the option
    assert torch.allclose(loaded.ours.decode(loaded.ours.encode(x)), y.detach(), atol=1e-5)
