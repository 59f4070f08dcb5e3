"""The LLM layer against a local server speaking the providers' wire protocols (real SDKs, real HTTP)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from pathlib import Path

import pytest
from fake_llm_server import FakeAnswer, FakeItemError
from llm_fixtures import ANTHROPIC_TEST_KEY, OPENAI_TEST_KEY, fake_server, fast_config, llm_env  # noqa: F401

from interp_eval.errors import UserError
from interp_eval.llm import (
    LLMConfig,
    LLMRequest,
    ResponseCache,
    choice_probabilities,
    dry_run,
    first_choice_probabilities,
    make_client,
    resolve_model,
)
from interp_eval.llm.limiter import TokenBucket


def run(coro):
    return asyncio.run(coro)


async def _many(cfg, requests, **kw):
    async with make_client(cfg) as llm:
        results = await llm.complete_many(requests, **kw)
        return results, llm.usage


def _reqs(n, prefix="question", **kw):
    return [LLMRequest.user(f"{prefix} {i}: does this window mention a fruit?", max_tokens=20, **kw) for i in range(n)]


# -- basics ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["claude", "gpt-4.1-mini"])
def test_answers_come_back_in_order_with_usage(llm_env, fast_config, model):
    llm_env.answer = lambda req: "A: " + req["messages"][-1]["content"].split(":")[0]
    results, usage = run(_many(fast_config(model), _reqs(12)))
    assert [r.text for r in results] == [f"A: question {i}" for i in range(12)]
    assert all(r.ok and not r.cached and r.usage.input_tokens > 0 and r.usage.output_tokens > 0 for r in results)
    backend = "anthropic" if model == "claude" else "openai"
    assert {r.backend for r in results} == {backend}
    assert llm_env.completion_calls() == 12
    assert usage.summary()["llm"]["calls"] == 12


def test_every_request_answered_despite_40_percent_faults(llm_env, fast_config):
    llm_env.answer = lambda req: req["messages"][-1]["content"].split(":")[0]
    llm_env.fault_rate = 0.4  # 429 (retry-after), 500, 529, slower than the timeout, malformed JSON
    llm_env.slow_seconds = 0.6
    llm_env.retry_after = "0.02"
    cfg = fast_config("claude", timeout=0.45, max_attempts=14)  # above the server's queueing on a loaded 2-core CI machine; "slow" (0.6 s) still times out
    results, usage = run(_many(cfg, _reqs(30)))
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert [r.text for r in results] == [f"question {i}" for i in range(30)]
    assert set(llm_env.faults) == {"429", "500", "529", "slow", "malformed"}
    assert sum(llm_env.faults.values()) >= 8
    assert sum(r.attempts for r in results) == llm_env.completion_calls()
    assert usage.summary()["llm"]["failures"] == 0


def test_retry_after_header_is_honoured(llm_env, fast_config):
    llm_env.retry_after = "0.4"
    llm_env.fault_queue.append("429")
    [r], _ = run(_many(fast_config("gpt-4o"), _reqs(1)))
    assert r.ok and r.attempts == 2
    t = [e.t for e in llm_env.log if e.endpoint == "chat"]
    assert t[1] - t[0] >= 0.38  # backoff alone would have waited ~0.01 s


def test_exhausted_retries_become_a_failure_with_a_reason(llm_env, fast_config):
    llm_env.fault_queue.extend(["500", "529", "500"])
    cfg = fast_config("claude", max_attempts=3)
    [r], usage = run(_many(cfg, _reqs(1)))
    assert not r.ok and r.text is None
    assert r.failure.attempts == 3 and r.failure.status_code == 500
    assert r.failure.error_type == "InternalServerError" and "500" in r.error
    assert usage.summary()["llm"]["failures"] == 1
    # failures are not cached: the next run asks again and gets the answer
    [again], _ = run(_many(cfg, _reqs(1)))
    assert again.ok and not again.cached and llm_env.completion_calls() == 4


def test_a_bad_request_fails_at_once_without_retries(llm_env, fast_config):
    def answer(req):
        raise FakeItemError("prompt is too long")

    llm_env.answer = answer
    [r], _ = run(_many(fast_config("gpt-4o"), _reqs(1)))
    assert not r.ok and r.failure.attempts == 1 and r.failure.status_code == 400
    assert "prompt is too long" in r.error


def test_a_call_slower_than_the_timeout_is_cut_off_and_fails_as_a_provider_error(llm_env, fast_config):
    llm_env.latency = 5.0
    t0 = time.monotonic()
    results, _ = run(_many(fast_config(timeout=0.5, max_attempts=2), _reqs(1)))
    assert time.monotonic() - t0 < 3  # two tries of 0.5 s, not the server's 5 s
    assert not results[0].ok and results[0].attempts == 2 and "time" in results[0].error.lower()


def test_the_timeout_starts_when_a_request_is_sent_not_while_it_queues(llm_env, fast_config):
    llm_env.latency = 0.3
    results, _ = run(_many(fast_config(timeout=0.6, concurrency=1, max_attempts=1), _reqs(4)))  # 1.2 s in all, one at a time
    assert all(r.ok for r in results)


@pytest.mark.parametrize("option", [("--timeout", "0"), ("--max-attempts", "0")])
def test_a_bad_timeout_or_max_attempts_is_one_line(option, tmp_path):
    from typer.testing import CliRunner

    from interp_eval.cli import app

    res = CliRunner().invoke(app, ["explain", "--run", str(tmp_path), "--model", "claude", *option])
    assert res.exit_code == 2 and option[0] in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_slow_and_malformed_responses_are_retried(llm_env, fast_config):
    llm_env.fault_queue.extend(["slow", "malformed"])
    llm_env.slow_seconds = 0.8
    [r], _ = run(_many(fast_config("claude", timeout=0.25), _reqs(1)))
    assert r.ok and r.attempts == 3


# -- cache -------------------------------------------------------------------------------------------------
def test_second_identical_run_makes_zero_http_calls(llm_env, fast_config):
    cfg = fast_config("claude")
    first, _ = run(_many(cfg, _reqs(10)))
    calls = llm_env.count()
    second, usage = run(_many(cfg, _reqs(10)))
    assert llm_env.count() == calls  # nothing at all went over the wire
    assert [r.text for r in second] == [r.text for r in first]
    assert all(r.cached and r.cost_usd == 0.0 for r in second)
    assert [r.usage for r in second] == [r.usage for r in first]
    s = usage.summary()["llm"]
    assert s["cache_hits"] == 10 and s["cost_usd"] == 0.0 and s["input_tokens"] == sum(r.usage.input_tokens for r in first)


def test_cached_response_looks_up_without_sending_and_counts_a_hit(llm_env, fast_config):
    cfg = fast_config("claude")
    [answered], _ = run(_many(cfg, _reqs(1)))
    calls = llm_env.count()

    async def look_up():
        async with make_client(cfg) as llm:
            hit = llm.cached_response(_reqs(1)[0])
            miss = llm.cached_response(_reqs(1, prefix="unseen")[0])
            return hit, miss, llm.usage.summary()["llm"]["cache_hits"]

    hit, miss, hits = run(look_up())
    assert hit is not None and hit.cached and hit.text == answered.text
    assert miss is None and hits == 1 and llm_env.count() == calls


def test_cache_key_covers_model_params_and_backend(llm_env, fast_config):
    base = LLMRequest.user("same prompt", max_tokens=20)
    variants = [
        base,
        LLMRequest.user("same prompt", max_tokens=21),
        LLMRequest.user("same prompt", max_tokens=20, temperature=0.5),
        LLMRequest.user("same prompt", max_tokens=20, system="be brief"),
        LLMRequest.user("same prompt", max_tokens=20, logprobs=True, top_logprobs=3),
    ]
    run(_many(fast_config("gpt-4o"), variants))
    run(_many(fast_config("gpt-4o-mini"), [base]))
    run(_many(fast_config("claude"), [base]))
    assert llm_env.completion_calls() == 7
    # not part of the key: the stage, the prefix marker, the dry-run expectation
    run(_many(fast_config("gpt-4o"), [LLMRequest.user("same prompt", max_tokens=20, stage="fuzz", cache_prefix=0, expected_output_tokens=3)]))
    assert llm_env.completion_calls() == 7


def test_identical_requests_in_one_run_are_sent_once(llm_env, fast_config):
    llm_env.latency = 0.1
    results, usage = run(_many(fast_config("claude"), [LLMRequest.user("dup", max_tokens=5)] * 6))
    assert llm_env.completion_calls() == 1
    assert sum(not r.cached for r in results) == 1 and usage.summary()["llm"]["cache_hits"] == 5


def test_a_killed_run_only_pays_for_unfinished_calls_when_restarted(llm_env, fast_config):
    llm_env.latency = 0.15
    cfg = fast_config("claude", concurrency=4)
    requests = _reqs(24)

    async def run_then_kill():
        async with make_client(cfg) as llm:
            task = asyncio.ensure_future(llm.complete_many(requests))
            while len(llm.usage.rows()) < 10:  # ten answers received and cached
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(run_then_kill())
    time.sleep(0.3)  # let the server finish the requests the client walked away from
    cache = ResponseCache(cfg.cache_path)
    done = len(cache)
    cache.close()
    assert 10 <= done < 24
    before = llm_env.completion_calls()
    results, usage = run(_many(cfg, requests))
    assert all(r.ok for r in results)
    assert llm_env.completion_calls() - before == 24 - done
    assert usage.summary()["llm"]["cache_hits"] == done


def test_cache_tolerates_two_clients_writing_the_same_file(llm_env, fast_config):
    cfg = fast_config("gpt-4o")

    async def both():
        async with make_client(cfg) as a, make_client(cfg) as b:
            return await asyncio.gather(a.complete_many(_reqs(20, "a")), b.complete_many(_reqs(20, "b")))

    ra, rb = run(both())
    assert all(r.ok for r in ra + rb)
    cache = ResponseCache(cfg.cache_path)
    assert len(cache) == 40
    assert cache._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    cache.close()


# -- concurrency and rate limits -------------------------------------------------------------------------
def test_calls_overlap(llm_env, fast_config):
    llm_env.latency = 0.3
    t0 = time.perf_counter()
    results, _ = run(_many(fast_config("claude", concurrency=8), _reqs(16)))
    wall = time.perf_counter() - t0
    assert all(r.ok for r in results)
    assert wall < 16 * 0.3 / 3  # sequential would take 4.8 s
    assert 4 <= llm_env.max_inflight <= 8


def test_concurrency_bound_is_respected(llm_env, fast_config):
    llm_env.latency = 0.05
    run(_many(fast_config("gpt-4o", concurrency=3), _reqs(12)))
    assert llm_env.max_inflight <= 3


def test_token_bucket_paces_requests():
    async def go():
        bucket = TokenBucket(per_minute=600)  # 10 a second after a burst of 600
        await bucket.take(600)
        t0 = time.perf_counter()
        await bucket.take(3)
        return time.perf_counter() - t0

    assert 0.25 <= run(go()) < 0.6


def test_rpm_limit_slows_a_run(llm_env, fast_config):
    t0 = time.perf_counter()
    run(_many(fast_config("claude", rpm=120), _reqs(123)))  # a burst of 120, then 2 a second
    assert time.perf_counter() - t0 >= 1.2


# -- usage, cost, dry run ----------------------------------------------------------------------------------
def test_usage_and_cost_sum_per_stage(llm_env, fast_config, tmp_path, monkeypatch):
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"models": {"my-model": {"input": 2.0, "output": 10.0, "cache_read": 0.5, "cache_write": 2.5}}}))
    monkeypatch.setenv("INTERP_EVAL_PRICES", str(prices))
    cfg = fast_config("my-model", backend="openai")
    reqs = _reqs(4, stage="explain") + _reqs(6, "det", stage="detection")
    results, usage = run(_many(cfg, reqs))
    for r in results:
        assert r.cost_usd == pytest.approx((r.usage.input_tokens * 2.0 + r.usage.output_tokens * 10.0) / 1e6)
    s = usage.summary()
    assert s["explain"]["calls"] == 4 and s["detection"]["calls"] == 6
    assert s["detection"]["input_tokens"] == sum(r.usage.input_tokens for r in results[4:])
    assert s["detection"]["cost_usd"] == pytest.approx(sum(r.cost_usd for r in results[4:]))
    assert usage.total()["cost_usd"] == pytest.approx(sum(r.cost_usd for r in results))
    rows = usage.rows()
    assert len(rows) == 10 and {"stage", "model", "cached", "cost_usd", "input_tokens"} <= set(rows[0])
    import pandas as pd

    assert len(pd.DataFrame(rows)) == 10  # Parquet-friendly


def test_anthropic_cache_tokens_are_priced(llm_env, fast_config):
    system = "You score explanations. " * 40
    reqs = [LLMRequest(messages=[{"role": "user", "content": f"window {i}"}], system=system, cache_prefix=0, max_tokens=5) for i in range(3)]
    cfg = fast_config("claude-haiku-4-5", concurrency=1)
    results, _ = run(_many(cfg, reqs))
    assert results[0].usage.cache_write_tokens > 0 and results[1].usage.cache_read_tokens > 0
    u = results[1].usage
    assert results[1].cost_usd == pytest.approx((u.input_tokens * 1.0 + u.output_tokens * 5.0 + u.cache_read_tokens * 0.1) / 1e6)


def test_unknown_model_costs_none_not_zero_and_warns_once(llm_env, fast_config, caplog):
    caplog.set_level(logging.WARNING, logger="interp_eval.llm")
    results, usage = run(_many(fast_config("mystery-model-7b", backend="openai"), _reqs(3)))
    assert all(r.ok and r.cost_usd is None for r in results)
    assert usage.summary()["llm"]["cost_usd"] is None and usage.summary()["llm"]["cost_unknown_calls"] == 3
    assert sum("mystery-model-7b" in m for m in caplog.messages) == 1


def test_dry_run_estimates_without_sending(llm_env, fast_config):
    cfg = fast_config("claude")
    run(_many(cfg, _reqs(3)))
    calls = llm_env.count()
    est = dry_run(cfg, _reqs(10) + _reqs(2))  # two duplicates
    assert llm_env.count() == calls
    assert (est.calls, est.unique_calls, est.cached, est.to_send) == (12, 10, 3, 7)
    assert est.output_tokens == 7 * 20
    chars = sum(len(r.messages[0]["content"]) for r in _reqs(10)[3:])
    assert chars // 4 <= est.input_tokens <= chars // 4 + 7 * 8
    assert est.cost_usd == pytest.approx((est.input_tokens * 3.0 + est.output_tokens * 15.0) / 1e6)
    batch = dry_run(fast_config("claude", batch=True), _reqs(10), expected_output_tokens=5)
    assert batch.output_tokens == 7 * 5 and batch.cost_usd == pytest.approx((batch.input_tokens * 3.0 + 35 * 15.0) / 1e6 * 0.5)


def test_dry_run_needs_no_key(monkeypatch, fast_config):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    est = dry_run(fast_config("claude", use_cache=False), _reqs(4))
    assert est.to_send == 4 and est.cost_usd > 0


# -- logprobs ------------------------------------------------------------------------------------------------
def test_openai_logprobs_give_per_position_probabilities(llm_env, fast_config):
    llm_env.answer = lambda req: "[1,0,0,1,0]"
    [r], _ = run(_many(fast_config("gpt-4o"), [LLMRequest.user("which windows?", logprobs=True, top_logprobs=5)]))
    probs = choice_probabilities(r.logprobs, ("0", "1"))
    assert [max(p, key=p.get) for p in probs] == ["1", "0", "0", "1", "0"]
    assert probs[0]["1"] == pytest.approx(0.8) and probs[1]["0"] == pytest.approx(0.8)
    body = llm_env.bodies("chat")[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 5


def test_explicit_logprobs_from_the_server(llm_env, fast_config):
    llm_env.answer = lambda req: FakeAnswer("Yes", [("Yes", math.log(0.6), [("Yes", math.log(0.6)), ("No", math.log(0.3)), (" yes", math.log(0.05))])])
    [r], _ = run(_many(fast_config("gpt-4o"), [LLMRequest.user("q?", logprobs=True, top_logprobs=3)]))
    p = first_choice_probabilities(r.logprobs, ("yes", "no"))
    assert p["yes"] == pytest.approx(0.65 / 0.95) and p["no"] == pytest.approx(0.3 / 0.95)


def test_anthropic_gives_no_logprobs(llm_env, fast_config):
    [r], _ = run(_many(fast_config("claude"), [LLMRequest.user("q?", logprobs=True, top_logprobs=5)]))
    assert r.ok and r.logprobs is None
    with pytest.raises(ValueError):
        choice_probabilities(r.logprobs)


# -- prompt caching --------------------------------------------------------------------------------------
def test_anthropic_cache_control_marks_the_fixed_prefix(llm_env, fast_config):
    msgs = [
        {"role": "user", "content": "Here are examples ..."},
        {"role": "assistant", "content": "Understood."},
        {"role": "user", "content": "Now score this window."},
    ]
    reqs = [
        LLMRequest(messages=msgs, system="You are a scorer.", cache_prefix=2),
        LLMRequest(messages=msgs[:1], system="You are a scorer.", cache_prefix=0),
        LLMRequest(messages=[{"role": "user", "content": "no prefix"}], system="You are a scorer."),
    ]
    run(_many(fast_config("claude", concurrency=1), reqs))
    b1, b2, b3 = llm_env.bodies("messages")
    assert b1["system"] == "You are a scorer."
    assert b1["messages"][0]["content"] == "Here are examples ..."
    assert b1["messages"][1]["content"] == [{"type": "text", "text": "Understood.", "cache_control": {"type": "ephemeral"}}]
    assert b1["messages"][2]["content"] == "Now score this window."
    assert b2["system"] == [{"type": "text", "text": "You are a scorer.", "cache_control": {"type": "ephemeral"}}]
    assert "cache_control" not in json.dumps(b3)


def test_openai_prefix_goes_first_unmarked(llm_env, fast_config):
    run(_many(fast_config("gpt-4o"), [LLMRequest.user("window", system="fixed instructions", cache_prefix=0)]))
    [body] = llm_env.bodies("chat")
    assert body["messages"][0] == {"role": "system", "content": "fixed instructions"}
    assert "cache_control" not in json.dumps(body)


# -- keys, selection, errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("model,var", [("claude", "ANTHROPIC_API_KEY"), ("gpt-4o", "OPENAI_API_KEY")])
def test_missing_key_is_a_one_line_user_error(monkeypatch, model, var, fast_config):
    monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(UserError) as e:
        make_client(fast_config(model))
    msg = str(e.value)
    assert var in msg and "\n" not in msg and "--model local" in msg


def test_openai_compatible_local_server_needs_no_key(llm_env, fast_config, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    results, _ = run(_many(fast_config("qwen2.5-7b-instruct", base_url=llm_env.url + "/v1"), _reqs(2)))
    assert all(r.ok and r.backend == "openai" for r in results)
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        make_client(fast_config("some-model", base_url="https://openrouter.ai/api/v1"))


def test_keys_never_reach_logs_or_the_cache_file(llm_env, fast_config, caplog):
    caplog.set_level(logging.DEBUG)
    llm_env.fault_queue.extend(["429", "500"])
    run(_many(fast_config("claude"), _reqs(3)))
    run(_many(fast_config("gpt-4o"), _reqs(3)))
    sent = " ".join(" ".join(e.headers.values()) for e in llm_env.log)
    assert ANTHROPIC_TEST_KEY in sent and OPENAI_TEST_KEY in sent  # the keys were really used ...
    text = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    assert len(caplog.records) > 10
    assert ANTHROPIC_TEST_KEY not in text and OPENAI_TEST_KEY not in text  # ... and never logged
    cache_file = Path(fast_config().cache_path)
    for f in cache_file.parent.glob(cache_file.name + "*"):
        data = f.read_bytes()
        assert ANTHROPIC_TEST_KEY.encode() not in data and OPENAI_TEST_KEY.encode() not in data
    assert ANTHROPIC_TEST_KEY not in repr(make_client(fast_config("claude")).backend)


def test_a_key_in_an_error_message_is_masked(llm_env, fast_config):
    def answer(req):
        raise FakeItemError(f"invalid x-api-key {ANTHROPIC_TEST_KEY}")

    llm_env.answer = answer
    [r], _ = run(_many(fast_config("claude"), _reqs(1)))
    assert not r.ok and ANTHROPIC_TEST_KEY not in r.error and "***" in r.error


@pytest.mark.parametrize("model,var", [("claude", "ANTHROPIC_API_KEY"), ("gpt-4o", "OPENAI_API_KEY")])
def test_a_rejected_key_stops_the_run_with_a_user_error(llm_env, fast_config, model, var):
    llm_env.require_key = "fake-some-other-key-0000000000"
    with pytest.raises(UserError) as e:
        run(_many(fast_config(model, concurrency=2), _reqs(20)))
    msg = str(e.value)
    assert var in msg and "401" in msg and "\n" not in msg
    assert ANTHROPIC_TEST_KEY not in msg and OPENAI_TEST_KEY not in msg
    assert llm_env.completion_calls() < 20  # the other requests were cancelled, not all sent


def test_anthropic_sampling_params_reach_the_wire(llm_env, fast_config):
    run(_many(fast_config("claude"), [LLMRequest.user("q", max_tokens=7, temperature=0.0, top_p=0.9, stop=["\n\n"])]))
    [body] = llm_env.bodies("messages")
    assert body["temperature"] == 0.0 and body["top_p"] == 0.9 and body["stop_sequences"] == ["\n\n"] and body["max_tokens"] == 7


def test_backend_selection():
    assert resolve_model(None) == ("local", "local")
    assert resolve_model("claude") == ("anthropic", "claude-sonnet-4-5")
    assert resolve_model("claude-opus-4-1-20250805") == ("anthropic", "claude-opus-4-1-20250805")
    assert resolve_model("gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert resolve_model("o4-mini") == ("openai", "o4-mini")
    assert resolve_model("llama3.1:8b", base_url="http://localhost:11434/v1") == ("openai", "llama3.1:8b")
    assert resolve_model("models/x.gguf") == ("local", "models/x.gguf")
    assert resolve_model("local") == ("local", "local")
    assert resolve_model("my-model", backend="openai") == ("openai", "my-model")
    with pytest.raises(UserError, match="--backend"):
        resolve_model("mystery")
    with pytest.raises(UserError, match="--backend"):
        resolve_model("claude", backend="bedrock")


def test_missing_gguf_file_is_a_user_error(tmp_path):
    pytest.importorskip("llama_cpp")
    with pytest.raises(UserError, match="does not exist"):
        make_client(LLMConfig(model=str(tmp_path / "nope.gguf")))


def test_one_client_serves_successive_event_loops(llm_env, fast_config):
    llm = make_client(fast_config("claude"))

    async def answer():
        try:
            return await llm.complete_many(_reqs(3))
        finally:
            await llm.backend.aclose()

    first = run(answer())
    second = run(answer())  # a new event loop: the client rebinds
    assert all(r.ok for r in first) and all(r.cached for r in second)
    run(llm.aclose())
