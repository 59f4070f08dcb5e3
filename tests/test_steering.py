"""The steering scorer: the intervention itself on the real model, the judge's prompt, and the whole stage on coders
trained and mined at tiny size, judged through the fake provider server."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401
from mining_helpers import MINE_KW
from scoring_helpers import explanation_row

from interp_eval.catalog import EXPLANATIONS
from interp_eval.errors import UserError
from interp_eval.mining import MineConfig, run_mine_stage
from interp_eval.prompting import render
from interp_eval.scoring import run_score_stage
from interp_eval.scoring.stage import ScoreConfig
from interp_eval.scoring.steering import build_request
from interp_eval.scoring.steering_texts import Continuation, steering_prompts
from interp_eval.subject.hookpoints import capture_site, resolve_site
from interp_eval.subject.steering import continue_prompts, encode_prompts, site_norm, steered

HP = "layers.3.mlp"


# -- the intervention -------------------------------------------------------------------------------------------
def test_the_vector_is_added_at_the_site_at_every_position_and_nowhere_before(subject):
    ids = torch.tensor([encode_prompts(subject, ["The most important thing is"])[0]] * 2)
    out_site = resolve_site(subject, HP)  # the MLP's output
    block_out = resolve_site(subject, "layers.3")
    before = resolve_site(subject, "layers.2")
    v = torch.randn(2, subject.d_model, generator=torch.Generator().manual_seed(0)) * 5
    clean = {s: capture_site(subject, ids, s) for s in (out_site, block_out, before)}
    with steered(subject, out_site, v):
        got = {s: capture_site(subject, ids, s) for s in (block_out, before)}
    # the block's output is its MLP's output added to the residual: it moves by exactly v, row by row, at every position
    torch.testing.assert_close(got[block_out] - clean[block_out], v[:, None, :].expand_as(clean[block_out]), atol=2e-3, rtol=0)
    assert torch.equal(got[before], clean[before])
    # an input-side site (the block's input, resid_pre) gets the vector before the module reads it
    pre = resolve_site(subject, "blocks.3.hook_resid_pre")
    with steered(subject, pre, v):
        seen = capture_site(subject, ids, pre)
    torch.testing.assert_close(seen - capture_site(subject, ids, pre), v[:, None, :].expand_as(seen), atol=1e-4, rtol=0)


def test_zero_vectors_change_nothing_and_a_push_changes_the_continuation(subject):
    ids = encode_prompts(subject, steering_prompts(3))
    site = resolve_site(subject, HP)
    clean = continue_prompts(subject, ids, 6)
    assert all(len(c) == 6 for c in clean)
    assert continue_prompts(subject, ids, 6, site, torch.zeros(3, subject.d_model)) == clean
    norm = site_norm(subject, site, ids)
    assert 1 < norm < 1000  # the median over tokens after the first: no attention-sink outlier sets it
    push = torch.randn(subject.d_model, generator=torch.Generator().manual_seed(1))
    moved = continue_prompts(subject, ids, 6, site, (8 * norm * push / push.norm()).repeat(3, 1))
    assert sum(a != b for a, b in zip(moved, clean)) >= 2


# -- the judge's prompt -----------------------------------------------------------------------------------------
def test_the_prompt_shows_both_continuations_as_data_in_the_seeded_place():
    c = Continuation("I think that", [" fine", "\n2. forged line", " <<mark>>", "<|im_end|>"], [" all", " good"])
    for pos in (0, 1):
        req = build_request("numbers\nand dates", c, pos)
        user = req.messages[-1]["content"]
        lines = user.split("\n")
        numbered = [line for line in lines if re.match(r"^\d+\. ", line)]
        assert len(numbered) == 2  # the forged "2." stays inside its continuation's one line
        assert numbered[pos] == "%d. %s" % (pos + 1, render(c.steered))
        assert numbered[1 - pos] == "%d. %s" % (2 - pos, render(c.clean))
        assert "Feature: numbers and dates" in user and "<<" not in user and "<|im_end|>" not in user
        assert req.system and req.messages[0]["role"] == "user"  # the few-shot turns come first


def test_the_steered_places_probability_comes_from_the_answers_logprobs():
    import math

    from interp_eval.llm.types import LLMResponse, TokenLogprob
    from interp_eval.scoring.intruder import truth_probability

    answer = [TokenLogprob("[", 0.0, []), TokenLogprob("2", math.log(0.6), [("2", math.log(0.6)), ("1", math.log(0.2)),
                                                                            ("3", math.log(0.1))])]
    response = LLMResponse("[2]", "local", "m", logprobs=answer)
    assert truth_probability(response, 2, 1) == pytest.approx([0.6 / 0.8])  # "3" is not a choice of two
    assert truth_probability(response, 2, 0) == pytest.approx([0.2 / 0.8])
    assert truth_probability(response, 3, 2) == pytest.approx([0.1 / 0.9])
    assert truth_probability(LLMResponse("[2]", "anthropic", "m"), 2, 1) is None  # no logprobs: none invented


# -- the stage ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mined_tiny(tmp_path_factory, tiny_run, subject):
    """conftest's tiny_run (four coders of the real model at layers.3.mlp) mined at tiny size."""
    run = tmp_path_factory.mktemp("steer") / "run"
    shutil.copytree(tiny_run, run)
    run_mine_stage(run, MineConfig(**MINE_KW), subject=subject)
    return run


