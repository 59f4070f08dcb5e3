"""The facade every stage uses: LLMConfig -> make_client -> await client.complete / complete_many.

    cfg = LLMConfig(model="claude")                     # or "gpt-4.1-mini", "local", "x.gguf"
    async with make_client(cfg) as llm:
        answers = await llm.complete_many(requests)     # in request order; failures carry .failure
    llm.usage.summary()                                 # per stage: calls, cache hits, tokens, dollars

Each request: response cache -> (one at a time per identical request) -> (the first request of a new
cacheable prefix alone) -> concurrency / rate limits -> backend call with retries -> cost -> cache
(successes only) -> usage tracker.

Provider prompt caching (llm/prompt_cache.py): the fixed prefix of a request (`LLMRequest.cache_prefix`)
is marked for Anthropic and sent first for OpenAI. A provider can only read a prefix back once a
request has written it, so when many requests share a prefix long enough to be cached, the first one
is sent alone and the others wait for its answer: one cache write instead of one per request in
flight. The dry run prices requests the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from interp_eval.errors import UserError
from interp_eval.paths import cache_dir
from interp_eval.progress import progress_bar

from .backends import Backend, BatchBackend, make_backend
from .batch import run_batch
from .cache import ResponseCache, request_key
from .limiter import Limiter
from .models import cache_model_name, resolve_model
from .pricing import PriceTable
from .prompt_cache import cache_rule, estimate_usage, split_body, wire_body
from .retry import CallFailed, RetryPolicy
from .types import DryRunEstimate, LLMRequest, LLMResponse, Usage
from .usage import UsageTracker

log = logging.getLogger("interp_eval.llm.client")

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4


@dataclass
class LLMConfig:
    """Everything that picks and paces an LLM. Defaults suit hosted APIs; tests shrink the waits.

    model: "claude" / any claude-* id / gpt-* / o* / any id with base_url / "local" / a .gguf path;
      None means the offline local model. backend: force anthropic | openai | local.
    concurrency: requests in flight at once (the local backend always runs one at a time).
    rpm / tpm: requests / tokens per minute started (None = no limit).
    timeout: seconds one request to a hosted API may take (a hard limit, however slowly the answer
      trickles in); a request that takes longer fails like a 5xx and is retried.
    max_attempts: tries per call (retries = max_attempts - 1); a call that fails them all is a provider
      error, which a re-run of the stage asks again.
    cache_path: the SQLite response cache (None = cache_dir()/llm_cache.sqlite); use_cache=False skips it.
    batch: use the provider's Batch API (half price, slow) in complete_many.
    prices_path: a price JSON merged over the packaged one (default: $INTERP_EVAL_PRICES).
    local_n_ctx / local_threads: context length and decoding threads of the local model (None = one a physical core).
    api_key: normally None (read from ANTHROPIC_API_KEY / OPENAI_API_KEY); never printed.
    """

    model: str | None = None
    backend: str | None = None
    base_url: str | None = None
    concurrency: int = 32
    rpm: float | None = None
    tpm: float | None = None
    timeout: float = 120.0
    max_attempts: int = 6
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    cache_path: str | Path | None = None
    use_cache: bool = True
    batch: bool = False
    batch_poll_interval: float = 30.0
    prices_path: str | Path | None = None
    progress: bool = True
    local_n_ctx: int = 8192
    local_threads: int | None = None
    api_key: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.timeout > 0:
            raise UserError(f"--timeout {self.timeout}: give a positive number of seconds")
        if self.max_attempts < 1:
            raise UserError(f"--max-attempts {self.max_attempts}: give at least 1")

    def resolved(self) -> tuple[str, str]:
        """(backend, model id) this config selects."""
        return resolve_model(self.model, self.backend, self.base_url)


def estimate_input_tokens(request: LLMRequest) -> int:
    """chars/4 plus a few tokens per message: close enough for budgeting, needs no tokenizer."""
    chars = len(request.system or "") + sum(len(m["content"]) for m in request.messages)
    return chars // CHARS_PER_TOKEN + MESSAGE_OVERHEAD_TOKENS * (len(request.messages) + (request.system is not None))


def chars_tokens(text: str) -> int:
    """The dry run's token count of one text: chars/4."""
    return len(text) // CHARS_PER_TOKEN


