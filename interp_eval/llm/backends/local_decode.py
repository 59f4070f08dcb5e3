"""Greedy decoding on a loaded llama.cpp model: the longest common prefix kept in the KV cache, only the logits it
reads computed, guessed tokens checked in the same forward pass, and (with logprobs) passes in whole blocks so the
probabilities do not depend on what the context held before."""

from __future__ import annotations

from typing import Any, Sequence

from .local_model import chat_formatter

# What greedy_decode did in this process (read by bench/offline_throughput.py): calls, prompt tokens, prompt tokens
# kept from the previous prompt (the KV-cache prefix), tokens evaluated, forward passes, guessed tokens and how many
# were kept, answer tokens.
STATS = dict.fromkeys(("calls", "prompt_tokens", "reused_tokens", "evaluated_tokens", "passes", "guessed", "guess_hits",
                       "answer_tokens"), 0)


# -- greedy decoding with prefix reuse and checked guesses --------------------------------------------------
DRAFT_TOKENS = 4  # at most this many guessed tokens ride along with a forward pass (a batch of 5 costs about one token's decode)
# Requests that want logprobs evaluate in blocks of ALIGN positions (each pass starts at a multiple of ALIGN and is
# padded to one). llama.cpp's CPU kernels for the repacked Q4_K/Q6_K weights compute a position through another code
# path (with other rounding) when it is among the last few rows of a batch that are not a full tile, so the same
# prompt split at another point (a prefix kept from the previous prompt, a guessed token) moved P("1") by up to 0.02.
# With every position in a full block, a prompt's logits do not depend on how it was split: a call after any earlier
# prompt gives the probabilities of a cold call, exactly (tests/test_llm_local.py), at the cost of up to ALIGN - 1
# positions re-evaluated and ALIGN - 1 of padding per pass. 4 was not enough here (AMD EPYC, AVX-512); 8, 16 and 32
# gave identical logits.
ALIGN = 8


class Drafts:
    """Guesses of the tokens an answer will continue with, checked in the forward pass that evaluates the prompt.

    The guess is the previous answer to a request of the same stage and system prompt, position by position (a
    detection answer is `[`, a digit, `]` every time; an explanation starts "The marked tokens are"), as long as
    the answer has left it at most once (another digit, same brackets); after that, the continuation of the
    longest earlier occurrence (2 to 4 tokens) of the answer's last tokens in the prompt or the answer so far
    (prompt lookup: an explanation's last line repeats its first sentence and the few-shot's `[EXPLANATION]:`).
    The guessed tokens go through the model in the same batch as the tokens before them, and each is kept only
    where it is the argmax of the logits before it, so the answer is exactly the greedy one. A wrong guess costs a
    few extra positions in that batch; a right one saves a forward pass per token (a one-window detection answer:
    1 pass instead of 4).
    """

    MISSES = 1
    NGRAMS = (4, 3, 2)

    def __init__(self, size: int = DRAFT_TOKENS, lookup: bool = True):
        self.size = size
        self.lookup = lookup
        self.last: dict[Any, list[int]] = {}

    def guess(self, key: Any, completion: Sequence[int], prompt: Sequence[int] = ()) -> list[int]:
        prev = self.last.get(key, [])
        misses = sum(a != b for a, b in zip(completion, prev)) + max(0, len(completion) - len(prev))
        if misses <= self.MISSES and len(completion) < len(prev):
            return prev[len(completion) : len(completion) + self.size]
        return lookup_guess([*prompt, *completion], self.size) if self.lookup and completion else []

    def remember(self, key: Any, completion: Sequence[int]) -> None:
        self.last[key] = list(completion)


def lookup_guess(tokens: Sequence[int], size: int, ngrams: Sequence[int] = Drafts.NGRAMS) -> list[int]:
    """The `size` tokens after the latest earlier occurrence of the last n tokens (n = 4, 3, 2: the longest found)."""
    tokens = list(tokens)
    end = len(tokens)
    for n in ngrams:
        if end <= n:
            continue
        tail = tokens[-n:]
        first = tail[0]
        for j in range(end - n - 1, -1, -1):
            if tokens[j] == first and tokens[j : j + n] == tail:
                return tokens[j + n : j + n + size]
    return []


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def keep_prefix(llm: Any, prompt_tokens: Sequence[int], limit: int | None = None) -> int:
    """Keep the longest prefix of `prompt_tokens` that the context already holds (at least one prompt token is left
    to evaluate, so the last position's logits are fresh; at most `limit`); drop the rest of the KV cache. Returns
    the kept length."""
    keep = min(_common_prefix(llm.input_ids[: llm.n_tokens].tolist(), prompt_tokens), len(prompt_tokens) - 1)
    if limit is not None:
        keep = min(keep, limit)
    if keep > 0 and not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
        keep = 0
    if keep == 0:
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.n_tokens = keep
    return keep


