"""Controls and power (scoring/controls.py), the explanation-free scorers and the scorer registry.

The intruder runs over real HTTP against the local fake provider server; the embedding scorers use
the packaged MiniLM on real text.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401
from scoring_helpers import make_run

from interp_eval.scoring import LocalScorer, register_scorer, run_score_stage, scorer_names
from interp_eval.scoring.stage import ScoreConfig
from interp_eval.scoring import registry
from interp_eval.scoring.controls import chance_power, derangement, paired_power, shuffled_sources
from interp_eval.scoring.intruder import parse_choice


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from interp_eval.subject.model import packaged_model_dir

    return AutoTokenizer.from_pretrained(packaged_model_dir())


@pytest.fixture
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPUs are shared: one thread is faster than two contending
    yield
    torch.set_num_threads(threads)


def _read(run, name):
    return pd.read_parquet(run / f"{name}.parquet")


# -- the shuffled control ------------------------------------------------------------------------------------
def test_shuffled_sources_are_a_seeded_derangement():
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 50):
        p = derangement(n, rng)
        assert sorted(p) == list(range(n)) and not (p == np.arange(n)).any()
    lat = [3, 5, 8, 13, 21, 34]
    a = shuffled_sources(lat, None, 7, "coder-a", "llm")
    assert a == shuffled_sources(lat, None, 7, "coder-a", "llm")  # seeded
    assert set(a) == set(lat) and sorted(a.values()) == lat and all(k != v for k, v in a.items())
    assert any(shuffled_sources(lat, None, s, "coder-a", "llm") != a for s in range(8, 12))  # the seed matters
    capped = shuffled_sources(lat, 3, 7, "coder-a", "llm")
    assert len(capped) == 3 and set(capped.values()) == set(capped) and all(k != v for k, v in capped.items())
    one = shuffled_sources(lat, 1, 7, "coder-a", "llm")  # a sample of one borrows from another scored latent
    ((k, v),) = one.items()
    assert k != v and v in lat
    assert shuffled_sources([4], None, 7, "c", "llm") == {} and shuffled_sources(lat, 0, 7, "c", "llm") == {}


def test_power_and_its_interval_match_a_hand_computed_case():
    own = pd.DataFrame({"latent": [0, 1, 2, 3], "auc": [0.9, 0.8, 0.7, np.nan]})
    ctl = pd.DataFrame({"latent": [0, 1, 2, 3], "auc": [0.5, 0.6, 0.4, 0.5]})
    p = paired_power(own, ctl, "auc", seed=3, n_boot=1000)
    diffs = np.array([0.4, 0.2, 0.3])  # latent 3 has no own score: not paired
    idx = np.random.default_rng(3).integers(0, 3, size=(1000, 3))
    lo, hi = np.quantile(diffs[idx].mean(axis=1), [0.025, 0.975])
    assert p.latents == 3 and p.power == pytest.approx(0.3) and p.own == pytest.approx(0.8) and p.control == pytest.approx(0.5)
    assert (p.ci_low, p.ci_high) == pytest.approx((lo, hi)) and p.ci_low > 0
    assert p.status == "too few latents" and not p.has_power and p.label == "too few latents (3 < 20)"  # the floor on latents
    flat = paired_power(own, own, "auc")
    assert flat.power == 0 and not flat.has_power
    c = chance_power(pd.DataFrame({"latent": [0, 1], "accuracy": [0.5, 0.7]}), "accuracy", 0.2)
    assert c.power == pytest.approx(0.4) and c.control == 0.2 and c.ci_low > 0 and c.status == "too few latents"


# -- example-embedding --------------------------------------------------------------------------------------
def _write_text_run(run, tokenizer, latents: dict[int, tuple[list[str], list[str], list[str]]], coder="sae-t"):
    """A run from texts: latent -> (explanation windows, activating test windows, non-activating test windows)."""
    from interp_eval.catalog import CONTEXTS, LATENTS, WINDOWS

    run.mkdir(parents=True, exist_ok=True)
    windows, ctx, lat = [], [], []
    ids_of: dict[str, int] = {}

    def wid(text: str) -> int:
        if text not in ids_of:
            ids = tokenizer(text)["input_ids"]
            ids_of[text] = len(ids_of)
            windows.append({"window_id": ids_of[text], "context": ids_of[text], "position": 0, "token_ids": ids,
                            "tokens": [tokenizer.decode([i]) for i in ids]})
        return ids_of[text]

    for latent, (explain, pos, neg) in latents.items():
        for split, kind, texts in (("explain", "quantile", explain), ("test", "quantile", pos), ("test", "random_negative", neg)):
            for rank, text in enumerate(texts):
                n = len(tokenizer(text)["input_ids"])
                acts = [0.0] * n
                if kind == "quantile":
                    acts[-1] = 1.0
                ctx.append({"coder": coder, "latent": latent, "window_id": wid(text), "kind": kind, "split": split,
                            "quantile": None, "rank": rank, "activations": acts, "max_activation": max(acts)})
        lat.append({"coder": coder, "latent": latent, "hookpoint": "layers.0.mlp", "binary": True, "firing_count": 10, "n_tokens": 1000,
                    "frequency": 0.01, "max_activation": 1.0, "n_windows": 10, "status": "ok"})
    pq.write_table(pa.Table.from_pylist(windows, schema=WINDOWS.schema), run / "windows.parquet")
    pq.write_table(pa.Table.from_pylist(ctx, schema=CONTEXTS.schema), run / "contexts.parquet")
    pq.write_table(pa.Table.from_pylist(lat, schema=LATENTS.schema), run / "latents.parquet")


FOOTBALL = ["The striker scored twice as United beat Chelsea in the league", "The goalkeeper saved a penalty in the cup final",
            "Arsenal signed the midfielder before the football season began", "The referee sent off two players in the derby",
            "Liverpool's manager praised his defenders after the clean sheet", "The winger crossed for a late headed goal",
            "Fans sang as the captain lifted the trophy at Wembley", "The coach dropped the forward for the away match"]
OTHER = ["The central bank raised interest rates to curb inflation", "Shares in the oil company fell after weak profits",
         "The minister announced new funding for hospitals", "Heavy rain caused flooding across the region",
         "The band released its third album to strong reviews", "Scientists found water ice near the moon's pole",
         "The court ruled that the merger could go ahead", "A new phone went on sale with a larger screen"]


def test_example_embedding_near_one_on_a_topic_and_near_half_on_random_labels(tmp_path, tokenizer, one_thread):
    from interp_eval.subject.corpus import CorpusConfig, iter_contexts

    topic = tmp_path / "topic"
    _write_text_run(topic, tokenizer, {0: (FOOTBALL[:4], FOOTBALL[4:], OTHER[:4]), 1: (OTHER[4:], OTHER[:4], FOOTBALL[:4])})
    run_score_stage(topic, ScoreConfig(scorers=("example-embedding",)))
    s = _read(topic, "latent_scores")
    own = s[s["control"] == "none"].set_index("latent")
    assert own.loc[0, "auc"] >= 0.9 and own.loc[1, "auc"] >= 0.9
    pred = _read(topic, "predictions")
    ctx = _read(topic, "contexts")
    ex = set(zip(ctx.loc[ctx["split"] == "explain", "latent"], ctx.loc[ctx["split"] == "explain", "window_id"]))
    assert not any((l, w) in ex for l, w in zip(pred["latent"], pred["window_id"]))  # never an explanation window as a test window
    assert (_read(topic, "window_embeddings")["window_id"].nunique() == len(_read(topic, "windows")))  # each window embedded once

    # random labels: real corpus windows dealt out at random to explain / activating / non-activating
    texts = [tokenizer.decode(c) for _, c in zip(range(240), iter_contexts(CorpusConfig(ctx_len=24), tokenizer, "heldout"))]
    rng = np.random.default_rng(0)
    rand = tmp_path / "random"
    deal = {}
    for latent in range(8):
        pick = rng.permutation(len(texts))[:30]
        deal[latent] = ([texts[i] for i in pick[:10]], [texts[i] for i in pick[10:20]], [texts[i] for i in pick[20:]])
    _write_text_run(rand, tokenizer, deal)
    out = run_score_stage(rand, ScoreConfig(scorers=("example-embedding",)))
    summ = out["summary"][0]
    assert 0.38 < summ["auc_mean"] < 0.62 and summ["power_ci_low"] < 0 < summ["power_ci_high"] and not summ["has_power"]


# -- intruder ------------------------------------------------------------------------------------------------
MARK = re.compile(r"<<(.*?)>>")


def intruder_oracle(req: dict) -> str:
    """Names the window whose marked words differ from the others' (the run's latents each fire on one word)."""
    user = [m["content"] for m in req["messages"] if m["role"] == "user"][-1]
    lines = [line.split(". ", 1)[1] for line in user.split("\n") if re.match(r"^\d+\. ", line)]
    marks = [frozenset(m.strip().lower() for m in MARK.findall(line)) for line in lines]
    common = max(set(marks), key=marks.count)
    odd = [i for i, m in enumerate(marks) if m != common]
    return f"[{odd[0] + 1 if odd else 1}]"


def test_intruder_accuracy_is_one_against_a_server_that_names_the_intruder(llm_env, fast_config, tmp_path, tokenizer):
    run = tmp_path / "run"
    make_run(run, tokenizer, n_latents=5)
    llm_env.answer = intruder_oracle
    out = run_score_stage(run, ScoreConfig(scorers=("intruder",), intruder_trials=3), fast_config("claude"))
    assert out["complete"] and out["window_failures"] == {"parse": 0, "llm": 0}
    pred = _read(run, "predictions")
    assert len(pred) == 2 * 4 * 3 and (pred["prediction"] == 1).all() and (pred["answer"] == pred["position"]).all()
    assert set(pred["control"]) == {"none"} and set(pred["explainer"]) == {"none"}
    assert pred["position"].nunique() > 1  # the intruder's place varies
    ctx = _read(run, "contexts")
    for (coder, latent), g in pred.groupby(["coder", "latent"]):  # the intruder is never a window the latent is known to fire in
        own = ctx[(ctx["coder"] == coder) & (ctx["latent"] == latent) & (ctx["kind"] == "quantile")]
        assert not set(g["window_id"]) & set(own["window_id"])
    for row in out["summary"]:
        assert row["accuracy_mean"] == 1 and row["power_metric"] == "accuracy" and row["power"] == pytest.approx(0.8)
        assert row["power_ci_low"] > 0 and row["power_status"] == "too few latents" and not row["has_power"]  # 4 latents < 20
    assert parse_choice("The odd one is [3].", 5) == [3] and parse_choice("[7]", 5) is None and parse_choice("none", 5) is None

    llm_env.answer = lambda req: "[1]"  # always the first: chance
    run2 = tmp_path / "run2"
    make_run(run2, tokenizer, n_latents=5)
    out = run_score_stage(run2, ScoreConfig(scorers=("intruder",), intruder_trials=3), fast_config("claude", cache_path=tmp_path / "other.sqlite"))
    assert all(r["accuracy_mean"] < 0.6 and not r["has_power"] for r in out["summary"])


# -- a scorer added in one module ------------------------------------------------------------------------------
def test_a_registered_scorer_appears_in_the_cli_the_summary_and_the_report(tmp_path, tokenizer):
    from interp_eval.report.stage import run_report_stage
    from interp_eval.scoring.stage import scorers_help

    @register_scorer
    class WindowLength(LocalScorer):
        name = "window-length"
        description = "longer windows score higher (a test plugin)"
        needs_explanation = False
        metrics = ("auc",)

        def headline(self, has_probabilities):
            return "auc"

        def score(self, jobs, context):
            return [[{"window_id": w.window_id, "label": w.label, "quantile": w.quantile, "similarity": float(len(w.tokens))}
                     for w in j.tests.windows] for j in jobs]

    try:
        assert "window-length" in scorer_names() and "window-length" in scorers_help()
        run = tmp_path / "run"
        make_run(run, tokenizer, n_latents=4)
        out = run_score_stage(run, ScoreConfig(scorers=("window-length",)))
        assert {r["scorer"] for r in out["summary"]} == {"window-length"}
        assert all(r["power_latents"] == 3 for r in out["summary"])
        run_report_stage(run)
        assert "window-length" in (run / "results" / "scorers.md").read_text()
    finally:
        registry._REGISTRY.pop("window-length", None)


def test_a_score_run_aggregates_its_own_scorers_and_keeps_the_others_rows(tmp_path, tokenizer, one_thread):
    run = tmp_path / "run"
    make_run(run, tokenizer, n_latents=4)  # explained latents, so the embedding scorer has explanations to score
    run_score_stage(run, ScoreConfig(scorers=("example-embedding",)))
    first = {name: _read(run, name) for name in ("latent_scores", "score_summary", "score_by_quantile")}
    run_score_stage(run, ScoreConfig(scorers=("embedding",)))
    for name, before in first.items():
        after = _read(run, name)
        assert set(after["scorer"]) == {"example-embedding", "embedding"}, name
        kept = after[after["scorer"] == "example-embedding"].reset_index(drop=True)
        pd.testing.assert_frame_equal(kept[before.columns], before, check_dtype=False)
