"""Plain data passed in and out of the LLM layer: requests, responses, usage, failures, logprobs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

COST_PARTS = ("input", "cache_read", "cache_write", "output")  # uncached input, prompt-cache reads and writes, output


@dataclass(frozen=True)
class LLMRequest:
    """One chat completion.

    messages: [{"role": "user" | "assistant", "content": str}, ...]; the system prompt goes in `system`.
    logprobs / top_logprobs: ask for per-token logprobs with this many alternatives per position
      (OpenAI-compatible and local backends; Anthropic returns None).
    cache_prefix: None, or N >= 0 meaning "system + the first N messages are a fixed prefix shared by
      many requests" (Anthropic: marked with cache_control; OpenAI-compatible: kept first and byte-identical).
    stage: which pipeline stage asks (explain, detection, fuzzing ...); for usage accounting only.
    expected_output_tokens: what a dry run should assume instead of max_tokens.
    echo_marker: score the prompt instead of answering it (the simulation scorer): the request is one user turn of
      raw text (no system prompt; no chat template is applied), split at every occurrence of the marker, which is
      removed. Nothing is generated; the response's `logprobs` hold, for each split point in order, the token that
      follows it and the `top_logprobs` most likely tokens there. Backends that cannot score a prompt (Anthropic,
      OpenAI's own chat models) refuse it; the score stage refuses such a scorer before any work.
    Neither `stage`, `cache_prefix` nor `expected_output_tokens` is part of the response-cache key.
    """

    messages: tuple[dict[str, str], ...] | list[dict[str, str]]
    system: str | None = None
    max_tokens: int = 512
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | list[str] | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    cache_prefix: int | None = None
    stage: str = "llm"
    expected_output_tokens: int | None = None
    echo_marker: str | None = None

    def __post_init__(self) -> None:
        msgs = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in self.messages)
        object.__setattr__(self, "messages", msgs)
        if self.stop is not None:
            object.__setattr__(self, "stop", tuple(self.stop))
        for m in msgs:
            if m["role"] not in ("user", "assistant"):
                raise ValueError(f"message role must be 'user' or 'assistant' (system goes in `system`), got {m['role']!r}")
        if self.cache_prefix is not None and not 0 <= self.cache_prefix <= len(msgs):
            raise ValueError(f"cache_prefix={self.cache_prefix} is outside 0..{len(msgs)} messages")
        if self.top_logprobs < 0:
            raise ValueError("top_logprobs must be >= 0")
        if self.echo_marker is not None and (self.system is not None or len(msgs) != 1 or msgs[0]["role"] != "user"
                                             or not self.echo_marker):
            raise ValueError("an echo_marker request is one user turn of raw text, without a system prompt")

    def echo_pieces(self) -> list[str]:
        """The raw text of an echo_marker request, split at the marker (the marker removed)."""
        assert self.echo_marker is not None
        return self.messages[0]["content"].split(self.echo_marker)

    @classmethod
    def user(cls, prompt: str, **kw: Any) -> "LLMRequest":
        """A single user turn: LLMRequest.user("Is Paris in France?", system=..., max_tokens=5)."""
        return cls(messages=({"role": "user", "content": prompt},), **kw)

    def key_fields(self) -> dict[str, Any]:
        """What determines the answer: the content-addressed cache key is built from this."""
        echo = {"echo_marker": self.echo_marker} if self.echo_marker is not None else {}  # old keys stay as they were
        return {**echo,
            "system": self.system,
            "messages": [dict(m) for m in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "stop": list(self.stop) if self.stop is not None else None,
            "logprobs": bool(self.logprobs),
            "top_logprobs": int(self.top_logprobs) if self.logprobs else 0,
        }


@dataclass
class Usage:
    """Tokens of one call. input_tokens excludes cache reads and cache writes (they are priced apart)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_tokens + other.cache_read_tokens,
            self.cache_write_tokens + other.cache_write_tokens,
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Usage":
        d = d or {}
        return cls(**{k: int(d.get(k) or 0) for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")})


@dataclass
class TokenLogprob:
    """One generated token, its logprob, and the top alternatives at that position [(token, logprob), ...]."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "logprob": self.logprob, "top": [[t, lp] for t, lp in self.top]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TokenLogprob":
        return cls(d["token"], float(d["logprob"]), [(str(t), float(lp)) for t, lp in d.get("top", [])])


@dataclass
class LLMFailure:
    """Why a call finally failed (after retries): exception type + message, never a silent default."""

    error_type: str
    message: str
    attempts: int = 1
    status_code: int | None = None

    @property
    def reason(self) -> str:
        code = f" (HTTP {self.status_code})" if self.status_code else ""
        return f"{self.error_type}{code}: {self.message}"


@dataclass
class LLMResponse:
    """The outcome of one request. ok is False when `failure` is set; then `text` is None.

    cost_usd: dollars paid for this call; 0.0 for a cache hit or the local backend; None when the
      model's price is unknown. cost_parts: the same dollars per kind of token (COST_PARTS:
      input, cache_read, cache_write, output), None where cost_usd is None or 0 without parts.
      cached: served from the response cache (no network call).
    logprobs: per generated token, or None when not asked for or the backend cannot give them.
    """

    text: str | None
    backend: str
    model: str
    usage: Usage = field(default_factory=Usage)
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    cost_usd: float | None = 0.0
    cost_parts: dict[str, float] | None = None
    cached: bool = False
    batch: bool = False
    attempts: int = 1
    latency_s: float = 0.0
    stage: str = "llm"
    failure: LLMFailure | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def error(self) -> str | None:
        return self.failure.reason if self.failure else None

    # What the response cache stores (no cost, no timing, no stage: those belong to the call).
    def to_cache(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "model": self.model,
            "usage": self.usage.to_dict(),
            "logprobs": [t.to_dict() for t in self.logprobs] if self.logprobs is not None else None,
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_cache(cls, d: dict[str, Any], backend: str, stage: str) -> "LLMResponse":
        lps = d.get("logprobs")
        return cls(
            text=d["text"],
            backend=backend,
            model=d["model"],
            usage=Usage.from_dict(d.get("usage")),
            logprobs=[TokenLogprob.from_dict(t) for t in lps] if lps is not None else None,
            finish_reason=d.get("finish_reason"),
            cost_usd=0.0,
            cached=True,
            attempts=0,
            stage=stage,
        )

    def to_row(self) -> dict[str, Any]:
        """A flat, Parquet-friendly record of this call (no text)."""
        return {
            "stage": self.stage,
            "backend": self.backend,
            "model": self.model,
            "ok": self.ok,
            "error": self.error,
            "cached": self.cached,
            "batch": self.batch,
            "attempts": self.attempts,
            "latency_s": self.latency_s,
            **self.usage.to_dict(),
            "cost_usd": self.cost_usd,
            **self.cost_columns(),
        }

    def cost_columns(self) -> dict[str, float | None]:
        """The ledger's dollars per kind of token (`<part>_cost_usd`): the bill's parts, zeros for a free
        call (a response-cache hit, a failure, the local model), None when the price is unknown."""
        parts = self.cost_parts
        if parts is None:
            parts = dict.fromkeys(COST_PARTS, 0.0 if self.cost_usd == 0.0 else None)
        return {f"{k}_cost_usd": parts.get(k) for k in COST_PARTS}


@dataclass
class DryRunEstimate:
    """What a run would cost, computed without sending anything.

    input_tokens is every input token of the requests to send; the provider bills it in three parts
    (llm/prompt_cache.py): uncached_input_tokens, cache_read_tokens (the fixed prefix read back from the
    provider's prompt cache) and cache_write_tokens (the prefix written the first time). cost_parts:
    the dollars of each part and of the output (COST_PARTS), None when the model's price is unknown;
    prices: the model's dollars per million tokens of each part (batch discount applied).
    """

    backend: str
    model: str
    calls: int            # requests given
    unique_calls: int     # after removing exact duplicates
    cached: int           # unique requests already in the response cache
    to_send: int          # unique requests that would be paid for
    input_tokens: int     # estimated, over the requests to send
    output_tokens: int    # estimated, over the requests to send
    cost_usd: float | None  # None when the model's price is unknown
    batch: bool
    tokenizer: str = "chars/4"
    uncached_input_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_parts: dict[str, float] | None = None
    prices: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __add__(self, other: "DryRunEstimate") -> "DryRunEstimate":
        """Two estimates of the same backend and model together (e.g. two scorers)."""
        def plus(a, b):
            return None if a is None or b is None else a + b
        parts = None if self.cost_parts is None or other.cost_parts is None else {
            k: self.cost_parts[k] + other.cost_parts[k] for k in COST_PARTS}
        return DryRunEstimate(
            self.backend, self.model, self.calls + other.calls, self.unique_calls + other.unique_calls, self.cached + other.cached,
            self.to_send + other.to_send, self.input_tokens + other.input_tokens, self.output_tokens + other.output_tokens,
            plus(self.cost_usd, other.cost_usd), self.batch, self.tokenizer, self.uncached_input_tokens + other.uncached_input_tokens,
            self.cache_read_tokens + other.cache_read_tokens, self.cache_write_tokens + other.cache_write_tokens, parts,
            self.prices)

    def describe(self) -> str:
        """One line: calls, tokens by kind with their price, dollars (what --dry-run prints)."""
        money = (lambda d: "?" if d is None else f"${d:,.2f}")
        parts = self.cost_parts or {}
        price = self.prices or {}

        def part(tokens: int, name: str, key: str) -> str:
            rate = f" at ${price[key]:g}/M" if key in price else ""
            dollars = f" = {money(parts.get(key))}" if self.cost_parts is not None else ""
            return f"~{tokens:,} {name}{rate}{dollars}"

        inputs = [part(self.uncached_input_tokens, "uncached input", "input")]
        if self.cache_read_tokens or self.cache_write_tokens or self.prices:  # the local model has no prompt cache
            inputs += [part(self.cache_read_tokens, "prompt-cache reads", "cache_read"),
                       part(self.cache_write_tokens, "prompt-cache writes", "cache_write")]
        cost = "cost unknown (no price for this model)" if self.cost_usd is None else f"about {money(self.cost_usd)}"
        return (f"{self.to_send:,} calls to send ({self.cached:,} answered from the response cache); input "
                + ", ".join(inputs) + f"; {part(self.output_tokens, 'output', 'output')}; {cost} on {self.model}"
                + (" (batch: half price; prompt-cache hits are the provider's best effort)" if self.batch else ""))
