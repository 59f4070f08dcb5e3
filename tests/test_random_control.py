"""The random-model control (Heap et al. 2025): a randomly initialised copy of the subject model,
coders trained on it, and mining trained and control coders in one pass. Real packaged model and
corpus, tiny sizes."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from oracles import dense_activations

from interp_eval.artifacts import RunDir
from interp_eval.coders.coder import CoderConfig, SparseCoder
from interp_eval.coders.saelens import load_coder, save_coder
from interp_eval.coders.stage import TrainStageConfig, run_train_stage
from interp_eval.coders.train import TrainConfig
from interp_eval.errors import UserError
from interp_eval.subject.corpus import CorpusConfig, take_contexts
from interp_eval.subject.hookpoints import capture
from interp_eval.subject.logit_lens import vocabulary
from interp_eval.subject.model import PACKAGED, load_subject_model, parse_random_spec, random_subject_model
from interp_eval.mining import MineConfig, run_mine_stage
from mining_helpers import MINE_KW

RANDOM = f"random:{PACKAGED}:0"
HP = "layers.3.mlp"
TRAINED = f"sae-{HP}-k8"
CONTROLS = [f"sae-{HP}-k8-randmodel", f"bae-{HP}-k8-randmodel"]


def _configs(*kinds: str) -> list[TrainConfig]:
    """The settings of conftest's tiny_run, whose trained coders the control is set beside."""
    return [TrainConfig(coder=c, hookpoint=HP, k=8, expansion=2, tokens=8192, batch_size=256, checkpoint_every=8) for c in kinds]


@pytest.fixture(scope="module")
def random_model():
    """The control as training loads it: from the packaged model's config and tokenizer alone."""
    return load_subject_model(RANDOM, device="cpu")


# ----------------------------------------------------------------------------- the random model
def test_random_model_spec_names():
    for spec in ("random", "random:", "random:default", "random:smollm2-135m-instruct:0", "random::0"):
        assert parse_random_spec(spec).name == RANDOM
    assert parse_random_spec("random:HuggingFaceTB/SmolLM2-135M:7").name == "random:HuggingFaceTB/SmolLM2-135M:7"
    assert parse_random_spec(PACKAGED) is None and parse_random_spec("randomish/model") is None
    with pytest.raises(UserError, match="must be a trained model"):
        parse_random_spec("random:random:0")


def test_random_model_has_the_architecture_and_tokenizer_but_not_the_weights(subject, random_model):
    assert random_model.name == RANDOM
    assert random_model.model.config.to_dict() == subject.model.config.to_dict()
    trained = dict(subject.model.named_parameters())
    rand = dict(random_model.model.named_parameters())
    assert list(rand) == list(trained)
    for name, p in rand.items():
        assert p.shape == trained[name].shape and not torch.equal(p, trained[name]), name
    # the family's standard init: normal(0, initializer_range) linear weights, unit norms
    std = float(rand["model.layers.3.mlp.down_proj.weight"].std())
    assert abs(std - subject.model.config.initializer_range) < 1e-3
    assert torch.equal(rand["model.layers.3.post_attention_layernorm.weight"], torch.ones(subject.d_model))
    assert random_model.tokenizer.get_vocab() == subject.tokenizer.get_vocab()
    text = "The Bank of England raised interest rates on Thursday."
    assert random_model.tokenizer(text)["input_ids"] == subject.tokenizer(text)["input_ids"]


def test_random_model_is_reproducible_per_seed_and_differs_across_seeds(subject, random_model):
    rng_before = torch.get_rng_state()
    again = random_subject_model(subject, 0)  # mining's path: from the loaded subject's config
    assert torch.equal(torch.get_rng_state(), rng_before), "building a random model leaves the global RNG alone"
    assert again.name == RANDOM
    ref = random_model.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in again.model.state_dict().items())
    other = random_subject_model(subject, 1)
    assert other.name == f"random:{PACKAGED}:1"
    w = "model.layers.3.mlp.up_proj.weight"
    assert not torch.equal(other.model.state_dict()[w], ref[w])
    with pytest.raises(UserError, match="already a random model"):
        random_subject_model(random_model, 0)


# ----------------------------------------------------------------------------- training the control
@pytest.fixture(scope="module")
def control_run(tmp_path_factory, tiny_run):
    """A copy of tiny_run (four coders of the trained model) plus two coders of its random-model control."""
    run = tmp_path_factory.mktemp("control") / "run"
    shutil.copytree(tiny_run, run)
    names = run_train_stage(run, TrainStageConfig(coders=tuple(_configs("sae", "bae")), device="cpu", eval_tokens=256, control="random-model"))
    return run, names


