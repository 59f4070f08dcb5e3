"""sae-lens JumpReLU folders (JumpReLU SAEs and transcoders; sae-lens saves BatchTopK and Matryoshka BatchTopK SAEs
as JumpReLU too) take our sparse encoder (`saelens.jumprelu_sparse`): the same code as sae-lens's own `encode`,
without its dense [N, d_sae] code. A folder whose encode is something else keeps sae-lens's path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interp_eval.coders import topk
from interp_eval.coders.saelens import jumprelu_sparse, load_coder

FIXTURES = Path(__file__).parent / "fixtures" / "saelens"
JUMPRELU = ["jumprelu", "batchtopk", "matryoshka_batchtopk", "jumprelu_transcoder"]


def inputs() -> torch.Tensor:
    """The fixtures' inputs, then a random batch of several blocks of rows (the last one partial)."""
    x = load_file(str(FIXTURES / "inputs.safetensors"))["x"]
    g = torch.Generator().manual_seed(0)
    return torch.cat([x, torch.randn(3 * topk.ENCODE_CHUNK_ROWS + 77, x.shape[1], generator=g) * x.std()])


def assert_same_code(enc, want: torch.Tensor, zero_latent_padding: bool = True) -> None:
    """`enc` holds exactly the nonzeros of the dense code `want`, each once, then padding: (0, 0) from the sparse
    path (the dense path's top-k pads with zeros at whatever latents it picked)."""
    nnz = (want != 0).sum(1)
    assert enc.values.shape == enc.indices.shape == (want.shape[0], max(1, int(nnz.max())))
    slot = torch.arange(enc.values.shape[1])
    pad = slot >= nnz[:, None]
    assert (enc.values[pad] == 0).all() and (not zero_latent_padding or (enc.indices[pad] == 0).all())
    assert (enc.values[~pad] != 0).all()
    got = torch.zeros_like(want).scatter_add_(1, enc.indices, enc.values)
    assert torch.equal(got != 0, want != 0)  # the same latents fire on every row
    assert torch.allclose(got, want, rtol=1e-5, atol=0)


def jumprelu_skip_transcoder(folder: Path) -> Path:
    from sae_lens import JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig

    torch.manual_seed(1)
    tc = JumpReLUSkipTranscoder(JumpReLUSkipTranscoderConfig(d_in=16, d_sae=64, d_out=16, apply_b_dec_to_input=False))
    with torch.no_grad():
        tc.b_enc.normal_(0, 0.2)
        tc.b_dec.normal_()  # would change the code if it were (wrongly) subtracted from the input
        tc.threshold.uniform_(0.0, 1.0)
    tc.save_model(folder)
    return folder


@pytest.mark.parametrize("arch", JUMPRELU + ["jumprelu_skip_transcoder"])
def test_jumprelu_folders_take_the_sparse_path_and_encode_as_sae_lens(arch, tmp_path, monkeypatch):
    monkeypatch.setattr(topk, "ENCODE_CHUNK_ROWS", 512)
    folder = jumprelu_skip_transcoder(tmp_path / arch) if arch == "jumprelu_skip_transcoder" else FIXTURES / arch
    coder = load_coder(folder).to("cpu").eval()
    assert coder.sparse is not None and coder.ours is None
    x = inputs()
    want = coder.module.encode(x).detach()  # sae-lens's own encode, dense
    assert (want != 0).any(1).float().mean() > 0.5 and (want == 0).any(1).all()  # sparse codes: the test can fail
    assert_same_code(coder.encode_sparse(x), want)
    assert_same_code(coder.encode_sparse(x[:5]), want[:5])  # fewer rows than a block


@pytest.mark.parametrize("change", [{"normalize_activations": "layer_norm"}, {"architecture": "standard"}])
def test_a_folder_the_sparse_path_does_not_do_keeps_sae_lens_encode(change, tmp_path):
    from sae_lens import SAE

    folder = tmp_path / "jumprelu"
    shutil.copytree(FIXTURES / "jumprelu", folder)
    cfg = json.loads((folder / "cfg.json").read_text())
    (folder / "cfg.json").write_text(json.dumps({**cfg, **change}))
    if "architecture" in change:  # a standard SAE has no threshold
        from safetensors.torch import save_file

        w = load_file(str(folder / "sae_weights.safetensors"))
        del w["threshold"]
        save_file(w, str(folder / "sae_weights.safetensors"))
    coder = load_coder(folder)
    assert coder.sparse is None and coder.dense is not None
    x = inputs()
    want = SAE.load_from_disk(folder).encode(x).detach()
    assert_same_code(coder.encode_sparse(x), want, zero_latent_padding=False)


def test_rows_where_nothing_fires_are_all_padding():
    g = torch.Generator().manual_seed(0)
    W_enc, threshold = torch.randn(8, 40, generator=g), torch.full((40,), 0.5)
    b_enc = torch.full((40,), -1.0)  # a zero row's pre-activations are all -1: nothing fires
    x = torch.randn(6, 8, generator=g) * 3
    x[[0, 3]] = 0
    enc = jumprelu_sparse(x, W_enc, b_enc, threshold)
    pre = x @ W_enc + b_enc
    want = torch.relu(pre) * (pre > threshold)
    assert_same_code(enc, want)
    assert (enc.values[[0, 3]] == 0).all() and (enc.indices[[0, 3]] == 0).all()
    none = jumprelu_sparse(torch.zeros(3, 8), W_enc, b_enc, threshold)  # no row fires: one column of padding
    assert none.values.shape == (3, 1) and not none.values.any() and not none.indices.any()
    assert jumprelu_sparse(torch.zeros(0, 8), W_enc, b_enc, threshold).values.shape == (0, 1)  # no rows


def test_a_negative_threshold_still_gives_relu_values():
    """sae-lens takes relu(pre) before the threshold's mask: below zero nothing fires, whatever the threshold."""
    g = torch.Generator().manual_seed(1)
    W_enc, b_enc = torch.randn(8, 40, generator=g), torch.randn(40, generator=g)
    threshold = torch.linspace(-1.0, 1.0, 40)
    x = torch.randn(50, 8, generator=g)
    pre = x @ W_enc + b_enc
    assert_same_code(jumprelu_sparse(x, W_enc, b_enc, threshold), torch.relu(pre) * (pre > threshold))
