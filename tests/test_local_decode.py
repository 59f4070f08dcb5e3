"""The local backend's greedy loop (local_decode.greedy_decode) on a fake llama.cpp: no model, CI-safe.

The fake keeps a KV cache (position -> token) and computes each requested row's logits from the tokens in the cache
at positions 0..row, and it refuses a decode whose positions do not continue the cache: so a wrong n_tokens, a stale
cell left behind or a kept prefix that is not the prompt's shows up as an error or as other logits. Like llama.cpp's
CPU kernels for repacked weights, it computes a row that falls in the last partial tile of a batch (not a whole
block of 8) slightly differently; the aligned mode of logprob requests must make that invisible.
"""

from __future__ import annotations

import ctypes
import sys
import types

import numpy as np
import pytest

from interp_eval.llm.backends import local_decode as lb
from interp_eval.llm.backends import local_model

EOS, VOCAB, TILE = 0, 256, 8


def rule(history: list[int]) -> tuple[int, int]:
    """The fake model's (greedy token, runner-up) after a history of byte tokens: a detection-like answer `[d]` after
    'A:', where d depends on the whole prompt; free text otherwise."""
    text = bytes(history)
    if text.endswith(b"A:") and b"Explanation:" in text:
        return ord("["), ord("(")
    if text.endswith(b"["):
        d = ord("1") if sum(history) % 3 else ord("0")
        return d, ord("1") + ord("0") - d
    if len(text) >= 2 and text[-2:-1] == b"[" and text[-1:] in (b"0", b"1"):
        return ord("]"), ord(",")
    if text.endswith(b"]"):
        return EOS, ord("\n")
    return ord("a") + (7 * history[-1] + history[-2]) % 6, ord(".")  # free text: cycles after a few tokens


def logits_of(history: list[int], rough: int) -> np.ndarray:
    best, second = rule(history)
    x = np.zeros(VOCAB, dtype=np.float32)
    x[best], x[second] = 6.0, 5.0 - 0.001 * (sum(history) % 7)
    x[second] += 0.01 * rough  # a row or a cell computed in a partial tile: another rounding
    return x


class FakeBatch:
    def __init__(self, n):
        self.batch = types.SimpleNamespace(n_tokens=0, token=[0] * n, pos=[0] * n, logits=[False] * n)

    def set_batch(self, batch, n_past, logits_all):
        b = self.batch
        b.n_tokens = len(batch)
        for i, t in enumerate(batch):
            b.token[i], b.pos[i], b.logits[i] = t, n_past + i, logits_all
        b.logits[len(batch) - 1] = True


class FakeCtx:
    def __init__(self):
        self.kv: dict[int, tuple[int, bool]] = {}  # position -> (token, computed in a partial tile)
        self.out: dict[int, np.ndarray] = {}
        self.ctx = self
        self.decodes = 0

    def kv_cache_seq_rm(self, seq, p0, p1):
        self.kv = {p: v for p, v in self.kv.items() if p < p0}
        return True

    def decode(self, fake_batch):
        b = fake_batch.batch
        n = b.n_tokens
        full = n - n % TILE
        self.out = {}
        self.decodes += 1
        for i in range(n):
            pos = b.pos[i]
            assert sorted(self.kv) == list(range(pos)), f"decode at {pos} over cells {sorted(self.kv)[-5:]}"
            self.kv[pos] = (b.token[i], i >= full)
            if b.logits[i]:
                cells = [self.kv[p] for p in range(pos + 1)]
                self.out[i] = logits_of([t for t, _ in cells], sum(r for _, r in cells))


class FakeLlama:
    n_batch = 16  # small, so long prompts go in several chunks
    model_path = "fake.gguf"

    def __init__(self):
        self._ctx = FakeCtx()
        self._batch = FakeBatch(self.n_batch)
        self._model = types.SimpleNamespace(vocab="vocab")
        self.input_ids = np.zeros(4096, dtype=np.intc)
        self.n_tokens = 0
        self._requires_eval = False

    def n_ctx(self):
        return 4096

    def n_vocab(self):
        return VOCAB

    def tokenize(self, text, add_bos=True, special=False):
        return list(text)

    def detokenize(self, tokens, prev_tokens=None):
        return bytes(t for t in tokens if t != EOS)


class FakeFormatter:
    def __call__(self, messages):
        prompt = "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "A:"
        return types.SimpleNamespace(prompt=prompt, added_special=True, stop=None)