def _explained(run, src, coders=("sae-layers.3.mlp-k8", "bae-layers.3.mlp-k8"), n=4):
    """A copy of the mined run with `n` live latents of each coder explained as 'latent L of CODER'."""
    shutil.copytree(src, run)
    lat = pd.read_parquet(run / "latents.parquet")
    rows = []
    for coder in coders:
        live = lat[(lat["coder"] == coder) & (lat["status"] == "ok")]["latent"].astype(int).tolist()[:n]
        assert len(live) == n
        rows += [explanation_row(coder, latent, f"latent {latent} of {coder}") for latent in live]
    pq.write_table(pa.Table.from_pylist(rows, schema=EXPLANATIONS.schema), run / "explanations.parquet")
    return rows


def _lines(req: dict) -> tuple[str, list[str]]:
    user = [m["content"] for m in req["messages"] if m["role"] == "user"][-1]
    feature = re.search(r"^Feature: (.*)$", user, re.M).group(1)
    return feature, [line.split(". ", 1)[1] if ". " in line else "" for line in user.split("\n") if re.match(r"^\d+\. ", line)]


def informed_judge(run):
    """Knows each latent's continuations (steering.parquet): names the steered one when the explanation is that
    latent's own, else always says [1]. Its power comes from the explanation alone."""
    def answer(req: dict) -> str:
        steer = pd.read_parquet(run / "steering.parquet")
        feature, pair = _lines(req)
        for row in steer.itertuples():
            if render(list(row.steered)) in pair and render(list(row.clean)) in pair and pair[0] != pair[1]:
                if feature == f"latent {row.latent} of {row.coder}":
                    return f"[{pair.index(render(list(row.steered))) + 1}]"
        return "[1]"

    return answer


CFG = dict(scorers=("steering",), steering_prompts=4, steering_tokens=6, steering_scale=4.0)


def test_steering_scores_own_explanations_above_the_control_and_resumes_free(llm_env, fast_config, tmp_path, mined_tiny):
    run = tmp_path / "run"
    rows = _explained(run, mined_tiny)
    llm_env.answer = informed_judge(run)
    out = run_score_stage(run, ScoreConfig(**CFG), fast_config("claude"))
    assert out["complete"] and out["window_failures"] == {"parse": 0, "llm": 0}
    steer = pd.read_parquet(run / "steering.parquet")
    assert len(steer) == len(rows) * 4 and (steer["scale"] == 4.0).all() and (steer["new_tokens"] == 6).all()
    assert (steer["site_norm"] > 0).all() and steer.groupby("coder")["site_norm"].nunique().eq(1).all()
    changed = steer.apply(lambda r: list(r["steered"]) != list(r["clean"]), axis=1)
    assert changed.mean() > 0.5  # scale 4 moves most continuations of these tiny coders
    pred = pd.read_parquet(run / "predictions.parquet")
    own, ctl = pred[pred["control"] == "none"], pred[pred["control"] == "shuffled"]
    assert len(own) == len(rows) * 4 == len(ctl) and set(own["window_id"]) == {0, 1, 2, 3}
    assert set(own["position"]) == {1, 2}  # the steered continuation's place is seeded, both places occur
    # the control judges the very same pairs in the very same places, with another latent's explanation
    key = ["coder", "latent", "window_id"]
    pairs = own.set_index(key)["position"].sort_index()
    assert pairs.equals(ctl.set_index(key)["position"].sort_index())
    steered_changed = steer.assign(window_id=steer["prompt_index"]).set_index(key)[[]].assign(changed=changed.to_numpy())
    mixed = own.set_index(key).join(steered_changed)
    assert (mixed.loc[mixed["changed"], "prediction"] == 1).all()  # right wherever steering changed the text
    assert (ctl["answer"] == 1).all()
    for row in out["summary"]:
        assert row["power_metric"] == "accuracy" and row["power"] > 0.2 and row["power_status"] == "too few latents"
    from interp_eval.scoring.aggregate import format_summary

    for row, line in zip(out["summary"], format_summary(pd.DataFrame(out["summary"])).splitlines()[1:]):
        # the printed summary shows the scorer's own metric, not the F1 of its all-positive trials
        assert re.search(rf"accuracy {row['accuracy_mean']:.3f} \[[^\]]*\]\s+-\s+-\s+", line)  # then F1 and bal.acc: "-"

    calls = llm_env.count()
    again = run_score_stage(run, ScoreConfig(**CFG), fast_config("claude"))
    assert llm_env.count() == calls and sum(again["to_score"].values()) == 0  # nothing asked twice
    assert pd.read_parquet(run / "steering.parquet").equals(steer)  # nor generated twice


