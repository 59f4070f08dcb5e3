"""Every hookpoint kind of every common model family captures the tensor the model really computes there.

Tiny random models of each family are built offline from transformers' config classes. Each captured site is
checked against an independent computation: the residual stream against `output_hidden_states`, and the sublayer
sites against the block's own arithmetic (resid_mid = resid_pre + attention out, the out projection applied to z
gives attention's output, the MLP applied to its input gives its output, resid_post = resid_mid + MLP out).
"""

from __future__ import annotations

import pytest
import torch

from interp_eval.errors import UserError
from interp_eval.subject.hookpoints import capture, layout, resolve_site, site_dim, splice_input, splice_output, valid_hookpoints
from tiny_models import FAMILIES, tiny_subject

_subject = tiny_subject


def _close(a, b):
    return torch.allclose(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_hookpoint_kind_captures_what_the_model_computes(family):
    subject = _subject(family)
    lay = layout(subject.model)
    ids = torch.randint(0, 64, (2, 7))
    with torch.no_grad():
        hidden = subject.model(ids, output_hidden_states=True).hidden_states
    n = 1  # a middle block: the last hidden state has the final norm applied
    tl = [f"blocks.{n}.hook_resid_pre", f"blocks.{n}.attn.hook_z", f"blocks.{n}.hook_attn_out", f"blocks.{n}.hook_mlp_in",
          f"blocks.{n}.hook_mlp_out", f"blocks.{n}.hook_resid_post"]
    block = f"{lay.blocks}.{n}"
    ours = [block, f"{block}.{lay.attention}", f"{block}.mlp"]
    parallel = lay.pre_mlp_norm is None
    mid = [] if parallel else [f"blocks.{n}.hook_resid_mid"]
    cap = capture(subject, ids, tl + ours + mid)
    at = {hp: cap.read(hp, resolve_site(subject, hp).side) for hp in tl + ours + mid}

    assert _close(at[f"blocks.{n}.hook_resid_pre"], hidden[n])
    assert _close(at[f"blocks.{n}.hook_resid_post"], hidden[n + 1]) and _close(at[block], hidden[n + 1])
    blk = subject.model.base_model.get_submodule(block)
    attn = getattr(blk, lay.attention)
    with torch.no_grad():
        z = at[f"blocks.{n}.attn.hook_z"]
        assert z.shape[-1] == site_dim(subject, resolve_site(subject, f"blocks.{n}.attn.hook_z"))
        raw_attn = getattr(attn, lay.attn_proj)(z)
        assert _close(raw_attn, at[f"{block}.{lay.attention}"])
        attn_out = at[f"blocks.{n}.hook_attn_out"]
        assert _close(attn_out, blk.post_attention_layernorm(raw_attn) if lay.attn_post_norm else raw_attn)
        mlp_raw = blk.mlp(at[f"blocks.{n}.hook_mlp_in"])
        assert _close(mlp_raw, at[f"{block}.mlp"])
        mlp_out = at[f"blocks.{n}.hook_mlp_out"]
        assert _close(mlp_out, blk.post_feedforward_layernorm(mlp_raw) if lay.mlp_post_norm else mlp_raw)
        if parallel:  # GPT-NeoX: x + attn(ln1(x)) + mlp(ln2(x)); there is no resid_mid
            assert _close(hidden[n] + attn_out + mlp_out, hidden[n + 1])
            with pytest.raises(UserError, match="unknown hookpoint"):
                resolve_site(subject, f"blocks.{n}.hook_resid_mid")
        else:
            resid_mid = at[f"blocks.{n}.hook_resid_mid"]
            assert _close(resid_mid, hidden[n] + attn_out)
            assert _close(resid_mid + mlp_out, hidden[n + 1])
            assert _close(getattr(blk, lay.pre_mlp_norm)(resid_mid), at[f"blocks.{n}.hook_mlp_in"])


@pytest.mark.parametrize("family", ("llama", "gpt2", "gemma2"))
def test_the_capture_stops_after_the_last_hooked_module(family):
    subject = _subject(family)
    lay = layout(subject.model)
    ran = []
    last = subject.model.base_model.get_submodule(f"{lay.blocks}.2")
    h = last.register_forward_hook(lambda *a: ran.append(1))
    try:
        capture(subject, torch.randint(0, 64, (1, 5)), [f"blocks.1.hook_resid_post", f"{lay.blocks}.0.mlp", "blocks.1.attn.hook_z"])
    finally:
        h.remove()
    assert not ran


@pytest.mark.parametrize("family", ("llama", "gpt2"))
def test_splicing_at_an_input_or_output_site_changes_what_follows(family):
    subject = _subject(family)
    lay = layout(subject.model)
    ids = torch.randint(0, 64, (1, 6))
    with torch.no_grad():
        clean = subject.model(ids).logits
        with splice_input(subject, f"{lay.blocks}.1", lambda x: x):
            assert torch.allclose(subject.model(ids).logits, clean)
        with splice_input(subject, f"{lay.blocks}.1", torch.zeros_like):
            assert not torch.allclose(subject.model(ids).logits, clean)
        with splice_output(subject, f"{lay.blocks}.1.{lay.attention}", lambda i, o: o):
            assert torch.allclose(subject.model(ids).logits, clean)
        with splice_output(subject, f"{lay.blocks}.1.{lay.attention}", lambda i, o: torch.zeros_like(o)):
            assert not torch.allclose(subject.model(ids).logits, clean)


def test_an_unknown_name_lists_the_valid_ones_in_one_line():
    subject = _subject("gpt2")
    with pytest.raises(UserError) as err:
        resolve_site(subject, "layers.1.mlp")  # GPT-2's blocks are h.N
    msg = str(err.value)
    assert "\n" not in msg and "h.N.mlp" in msg and "blocks.N.hook_resid_post" in msg and "N = 0..2" in msg
    names = valid_hookpoints(subject)
    assert names.index("blocks.0.hook_resid_pre") < names.index("h.0.mlp") < names.index("h.0") < names.index("blocks.1.hook_resid_pre")


@pytest.mark.parametrize("arch", ["standard", "jumprelu"])
def test_a_saelens_hook_z_coder_reads_the_heads_concatenated_as_captured(tmp_path, arch):
    """sae-lens reshapes a hook_z SAE's [..., heads, d_head] input itself; loaded here it encodes the capture at
    attention's output projection (heads concatenated, head-major) exactly as sae-lens encodes the 4-d z (a JumpReLU
    one through the sparse fast path)."""
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from interp_eval.coders.saelens import load_coder

    subject = _subject("llama")
    site = resolve_site(subject, "blocks.1.attn.hook_z")
    width = site_dim(subject, site)  # 4 heads x 12
    torch.manual_seed(0)
    meta = SAEMetadata(model_name="tiny-llama", hook_name="blocks.1.attn.hook_z")
    cls, cfg_cls = (StandardSAE, StandardSAEConfig) if arch == "standard" else (JumpReLUSAE, JumpReLUSAEConfig)
    sae = cls(cfg_cls(d_in=width, d_sae=40, metadata=meta, reshape_activations="hook_z"))
    if arch == "jumprelu":
        with torch.no_grad():
            sae.W_enc.normal_()
            sae.threshold.uniform_(0.0, 0.5)
    sae.save_model(tmp_path / "z")
    coder = load_coder(tmp_path / "z")
    assert (coder.sparse is not None) == (arch == "jumprelu")
    z = capture(subject, torch.randint(0, 64, (2, 7)), ["blocks.1.attn.hook_z"]).read("blocks.1.attn.hook_z", "input")
    flat = z.reshape(-1, width)
    enc = coder.encode_sparse(flat)
    ours = torch.zeros(flat.shape[0], 40).scatter_add_(1, enc.indices, enc.values)
    theirs = cls.load_from_disk(tmp_path / "z")
    theirs.turn_on_forward_pass_hook_z_reshaping()
    with torch.no_grad():
        ref = theirs.encode(flat.reshape(-1, 4, 12))
    assert torch.allclose(ours, ref.reshape(-1, 40), atol=1e-5)
