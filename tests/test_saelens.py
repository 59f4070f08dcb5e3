"""Coders saved as SAELens folders load in sae-lens and encode identically."""

import json
import subprocess
import sys

import pytest
import torch
from oracles import dense_activations

import interp_eval
from interp_eval.coders.coder import CODER_KINDS, CoderConfig, SparseCoder
from interp_eval.coders.saelens import load_coder, save_coder
from interp_eval.errors import UserError
from sae_lens import SAE

interp_eval.register_architectures()  # what a user calling SAE.load_from_disk on our folders does


def _perturbed(short: str) -> SparseCoder:
    kind, act = CODER_KINDS[short]
    c = SparseCoder(CoderConfig(kind, act, 32, 128, 8, hookpoint="layers.9.mlp", model_name="smollm2-135m-instruct"), seed=1)
    with torch.no_grad():
        for p in c.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return c


@pytest.mark.parametrize("short", list(CODER_KINDS))
def test_saved_coder_loads_in_sae_lens_and_encodes_identically(tmp_path, short):
    coder = _perturbed(short)
    folder = tmp_path / short
    save_coder(coder, folder, firing_frequency=torch.rand(128))
    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["d_in"] == 32 and cfg["d_sae"] == 128
    assert cfg["metadata"]["model_name"] == "smollm2-135m-instruct"
    assert cfg["metadata"]["hook_name"] == "layers.9.mlp"
    assert (folder / "sparsity.safetensors").exists()
    if coder.cfg.kind == "transcoder":
        assert cfg["d_out"] == 32
    sae = SAE.load_from_disk(folder)
    x = torch.randn(64, 32)
    assert torch.equal(sae.encode(x) != 0, dense_activations(coder, x) != 0)
    assert torch.allclose(sae.encode(x), dense_activations(coder, x), atol=1e-5)
    y_ours, _ = coder(x)
    assert torch.allclose(sae(x), y_ours, atol=1e-4)
    state = sae.state_dict()
    assert state["W_enc"].shape == (32, 128) and state["W_dec"].shape == (128, 32)
    if coder.cfg.activation == "binary":
        assert torch.allclose(state["threshold"], coder.threshold)
    if coder.cfg.skip:
        assert state["W_skip"].shape == (32, 32)


def test_topk_sae_loads_in_stock_sae_lens_without_interp_eval(tmp_path):
    save_coder(_perturbed("sae"), tmp_path / "sae")
    save_coder(_perturbed("bae"), tmp_path / "bae")
    code = (
        "import sys; from sae_lens import SAE\n"
        f"s = SAE.load_from_disk({str(tmp_path / 'sae')!r}); print(type(s).__name__)\n"
        f"try:\n    SAE.load_from_disk({str(tmp_path / 'bae')!r})\nexcept Exception:\n    print('binary-needs-interp_eval')\n"
        f"import interp_eval; interp_eval.register_architectures(); print(type(SAE.load_from_disk({str(tmp_path / 'bae')!r})).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["TopKSAE", "binary-needs-interp_eval", "BinarySAE"]


def test_folder_saved_by_sae_lens_itself_loads_as_a_coder(tmp_path):
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    cfg = StandardSAEConfig(d_in=32, d_sae=64, metadata=SAEMetadata(hook_name="blocks.9.hook_mlp_out", model_name="x"))
    sae = StandardSAE(cfg)
    with torch.no_grad():
        sae.b_enc.normal_()
    sae.save_model(tmp_path / "std")
    coder = load_coder(tmp_path / "std")
    # the folder's TransformerLens name as given; the subject's hookpoint table maps it to layers.9.mlp (output)
    # when the coder is checked against a model (coders/discover.py; tests/test_hookpoint_sites.py)
    assert (coder.hookpoint, coder.site, coder.binary, coder.ours) == ("blocks.9.hook_mlp_out", "output", False, None)
    x = torch.randn(10, 32)
    code = coder.encode_sparse(x)
    dense = torch.zeros(10, 64).scatter(-1, code.indices, code.values)
    assert torch.allclose(dense, sae.encode(x), atol=1e-6)


def test_not_a_coder_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not a SAELens coder folder"):
        load_coder(tmp_path)
    (tmp_path / "cfg.json").write_text("{not json")
    (tmp_path / "sae_weights.safetensors").write_bytes(b"junk")
    with pytest.raises(UserError, match="not valid JSON"):
        load_coder(tmp_path)
    (tmp_path / "cfg.json").write_text(json.dumps({"architecture": "topk", "d_in": 4, "d_sae": 8, "k": 2}))
    with pytest.raises(UserError, match="sae-lens cannot load"):
        load_coder(tmp_path)


def test_import_is_light_and_registration_is_lazy():
    """`import interp_eval` and the CLI's module import neither sae-lens nor transformer-lens (issue 14)."""
    code = (
        "import sys, interp_eval, interp_eval.cli\n"
        "print('sae_lens' in sys.modules, 'transformer_lens' in sys.modules)\n"
        "interp_eval.register_architectures()\n"
        "from sae_lens.registry import SAE_CLASS_REGISTRY; print('binary_skip_transcoder' in SAE_CLASS_REGISTRY)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "True"]

