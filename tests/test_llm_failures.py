"""What a failed or slow LLM call does to explain and score, through real HTTP against the fake provider.

- A re-run retries what failed: an answer that never parsed is asked again with a new corrective turn
  (after its cached ones), and nothing that was paid for is paid again.
- `--timeout`: a call that hangs fails as a provider error after about the timeout; the other latents
  are written.
- No chunk-wide barrier: one slow call holds back only its own latent's rows.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time

import pandas as pd
import pytest
from typer.testing import CliRunner

from llm_fixtures import fake_server, fast_config, llm_env  # noqa: F401
from scoring_helpers import explanation_of, fmt, make_run, read_prompt, truth

from interp_eval.artifacts import RunDir
from interp_eval.catalog import EXPLAIN_PARTS, EXPLANATIONS, PREDICTIONS, SCORE_KEY, SCORE_PARTS
from interp_eval.cli import app
from interp_eval.explain.stage import ExplainConfig, run_explain_stage
from interp_eval.llm import LLMRequest, make_client
from interp_eval.llm.ask import Question, ask_each
from interp_eval.parts import PartedTable, PartWriter
from interp_eval.scoring import run_score_stage
from interp_eval.scoring.stage import ScoreConfig

HOPELESS = "I think it is about the word of."  # no [EXPLANATION]: line


def _text(content) -> str:
    """A message's text: Anthropic content blocks or a plain string."""
    return "".join(b["text"] for b in content) if isinstance(content, list) else content


def latent_prompt(req) -> str:
    """The user turn with the latent's windows: the last one with marks (corrective turns have none)."""
    return [m["content"] for m in req["messages"] if m["role"] == "user" and "<<" in m["content"]][-1]


def explain_answer(req) -> str:
    """A parseable explanation naming the most common marked word of the latent's windows."""
    marked = re.findall(r"<<(.*?)>>", latent_prompt(req))
    word = max(set(marked), key=marked.count).strip().lower()
    return f"The marked tokens share a word.\n[EXPLANATION]: the word {word}"


def _rows_on_disk(store: PartedTable) -> int:
    """Rows in the part files: what a stage has written before it ends."""
    return len(store.read()) if store.has_parts() else 0