def forget_prefix(llm: Any) -> None:
    """Empty the context, so the next call evaluates its whole prompt (a cold call)."""
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.n_tokens = 0
    llm._requires_eval = True
    set_blocked(llm, 0)


def blocked(llm: Any) -> int:
    """How many leading positions of the context were evaluated in whole ALIGN blocks (reusable by aligned calls)."""
    return getattr(llm, "_interp_eval_blocked", 0)


def set_blocked(llm: Any, n: int) -> None:
    llm._interp_eval_blocked = n


def _eval_rows(llm: Any, tokens: Sequence[int], rows: int) -> list[Any]:
    """Evaluate `tokens` after the context's n_tokens, in n_batch chunks, asking llama.cpp for the logits of the last
    `rows` positions only; returns a pointer to each of those rows (valid until the next decode)."""
    return eval_at(llm, tokens, range(len(tokens) - rows, len(tokens)))


def eval_at(llm: Any, tokens: Sequence[int], offsets: Sequence[int]) -> list[Any]:
    """Evaluate `tokens` after the context's n_tokens, in n_batch chunks, asking llama.cpp for the logits at the given
    offsets into `tokens` only; returns a pointer to each of those rows, in offset order (valid until the next
    decode)."""
    import llama_cpp

    batch = llm._batch
    want = set(offsets)
    llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
    out: dict[int, Any] = {}
    for start in range(0, len(tokens), llm.n_batch):
        chunk = list(tokens[start : start + llm.n_batch])
        n_past = llm.n_tokens
        batch.set_batch(batch=chunk, n_past=n_past, logits_all=False)
        for j in range(len(chunk)):
            batch.batch.logits[j] = start + j in want
        llm._ctx.decode(batch)
        llm.input_ids[n_past : n_past + len(chunk)] = chunk
        llm.n_tokens += len(chunk)
        out.update({start + j: llama_cpp.llama_get_logits_ith(llm._ctx.ctx, j) for j in range(len(chunk)) if start + j in want})
    return [out[o] for o in sorted(want)]