def test_control_coders_are_named_and_record_the_random_model(control_run):
    run, names = control_run
    assert names == CONTROLS
    rd = RunDir(run)
    assert load_coder(rd.coder_dir(TRAINED)).model_name == PACKAGED
    for name in CONTROLS:
        assert rd.is_complete(f"train:{name}")
        assert load_coder(rd.coder_dir(name)).model_name == RANDOM
    stages = json.loads((run / "run.json").read_text())["stages"]
    assert stages["train"]["model"] == PACKAGED and stages["train-random-model"]["model"] == RANDOM


def test_control_has_its_own_activation_cache_of_the_same_tokens(control_run):
    run, _ = control_run
    metas = [json.loads(p.read_text()) for p in sorted((run / "activations").glob(f"train-*/{HP}/meta.json"))]
    assert sorted(m["model"] for m in metas) == sorted([PACKAGED, RANDOM])  # two caches, never one shared
    a, b = ({k: v for k, v in m["key"].items() if k != "model"} for m in metas)
    assert a == b and metas[0]["n_tokens"] == metas[1]["n_tokens"] == 8192  # same corpus, split and tokens


def test_control_reconstruction_is_evaluated_on_the_random_model(control_run):
    run, _ = control_run
    recon = pd.read_parquet(run / "recon_eval.parquet").set_index("coder")
    assert set(CONTROLS) < set(recon.index) and TRAINED in recon.index
    # next-token loss of the clean model: a random model predicts near uniformly over the 49,152 tokens
    assert recon.loc[TRAINED, "ce_clean"] < 6
    for name in CONTROLS:
        assert abs(recon.loc[name, "ce_clean"] - math.log(49152)) < 1.0
        # (no bound on the FVU: at this size a random model's coders fit the training tokens' identities
        # and exceed 1 on held-out tokens)
        assert recon.loc[name, "eval_tokens"] == 256 and 0 < recon.loc[name, "fvu"] < 10


def test_unknown_control_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match="--control random-weights: use random-model") as exc:
        run_train_stage(tmp_path, TrainStageConfig(coders=tuple(_configs("sae")), device="cpu", control="random-weights"))
    assert "\n" not in str(exc.value)
    with pytest.raises(UserError, match="already a random model"):
        run_train_stage(tmp_path, TrainStageConfig(coders=tuple(_configs("sae")), model="random", device="cpu", control="random-model"))


