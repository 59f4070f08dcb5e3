"""Provider prompt caching end to end against the local test server (real SDKs, real HTTP): where the cache
breakpoints go (and that they are the ones bench/llm_cost.py prices), how cache reads and writes reach the
ledger from the provider's usage fields, the client's warm-up of a new prefix, batches, and the dry run."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pandas as pd
import pytest
from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401

from interp_eval.explain.prompt import Window, build_request as explain_request
from interp_eval.llm import LLMRequest, dry_run, make_client
from interp_eval.llm.client import chars_tokens
from interp_eval.llm.pricing import PriceTable
from interp_eval.llm.prompt_cache import CacheRule, PromptCache, cache_rule, split_body, wire_body
from interp_eval.llm.usage import billing, ledger_rows, CallTag
from interp_eval.scoring.classifier import build_request as score_request
from interp_eval.scoring.stage import ScoreConfig, with_backend_format
from interp_eval.scoring.testset import ScoreWindow, mark_fuzz

LONG_SYSTEM = "You score explanations of language-model features against text excerpts, one digit each. " * 60  # ~1,300 tokens


def run(coro):
    return asyncio.run(coro)


async def _many(cfg, requests, **kw):
    async with make_client(cfg) as llm:
        return await llm.complete_many(requests, **kw), llm.usage


def _hosted_requests():
    """The requests the stages build for a hosted model: one explain call and one latent's scoring prompts."""
    rng = np.random.default_rng(0)
    tokens = [[f" w{i}{j}" for j in range(32)] for i in range(20)]
    acts = [rng.uniform(0, 1, 32).astype(np.float32) * (i < 10) for i in range(20)]
    fmt = with_backend_format(ScoreConfig(), "anthropic")
    ws = [ScoreWindow(i, int(i < 10), 0 if i < 10 else None, t, a) for i, (t, a) in enumerate(zip(tokens, acts))]
    mark_fuzz(ws, 0, "c", 0)
    groups = [ws[i : i + fmt.windows_per_prompt] for i in range(0, len(ws), fmt.windows_per_prompt)]
    explain = explain_request([Window(t, list(a + 0.1)) for t, a in zip(tokens, acts)])
    return [explain] + [score_request(s, "months of the year", g, logprobs=False) for s in ("detection", "fuzzing") for g in groups]


# -- breakpoints ------------------------------------------------------------------------------------------------
def test_breakpoints_are_where_the_bench_prices_them(llm_env, fast_config):
    """bench/llm_cost.py prices prompt_cache.wire_body(request): the server must receive exactly that body, its
    one breakpoint at the end of the fixed prefix (system + few-shot, or the system prompt alone)."""
    reqs = _hosted_requests()
    run(_many(fast_config("claude", concurrency=1), reqs))
    got = llm_env.bodies("messages")
    assert len(got) == len(reqs)
    for req, body in zip(reqs, got):
        sent = {k: body[k] for k in ("model", "system", "messages", "max_tokens")}
        assumed = wire_body("anthropic", "claude-sonnet-4-5", req)
        assert sent == {k: assumed[k] for k in sent}
        marks = [i for i, p in enumerate(_blocks(body)) if "cache_control" in p]
        assert len(marks) == 1 <= 4  # the API allows 4 breakpoints
        assert marks[0] == req.cache_prefix  # block 0 is the system prompt, block n the n-th message
        assert len(split_body(body, "anthropic", chars_tokens).points) == 1
    explain = got[0]
    assert "cache_control" in json.dumps(explain["messages"][len(explain["messages"]) - 2])  # its last few-shot answer


def _blocks(body):
    return [*([body["system"][0]] if isinstance(body.get("system"), list) else [body.get("system")]),
            *[m["content"][0] if isinstance(m["content"], list) else m["content"] for m in body["messages"]]]


def test_openai_sends_the_shared_prefix_first_unmarked(llm_env, fast_config):
    reqs = _hosted_requests()
    run(_many(fast_config("gpt-4.1-mini", concurrency=1), reqs))
    for req, body in zip(reqs, llm_env.bodies("chat")):
        assert "cache_control" not in json.dumps(body)
        assert body["messages"][0] == {"role": "system", "content": req.system}
        assert body["messages"][1 : 1 + req.cache_prefix] == [dict(m) for m in req.messages[: req.cache_prefix]]


