"""Every SAELens architecture, from folders sae-lens itself wrote (tests/fixtures/saelens/, by
bench/make_saelens_fixtures.py): our loader encodes exactly as sae-lens's own `encode` did, and a plain TopK SAE
takes our fast sparse path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from interp_eval.coders.saelens import load_coder

FIXTURES = Path(__file__).parent / "fixtures" / "saelens"
ARCHITECTURES = ["standard", "gated", "jumprelu", "topk", "batchtopk", "matryoshka_batchtopk", "transcoder",
                 "skip_transcoder", "jumprelu_transcoder"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_encodes_as_sae_lens_did(arch):
    folder = FIXTURES / arch
    x = load_file(str(FIXTURES / "inputs.safetensors"))["x"]
    want = load_file(str(folder / "expected.safetensors"))["dense"]
    coder = load_coder(folder)
    enc = coder.encode_sparse(x)
    got = torch.zeros_like(want).scatter_add_(1, enc.indices, enc.values.float())
    assert (want != 0).any(1).all() and (want == 0).any(1).all()  # a sparse code on every row: the test can fail
    assert torch.allclose(got, want, atol=1e-5)
    assert (coder.ours is not None) == (arch == "topk")  # the sparse fast path where the encoder is ours
    meta = json.loads((folder / "cfg.json").read_text())["metadata"]
    assert coder.hookpoint == meta["hook_name"] and coder.model_name == "smollm2-135m-instruct"