def price_rates(prices: PriceTable, backend: str, model: str, batch: bool) -> dict[str, float] | None:
    """Dollars per million tokens of each kind (types.COST_PARTS) for the model, batch discount applied."""
    if backend == "local":
        return None
    p = prices.price(model)
    if p is None:
        return None
    f = prices.batch_discount if batch else 1.0
    return {"input": p.input * f, "cache_read": p.cache_read * f, "cache_write": p.cache_write * f, "output": p.output * f}


def dry_run(
    cfg: LLMConfig, requests: Sequence[LLMRequest], *, expected_output_tokens: int | None = None, cache: ResponseCache | None = None
) -> DryRunEstimate:
    """What complete_many(requests) would send and cost; sends nothing and needs no API key."""
    backend, model = cfg.resolved()
    key_model = cache_model_name(backend, model)
    unique: dict[str, LLMRequest] = {}
    for r in requests:
        unique.setdefault(request_key(backend, key_model, r), r)
    own_cache = cache is None and cfg.use_cache
    if own_cache:
        cache = ResponseCache(cfg.cache_path)
    try:
        cached = cache.contains_many(unique) if cache is not None else set()
    finally:
        if own_cache and cache is not None:
            cache.close()
    to_send = [r for k, r in unique.items() if k not in cached]
    prices = PriceTable.load(cfg.prices_path)
    usage = sum(estimate_usage(backend, model, to_send, chars_tokens, prices), Usage())
    usage.output_tokens = sum(expected_output_tokens or r.expected_output_tokens or r.max_tokens for r in to_send)
    batch = cfg.batch and backend != "local"
    bill = prices.bill(backend, model, usage, batch=batch)
    return DryRunEstimate(
        backend=backend, model=model, calls=len(requests), unique_calls=len(unique), cached=len(unique) - len(to_send),
        to_send=len(to_send), input_tokens=usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
        output_tokens=usage.output_tokens, cost_usd=None if bill is None else bill.total, batch=batch,
        uncached_input_tokens=usage.input_tokens, cache_read_tokens=usage.cache_read_tokens,
        cache_write_tokens=usage.cache_write_tokens, cost_parts=None if bill is None else bill.parts(),
        prices=price_rates(prices, backend, model, batch),
    )


