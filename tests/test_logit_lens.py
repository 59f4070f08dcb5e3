"""Output tokens (subject/logit_lens.py): a decoder row's logit effect, checked against each family's own arithmetic.

Tiny random models of each family (tests/tiny_models.py), with their norms' weights and biases randomised so a
formula that forgot one of them (Gemma's 1 + w, LayerNorm's centring and bias, the output projection of hook_z)
ranks other tokens.
"""

from __future__ import annotations

import pytest
import torch

from interp_eval.errors import UserError
from interp_eval.subject.hookpoints import layout, resolve_site
from interp_eval.subject.logit_lens import logit_effects, residual_directions, why_not, written_site
from tiny_models import FAMILIES, tiny_subject

VOCAB = [f"t{i}" for i in range(64)]


def _randomised(family: str):
    subject = tiny_subject(family)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in subject.model.named_parameters():
            if "norm" in name or "ln_" in name or "layernorm" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5 + (0.0 if name.endswith("bias") else 1.0))
    return subject


def _final(subject, x: torch.Tensor) -> torch.Tensor:
    """The final norm without its bias, by hand: RMSNorm (Gemma: 1 + w) or LayerNorm (centred)."""
    base = subject.model.base_model
    norm = next(getattr(base, n) for n in ("norm", "ln_f", "final_layer_norm") if hasattr(base, n))
    w = norm.weight
    if isinstance(norm, torch.nn.LayerNorm):
        c = x - x.mean(-1, keepdim=True)
        return c / (c.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt() * w
    if "gemma" in type(norm).__name__.lower():
        w = 1 + w
    return x / x.pow(2).mean(-1, keepdim=True).sqrt() * w


def _logits(subject, resid: torch.Tensor) -> torch.Tensor:
    return _final(subject, resid) @ subject.model.get_output_embeddings().weight.T


@pytest.mark.parametrize("family", FAMILIES)
def test_residual_rows_rank_tokens_as_the_final_norm_and_unembedding_do(family):
    subject = _randomised(family)
    site = resolve_site(subject, "blocks.1.hook_resid_post")
    rows = torch.randn(5, 32, generator=torch.Generator().manual_seed(2))
    got = logit_effects(subject, site, rows, k=6, chunk=2, vocab=VOCAB)
    want = _logits(subject, rows / rows.pow(2).mean(-1, keepdim=True).sqrt())
    top, bottom = torch.topk(want, 6), torch.topk(want, 6, largest=False)
    assert got.promoted == [[VOCAB[i] for i in r] for r in top.indices.tolist()]
    assert got.suppressed == [[VOCAB[i] for i in r] for r in bottom.indices.tolist()]
    torch.testing.assert_close(torch.from_numpy(got.promoted_logits), top.values, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(torch.from_numpy(got.suppressed_logits), bottom.values, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ("llama", "gpt2", "gemma2"))
def test_hook_z_rows_go_through_the_output_projection(family):
    subject = _randomised(family)
    site = resolve_site(subject, "blocks.1.attn.hook_z")
    proj = subject.model.base_model.get_submodule(site.module)
    width = proj.in_features if isinstance(proj, torch.nn.Linear) else proj.weight.shape[0]
    rows = torch.randn(3, width, generator=torch.Generator().manual_seed(3))
    w = proj.weight if isinstance(proj, torch.nn.Linear) else proj.weight.T  # GPT-2's Conv1D stores [in, out]
    resid = rows @ w.T
    want = _logits(subject, resid)
    got = logit_effects(subject, site, rows, k=4, vocab=VOCAB)
    assert got.promoted == [[VOCAB[i] for i in r] for r in torch.topk(want, 4).indices.tolist()]


def test_gemma_raw_mlp_output_goes_through_its_post_feedforward_norm():
    subject = _randomised("gemma2")
    lay = layout(subject.model)
    site = resolve_site(subject, f"{lay.blocks}.1.mlp")
    assert site.kind == "mlp_out"
    rows = torch.randn(3, 32, generator=torch.Generator().manual_seed(4))
    post = subject.model.base_model.get_submodule(f"{lay.blocks}.1.post_feedforward_layernorm")
    resid = rows / rows.pow(2).mean(-1, keepdim=True).sqrt() * (1 + post.weight)
    got = residual_directions(subject, site, rows)
    torch.testing.assert_close(got, resid / resid.pow(2).mean(-1, keepdim=True).sqrt(), rtol=1e-4, atol=1e-4)
    # the TransformerLens name of the same family's MLP output is already the normalised one: used as it is
    normed = resolve_site(subject, "blocks.1.hook_mlp_out")
    torch.testing.assert_close(residual_directions(subject, normed, rows), rows / rows.pow(2).mean(-1, keepdim=True).sqrt())


def test_mlp_input_coders_have_no_output_view_and_transcoders_write_the_mlp_output():
    subject = tiny_subject("llama")
    lay = layout(subject.model)
    mlp = f"{lay.blocks}.1.mlp"
    sae_in = written_site(subject, "blocks.1.hook_mlp_in", "input", transcoder=False)
    assert sae_in.kind == "mlp_in" and "normalised" in why_not(sae_in)
    with pytest.raises(UserError, match="no output-token view") as exc:
        residual_directions(subject, sae_in, torch.ones(1, 32))
    assert "\n" not in str(exc.value)
    for name, side in ((mlp, "input"), ("blocks.1.ln2.hook_normalized", None)):  # ours, and a sae-lens transcoder
        site = written_site(subject, name, side, transcoder=True)
        assert (site.kind, site.module, site.side) == ("mlp_out", mlp, "output") and why_not(site) is None
    named = written_site(subject, "blocks.1.hook_mlp_in", None, transcoder=True, out_hookpoint="blocks.2.hook_resid_post")
    assert named.kind == "resid_post" and named.layer == 2