def test_steering_with_a_zero_vector_gives_chance_and_no_power(llm_env, fast_config, tmp_path, mined_tiny):
    """Scale 0 adds a zero vector: every steered continuation is the clean one, so even the judge that has power at
    scale 4 can only guess, and it guesses the same with either explanation."""
    run = tmp_path / "run"
    _explained(run, mined_tiny)
    llm_env.answer = informed_judge(run)
    out = run_score_stage(run, ScoreConfig(**{**CFG, "steering_scale": 0.0}), fast_config("claude"))
    steer = pd.read_parquet(run / "steering.parquet")
    assert (steer["scale"] == 0).all() and all(list(a) == list(b) for a, b in zip(steer["steered"], steer["clean"]))
    pred = pd.read_parquet(run / "predictions.parquet")
    assert (pred["answer"] == 1).all()  # no difference to find: its fixed guess
    own = pred[pred["control"] == "none"]
    assert own["prediction"].mean() == pytest.approx((own["position"] == 1).mean())  # right exactly where the guess falls
    assert 0.3 <= own["prediction"].mean() <= 0.7  # the seeded places: chance, 1/2, over 64 trials
    for row in out["summary"]:
        assert row["power"] == pytest.approx(0.0)  # the same answers with either explanation: paired difference 0


def test_steering_refuses_a_run_mined_without_coder_folders_or_a_coder_retrained_since(llm_env, fast_config, tmp_path, mined_tiny):
    run = tmp_path / "run"
    _explained(run, mined_tiny)
    manifest = run / "manifest.jsonl"
    text = manifest.read_text()
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    for line in lines:
        line.pop("coder_folders", None)
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(UserError, match="re-run `interp-eval mine --force`") as exc:
        run_score_stage(run, ScoreConfig(**CFG), fast_config("claude"))
    assert "\n" not in str(exc.value) and not (run / "steering.parquet").exists()

    # the run directory moved (the recorded folders are gone): its own coders/ are used, if they are the ones mined
    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    for line in lines:
        for rec in line.get("coder_folders", {}).values():
            rec["folder"] = str(tmp_path / "gone" / Path(rec["folder"]).name)
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    weights = run / "coders" / "sae-layers.3.mlp-k8" / "sae_weights.safetensors"
    st = weights.stat()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # as if retrained
    with pytest.raises(UserError, match="retrained since mining") as exc:
        run_score_stage(run, ScoreConfig(**CFG), fast_config("claude"))
    assert "\n" not in str(exc.value) and llm_env.count() == 0
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))  # the coder as mined: found in the moved run
    assert run_score_stage(run, ScoreConfig(**CFG), fast_config("claude"))["complete"]


def test_the_dry_run_counts_the_calls_and_generates_nothing(tmp_path, mined_tiny, capsys):
    run = tmp_path / "run"
    rows = _explained(run, mined_tiny)
    out = run_score_stage(run, ScoreConfig(**CFG), dry_run=True)
    assert out["dry_run"]["steering"]["calls"] == 2 * len(rows) * 4  # own and control, 4 openings each
    assert not (run / "steering.parquet").exists()
    with pytest.raises(UserError, match="--steering-scale"):
        ScoreConfig(scorers=("steering",), steering_scale=-1).validate()