# -- accounting -----------------------------------------------------------------------------------------------
def _shared(n, system=LONG_SYSTEM, stage="detection"):
    return [LLMRequest(messages=[{"role": "user", "content": f"window {i}: the figures published in March"}], system=system,
                       cache_prefix=0, max_tokens=5, stage=stage) for i in range(n)]


def test_anthropic_cache_reads_and_writes_follow_the_usage_fields(llm_env, fast_config):
    llm_env.cache_min_tokens = 200
    reqs = _shared(6) + [LLMRequest.user("short", system="tiny", cache_prefix=0, max_tokens=5)]
    results, usage = run(_many(fast_config("claude-sonnet-4-5", concurrency=1), reqs))
    served = llm_env.usage_log
    assert len(served) == 7  # each answer's usage is the provider's, field by field (the order they were served in differs)
    assert sorted((r.usage.input_tokens, r.usage.cache_read_tokens, r.usage.cache_write_tokens, r.usage.output_tokens) for r in results) == sorted(
        (u["input_tokens"], u["cache_read_input_tokens"], u["cache_creation_input_tokens"], u["output_tokens"]) for u in served)
    first, rest, short = results[0].usage, [r.usage for r in results[1:6]], results[6].usage
    assert first.cache_write_tokens > 200 and first.cache_read_tokens == 0
    assert all(u.cache_read_tokens == first.cache_write_tokens and u.cache_write_tokens == 0 for u in rest)
    assert short.cache_read_tokens == short.cache_write_tokens == 0  # under the minimum
    p = PriceTable.load().price("claude-sonnet-4-5")
    for r in results:  # each kind of token at its own price, recorded apart in the ledger
        u = r.usage
        assert r.cost_parts == pytest.approx({"input": u.input_tokens * p.input / 1e6, "cache_read": u.cache_read_tokens * p.cache_read / 1e6,
                                              "cache_write": u.cache_write_tokens * p.cache_write / 1e6, "output": u.output_tokens * p.output / 1e6})
        assert r.cost_usd == pytest.approx(sum(r.cost_parts.values()))
    ledger = pd.DataFrame(ledger_rows(CallTag("c", 0, scorer="detection", control="none"), results))
    bill = billing(ledger, ["backend"]).iloc[0]
    assert bill["cache_read_tokens"] == sum(u["cache_read_input_tokens"] for u in served)
    assert bill["cache_write_tokens"] == sum(u["cache_creation_input_tokens"] for u in served)
    assert bill["input_tokens"] == sum(u["input_tokens"] for u in served)
    assert bill["cache_read_cost_usd"] == pytest.approx(bill["cache_read_tokens"] * p.cache_read / 1e6)
    assert bill["cost_usd"] == pytest.approx(sum(r.cost_usd for r in results))


def test_openai_cached_tokens_are_cache_reads_within_prompt_tokens(llm_env, fast_config):
    llm_env.openai_cache_min_tokens = 1024
    llm_env.openai_cache_step = 128
    results, _ = run(_many(fast_config("gpt-4.1-mini", concurrency=1), _shared(4)))
    served = llm_env.usage_log
    assert served[0]["prompt_tokens_details"]["cached_tokens"] == 0
    for r, u in zip(results, served):
        cached = u["prompt_tokens_details"]["cached_tokens"]
        assert r.usage.cache_read_tokens == cached and r.usage.input_tokens == u["prompt_tokens"] - cached
        assert r.usage.cache_write_tokens == 0  # OpenAI bills no writes
    assert results[1].usage.cache_read_tokens >= 1024 and (results[1].usage.cache_read_tokens - 1024) % 128 == 0
    p = PriceTable.load().price("gpt-4.1-mini")
    assert results[1].cost_parts["cache_read"] == pytest.approx(results[1].usage.cache_read_tokens * p.cache_read / 1e6)