# ----------------------------------------------------------------------------- mining both in one pass
@pytest.fixture(scope="module")
def mined(control_run, subject):
    """The run mined in one pass over both models, interrupted after batch 3 and resumed (checkpoint at 2)."""
    run, _ = control_run

    def boom(done: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_mine_stage(run, MineConfig(**MINE_KW), subject=subject, on_batch=boom)
    summary = run_mine_stage(run, MineConfig(**MINE_KW), subject=subject)
    tables = {n: pd.read_parquet(run / f"{n}.parquet") for n in ("latents", "windows", "contexts")}
    return run, summary, tables


def test_trained_and_control_coders_are_mined_over_the_same_tokens(mined):
    run, summary, t = mined
    assert summary["models"] == [PACKAGED, RANDOM]
    assert json.loads((run / "run.json").read_text())["stages"]["mine"]["models"] == [PACKAGED, RANDOM]
    lat = t["latents"]
    trained = [f"{c}-{HP}-k8" for c in ("sae", "bae", "tc", "btc")]
    assert sorted(lat["coder"].unique()) == sorted([*trained, *CONTROLS])
    assert set(lat["n_tokens"]) == {MINE_KW["tokens"]}
    ctx = t["contexts"]
    assert set(ctx["coder"]) == {*trained, *CONTROLS}
    assert set(ctx["window_id"]) <= set(t["windows"]["window_id"])  # one windows table serves every coder
    assert t["windows"]["window_id"].is_unique


def _direct(model, coder, contexts: torch.Tensor, windows: pd.DataFrame, rows: pd.DataFrame) -> np.ndarray:
    """Each row's window activations, from the coder encoding `model`'s activations directly."""
    w = windows.set_index("window_id").loc[rows["window_id"]]
    ctx_ids = sorted(set(w["context"]))
    cap = capture(model, contexts[ctx_ids], [coder.hookpoint])
    x = cap.outputs[coder.hookpoint]
    with torch.no_grad():
        dense = dense_activations(coder.ours, x.reshape(-1, x.shape[-1])).reshape(len(ctx_ids), x.shape[1], -1)
    out = []
    for (ctx, pos), latent in zip(zip(w["context"], w["position"]), rows["latent"]):
        out.append(dense[ctx_ids.index(ctx), pos : pos + MINE_KW["window"], latent].numpy())
    return np.stack(out)


def test_control_codes_equal_encoding_the_random_model_directly(mined, subject, random_model):
    run, _, t = mined
    contexts = take_contexts(CorpusConfig(), subject.tokenizer, "heldout", MINE_KW["tokens"])
    for name, model, wrong in ((CONTROLS[0], random_model, subject), (TRAINED, subject, random_model)):
        rows = t["contexts"].query("coder == @name and kind == 'top'").head(6)
        assert len(rows) == 6
        coder = load_coder(RunDir(run).coder_dir(name))
        got = np.stack(rows["activations"].to_numpy())
        np.testing.assert_allclose(got, _direct(model, coder, contexts, t["windows"], rows), rtol=1e-4, atol=1e-4)
        assert not np.allclose(got, _direct(wrong, coder, contexts, t["windows"], rows), rtol=1e-2, atol=1e-2)


def test_output_tokens_of_every_coder_are_its_decoder_rows_through_its_own_model(mined, subject, random_model):
    """latents.parquet's promotes/suppresses: the final norm and unembedding of the model a coder is mined on, applied
    to its decoder rows by hand; a transcoder's rows are read as the MLP output it predicts."""
    _, _, t = mined
    lat = t["latents"].set_index(["coder", "latent"])
    vocab = vocabulary(subject.tokenizer, subject.model.get_output_embeddings().weight.shape[0])
    for name, model in ((TRAINED, subject), (f"tc-{HP}-k8", subject), (CONTROLS[1], random_model)):
        rows = load_coder(RunDir(mined[0]).coder_dir(name)).decoder()[:3]
        x = rows / rows.pow(2).mean(-1, keepdim=True).sqrt() * model.model.base_model.norm.weight
        logits = x @ model.model.get_output_embeddings().weight.T
        for latent in range(3):
            row = lat.loc[(name, latent)]
            assert pd.isna(row["output_note"]) and len(row["promotes"]) == 10
            top = torch.topk(logits[latent], 10)
            assert list(row["promotes"]) == [vocab[i] for i in top.indices]
            np.testing.assert_allclose(row["promote_logits"], top.values.numpy(), rtol=1e-3, atol=1e-3)
            assert list(row["suppresses"]) == [vocab[i] for i in torch.topk(-logits[latent], 10).indices]
            assert np.all(np.diff(row["suppress_logits"]) >= 0)  # most suppressed first
    # the control's rows through the trained model would rank other tokens: a control's view is its own model's
    rows = load_coder(RunDir(mined[0]).coder_dir(CONTROLS[1])).decoder()[:1]
    x = rows / rows.pow(2).mean(-1, keepdim=True).sqrt() * subject.model.base_model.norm.weight
    wrong = torch.topk(x @ subject.model.get_output_embeddings().weight.T, 10).indices[0]
    assert list(lat.loc[(CONTROLS[1], 0), "promotes"]) != [vocab[i] for i in wrong]


def _window_codes(model, coder, contexts: torch.Tensor, windows: pd.DataFrame, ids) -> dict[int, np.ndarray]:
    """{window_id: the coder's dense code [window, latents]}, from encoding `model`'s activations directly."""
    w = windows.set_index("window_id").loc[list(ids)]
    ctx_ids = sorted(set(w["context"]))
    x = capture(model, contexts[ctx_ids], [coder.hookpoint]).outputs[coder.hookpoint]
    with torch.no_grad():
        dense = dense_activations(coder.ours, x.reshape(-1, x.shape[-1])).reshape(len(ctx_ids), x.shape[1], -1).numpy()
    return {int(i): dense[ctx_ids.index(c), p : p + MINE_KW["window"]] for i, c, p in zip(ids, w["context"], w["position"])}


def test_hard_negatives_never_fire_and_neighbour_ones_hold_a_neighbour_firing(mined, subject):
    run, _, t = mined
    ctx, lat = t["contexts"], t["latents"].set_index(["coder", "latent"])
    contexts = take_contexts(CorpusConfig(), subject.tokenizer, "heldout", MINE_KW["tokens"])
    coder = load_coder(RunDir(run).coder_dir(TRAINED))
    rows = ctx[(ctx["coder"] == TRAINED) & ctx["kind"].isin(["neighbour_negative", "similar_negative"])]
    assert set(rows["kind"]) == {"neighbour_negative", "similar_negative"} and (rows["split"] == "test").all()
    codes = _window_codes(subject, coder, contexts, t["windows"], sorted(set(rows["window_id"])))
    for r in rows.itertuples():
        assert not (codes[r.window_id][:, r.latent] > 0).any()  # the latent fires at no token of its hard negative
        assert not np.asarray(r.activations).any() and r.max_activation == 0
    per = rows.groupby(["latent", "kind"]).size()
    assert per.max() <= MINE_KW["n_negative"] and per.loc[(slice(None), "neighbour_negative")].min() >= 1
    live = lat.loc[TRAINED]["firing_count"].to_numpy() > 0
    w = torch.nn.functional.normalize(coder.decoder(), dim=-1)
    for latent in rows["latent"].unique()[:8]:
        nbrs = list(lat.loc[(TRAINED, latent), "neighbours"])
        sim = (w @ w[latent]).numpy()
        sim[latent], sim[~live] = -np.inf, -np.inf
        assert nbrs == list(np.argsort(-sim, kind="stable")[:10])  # nearest live decoder rows, nearest first
        mine = rows[(rows["latent"] == latent) & (rows["kind"] == "neighbour_negative")].sort_values("rank")
        first = [min(j for j, n in enumerate(nbrs) if (codes[wid][:, n] > 0).any()) for wid in mine["window_id"]]
        assert first == sorted(first)  # windows of the nearest neighbour first


def test_two_model_mining_resumed_and_a_rerun_is_skipped(mined, subject):
    run, summary, _ = mined
    assert summary["resumed_batches"] == 2 and not (run / "checkpoints" / "mine-rank0.pt").exists()
    again = run_mine_stage(run, MineConfig(**MINE_KW), subject=subject)
    assert again["skipped"] and sorted(again["coders"]) == sorted(summary["coders"])


def test_coder_of_an_unrelated_model_is_refused_in_one_line(tmp_path, subject):
    for model_name, hint in (("random:gpt2:0", "--model gpt2"), ("gpt2", "--model gpt2")):
        folder = tmp_path / model_name.replace(":", "_") / "coders" / "c"
        cfg = CoderConfig("sae", "topk", 576, 16, 4, hookpoint="layers.0.mlp", model_name=model_name)
        save_coder(SparseCoder(cfg, seed=0), folder)
        with pytest.raises(UserError, match=f"trained on model '{model_name}'") as exc:
            run_mine_stage(folder.parents[1], MineConfig(tokens=512, device="cpu"), subject=subject)
        assert hint in str(exc.value) and "\n" not in str(exc.value)


# ----------------------------------------------------------------------------- presets and the CLI
def test_plan_counts_control_coders_and_no_control_drops_them(tmp_path):
    from typer.testing import CliRunner

    from interp_eval.cli import app
    from interp_eval.config import get_preset
    from interp_eval.cli_options import LLMOptions
    from interp_eval.reproduce import control_configs, plan

    p = get_preset("tiny")
    assert [c.coder for c in control_configs(p)] == list(p.control_coders) == ["sae", "bae"]
    cfg = LLMOptions().config()
    with_control, without = plan(p, cfg), plan(p.with_overrides(control=False), cfg)
    assert with_control["coders"] == 6 and with_control["control_coders"] == 2
    assert without["coders"] == 4 and without["control_coders"] == 0
    assert with_control["latents_explained"] == 6 * p.explain.latents
    res = CliRunner().invoke(app, ["reproduce", "--preset", "tiny", "--run", str(tmp_path / "run"), "--dry-run"])
    assert res.exit_code == 0 and "2 of them random-model controls" in res.output, res.output
    res = CliRunner().invoke(app, ["reproduce", "--preset", "tiny", "--run", str(tmp_path / "run"), "--dry-run", "--no-control"])
    assert res.exit_code == 0 and "4 coders" in res.output and "random-model" not in res.output, res.output
    res = CliRunner().invoke(app, ["train", "--run", str(tmp_path / "run"), "--control", "random-weights"])
    assert res.exit_code == 2 and "--control random-weights: use random-model" in res.output