@pytest.fixture
def fake(monkeypatch):
    keep = {}

    def get_logits_ith(ctx, i):
        arr = (ctypes.c_float * VOCAB)(*ctx.out[i])
        keep[i] = arr
        return ctypes.cast(arr, ctypes.POINTER(ctypes.c_float))

    mod = types.SimpleNamespace(llama_get_logits_ith=get_logits_ith, llama_vocab_is_eog=lambda vocab, t: t == EOS)
    monkeypatch.setitem(sys.modules, "llama_cpp", mod)
    monkeypatch.setattr(lb, "chat_formatter", lambda llm: FakeFormatter())
    return FakeLlama()


def naive(messages, max_tokens=16, stop=None):
    """Greedy decoding straight from the rule, every row exact: the answer and the logprob of each answer token."""
    tokens = list(FakeFormatter()(messages).prompt.encode())
    out, lps = [], []
    while len(out) < max_tokens:
        x = logits_of(tokens + out, 0).astype(np.float64)
        t = int(np.argmax(x))
        if t == EOS:
            break
        lps.append(float(x[t] - (x.max() + np.log(np.exp(x - x.max()).sum()))))
        out.append(t)
        if stop and any(s.encode() in bytes(out) for s in stop):
            break
    return bytes(out).decode(), lps


def detection(expl: str, window: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": "Say 1 if the window fits the explanation, else 0. " * 3},
            {"role": "user", "content": f"Explanation: {expl}\n1. {window}\nReply with 1 digits."}]


PROMPTS = [detection(e, w) for e in ("names of months", "words about money") for w in
           ("shares fell in May", "the figures published in March", "a rise in prices", "oil and gas")]


def run(llm, prompts, drafts=True, **kw):
    d = lb.Drafts() if drafts else None
    out = []
    for m in prompts:
        r = lb.greedy_decode(llm, m, 16, None, 5, d, ("detection", "sys"), **kw)
        c = r["choices"][0]
        out.append((c["message"]["content"], [t["logprob"] for t in c["logprobs"]["content"]]))
    return out


def test_kept_prefix_and_guesses_give_exactly_the_cold_answer_and_logprobs(fake):
    """In any order, with the KV prefix kept from the previous prompt and the answer guessed: the naive greedy answer
    and logprobs, exactly (aligned passes), as each prompt alone in an empty context."""
    want = [naive(m) for m in PROMPTS]
    assert {t for t, _ in want} == {"[0]", "[1]"}  # both digits occur: guesses hit and miss
    assert run(fake, PROMPTS) == want
    assert run(fake, PROMPTS[::-1]) == want[::-1]
    cold = []
    for m in PROMPTS:
        lb.forget_prefix(fake)
        cold += run(fake, [m])
    assert cold == want


def test_unaligned_reuse_drifts_which_is_why_logprob_calls_are_aligned(fake):
    """The fake, like llama.cpp, computes partial-tile rows differently: without blocks a kept prefix moves the
    logprobs (the drift issue 15 measured on the real model); the text stays the same."""
    want = [naive(m) for m in PROMPTS]
    got = run(fake, PROMPTS, align=1)
    assert [t for t, _ in got] == [t for t, _ in want]
    assert max(abs(a - b) for (_, la), (_, lb_) in zip(got, want) for a, b in zip(la, lb_)) > 1e-4


def test_guessed_answers_save_forward_passes(fake):
    lb.forget_prefix(fake)
    before = dict(lb.STATS)
    run(fake, PROMPTS[:1], drafts=False)
    assert lb.STATS["passes"] - before["passes"] == 4  # the prompt, then `[`, the digit and `]` one at a time
    d = lb.Drafts()
    lb.greedy_decode(fake, PROMPTS[0], 16, None, 5, d, "k")
    passes = []
    for m in PROMPTS[1:]:
        before = dict(lb.STATS)
        r = lb.greedy_decode(fake, m, 16, None, 5, d, "k")
        passes.append((r["choices"][0]["message"]["content"], lb.STATS["passes"] - before["passes"]))
        assert lb.STATS["reused_tokens"] - before["reused_tokens"] >= len("<system>") + 3 * 51  # the fixed prefix at least
    prev = [naive(PROMPTS[0])[0]] + [t for t, _ in passes[:-1]]
    for (text, n), p in zip(passes, prev):
        assert n == (1 if text == p else 2)  # same digit: one pass for the whole answer; another digit: one more


def test_free_text_with_stop_strings_and_length_limit_without_logprobs(fake):
    m = [{"role": "user", "content": "Describe the feature."}]
    for max_tokens, stop in [(12, None), (40, ["fc"]), (5, ["zzz"])]:
        want, _ = naive(m, max_tokens, stop)
        d = lb.Drafts()
        for _ in range(2):  # the second time from the kept prefix, with the first answer as the guess
            r = lb.greedy_decode(fake, m, max_tokens, stop, None, d, "explain")
            c = r["choices"][0]
            text = want.split(stop[0])[0] if stop and stop[0] in want else want
            assert c["message"]["content"] == text and c["logprobs"] is None
            assert c["finish_reason"] == ("stop" if stop and stop[0] in want else "length")
            assert r["usage"]["completion_tokens"] == len(want)
        assert len(want) == (max_tokens if not stop or stop[0] not in want else len(want))


