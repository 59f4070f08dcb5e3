"""Prompt scoring on a loaded llama.cpp model (`LLMRequest.echo_marker`): the distribution of the next token at
each marked point of a raw text prompt, read in one forward pass, with nothing generated.

The text is tokenized piece by piece between the markers (the first piece after a BOS), so every marked point is
a token boundary whatever the tokenizer would merge across it; the logits read at a piece's last token are the
model's prediction of the next piece's first token. As in greedy decoding (local_decode.py), the longest prefix the
context already holds is kept (one simulation prompt's header, few-shot and explanation are shared by all the
windows of a latent), the pass starts at an ALIGN block boundary and is padded to a whole block, so the
probabilities do not depend on what the context held before.
"""

from __future__ import annotations

from typing import Any, Sequence

from .local_decode import ALIGN, STATS, blocked, eval_at, keep_prefix, set_blocked, token_logprobs


def tokenize_pieces(llm: Any, pieces: Sequence[str]) -> tuple[list[int], list[int]]:
    """(tokens, read positions): the pieces' tokens end to end, and the position of each piece's last token but the
    last piece's (the logits there predict the next piece's first token)."""
    tokens: list[int] = []
    reads: list[int] = []
    for i, piece in enumerate(pieces):
        tokens += llm.tokenize(piece.encode("utf-8"), add_bos=i == 0, special=False)
        if i < len(pieces) - 1:
            if not tokens:
                raise ValueError("an echo prompt cannot start with its marker (no token to read the first point after)")
            reads.append(len(tokens) - 1)
    return tokens, reads


def echo_logprobs(llm: Any, pieces: Sequence[str], top_n: int) -> dict[str, Any]:
    """The marked points' next-token logprobs, in the chat-completion shape parse_chat_completion reads (empty text;
    `logprobs.content` one entry per marked point: the token that follows it and the top_n alternatives)."""
    import numpy as np

    tokens, reads = tokenize_pieces(llm, pieces)
    if len(tokens) >= llm.n_ctx():
        raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {llm.n_ctx()}")
    content: list[dict[str, Any]] = []
    start = 0
    if reads:
        # nothing after the last read position changes its logits: the prompt is evaluated up to it
        needed = tokens[: reads[-1] + 1]
        kept = keep_prefix(llm, needed, min(blocked(llm), reads[0]))
        start = kept - kept % ALIGN
        llm.n_tokens = start
        chunk = needed[start:]
        pad = min(-len(chunk) % ALIGN, llm.n_ctx() - len(needed))
        rows = eval_at(llm, chunk + chunk[-1:] * pad, [r - start for r in reads])
        llm.n_tokens = len(needed)
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        set_blocked(llm, llm.n_tokens)
        llm._requires_eval = True
        n_vocab = llm.n_vocab()
        for r, ptr in zip(reads, rows):
            logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
            content.append(token_logprobs(llm, logits, tokens[r + 1], [], max(top_n, 1)))
        STATS["calls"] += 1
        STATS["prompt_tokens"] += len(needed)
        STATS["reused_tokens"] += kept
        STATS["evaluated_tokens"] += len(chunk) + pad
        STATS["passes"] += 1
    return {
        "model": llm.model_path,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": ""},
                     "logprobs": {"content": content, "refusal": None}, "finish_reason": "echo"}],
        "usage": {"prompt_tokens": len(tokens), "completion_tokens": 0, "total_tokens": len(tokens),
                  "prompt_tokens_details": {"cached_tokens": start}},  # the prefix kept from the previous prompt
    }