def greedy_decode(llm: Any, messages: list[dict[str, str]], max_tokens: int | None, stop: list[str] | None,
                  top_n: int | None, drafts: Drafts | None = None, draft_key: Any = None, align: int | None = None) -> dict[str, Any]:
    """Greedy chat completion on a logits_all=False model, in create_chat_completion's output shape.

    Same prompt, tokens, stop handling and result as create_chat_completion(temperature=0) (plus per-token logprobs
    with `top_n` alternatives when top_n is not None), but:
    - the longest common prefix with what the context already holds is kept (llama.cpp's KV cache): only the new
      tokens of the prompt are evaluated, so calls in an order that shares prefixes (one fixed system prompt and
      few-shot, one explanation for many windows) pay for the shared part once;
    - only the logits of the positions it reads are computed (never a vocab-sized row per prompt token);
    - a guessed continuation (Drafts) rides along with the prompt in the same forward pass and is kept where it
      is the greedy choice;
    - with logprobs (or `align` > 1), every pass is evaluated in whole blocks of ALIGN positions, so the answer and
      its probabilities do not depend on which prefix the context held before (see ALIGN).
    """
    import llama_cpp
    import numpy as np

    result = chat_formatter(llm)(messages=messages)
    prompt_tokens = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
    stops = list(stop or [])
    if result.stop is not None:
        stops += result.stop if isinstance(result.stop, list) else [result.stop]
    stop_bytes = [s.encode("utf-8") for s in stops]
    n_ctx = llm.n_ctx()
    if len(prompt_tokens) >= n_ctx:
        raise ValueError(f"Requested tokens ({len(prompt_tokens)}) exceed context window of {n_ctx}")
    if max_tokens is None or max_tokens <= 0:
        max_tokens = n_ctx - len(prompt_tokens)
    max_tokens = min(max_tokens, n_ctx - len(prompt_tokens))

    n_vocab = llm.n_vocab()
    vocab = llm._model.vocab
    completion: list[int] = []
    content: list[dict[str, Any]] = []
    text = b""
    finish_reason = "length"
    block = (ALIGN if top_n is not None else 1) if align is None else max(1, align)
    # an aligned call reuses only positions that were evaluated in whole blocks; any other pass clears that mark
    kept = keep_prefix(llm, prompt_tokens, blocked(llm) if block > 1 else None)
    set_blocked(llm, min(blocked(llm), kept) if block > 1 else 0)
    pending = prompt_tokens[kept:]
    cached = kept - kept % block  # not evaluated again (the first pass starts at a block boundary)
    STATS["calls"] += 1
    STATS["prompt_tokens"] += len(prompt_tokens)
    STATS["reused_tokens"] += kept
    llm._requires_eval = True  # the context's logits are ours, not what Llama.generate expects
    done = False
    while not done:
        guess = drafts.guess(draft_key, completion, prompt_tokens) if drafts is not None else []
        guess = guess[: max(0, min(max_tokens - len(completion) - 1, n_ctx - llm.n_tokens - len(pending)))]
        base = llm.n_tokens
        start = base - base % block  # re-evaluate back to a block boundary, pad the pass to a whole block
        tokens = llm.input_ids[start:base].tolist() + pending + guess
        pad = min(-len(tokens) % block, n_ctx - start - len(tokens))
        llm.n_tokens = start
        rows = _eval_rows(llm, tokens + tokens[-1:] * pad, len(guess) + 1 + pad)[: len(guess) + 1]
        STATS["passes"] += 1
        STATS["evaluated_tokens"] += len(tokens) + pad
        STATS["guessed"] += len(guess)
        used = 0  # rows read: the tokens behind them (pending[-1], guess[:used - 1]) are valid context
        for r, ptr in enumerate(rows):
            used = r + 1
            logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
            token = int(np.argmax(logits))
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                text = llm.detokenize(completion, prev_tokens=prompt_tokens)
                finish_reason, done = "stop", True
                break
            if top_n is not None:
                content.append(token_logprobs(llm, logits.astype(np.float64), token, completion, top_n))
            completion.append(token)
            all_text = llm.detokenize(completion, prev_tokens=prompt_tokens)
            hits = [s for s in stop_bytes if s in all_text]
            if hits:
                text, finish_reason, done = all_text[: all_text.index(hits[0])], "stop", True
                break
            if len(completion) >= max_tokens:
                text, done = all_text, True
                break
            if r >= len(guess) or guess[r] != token:
                break
        STATS["guess_hits"] += used - 1
        # valid context: everything before this pass, the pending tokens and the guesses that were confirmed
        llm.n_tokens = base + len(pending) + used - 1
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        if block > 1:
            set_blocked(llm, llm.n_tokens)
        if done:
            break
        pending = [completion[-1]]
    STATS["answer_tokens"] += len(completion)
    if drafts is not None:
        drafts.remember(draft_key, completion)
    return {
        "model": llm.model_path,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text.decode("utf-8", errors="ignore")},
            "logprobs": {"content": content, "refusal": None} if top_n is not None else None,
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": len(prompt_tokens),
            "completion_tokens": len(completion),
            "total_tokens": len(prompt_tokens) + len(completion),
            # the prefix taken from the KV cache, in OpenAI's field: the ledger counts it as cache reads
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def token_logprobs(llm: Any, logits: Any, token: int, before: list[int], top_n: int) -> dict[str, Any]:
    """One position's logprob entry (OpenAI's shape): the chosen token and the top_n alternatives."""
    import numpy as np

    m = logits.max()
    logprobs = logits - (m + np.log(np.exp(logits - m).sum()))
    k = min(top_n, len(logprobs))
    best = np.argpartition(-logprobs, k - 1)[:k]
    best = best[np.argsort(-logprobs[best], kind="stable")]
    token_str = llm.detokenize([token], prev_tokens=before).decode("utf-8", errors="ignore")
    top = {llm.detokenize([int(i)], prev_tokens=before).decode("utf-8", errors="ignore"): float(logprobs[i]) for i in best}
    top[token_str] = float(logprobs[token])
    return {
        "token": token_str,
        "bytes": None,
        "logprob": float(logprobs[token]),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()],
    }
