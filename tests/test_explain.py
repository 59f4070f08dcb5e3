"""The explain stage through real HTTP against the local fake provider server."""

import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from fake_llm_server import FakeItemError
from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401


from interp_eval.explain.prompt import parse_explanation
from interp_eval.explain.stage import ExplainConfig, run_explain_stage
from interp_eval.prompting import load_dialogue

GOOD = "The marked tokens share a word.\n[EXPLANATION]: the word {w}"


def word_answer(req):
    """Answers with the most common marked word of the last user message."""
    text = req["messages"][-1]["content"]
    if "Reply again" in text:
        text = req["messages"][-3]["content"]
    marked = re.findall(r"<<(.*?)>>", text)
    word = max(set(marked), key=marked.count).strip().lower() if marked else "nothing"
    return GOOD.format(w=word)


def test_explains_live_latents_from_explain_windows_only(llm_env, fast_config, mined):
    run, info = mined
    llm_env.answer = word_answer
    out = run_explain_stage(run, ExplainConfig(), fast_config("claude"))
    df = pd.read_parquet(run / "explanations.parquet")
    assert out["explained"] == 10 and out["failed"] == 0  # 2 coders x 5 live latents; 1 too rare each
    assert len(df) == 10 and df["parse_ok"].all()
    assert set(df.loc[df["coder"] == "sae-x", "explanation"]) == {f"the word {w}" for w in ["the", "of", "to", "and", "in"]}
    assert df["prompt_version"].str.contains("explain_system@").all()
    # no test window text ever reached the explainer
    ctx = pd.read_parquet(run / "contexts.parquet")
    win = pd.read_parquet(run / "windows.parquet").set_index("window_id")
    prompts = "\n".join(m["content"] for r in llm_env.log for m in r.body.get("messages", []) if isinstance(m.get("content"), str))
    for w in ctx[(ctx["split"] == "test") & (ctx["kind"] == "quantile")]["window_id"].unique()[:20]:
        assert "".join(win.at[w, "tokens"]).strip()[:60] not in prompts or w in set(ctx[ctx["split"] == "explain"]["window_id"])
    # the fixed system + few-shot prefix is marked for Anthropic prompt caching
    body = llm_env.log[0].body
    n_prefix = len(load_dialogue("explain_fewshot"))
    assert any("cache_control" in str(m) for m in body["messages"][:n_prefix])


def test_second_run_makes_no_calls_and_more_latents_pay_only_for_new_ones(llm_env, fast_config, mined):
    run, _ = mined
    llm_env.answer = word_answer
    run_explain_stage(run, ExplainConfig(latents=2), fast_config("claude"))
    first = llm_env.completion_calls()
    assert first == 4
    run_explain_stage(run, ExplainConfig(latents=2), fast_config("claude"))
    assert llm_env.completion_calls() == first
    run_explain_stage(run, ExplainConfig(latents=3), fast_config("claude"))
    assert llm_env.completion_calls() == first + 2


def test_high_fault_rate_still_explains_everything(llm_env, fast_config, mined):
    run, _ = mined
    llm_env.answer = word_answer
    llm_env.fault_rate = 0.4
    llm_env.slow_seconds = 1.5
    out = run_explain_stage(run, ExplainConfig(), fast_config("claude"))
    assert out["failed"] == 0 and out["explained"] == 10
    assert sum(llm_env.faults.values()) > 0


def test_unparseable_answers_are_retried_then_counted_and_never_paid_twice(llm_env, fast_config, mined):
    run, _ = mined
    def answer(req):
        first = req["messages"][-1]["content"]
        if "Reply again" in first:
            return "still no format"
        if "<<of>>" in first:
            return "I think it is about the word of."  # never parseable
        return word_answer(req)

    llm_env.answer = answer
    out = run_explain_stage(run, ExplainConfig(coders=("sae-x",), max_retries=2), fast_config("claude"))
    df = pd.read_parquet(run / "explanations.parquet").set_index("latent")
    assert out["failed"] == 1 and not df.loc[1, "parse_ok"] and df.loc[1, "attempts"] == 3
    assert "no parseable" in df.loc[1, "failure"]
    ledger = pd.read_parquet(run / "llm_usage.parquet")  # every answer is in the LLM ledger, tagged with its latent
    asked = ledger[(ledger["coder"] == "sae-x") & (ledger["latent"] == 1)]
    assert len(asked) == 3 and (asked["stage"] == "explain").all() and (asked["input_tokens"] > 0).all()
    # a re-run replays the failed latent's cached answers (nothing is paid twice), then asks a new corrective turn
    calls = llm_env.completion_calls()
    llm_env.answer = lambda req: GOOD.format(w="of")
    out = run_explain_stage(run, ExplainConfig(coders=("sae-x",), max_retries=2), fast_config("claude"))
    assert out["failed"] == 0 and out["explained"] == 1 and llm_env.completion_calls() == calls + 1


def test_provider_errors_are_failures_with_reasons_and_finished_latents_are_kept(llm_env, fast_config, mined):
    run, _ = mined

    def answer(req):
        if "<<of>>" in req["messages"][-1]["content"]:
            raise FakeItemError("rejected")
        return word_answer(req)

    llm_env.answer = answer
    out = run_explain_stage(run, ExplainConfig(coders=("sae-x",)), fast_config("claude"))
    df = pd.read_parquet(run / "explanations.parquet").set_index("latent")
    assert out["failed"] == 1 and "400" in df.loc[1, "failure"]
    calls = llm_env.completion_calls()
    llm_env.answer = word_answer
    run_explain_stage(run, ExplainConfig(coders=("sae-x",)), fast_config("claude"))
    assert llm_env.completion_calls() == calls + 1  # only the failed latent is asked again


def test_cli_against_the_server_and_missing_key(llm_env, mined, monkeypatch, tmp_path):
    run, _ = mined
    llm_env.answer = word_answer
    from interp_eval.cli import app

    runner = CliRunner()
    monkeypatch.setenv("INTERP_EVAL_PROGRESS", "0")
    args = ["explain", "--run", str(run), "--model", "claude", "--latents", "2", "--llm-cache", str(tmp_path / "c.sqlite")]
    dry = runner.invoke(app, args + ["--dry-run"])
    assert dry.exit_code == 0 and "4 calls to send" in dry.stdout and llm_env.completion_calls() == 0
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0, ok.output
    assert "explained 4 latents" in ok.stdout
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    bad = runner.invoke(app, ["explain", "--run", str(run), "--model", "claude", "--latents", "3"])
    assert bad.exit_code == 2 and "ANTHROPIC_API_KEY" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_parse_explanation():
    assert parse_explanation("reasoning\n[EXPLANATION]: digits of years") == "digits of years"
    assert parse_explanation("Explanation: the word of") == "the word of"
    assert parse_explanation("[EXPLANATION]:  ") is None
    assert parse_explanation('[EXPLANATION]: "digits of years"') == "digits of years"
    assert parse_explanation('[EXPLANATION]: "to" before an infinitive') == '"to" before an infinitive'
    assert parse_explanation('[EXPLANATION]: "up" and "down"') == '"up" and "down"'
    assert parse_explanation('[EXPLANATION]: ""') is None
    assert parse_explanation("no format") is None
    assert parse_explanation(None) is None
