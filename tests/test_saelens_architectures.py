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


def test_public_coders_at_residual_and_mlp_sites_run_mine_explain_score_and_report(tmp_path, subject):
    """sae-lens-written coders of the packaged model, named the TransformerLens way (a JumpReLU SAE on the residual
    stream, a skip transcoder on the MLP), go through every later stage at tiny size."""
    import pandas as pd
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, SkipTranscoder, SkipTranscoderConfig
    from sae_lens.saes.sae import SAEMetadata

    from interp_eval.explain.stage import ExplainConfig, run_explain_stage
    from interp_eval.mining import MineConfig, run_mine_stage
    from interp_eval.report import ReportConfig, run_report_stage
    from interp_eval.scoring import run_score_stage
    from interp_eval.scoring.stage import ScoreConfig
    from mining_helpers import MINE_KW

    torch.manual_seed(0)
    resid = JumpReLUSAE(JumpReLUSAEConfig(d_in=576, d_sae=48, metadata=SAEMetadata(
        model_name="smollm2-135m-instruct", hook_name="blocks.1.hook_resid_post")))
    resid.save_model(tmp_path / "gs-resid")
    tc = SkipTranscoder(SkipTranscoderConfig(d_in=576, d_sae=48, d_out=576, apply_b_dec_to_input=False, metadata=SAEMetadata(
        model_name="smollm2-135m-instruct", hook_name="blocks.1.ln2.hook_normalized", hook_name_out="blocks.1.hook_mlp_out")))
    tc.save_model(tmp_path / "gs-tc")
    run = tmp_path / "run"
    run_mine_stage(run, MineConfig(coders=(tmp_path / "gs-resid", tmp_path / "gs-tc"), **MINE_KW), subject=subject)
    lat = pd.read_parquet(run / "latents.parquet").groupby("coder").first()
    assert lat.loc["gs-resid", "hookpoint"] == "layers.1" and lat.loc["gs-tc", "hookpoint"] == "layers.1.mlp"
    run_explain_stage(run, ExplainConfig(explainer="token-table"))
    run_score_stage(run, ScoreConfig(scorers=("embedding",)))
    scores = pd.read_parquet(run / "latent_scores.parquet")
    assert set(scores["coder"]) == {"gs-resid", "gs-tc"}
    written = run_report_stage(run, ReportConfig(plots=False))
    md = written["coders_md"].read_text()
    assert "gs-resid" in md and "gs-tc" in md