class LLMClient:
    def __init__(self, cfg: LLMConfig, backend: Backend):
        self.cfg = cfg
        self.backend = backend
        self.cache = ResponseCache(cfg.cache_path) if cfg.use_cache else None
        self.prices = PriceTable.load(cfg.prices_path)
        self.policy = RetryPolicy(cfg.max_attempts, cfg.backoff_initial, cfg.backoff_max)
        self.usage = UsageTracker()
        cap = backend.max_concurrency
        self.concurrency = min(cfg.concurrency, cap) if cap else cfg.concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._limiter: Limiter | None = None
        self._key_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        self._cache_rule = cache_rule(backend.name, backend.model, self.prices)
        self._warming: dict[str, asyncio.Event] = {}  # cacheable prefix -> set once its first request has answered

    def __repr__(self) -> str:
        return f"LLMClient(backend={self.backend.name!r}, model={self.backend.model!r})"

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def model(self) -> str:
        return self.backend.model

    def key(self, request: LLMRequest) -> str:
        """The response-cache key of a request for this backend and model."""
        return request_key(self.backend.name, self.backend.cache_model, request)

    @property
    def uses_batch(self) -> bool:
        """complete_many goes through the provider's batch API (cfg.batch, on a backend that has one)."""
        return self.cfg.batch and isinstance(self.backend, BatchBackend)

    @property
    def limiter(self) -> Limiter:
        self._bind_loop()
        assert self._limiter is not None
        return self._limiter

    def _bind_loop(self) -> None:
        """asyncio objects and SDK connection pools belong to one event loop: rebuild them for a new one."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            if self._loop is not None:
                self.backend.reset()
            self._loop = loop
            self._limiter = Limiter(self.concurrency, self.cfg.rpm, self.cfg.tpm)
            self._key_locks = {}
            self._warming = {}

    # -- one request ---------------------------------------------------------------------------------
    async def complete(self, request: LLMRequest) -> LLMResponse:
        """Answer one request: from the cache, or by calling the backend (with retries).

        An API failure does not raise: the response then has ok=False and failure.reason. The exception
        is a key the provider refuses (HTTP 401/403): that raises UserError, since every call would fail.
        Identical requests in flight at the same time are sent once; the others wait and hit the cache.
        """
        self._bind_loop()
        key = self.key(request)
        hit = self.cached_response(request, key)
        if hit is not None:
            return hit
        lock, users = self._key_locks.get(key, (asyncio.Lock(), 0))
        self._key_locks[key] = (lock, users + 1)
        try:
            async with lock:
                hit = self.cached_response(request, key)
                if hit is not None:
                    return hit
                async with self._warm(request):
                    response = await self._call(request)
                if response.ok and self.cache is not None:
                    self.cache.put(key, self.backend.name, self.backend.cache_model, response.to_cache())
                self.usage.add(response)
                return response
        finally:
            lock, users = self._key_locks[key]
            if users <= 1:
                del self._key_locks[key]
            else:
                self._key_locks[key] = (lock, users - 1)

    def cacheable_prefix(self, request: LLMRequest) -> str | None:
        """The key of the shortest prefix of `request` the provider would cache (chars/4 tokens), or None."""
        rule = self._cache_rule
        if rule is None or request.cache_prefix is None:
            return None
        split = split_body(wire_body(self.backend.name, self.backend.model, request), rule.provider, chars_tokens)
        return next((k for k, n in split.points if n >= rule.min_tokens), None)

    @contextlib.asynccontextmanager
    async def _warm(self, request: LLMRequest):
        """Send the first request of a cacheable prefix alone; the others with that prefix wait for its answer
        (however it ends), so that they read the provider's cache instead of each writing it."""
        prefix = self.cacheable_prefix(request)
        if prefix is None:
            yield
            return
        ready = self._warming.get(prefix)
        if ready is not None:
            try:  # a first request stuck in retries holds the others back for one timeout at most
                await asyncio.wait_for(ready.wait(), self.backend.timeout)
            except asyncio.TimeoutError:
                pass
            yield
            return
        self._warming[prefix] = ready = asyncio.Event()
        try:
            yield
        finally:
            ready.set()

    def cached_response(self, request: LLMRequest, key: str | None = None) -> LLMResponse | None:
        """The cached answer to `request` (None if there is none, or no cache), counted in usage as a
        cache hit. `key`: the request's cache key, when the caller has it already."""
        if self.cache is None:
            return None
        stored = self.cache.get(key or self.key(request))
        if stored is None:
            return None
        response = LLMResponse.from_cache(stored, self.backend.name, request.stage)
        self.usage.add(response)
        return response

    async def _call(self, request: LLMRequest) -> LLMResponse:
        limiter = self.limiter
        tokens = estimate_input_tokens(request) + request.max_tokens

        timeout = self.backend.timeout

        async def attempt() -> LLMResponse:
            async with limiter.slot(tokens):  # the timeout starts once the request is sent, not while it queues
                try:
                    return await asyncio.wait_for(self.backend.complete(request), timeout)
                except asyncio.TimeoutError:
                    raise asyncio.TimeoutError(f"no answer within {timeout:g} s (--timeout)") from None

        t0 = time.perf_counter()
        try:
            response, attempts = await self.policy.call(attempt, what=f"{self.backend.name}:{self.backend.model}")
        except CallFailed as e:
            if e.failure.status_code in (401, 403) and self.backend.key_env:
                # every other call would fail the same way: stop the run with something the user can fix
                raise UserError(
                    f"the {self.backend.name} API refused the key from {self.backend.key_env} (HTTP {e.failure.status_code}): "
                    "check the key, or use --model local for the offline model"
                ) from None
            return LLMResponse(
                text=None, backend=self.backend.name, model=self.backend.model, failure=e.failure,
                attempts=e.failure.attempts, latency_s=time.perf_counter() - t0, stage=request.stage,
            )
        response.attempts = attempts
        response.latency_s = time.perf_counter() - t0
        response.stage = request.stage
        bill = self.prices.bill(self.backend.name, self.backend.model, response.usage)
        response.cost_usd, response.cost_parts = (None, None) if bill is None else (bill.total, bill.parts())
        return response

    # -- many requests -------------------------------------------------------------------------------
    async def complete_many(
        self,
        requests: Sequence[LLMRequest],
        *,
        desc: str | None = None,
        progress: bool | None = None,
        batch_state_path: str | Path | None = None,
    ) -> list[LLMResponse]:
        """Answer all requests concurrently (bounded); results in request order.

        With cfg.batch on a hosted backend, goes through the provider's Batch API instead; the pending
        batch id lives in `batch_state_path` (give a file in the run directory) so a restarted run resumes
        polling rather than resubmitting.
        """
        requests = list(requests)
        show = self.cfg.progress if progress is None else progress
        label = desc or (requests[0].stage if requests else "llm")
        if self.uses_batch:
            path = Path(batch_state_path) if batch_state_path is not None else self._default_batch_state(requests)
            return await run_batch(self, requests, path, progress=show, desc=label)
        if self.cfg.batch:
            log.info("the %s backend has no batch API: sending requests one by one", self.backend.name)
        results: list[LLMResponse | None] = [None] * len(requests)
        with progress_bar(f"{label} ({self.backend.model})", total=len(requests), enabled=show) as bar:

            async def one(i: int, r: LLMRequest) -> None:
                results[i] = await self.complete(r)
                bar.advance(1)

            tasks = [asyncio.ensure_future(one(i, r)) for i, r in enumerate(requests)]
            try:
                await asyncio.gather(*tasks)
            except BaseException:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
        out = [r for r in results if r is not None]
        failed = sum(not r.ok for r in out)
        hits = sum(r.cached for r in out)
        log.info("%s: %d requests, %d from cache, %d failed", label, len(out), hits, failed)
        return out

    def _default_batch_state(self, requests: Sequence[LLMRequest]) -> Path:
        digest = hashlib.sha256("".join(sorted(self.key(r) for r in requests)).encode()).hexdigest()[:16]
        return cache_dir() / "batches" / f"{self.backend.name}-{digest}.json"

    def estimate(self, requests: Sequence[LLMRequest], *, expected_output_tokens: int | None = None) -> DryRunEstimate:
        """dry_run with this client's cache: nothing is sent."""
        return dry_run(self.cfg, requests, expected_output_tokens=expected_output_tokens, cache=self.cache)

    async def aclose(self) -> None:
        await self.backend.aclose()
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    async def __aenter__(self) -> "LLMClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def make_client(cfg: LLMConfig | None = None) -> LLMClient:
    """Pick the backend for cfg (UserError for a missing key, package or file) and wrap it."""
    cfg = cfg or LLMConfig()
    backend_name, model = cfg.resolved()
    backend = make_backend(
        backend_name, model, base_url=cfg.base_url, api_key=cfg.api_key, timeout=cfg.timeout,
        local_n_ctx=cfg.local_n_ctx, local_threads=cfg.local_threads,
    )
    return LLMClient(cfg, backend)
