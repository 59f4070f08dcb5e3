"""Coders at residual-stream and attention hookpoints of the packaged model: trained, evaluated by splicing at their
site, saved with the site they read, and mined, each checked against an independent computation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from interp_eval.coders.saelens import load_coder
from interp_eval.coders.stage import TrainStageConfig, run_train_stage
from interp_eval.coders.train import TrainConfig
from interp_eval.errors import UserError
from interp_eval.mining import MineConfig, run_mine_stage
from interp_eval.subject.corpus import CorpusConfig, take_contexts
from interp_eval.subject.hookpoints import canonical, capture
from mining_helpers import MINE_KW

# hookpoint as given to train -> (our name for the site, the side an SAE reads)
SITES = {
    "layers.3": ("layers.3", "output"),  # the block output (residual stream), sparsify's default
    "layers.3.self_attn": ("layers.3.self_attn", "output"),  # attention output
    "blocks.3.hook_resid_pre": ("layers.3", "input"),  # the block input, by its TransformerLens name
}
CODERS = {f"sae-{hp}-k8": hp for hp in SITES} | {"bae-layers.3-k8": "layers.3"}
EVAL_TOKENS = 1024


@pytest.fixture(scope="module")
def run(tmp_path_factory, subject):
    root = tmp_path_factory.mktemp("sites")
    configs = tuple(
        TrainConfig(coder=name.split("-")[0], hookpoint=hp, k=8, expansion=2, tokens=8192, batch_size=256)
        for name, hp in CODERS.items()
    )
    run_train_stage(root, TrainStageConfig(coders=configs, device="cpu", eval_tokens=EVAL_TOKENS))
    return root


def test_coders_at_residual_and_attention_sites_train_and_splice_where_they_read(run, subject):
    recon = pd.read_parquet(run / "recon_eval.parquet").set_index("coder")
    assert sorted(recon.index) == sorted(CODERS)
    heldout = take_contexts(CorpusConfig(), subject.tokenizer, "heldout", EVAL_TOKENS)
    for name, hp in CODERS.items():
        folder = run / "coders" / name
        meta = json.loads((folder / "cfg.json").read_text())["metadata"]
        assert (meta["hook_name"], meta["hook_site"]) == (hp, SITES[hp][1])
        coder = load_coder(folder)
        assert canonical(subject, coder.hookpoint, coder.site)[0] == SITES[hp][0]
        # the eval's FVU, measured inside the splice, equals the FVU of the coder on the site's captured tensor
        side = canonical(subject, hp)[1].side
        y = torch.cat([capture(subject, heldout[i : i + 16], [hp]).read(hp, side).reshape(-1, 576) for i in range(0, len(heldout), 16)])
        with torch.no_grad():
            code = coder.ours.encode(y)
            err = (coder.ours.decode(code, y) - y).double().pow(2).sum()
        fvu = float(err / (y.double() - y.double().mean(0)).pow(2).sum())
        row = recon.loc[name]
        assert row["fvu"] == pytest.approx(fvu, rel=1e-3)
        assert row["ce_loss_increase"] > 0 and row["eval_tokens"] == EVAL_TOKENS  # splicing there changed the model


def test_a_transcoder_away_from_an_mlp_is_refused_in_one_line_before_any_work(tmp_path):
    cfg = TrainStageConfig(coders=(TrainConfig(coder="tc", hookpoint="layers.3", k=8, expansion=2, tokens=4096),), device="cpu")
    with pytest.raises(UserError, match=r"a transcoder reads an MLP's input .* needs an MLP hookpoint \(e.g. layers.3.mlp\)") as err:
        run_train_stage(tmp_path / "r", cfg)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r" / "activations").exists()


def test_mining_residual_coders_matches_their_dense_activations(run, subject, tmp_path):
    from oracles import dense_activations

    kw = dict(MINE_KW)
    summary = run_mine_stage(run, MineConfig(**kw), subject=subject)
    assert summary["tokens"] == kw["tokens"]
    lat = pd.read_parquet(run / "latents.parquet")
    ctxs = take_contexts(CorpusConfig(), subject.tokenizer, "heldout", kw["tokens"])
    for name, hp in CODERS.items():
        df = lat[lat["coder"] == name].sort_values("latent")
        assert (df["hookpoint"] == SITES[hp][0]).all()
        coder = load_coder(run / "coders" / name)
        side = SITES[hp][1]
        acts = []
        for i in range(0, len(ctxs), kw["batch_contexts"]):
            x = capture(subject, ctxs[i : i + kw["batch_contexts"]], [SITES[hp][0]]).read(SITES[hp][0], side).reshape(-1, 576)
            with torch.no_grad():
                acts.append(dense_activations(coder.ours, x).float())
        dense = torch.cat(acts).numpy()
        np.testing.assert_array_equal(df["firing_count"], (dense > 0).sum(0))
