"""Seeded random latent samples (latent_selection.py): reproducible, and one sample for explain, every scorer and
every scorer's shuffled control."""

from __future__ import annotations

import pandas as pd
import pytest

from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401
from scoring_helpers import make_run, truth, truth_answer
from interp_eval.explain.stage import ExplainConfig, select_latents
from interp_eval.errors import UserError
from interp_eval.latent_selection import sampled_latents
from interp_eval.scoring import run_score_stage
from interp_eval.scoring.stage import ScoreConfig


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from interp_eval.subject.model import packaged_model_dir

    return AutoTokenizer.from_pretrained(packaged_model_dir())


def _latents(n: int = 300, coders=("sae-a", "bae-a")) -> pd.DataFrame:
    rows = [{"coder": c, "latent": i, "status": "ok" if i % 7 else "dead"} for c in coders for i in range(n)]
    return pd.DataFrame(rows).sample(frac=1, random_state=3)  # row order must not matter


def test_a_sample_is_reproducible_and_depends_on_seed_and_coder_only():
    lat = _latents()
    live = lat[lat["status"] == "ok"]
    a = sampled_latents(live, 100, seed=0)
    assert a == sampled_latents(live.sort_values(["coder", "latent"]), 100, seed=0)  # not on row order
    assert len(a) == 200 and all(lat.set_index(["coder", "latent"]).loc[k, "status"] == "ok" for k in a)
    per = {c: {l for cc, l in a if cc == c} for c in ("sae-a", "bae-a")}
    assert per["sae-a"] != per["bae-a"]  # each coder its own draw
    assert sampled_latents(live, 100, seed=1) != a  # another seed, another sample
    assert sampled_latents(live, 10_000, seed=0) == set(zip(live["coder"], live["latent"]))  # larger than the coder: all
    # not the first N: a sample spreads over the whole index range
    assert max(per["sae-a"]) > 200 and min(per["sae-a"]) < 100


def test_explain_and_score_draw_the_same_sample():
    lat = _latents()
    explained = select_latents(lat, ExplainConfig(sample=40, seed=5))
    from interp_eval.scoring.jobs import live_latents

    scored = live_latents(lat, ScoreConfig(scorers=("example-embedding",), sample=40, sample_seed=5))
    assert set(zip(explained["coder"], explained["latent"])) == set(zip(scored["coder"], scored["latent"]))
    assert len(scored) == 80
    with pytest.raises(UserError):
        ScoreConfig(sample=3, latents=3).validate()


def test_every_scorer_and_its_control_score_the_one_sample(llm_env, fast_config, tmp_path, tokenizer):
    run = tmp_path / "run"
    make_run(run, tokenizer, n_latents=12)  # 11 live latents a coder, every one explained
    llm_env.answer = truth_answer(truth(run))
    cfg = ScoreConfig(scorers=("detection", "embedding"), sample=6, sample_seed=2, control_latents=4, n_activating=4, n_negative=4)
    run_score_stage(run, cfg, fast_config("gpt-4.1-mini"))
    lat = pd.read_parquet(run / "latents.parquet")
    want = sampled_latents(lat[lat["status"] == "ok"], 6, seed=2)
    pred = pd.read_parquet(run / "predictions.parquet")
    own, ctl = pred[pred["control"] == "none"], pred[pred["control"] == "shuffled"]
    for scorer in ("detection", "embedding"):
        assert set(zip(own.loc[own["scorer"] == scorer, "coder"], own.loc[own["scorer"] == scorer, "latent"])) == want
    controls = {s: set(zip(g["coder"], g["latent"], g["source_latent"])) for s, g in ctl.groupby("scorer")}
    assert controls["detection"] == controls["embedding"]  # the same control latents, each with the same borrowed explanation
    assert {(c, l) for c, l, _ in controls["detection"]} <= want and {(c, s) for c, _, s in controls["detection"]} <= want
    assert len(controls["detection"]) == 8  # 4 a coder


def test_a_smaller_sample_lies_inside_a_larger_one_with_the_same_seed():
    live = _latents()
    live = live[live["status"] == "ok"]
    small, large = sampled_latents(live, 20, seed=0), sampled_latents(live, 150, seed=0)
    assert len(small) == 40 and small < large


def test_a_change_in_the_live_set_changes_the_sample_only_where_it_must():
    """Two trainings of one coder never agree on every latent's live status; the sample must still be mostly one
    sample. Membership goes by each latent's own seeded key, so losing one live latent swaps at most one member,
    and a sampled latent that stays live in a larger live set stays sampled only if its key still ranks."""
    live = _latents()
    live = live[(live["status"] == "ok") & (live["coder"] == "sae-a")]
    a = sampled_latents(live, 50, seed=0)
    for dropped in sorted(live["latent"])[:40:7]:
        b = sampled_latents(live[live["latent"] != dropped], 50, seed=0)
        assert len(a - b) <= 1 and len(b - a) <= 1
    # a quarter of the live set replaced by other latents: the kept ones' members mostly stay
    kept = live[live["latent"] % 4 != 0]
    other = pd.DataFrame({"coder": "sae-a", "latent": range(1000, 1000 + (len(live) - len(kept))), "status": "ok"})
    c = sampled_latents(pd.concat([kept, other]), 50, seed=0)
    survivors = {k for k in a if k[1] % 4 != 0}
    assert len(survivors & c) >= 0.6 * len(survivors)
