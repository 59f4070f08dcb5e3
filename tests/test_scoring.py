"""The score stage through real HTTP (real SDKs) against the local fake provider server.

Runs are hand-built from real corpus tokens (run_builders.build_mined_run: latent i fires on one word)
with an explanations.parquet written by scoring_helpers; the fake server answers from the ground truth.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fake_llm_server import FakeItemError
from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401
from scoring_helpers import (
    build_text_run, confident_truth_answer, constant_answer, explanation_of, fmt, key, make_run, random_answer,
    read_prompt, truth, truth_answer,
)

from interp_eval.errors import UserError
from interp_eval.prompting import active_mask, render
from interp_eval.catalog import CONTEXTS, EXPLANATIONS, PREDICTIONS
from interp_eval.scoring import run_score_stage
from interp_eval.scoring.classifier import parse_answer, wants_logprobs
from interp_eval.scoring.stage import ScoreConfig, load_tests
from interp_eval.artifacts import RunDir


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from interp_eval.subject.model import packaged_model_dir

    return AutoTokenizer.from_pretrained(packaged_model_dir())


@pytest.fixture
def run(tmp_path, tokenizer):
    path = tmp_path / "run"
    make_run(path, tokenizer, n_latents=4)  # per coder: 3 live latents (10 + 10 test windows each), 1 too rare
    return path


def _read(run, name):
    return pd.read_parquet(run / f"{name}.parquet")


def _scoring_requests(server):
    return [r for r in server.log if r.endpoint in ("messages", "chat")]


# -- ground truth, constant and random scorers ------------------------------------------------------------
def test_truth_answers_score_f1_one_with_auc_from_openai_logprobs(llm_env, fast_config, run):
    llm_env.answer = truth_answer(truth(run))
    out = run_score_stage(run, ScoreConfig(scorers=("detection", "fuzzing"), freq_adjust=True), fast_config("gpt-4.1-mini"))
    assert out["complete"] and out["window_failures"] == {"parse": 0, "llm": 0}
    every = _read(run, "predictions")
    assert pq.read_schema(run / "predictions.parquet").names == PREDICTIONS.columns
    # the shuffled control: every latent again with another latent's explanation of its coder, stored apart
    control = every[every["control"] == "shuffled"]
    pred = every[every["control"] == "none"]
    assert len(control) == len(pred) == 2 * 3 * 20 * 2 and (control["source_latent"] != control["latent"]).all()
    assert (pred["source_latent"] == pred["latent"]).all() and set(every["explainer"]) == {"llm"}
    assert len(pred) == 2 * 3 * 20 * 2 and pred["parse_ok"].all()
    assert (pred["prediction"] == pred["label"]).all()
    assert pred["probability"].notna().all() and set(pred["model"]) == {"gpt-4.1-mini"}
    scores = _read(run, "latent_scores")
    assert (scores["control"] == "shuffled").sum() == 12
    scores = scores[scores["control"] == "none"]
    assert len(scores) == 12 and (scores["f1"] == 1).all() and (scores["auc"] == 1).all() and (scores["failures"] == 0).all()
    assert scores["firing_count"].gt(0).all() and scores["frequency"].gt(0).all()
    summ = _read(run, "score_summary")
    assert set(zip(summ["coder"], summ["scorer"])) == {(c, s) for c in ("sae-x", "bae-x") for s in ("detection", "fuzzing")}
    assert (summ["f1_mean"] == 1).all() and (summ["f1_pooled"] == 1).all() and (summ["freq_weighted_f1"] == 1).all()
    assert (summ["scored"] == 3).all() and (summ["too_rare"] == 1).all() and (summ["windows"] == 60).all()
    # the oracle knows right from wrong explanations: AUC 1 with its own, 0.5 with another's (it says 0 to all)
    assert (summ["power_metric"] == "auc").all() and (summ["power"] == 0.5).all()
    assert (summ["power_ci_low"] > 0).all() and (summ["power_latents"] == 3).all()
    # but 3 latents are below the floor: no power, whatever the interval says
    assert (summ["power_status"] == "too few latents").all() and not summ["has_power"].any() and not summ["power_borderline"].any()
    quant = _read(run, "score_by_quantile")
    assert set(quant.loc[quant["coder"] == "sae-x", "quantile"]) == {str(q) for q in range(10)}
    assert set(quant.loc[quant["coder"] == "bae-x", "quantile"]) == {"uniform"}  # binary: no activation order
    assert (quant["recall"] == 1).all()
    assert len(_read(run, "score_by_frequency"))
    assert RunDir(run).is_complete("score")
    # the test windows are the mined test split, never an explanation window of the same latent
    ctx = _read(run, "contexts")
    split = {(c, l, w): s for c, l, w, s in zip(ctx["coder"], ctx["latent"], ctx["window_id"], ctx["split"]) if s == "test"}
    assert all((c, l, w) in split for c, l, w in zip(pred["coder"], pred["latent"], pred["window_id"]))
    win = _read(run, "windows").set_index("window_id")
    ex = ctx[ctx["split"] == "explain"]
    seen = {(explanation_of(c, l), key(render(list(win.at[w, "tokens"])))) for c, l, w in zip(ex["coder"], ex["latent"], ex["window_id"])}
    reqs = _scoring_requests(llm_env)
    for r in reqs:
        req = {"messages": [m for m in r.body["messages"] if m["role"] != "system"]}
        explanation, texts = read_prompt(req)
        assert not any((explanation, t) in seen for t in texts)
    # detection windows carry no marks, fuzzing windows do; 5 windows a prompt
    det = [r for r in reqs if "<<" not in r.body["messages"][-1]["content"]]
    assert len(det) == len(reqs) // 2 == 2 * 3 * 4 * 2  # own + control
    assert all(len(read_prompt({"messages": r.body["messages"]})[1]) == 5 for r in reqs)


def test_always_zero_gives_recall_zero(llm_env, fast_config, run):
    llm_env.answer = constant_answer(0)
    run_score_stage(run, ScoreConfig(scorers=("detection",)), fast_config("claude"))
    scores = _read(run, "latent_scores")
    assert (scores["recall"] == 0).all() and (scores["f1"] == 0).all() and (scores["balanced_accuracy"] == 0.5).all()
    assert scores["precision"].isna().all()  # no predicted positive: undefined, not 0


def test_random_answers_give_chance_balanced_accuracy(llm_env, fast_config, tmp_path, tokenizer):
    path = tmp_path / "big"
    make_run(path, tokenizer, n_latents=11, n_test=30, n_negative=30, rare=1)
    llm_env.answer = random_answer(seed=1)
    run_score_stage(path, ScoreConfig(scorers=("detection",)), fast_config("claude", concurrency=32))
    summ = _read(path, "score_summary")
    assert len(_read(path, "predictions")) == 2 * 10 * 60 * 2  # own + shuffled control
    for _, row in summ.iterrows():
        # a scorer answering at random has no power: the interval covers zero
        assert row["power_metric"] == "balanced_accuracy" and row["power_latents"] == 10
        assert row["power_ci_low"] < 0 < row["power_ci_high"] and not row["has_power"]
        assert abs(row["balanced_accuracy_pooled"] - 0.5) < 0.08
        assert abs(row["balanced_accuracy_mean"] - 0.5) < 0.08
        assert row["balanced_accuracy_ci_low"] < 0.5 < row["balanced_accuracy_ci_high"]


# -- retries, failures, resume ------------------------------------------------------------------------------
def test_malformed_answers_are_retried_then_counted_as_failures(llm_env, fast_config, run):
    table = truth(run)
    hopeless = explanation_of("sae-x", 0)

    def answer(req):
        explanation, texts = read_prompt(req)
        retry = req["messages"][-1]["content"].startswith("Reply with only")
        if explanation == hopeless:
            return "Yes, I think so." if not retry else "[1,0]"  # never a list of 5 digits
        return fmt([table[(explanation, t)] for t in texts]) if retry else "The answer: 1 0 1 0 0"

    llm_env.answer = answer
    out = run_score_stage(run, ScoreConfig(scorers=("detection",), max_retries=2, control_latents=0), fast_config("claude"))
    prompts = 2 * 3 * 4
    assert llm_env.completion_calls() == (prompts - 4) * 2 + 4 * 3  # one retry each; the hopeless latent's 4 prompts get 2
    pred = _read(run, "predictions")
    bad = pred[(pred["coder"] == "sae-x") & (pred["latent"] == 0)]
    assert len(bad) == 20 and not bad["parse_ok"].any() and bad["prediction"].isna().all()
    assert bad["failure"].str.startswith("parse:").all() and (bad["attempts"] == 3).all()
    good = pred.drop(bad.index)
    assert good["parse_ok"].all() and (good["prediction"] == good["label"]).all() and (good["attempts"] == 2).all()
    scores = _read(run, "latent_scores").set_index(["coder", "latent"])
    assert scores.at[("sae-x", 0), "failures"] == 20 and math.isnan(scores.at[("sae-x", 0), "f1"])
    summ = _read(run, "score_summary").set_index("coder")
    assert summ.at["sae-x", "window_failures"] == 20 and summ.at["sae-x", "score_failed"] == 1 and summ.at["sae-x", "scored"] == 2
    assert out["window_failures"] == {"parse": 20, "llm": 0} and out["complete"]
    # the corrective turn is a new request: the bad answer and the instruction are appended
    retry = [r.body for r in _scoring_requests(llm_env) if len(r.body["messages"]) == 5]
    assert retry and retry[0]["messages"][3]["role"] == "assistant" and "exactly 5 digits" in str(retry[0]["messages"][4])
    # a re-run asks only the hopeless prompts again: their cached answers are replayed, then up to 3 new ones each
    llm_env.reset_counts()
    run_score_stage(run, ScoreConfig(scorers=("detection",), max_retries=2, control_latents=0), fast_config("claude"))
    assert llm_env.completion_calls() == 4 * 3
    again = _read(run, "predictions")
    assert len(again) == len(pred) and (again.loc[again["parse_ok"], "attempts"] == 2).all()
    assert (again.loc[~again["parse_ok"], "attempts"] == 6).all()


def test_second_run_makes_no_calls_and_more_latents_pay_only_for_new_ones(llm_env, fast_config, run):
    llm_env.answer = truth_answer(truth(run))
    run_score_stage(run, ScoreConfig(scorers=("detection", "fuzzing"), latents=1, control_latents=0), fast_config("claude"))
    first = llm_env.completion_calls()
    assert first == 2 * 1 * 4 * 2  # 2 coders x 1 latent x 4 prompts x 2 scorers
    run_score_stage(run, ScoreConfig(scorers=("detection", "fuzzing"), latents=1, control_latents=0), fast_config("claude"))
    assert llm_env.completion_calls() == first
    # a fresh response cache too: the finished rows in predictions.parquet are not asked again
    run_score_stage(run, ScoreConfig(scorers=("detection", "fuzzing"), control_latents=0), fast_config("claude", cache_path=run / "other.sqlite"))
    assert llm_env.completion_calls() == first * 3
    assert len(_read(run, "predictions")) == 2 * 3 * 20 * 2
    # a new explanation of one latent: only that latent is scored again
    ex = _read(run, "explanations")
    ex.loc[(ex["coder"] == "bae-x") & (ex["latent"] == 2), "explanation"] = "something else"
    pq.write_table(pa.Table.from_pandas(ex, schema=EXPLANATIONS.schema, preserve_index=False), run / "explanations.parquet")
    llm_env.answer = constant_answer(1)
    llm_env.reset_counts()
    run_score_stage(run, ScoreConfig(scorers=("detection", "fuzzing"), control_latents=0), fast_config("claude"))
    assert llm_env.completion_calls() == 4 * 2
    scores = _read(run, "latent_scores").set_index(["coder", "latent", "scorer"])
    assert scores.at[("bae-x", 2, "detection"), "recall"] == 1 and scores.at[("bae-x", 2, "detection"), "precision"] == 0.5
    assert scores.at[("bae-x", 1, "detection"), "f1"] == 1


def test_provider_errors_are_failures_and_a_rerun_retries_only_them(llm_env, fast_config, run):
    table = truth(run)
    broken = explanation_of("bae-x", 1)

    def answer(req):
        explanation, texts = read_prompt(req)
        if explanation == broken:
            raise FakeItemError("invalid request")
        return fmt([table[(explanation, t)] for t in texts])

    llm_env.answer = answer
    out = run_score_stage(run, ScoreConfig(scorers=("detection",), control_latents=0), fast_config("claude"))
    assert not out["complete"] and out["window_failures"] == {"parse": 0, "llm": 20}
    pred = _read(run, "predictions")
    assert pred["failure"].str.startswith("llm:").sum() == 20
    assert not RunDir(run).is_complete("score")
    llm_env.answer = truth_answer(table)
    llm_env.reset_counts()
    out = run_score_stage(run, ScoreConfig(scorers=("detection",), control_latents=0), fast_config("claude"))
    assert out["complete"] and llm_env.completion_calls() == 4  # only the failed latent's prompts
    assert _read(run, "predictions")["parse_ok"].all()


# -- backends: AUC, prompt caching -------------------------------------------------------------------------
def test_auc_from_logprobs_and_null_with_anthropic(llm_env, fast_config, run):
    llm_env.answer = confident_truth_answer(truth(run), p=0.9)
    run_score_stage(run, ScoreConfig(scorers=("detection",), latents=1), fast_config("gpt-4.1-mini"))
    pred = _read(run, "predictions")
    np.testing.assert_allclose(pred["probability"], np.where(pred["label"] == 1, 0.9, 0.1))
    assert (_read(run, "latent_scores")["auc"] == 1).all()

    llm_env.answer = truth_answer(truth(run))
    run_score_stage(run, ScoreConfig(scorers=("detection",), latents=1), fast_config("claude"))
    pred = _read(run, "predictions")
    assert pred["probability"].isna().all() and set(pred["model"]) == {"claude-sonnet-4-5"}
    scores = _read(run, "latent_scores")
    assert scores["auc"].isna().all() and (scores["n_probabilities"] == 0).all() and (scores["f1"] == 1).all()
    assert _read(run, "score_summary")["auc_mean"].isna().all()
    # the hosted format's fixed prefix (its system prompt, no few-shot) is byte-identical in every call and marked
    bodies = [r.body for r in llm_env.log if r.endpoint == "messages"]
    prefixes = {json.dumps(b["system"]) for b in bodies}
    assert len(prefixes) == 1 and "cache_control" in json.dumps(bodies[0]["system"])
    assert all(len(b["messages"]) == 1 for b in bodies)
    calls = _read(run, "llm_usage")  # the LLM ledger: the scorer's calls are tagged with it
    calls = calls[calls["scorer"] == "detection"]
    assert len(calls) and calls["cache_read_tokens"].sum() > 0


# -- test sets ----------------------------------------------------------------------------------------------
def test_fuzzing_marks_and_test_set_rules(run):
    rd = RunDir(run)
    lat = _read(run, "latents")
    keys = {("sae-x", 0), ("bae-x", 2)}
    tests = [load_tests(rd, keys, lat, ScoreConfig(n_activating=7, n_negative=4, seed=5)).tests[k] for k in (("sae-x", 0), ("bae-x", 2))]
    for t in tests:
        labels = [w.label for w in t.windows]
        assert labels.count(1) == 7 and labels.count(0) == 4 and labels != sorted(labels, reverse=True)  # capped, shuffled
        act = [w for w in t.windows if w.label == 1]
        for w in act:
            assert w.fuzz_mask == active_mask(w.activations.tolist())
        k = round(np.mean([sum(w.fuzz_mask) for w in act]))
        assert all(sum(w.fuzz_mask) == max(1, k) for w in t.windows if w.label == 0)
    sae = tests[0]
    assert sorted(w.quantile for w in sae.windows if w.label == 1) == [0, 2, 3, 4, 6, 8, 9]  # spread over the deciles
    again = [load_tests(rd, keys, lat, ScoreConfig(n_activating=7, n_negative=4, seed=5)).tests[k] for k in (("sae-x", 0), ("bae-x", 2))]
    assert [w.window_id for w in again[0].windows] == [w.window_id for w in sae.windows]
    assert [w.fuzz_mask for w in again[1].windows] == [w.fuzz_mask for w in tests[1].windows]


def test_a_test_window_shown_to_the_explainer_is_refused(llm_env, fast_config, run):
    ctx = _read(run, "contexts")
    test_w = ctx[(ctx["coder"] == "sae-x") & (ctx["latent"] == 1) & (ctx["split"] == "test") & (ctx["kind"] == "quantile")].iloc[0]
    leak = test_w.copy()
    leak["split"] = "explain"
    ctx = pd.concat([ctx, leak.to_frame().T], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(ctx, schema=CONTEXTS.schema, preserve_index=False), run / "contexts.parquet")
    with pytest.raises(UserError, match="also explanation windows"):
        run_score_stage(run, ScoreConfig(scorers=("detection",)), fast_config("claude"))
    assert llm_env.completion_calls() == 0


def test_parse_answer():
    assert parse_answer("[1,0,0,1,0]", 5) == [1, 0, 0, 1, 0]
    assert parse_answer("Sure: [1, 0, 0, 1, 0]", 5) == [1, 0, 0, 1, 0]
    assert parse_answer("[1,0] no wait [0,1,1]", 3) == [0, 1, 1]
    for bad in ("[1,0,0,1]", "1,0,0,1,0", "[1,0,2,1,0]", "", None, "[yes,no]"):
        assert parse_answer(bad, 5) is None
    assert wants_logprobs("openai", "gpt-4.1-mini") and wants_logprobs("local", "local") and wants_logprobs("openai", "qwen2.5-7b")
    assert not wants_logprobs("anthropic", "claude-sonnet-4-5") and not wants_logprobs("openai", "o3") and not wants_logprobs("openai", "gpt-5-mini")


# -- embedding scorer, one window a prompt, dry run, CLI ---------------------------------------------------
def test_embedding_scorer_on_a_tiny_case(tmp_path, tokenizer):
    import torch

    path = tmp_path / "text"
    build_text_run(
        path, tokenizer, "football matches, players and goals",
        positives=["The striker scored twice as United beat Chelsea in the league match", "The goalkeeper saved a penalty in the cup final",
                   "Arsenal signed the midfielder before the football season began", "The referee sent off two players in the derby"],
        negatives=["The central bank raised interest rates to curb inflation", "Shares in the oil company fell after weak profits",
                   "The minister announced new funding for hospitals", "Heavy rain caused flooding across the region"],
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the CPUs are shared: one thread is faster than two contending
    try:
        out = run_score_stage(path, ScoreConfig(scorers=("embedding",)))
    finally:
        torch.set_num_threads(threads)
    pred = _read(path, "predictions")
    assert len(pred) == 8 and pred["similarity"].notna().all() and pred["prediction"].isna().all()
    scores = _read(path, "latent_scores")
    assert scores.loc[0, "auc"] == 1.0 and scores.loc[0, "failures"] == 0
    assert out["summary"][0]["auc_mean"] == 1.0 and out["usage"] == {}


def test_prompt_format_defaults_per_backend():
    from interp_eval.scoring.stage import with_backend_format

    local = with_backend_format(ScoreConfig(), "local")
    assert (local.windows_per_prompt, local.window_tokens) == (1, 16)
    hosted = with_backend_format(ScoreConfig(), "anthropic")
    assert (hosted.windows_per_prompt, hosted.window_tokens) == (5, None)
    whole = with_backend_format(ScoreConfig(window_tokens=0, windows_per_prompt=3), "local")
    assert (whole.windows_per_prompt, whole.window_tokens) == (3, None)
    with pytest.raises(UserError, match="window-tokens"):
        ScoreConfig(window_tokens=-1).validate()


def test_cut_windows_keep_their_peak_and_are_a_different_test(llm_env, fast_config, run):
    rd = RunDir(run)
    lat = _read(run, "latents")
    keys = {("sae-x", 0), ("bae-x", 2)}
    whole = load_tests(rd, keys, lat, ScoreConfig(seed=5)).tests
    cut = load_tests(rd, keys, lat, ScoreConfig(seed=5, window_tokens=8)).tests
    for k in keys:
        by_id = {w.window_id: w for w in whole[k].windows}
        assert [w.window_id for w in cut[k].windows] == [w.window_id for w in whole[k].windows]
        for w in cut[k].windows:
            full = by_id[w.window_id]
            assert len(w.tokens) == 8 and len(w.activations) == 8 and len(w.fuzz_mask) == 8
            if w.label == 1:  # the peak stays in, and the cut is a contiguous piece of the window
                assert w.activations.max() == full.activations.max()
            assert any(full.tokens[i : i + 8] == w.tokens for i in range(len(full.tokens) - 7))
        act = [w for w in cut[k].windows if w.label == 1]
        n_marks = max(1, round(np.mean([sum(w.fuzz_mask) for w in act])))
        assert all(sum(w.fuzz_mask) == n_marks for w in cut[k].windows if w.label == 0)  # marked after the cut
    llm_env.answer = truth_answer(truth(run))
    run_score_stage(run, ScoreConfig(scorers=("detection",), windows_per_prompt=1, latents=1, control_latents=0, window_tokens=8), fast_config("claude"))
    calls = llm_env.completion_calls()
    assert calls == 2 * 20 and (_read(run, "predictions")["prompt_version"].str.endswith("+cut8")).all()
    run_score_stage(run, ScoreConfig(scorers=("detection",), windows_per_prompt=1, latents=1, control_latents=0), fast_config("claude"))
    assert llm_env.completion_calls() == 2 * calls  # whole windows are another test: nothing reused


def test_one_window_per_prompt_and_dry_run(llm_env, fast_config, run, capsys):
    llm_env.answer = truth_answer(truth(run))
    est = run_score_stage(run, ScoreConfig(scorers=("detection", "fuzzing"), windows_per_prompt=1, control_latents=0), fast_config("claude"), dry_run=True)
    text = capsys.readouterr().out
    assert llm_env.completion_calls() == 0 and not (run / "predictions.parquet").exists()
    assert est["dry_run"]["detection"]["calls"] == 2 * 3 * 20 and est["dry_run_total"]["input_tokens"] > 0
    assert re.search(r"total: 240 calls to send .*; input ~[\d,]+ uncached input at \$3/M = \$[\d.]+", text) and "about $" in text
    run_score_stage(run, ScoreConfig(scorers=("detection",), windows_per_prompt=1, latents=1), fast_config("claude"))
    assert llm_env.completion_calls() == 2 * 20
    assert all(len(read_prompt({"messages": r.body["messages"]})[1]) == 1 for r in _scoring_requests(llm_env))
    # one-window prompts get one-window examples (a small model copies the length of the examples' answers)
    def text(content):  # Anthropic content blocks or a plain string
        return "".join(b["text"] for b in content) if isinstance(content, list) else content

    shots = [text(m["content"]) for r in _scoring_requests(llm_env) for m in r.body["messages"][:-1] if m["role"] == "assistant"]
    assert shots and set(shots) <= {"[0]", "[1]"}
    assert (_read(run, "latent_scores")["f1"] == 1).all()


def test_cli_command(llm_env, run, tmp_path):
    import typer

    from interp_eval.scoring.command import score

    app = typer.Typer()
    app.command()(score)
    llm_env.answer = truth_answer(truth(run))
    args = ["--run", str(run), "--model", "claude", "--scorer", "detection", "--latents", "1", "--llm-cache", str(tmp_path / "c.sqlite")]
    res = CliRunner().invoke(app, args + ["--dry-run"])
    assert res.exit_code == 0, res.output
    assert "detection: 2 jobs (0 control), 8 calls" in res.output and llm_env.completion_calls() == 0
    res = CliRunner().invoke(app, args + ["--freq-adjust"])
    assert res.exit_code == 0, res.output
    assert "F1 mean [95% CI]" in res.output and "1.000 [1.000, 1.000]" in res.output
    res = CliRunner().invoke(app, ["--run", str(run), "--scorer", "nonesuch"])
    assert isinstance(res.exception, UserError) and "--scorer nonesuch" in str(res.exception)


def test_batch_mode_and_nothing_to_score(llm_env, fast_config, run):
    llm_env.answer = truth_answer(truth(run))
    out = run_score_stage(run, ScoreConfig(scorers=("detection",), latents=1), fast_config("claude", batch=True))
    assert out["complete"] and llm_env.count("anthropic_batch_create") == 1 and llm_env.count("messages") == 0
    assert (_read(run, "latent_scores")["f1"] == 1).all()
    assert not (run / "llm_batch_score.json").exists()  # the batch finished: no pending state left
    with pytest.raises(UserError, match="nothing to score"):
        run_score_stage(run, ScoreConfig(scorers=("detection",), latents=[99]), fast_config("claude"))