def _wait_until(condition, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


# -- 7: a re-run retries parse failures --------------------------------------------------------------------
def _counting_question(i: int, wants: int) -> Question:
    """Parses once the answer (the number of corrective turns the server saw) reaches `wants`."""

    def retry(request: LLMRequest, text: str | None) -> LLMRequest:
        turns = (*request.messages, {"role": "assistant", "content": text}, {"role": "user", "content": "again"})
        return LLMRequest(messages=turns, max_tokens=3)

    return Question(LLMRequest.user(f"question {i}", max_tokens=3), lambda text: text if int(text) >= wants else None, retry, about=i)


@pytest.mark.parametrize("batch", [False, True])
def test_ask_each_asks_until_parsed_and_a_second_run_continues_after_the_cached_answers(llm_env, fast_config, tmp_path, batch):
    llm_env.answer = lambda req: str((len(req["messages"]) - 1) // 2)
    wants = [0, 2, 5]

    async def ask(max_retries: int) -> dict[int, list[bool]]:
        cached: dict[int, list[bool]] = {}
        async with make_client(fast_config("claude", batch=batch)) as llm:
            await ask_each(llm, (_counting_question(i, w) for i, w in enumerate(wants)), max_retries,
                           lambda q, answers: cached.__setitem__(q.about, [a.cached for a in answers]),
                           desc="demo", batch_state=tmp_path / "state.json")
        return cached

    # a run asks each question at most 1 + max_retries times
    assert asyncio.run(ask(1)) == {0: [False], 1: [False, False], 2: [False, False]}
    # the next run replays those answers from the cache, then asks up to 1 + max_retries more
    assert asyncio.run(ask(1)) == {0: [True], 1: [True, True, False], 2: [True, True, False, False]}
    assert not list(tmp_path.glob("state*.json"))  # no batch left pending
    assert llm_env.count("messages") == (0 if batch else 1 + 2 + 2 + 1 + 2)


def test_rerunning_explain_asks_an_unparseable_latent_again_and_pays_nothing_twice(llm_env, mined, monkeypatch, tmp_path):
    run, _ = mined
    fixed = threading.Event()

    def answer(req):
        return explain_answer(req) if fixed.is_set() or "<<of>>" not in latent_prompt(req) else HOPELESS

    llm_env.answer = answer
    monkeypatch.setenv("INTERP_EVAL_PROGRESS", "0")
    args = ["explain", "--run", str(run), "--model", "claude", "--coder", "sae-x", "--max-retries", "1",
            "--llm-cache", str(tmp_path / "c.sqlite")]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output
    assert llm_env.completion_calls() == 5 + 1  # 5 latents; the hopeless one got one corrective turn
    fixed.set()
    llm_env.reset_counts()
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    # exactly one new call: the hopeless latent's conversation (replayed from the cache) with a new corrective turn
    assert llm_env.completion_calls() == 1
    messages = llm_env.bodies("messages")[0]["messages"]
    assert [_text(m["content"]) for m in messages if m["role"] == "assistant"][-2:] == [HOPELESS, HOPELESS]
    df = pd.read_parquet(run / "explanations.parquet").set_index("latent")
    assert df["parse_ok"].all() and df.at[1, "explanation"] == "the word of" and df.at[1, "attempts"] == 3
    # the message that promised a retry said what a re-run does
    assert "re-run the same command to ask them again" in first.stdout


def test_rerunning_score_asks_unparseable_prompts_again_and_pays_nothing_twice(llm_env, fast_config, subject, tmp_path):
    run = tmp_path / "run"
    make_run(run, subject.tokenizer, n_latents=4)  # per coder: 3 live latents, 4 detection prompts each
    table, hopeless = truth(run), explanation_of("sae-x", 0)
    fixed = threading.Event()

    def answer(req):
        explanation, texts = read_prompt(req)
        if explanation == hopeless and not fixed.is_set():
            return "Yes, I think so."
        return fmt([table[(explanation, t)] for t in texts])

    llm_env.answer = answer
    cfg = ScoreConfig(scorers=("detection",), max_retries=1, control_latents=0)
    out = run_score_stage(run, cfg, fast_config("claude"))
    assert out["window_failures"] == {"parse": 20, "llm": 0}
    assert llm_env.completion_calls() == 6 * 4 + 4
    fixed.set()
    llm_env.reset_counts()
    out = run_score_stage(run, cfg, fast_config("claude"))
    assert llm_env.completion_calls() == 4  # one new corrective turn per hopeless prompt; the rest is not asked again
    assert out["window_failures"] == {"parse": 0, "llm": 0}
    pred = pd.read_parquet(run / "predictions.parquet")
    assert len(pred) == 6 * 20 and pred["parse_ok"].all() and (pred["prediction"] == pred["label"]).all()


# -- 8: timeouts, and no chunk-wide barrier ---------------------------------------------------------------------
def test_timeout_fails_a_hanging_call_as_a_provider_error_and_the_others_are_written(llm_env, mined, monkeypatch, tmp_path):
    run, _ = mined
    release = threading.Event()

    def answer(req):
        if "<<of>>" in latent_prompt(req):
            release.wait(30)  # hangs far longer than --timeout
        return explain_answer(req)

    llm_env.answer = answer
    monkeypatch.setenv("INTERP_EVAL_PROGRESS", "0")
    args = ["explain", "--run", str(run), "--model", "claude", "--coder", "sae-x", "--timeout", "1", "--max-attempts", "1",
            "--llm-cache", str(tmp_path / "c.sqlite")]
    t0 = time.monotonic()
    try:
        res = CliRunner().invoke(app, args)
    finally:
        release.set()
    assert res.exit_code == 1, res.output
    assert time.monotonic() - t0 < 10
    df = pd.read_parquet(run / "explanations.parquet").set_index("latent")
    assert df.drop(index=1)["parse_ok"].all() and len(df) == 5
    assert not df.at[1, "parse_ok"] and re.search(r"time(d)? ?out", df.at[1, "failure"], re.IGNORECASE)
    # a re-run asks only the failed latent again
    llm_env.reset_counts()
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert llm_env.completion_calls() == 1


def test_one_slow_explain_call_does_not_hold_back_the_rows_of_finished_latents(llm_env, fast_config, mined):
    run, _ = mined
    rd = RunDir(run)
    store = PartedTable(rd, EXPLANATIONS, ("coder", "latent", "explainer"), EXPLAIN_PARTS)
    on_disk: list[int] = []

    def answer(req):
        if "<<of>>" in latent_prompt(req):  # the slow one answers once the 4 others are on disk (or after 10 s)
            _wait_until(lambda: _rows_on_disk(store) >= 4, 10)
            on_disk.append(_rows_on_disk(store))
        return explain_answer(req)

    llm_env.answer = answer
    out = run_explain_stage(run, ExplainConfig(coders=("sae-x",), chunk=2), fast_config("claude", timeout=30))
    assert on_disk == [4]
    assert out["explained"] == 5 and out["failed"] == 0


def test_one_slow_score_call_does_not_hold_back_the_rows_of_finished_jobs(llm_env, fast_config, subject, tmp_path):
    run = tmp_path / "run"
    make_run(run, subject.tokenizer, n_latents=4)
    rd = RunDir(run)
    store = PartedTable(rd, PREDICTIONS, SCORE_KEY, SCORE_PARTS)
    table, slow = truth(run), explanation_of("bae-x", 0)
    on_disk: list[int] = []

    def answer(req):
        explanation, texts = read_prompt(req)
        if explanation == slow:  # its prompts answer once the 5 other jobs (20 windows each) are on disk
            _wait_until(lambda: _rows_on_disk(store) >= 5 * 20, 10)
            on_disk.append(_rows_on_disk(store))
        return fmt([table[(explanation, t)] for t in texts])

    llm_env.answer = answer
    out = run_score_stage(run, ScoreConfig(scorers=("detection",), control_latents=0, chunk=1), fast_config("claude", timeout=30))
    assert on_disk and min(on_disk) == 5 * 20
    assert out["complete"] and len(pd.read_parquet(run / "predictions.parquet")) == 6 * 20


def test_part_writer_writes_what_waits_every_few_seconds_and_when_the_block_fails():
    written: list[list[int]] = []

    async def go() -> None:
        async with PartWriter(written.append, every=3, seconds=0.1) as out:
            out.add(1)
            out.add(2)
            await asyncio.sleep(0.35)
            assert written == [[1, 2]]  # fewer than `every`, written after `seconds`
            for i in (3, 4, 5, 6):
                out.add(i)
            assert written == [[1, 2], [3, 4, 5]]  # `every` items: written at once
            raise RuntimeError("the stage failed")

    with pytest.raises(RuntimeError):
        asyncio.run(go())
    assert written == [[1, 2], [3, 4, 5], [6]]  # finished work is kept