def test_a_new_prefix_is_written_once_then_read(llm_env, fast_config):
    """Sent all at once, requests sharing a prefix the provider caches wait for the first one's answer: one write."""
    llm_env.latency = 0.05
    results, _ = run(_many(fast_config("claude-sonnet-4-5", concurrency=16), _shared(12) + _shared(3, "short and uncached")))
    writes = [r.usage.cache_write_tokens for r in results[:12]]
    assert sum(w > 0 for w in writes) == 1 and sum(r.usage.cache_read_tokens > 0 for r in results[:12]) == 11
    assert llm_env.max_inflight > 1  # the rest still go out together


# -- batches -----------------------------------------------------------------------------------------------------
def test_anthropic_batch_keeps_the_breakpoints_and_prices_cache_tokens(llm_env, fast_config, tmp_path):
    reqs = _hosted_requests()[:3] + _shared(3)
    results, _ = run(_many(fast_config("claude-sonnet-4-5", batch=True), reqs, batch_state_path=tmp_path / "b.json"))
    [create] = [r.body for r in llm_env.log if r.endpoint == "anthropic_batch_create"] or [None]
    items = {i["custom_id"]: i["params"] for i in create["requests"]}
    assert len(items) == len(reqs)
    for req, params in zip(reqs, items.values()):
        assumed = wire_body("anthropic", "claude-sonnet-4-5", req)
        assert params["messages"] == assumed["messages"] and params.get("system") == assumed.get("system")
    assert all(r.ok and r.batch for r in results)
    p = PriceTable.load().price("claude-sonnet-4-5")
    assert any(r.usage.cache_read_tokens for r in results)
    for r in results:
        assert r.cost_parts["cache_read"] == pytest.approx(r.usage.cache_read_tokens * p.cache_read / 1e6 * 0.5)
        assert r.cost_parts["cache_write"] == pytest.approx(r.usage.cache_write_tokens * p.cache_write / 1e6 * 0.5)


# -- the model of the provider's cache (dry run, bench) ----------------------------------------------------------
def test_prompt_cache_model_reads_after_one_write_from_the_minimum_on():
    count = chars_tokens
    body = lambda sys_text, user: wire_body("anthropic", "m", LLMRequest(  # noqa: E731
        messages=[{"role": "user", "content": user}], system=sys_text, cache_prefix=0))
    cache = PromptCache(CacheRule("anthropic", 1024), count)
    first, second = cache.bill(body(LONG_SYSTEM, "a")), cache.bill(body(LONG_SYSTEM, "bb"))
    fixed = count(LONG_SYSTEM) + 4
    assert (first.cache_write_tokens, first.cache_read_tokens) == (fixed, 0)
    assert (second.cache_write_tokens, second.cache_read_tokens) == (0, fixed)
    assert second.input_tokens == count("bb") + 4
    short = cache.bill(body("tiny", "a"))
    assert short.cache_read_tokens == short.cache_write_tokens == 0  # under the minimum: plain input
    assert cache_rule("anthropic", "claude-haiku-4-5", PriceTable.load()).min_tokens == 4096
    assert cache_rule("local", "local") is None


def test_dry_run_splits_input_into_uncached_and_prompt_cache(fast_config):
    cfg = fast_config("claude-sonnet-4-5", use_cache=False)
    est = dry_run(cfg, _shared(10))
    fixed = chars_tokens(LONG_SYSTEM) + 4
    assert est.cache_write_tokens == fixed and est.cache_read_tokens == 9 * fixed
    assert est.input_tokens == est.uncached_input_tokens + est.cache_read_tokens + est.cache_write_tokens
    p = PriceTable.load().price("claude-sonnet-4-5")
    assert est.cost_parts["cache_read"] == pytest.approx(9 * fixed * p.cache_read / 1e6)
    assert est.cost_usd == pytest.approx(sum(est.cost_parts.values()))
    line = est.describe()
    assert "prompt-cache reads at $0.3/M" in line and "prompt-cache writes at $3.75/M" in line and "uncached input at $3/M" in line
    haiku = dry_run(fast_config("claude-haiku-4-5", use_cache=False), _shared(10))
    assert haiku.cache_read_tokens == 0 and haiku.uncached_input_tokens == est.input_tokens  # under Haiku 4.5's 4,096
    local = dry_run(fast_config("local", use_cache=False), _shared(3))
    assert local.cost_usd == 0.0 and local.cache_read_tokens == 0