def test_drafts_follow_the_previous_answer_through_one_substitution():
    d = lb.Drafts(size=4)
    assert d.guess("k", []) == []
    d.remember("k", [1, 2, 3])
    assert d.guess("k", []) == [1, 2, 3]
    assert d.guess("k", [1, 9]) == [3]  # one other token: go on with the rest
    assert d.guess("k", [1, 9, 8]) == []  # two: the previous answer is no guide
    assert d.guess("other", []) == []


def test_prompt_lookup_guesses_repeated_text_and_keeps_the_greedy_answer(fake):
    """A free-text answer that repeats itself (as an explanation's last line repeats its first sentence) is guessed
    from its own earlier tokens: fewer forward passes, the same text."""
    m = [{"role": "user", "content": "Describe the feature."}]
    want, _ = naive(m, 60)
    assert want[-10:] in want[:-10]  # the fake's text repeats itself
    passes = {}
    for lookup in (False, True):
        lb.forget_prefix(fake)
        before = lb.STATS["passes"]
        r = lb.greedy_decode(fake, m, 60, None, None, lb.Drafts(lookup=lookup), ("explain", lookup))
        assert r["choices"][0]["message"]["content"] == want
        passes[lookup] = lb.STATS["passes"] - before
    assert passes[False] == 1 + 59 and passes[True] < 0.6 * passes[False]


def test_lookup_guess_takes_the_latest_longest_match():
    assert lb.lookup_guess([1, 2, 3, 9, 1, 2, 3, 7, 5, 1, 2, 3], 2) == [7, 5]  # the latest occurrence of 1 2 3
    assert lb.lookup_guess([5, 6, 1, 2, 4, 4, 6, 1, 2], 3) == [4, 4, 6]  # "6 1 2" (3 tokens) beats "1 2"
    assert lb.lookup_guess([1, 2, 3], 4) == []


def test_usage_reports_the_kept_prefix_as_cached_prompt_tokens(fake):
    """The ledger (llm_usage) counts the prompt tokens taken from the KV cache as cache reads, as a provider reports
    its cached prefix: only positions not evaluated again (a pass re-evaluates back to a block boundary)."""
    from interp_eval.llm.backends.openai_backend import parse_chat_completion

    lb.forget_prefix(fake)
    first = lb.greedy_decode(fake, PROMPTS[0], 16, None, 5, lb.Drafts(), "k")
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    before = dict(lb.STATS)
    second = lb.greedy_decode(fake, PROMPTS[1], 16, None, 5, lb.Drafts(), "k")
    kept = lb.STATS["reused_tokens"] - before["reused_tokens"]
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert kept > 0 and cached == kept - kept % lb.ALIGN
    usage = parse_chat_completion(second, backend="local", model="m").usage
    assert usage.cache_read_tokens == cached and usage.input_tokens == second["usage"]["prompt_tokens"] - cached


def _topology(root, cores: list[tuple[int, int]]):
    """A fake /sys/devices/system/cpu: logical CPU i sits on (package, core) cores[i]."""
    for i, (package, core) in enumerate(cores):
        d = root / f"cpu{i}" / "topology"
        d.mkdir(parents=True)
        (d / "physical_package_id").write_text(f"{package}\n")
        (d / "core_id").write_text(f"{core}\n")
    return root


def test_local_model_threads_default_to_one_per_physical_core(tmp_path):
    """llama-cpp-python's default decode threads is half the logical CPUs (it assumes two per core): on this project's
    2-core machines without SMT that is 1 thread, and decoding is 1.24x faster with 2 (README). The default is one
    thread per physical core the process may run on."""
    smt = _topology(tmp_path / "smt", [(0, 0), (0, 1), (0, 0), (0, 1)])
    plain = _topology(tmp_path / "plain", [(0, 0), (0, 1)])
    two_sockets = _topology(tmp_path / "two", [(0, 0), (1, 0), (0, 1), (1, 1)])
    assert local_model.physical_cores(smt, cpus={0, 1, 2, 3}) == 2
    assert local_model.physical_cores(plain, cpus={0, 1}) == 2
    assert local_model.physical_cores(two_sockets, cpus={0, 1, 2, 3}) == 4
    assert local_model.physical_cores(smt, cpus={0, 2}) == 1  # an affinity mask of one core's two threads
    assert local_model.physical_cores(tmp_path / "none", cpus={0, 1, 2, 3}) == 2  # no topology: llama.cpp's own guess
