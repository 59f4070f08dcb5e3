"""Provider prompt caching: what a provider bills as uncached input, cache reads and cache writes.

Anthropic caches the prefix of a request that ends at a `cache_control` breakpoint (the backends
mark the fixed system + few-shot prefix), once that prefix reaches the model's minimum
(prices.json `cache_min`); a later request with the same prefix reads it at the cache-read price,
the first one writes it at the cache-write price, and a shorter prefix is ordinary input. OpenAI
caches automatically: the longest prefix (from 1,024 tokens, in 128-token steps) that an earlier
request began with is read at the cache-read price; writes cost nothing extra.

`PromptCache` replays that bookkeeping over a sequence of requests, in the provider's wire format
(the same bodies the backends send), with a token counter of the caller's choice: chars/4 for a
dry run, a real tokenizer in bench/llm_cost.py. It assumes every request finds what the requests
before it wrote (a warm cache: the client sends the first request of a new cacheable prefix alone,
see client.py; Message Batches give no such order, so their cache hits are the provider's best
effort) and an entry never expires (Anthropic's lives 5 minutes after its last use).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Callable

from .types import LLMRequest, Usage

MESSAGE_OVERHEAD = 4  # tokens a message (or the system prompt) costs beyond its text: role markers and separators
OPENAI_CACHE_STEP = 128


@dataclass(frozen=True)
class CacheRule:
    """How one provider caches prompts for one model."""

    provider: str  # "anthropic" (marked prefixes) or "openai" (automatic)
    min_tokens: int  # a prefix shorter than this is never cached
    step: int = 1  # cached lengths above min_tokens come in steps of this many tokens

    def cached_length(self, tokens: int) -> int:
        """How much of a matching prefix of `tokens` tokens the provider bills as a cache read."""
        if tokens < self.min_tokens:
            return 0
        return self.min_tokens + (tokens - self.min_tokens) // self.step * self.step


def cache_rule(backend: str, model: str, prices: Any = None) -> CacheRule | None:
    """The rule of `backend` for `model` (None: the backend has no prompt cache, e.g. the local model).

    The minimum comes from the price table's `cache_min` for the model, else 1,024 tokens (the
    smallest any provider caches), so an unknown model is never assumed to cache more than it does
    on a model we know.
    """
    if backend not in ("anthropic", "openai"):
        return None
    price = prices.price(model) if prices is not None else None
    minimum = price.cache_min if price is not None and price.cache_min else 1024
    return CacheRule("anthropic", minimum) if backend == "anthropic" else CacheRule("openai", minimum, OPENAI_CACHE_STEP)


def wire_body(backend: str, model: str, request: LLMRequest) -> dict[str, Any]:
    """The body the backend sends for `request` (backends/: the same function they use)."""
    if backend == "anthropic":
        from .backends.anthropic_backend import message_params

        return message_params(request, model)
    from .backends.openai_backend import chat_body

    return chat_body(request, model)


@dataclass(frozen=True)
class Piece:
    """One text block of a body in reading order: its text, whether a message starts with it, whether a
    cache breakpoint closes it (Anthropic) and whether its message ends with it."""

    text: str
    starts_message: bool
    marked: bool
    ends_message: bool


def pieces(body: dict[str, Any]) -> list[Piece]:
    """An Anthropic Messages body or an OpenAI chat body as text blocks in the order the model reads them."""
    out: list[Piece] = []

    def add(content: Any) -> None:
        blocks = [{"text": content}] if isinstance(content, str) else list(content)
        for i, b in enumerate(blocks):
            out.append(Piece(str(b.get("text", "")), i == 0, "cache_control" in b, i == len(blocks) - 1))

    if body.get("system") is not None:  # Anthropic: the system prompt is a field of its own
        add(body["system"])
    for m in body.get("messages", []):
        add(m["content"])
    return out


@dataclass(frozen=True)
class Split:
    """One request as a provider bills its input: the tokens and where its cacheable prefixes end."""

    total: int
    points: tuple[tuple[str, int], ...]  # (prefix key, prefix tokens) at each place a prefix may be cached


def split_body(body: dict[str, Any], provider: str, count: Callable[[str], int]) -> Split:
    """Count a body's input tokens (each message MESSAGE_OVERHEAD more than its text) and list its
    cacheable prefixes: the marked ones (Anthropic) or every message boundary (OpenAI, automatic)."""
    model = body.get("model")
    digest = hashlib.sha256(json.dumps(model).encode())
    tokens = 0
    points = []
    for p in pieces(body):
        tokens += count(p.text) + (MESSAGE_OVERHEAD if p.starts_message else 0)
        digest.update(json.dumps([p.starts_message, p.text]).encode())
        if p.marked if provider == "anthropic" else p.ends_message:
            points.append((digest.copy().hexdigest(), tokens))
    return Split(tokens, tuple(points))


class PromptCache:
    """Replays a provider's prompt cache over requests sent one after the other (see the module)."""

    def __init__(self, rule: CacheRule | None, count: Callable[[str], int]):
        self.rule = rule
        self.count = count
        self.seen: set[str] = set()

    def bill(self, body: dict[str, Any]) -> Usage:
        """The input side of one call's usage: uncached input, cache reads and cache writes (output 0)."""
        split = split_body(body, self.rule.provider if self.rule else "", self.count)
        if self.rule is None:
            return Usage(input_tokens=split.total)
        eligible = [(k, n) for k, n in split.points if n >= self.rule.min_tokens]
        read = max((self.rule.cached_length(n) for k, n in eligible if k in self.seen), default=0)
        write = 0
        if self.rule.provider == "anthropic" and eligible:
            write = max(0, eligible[-1][1] - read)  # from the last hit to the last breakpoint
        self.seen.update(k for k, _ in eligible)
        return Usage(input_tokens=split.total - read - write, cache_read_tokens=read, cache_write_tokens=write)


def estimate_usage(backend: str, model: str, requests, count: Callable[[str], int], prices: Any = None) -> list[Usage]:
    """Each request's input usage as `backend` would bill it, sent in order after a cold start."""
    cache = PromptCache(cache_rule(backend, model, prices), count)
    if cache.rule is None:
        return [Usage(input_tokens=split_body(wire_body("openai", model, r), "", count).total) for r in requests]
    return [cache.bill(wire_body(backend, model, r)) for r in requests]


__all__ = ["CacheRule", "MESSAGE_OVERHEAD", "PromptCache", "Split", "cache_rule", "estimate_usage", "pieces", "split_body",
           "wire_body"]
