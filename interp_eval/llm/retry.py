"""The one place LLM calls are retried (the SDKs' own retries are switched off with max_retries=0).

Retryable: rate limits (429), request timeouts (408), overload (529) and other 5xx, client-side
timeouts, connection errors and malformed response bodies. Waits grow exponentially, with jitter,
except that a `retry-after-ms` / `retry-after` header from the server is honoured.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable, TypeVar

import tenacity

from .redact import redact
from .types import LLMFailure

log = logging.getLogger("interp_eval.llm.retry")
T = TypeVar("T")

RETRYABLE_STATUS = {408, 429}
MAX_RETRY_AFTER_S = 600.0


class MalformedResponseError(Exception):
    """The server answered, but not with the shape the API promises (retryable)."""


class BackendError(Exception):
    """A non-retryable backend failure that is not an SDK exception (e.g. llama.cpp refused the prompt)."""


def status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _is_sdk_connection_error(exc: BaseException) -> bool:
    # APIConnectionError (and its APITimeoutError) of both SDKs, without importing them here.
    return any(c.__name__ in ("APIConnectionError", "APITimeoutError") for c in type(exc).__mro__)


def is_retryable(exc: BaseException) -> bool:
    code = status_code(exc)
    if code is not None:
        return code in RETRYABLE_STATUS or code >= 500
    return isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError, MalformedResponseError, json.JSONDecodeError)) or (
        _is_sdk_connection_error(exc)
    )


def is_call_error(exc: BaseException) -> bool:
    """Errors that make one call fail (recorded as a failure) rather than crash the run (bugs)."""
    if is_retryable(exc) or isinstance(exc, BackendError):
        return True
    return any(c.__name__ in ("AnthropicError", "OpenAIError") for c in type(exc).__mro__)


def retry_after_seconds(exc: BaseException) -> float | None:
    """The server's `retry-after-ms` or `retry-after` (seconds or an HTTP date), if any."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return min(max(float(ms) / 1000.0, 0.0), MAX_RETRY_AFTER_S)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            seconds = float(value)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            seconds = parsed.timestamp() - time.time()
        return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
    except (TypeError, ValueError, OverflowError):
        return None


def failure_from(exc: BaseException, attempts: int) -> LLMFailure:
    message = redact(str(exc) or repr(exc)).replace("\n", " ")
    if len(message) > 500:
        message = message[:500] + "..."
    return LLMFailure(error_type=type(exc).__name__, message=message, attempts=attempts, status_code=status_code(exc))


@dataclass
class RetryPolicy:
    max_attempts: int = 6
    initial_wait: float = 1.0
    max_wait: float = 60.0
    _reported_failure: bool = field(default=False, init=False, repr=False)

    def wait_seconds(self, attempt: int, exc: BaseException | None) -> float:
        after = retry_after_seconds(exc) if exc is not None else None
        if after is not None:
            return after
        # exponential backoff with jitter: uniform(c/2, c) with c = min(max_wait, initial * 2^(attempt-1))
        ceiling = min(self.max_wait, self.initial_wait * (2 ** (attempt - 1)))
        return random.uniform(ceiling / 2, ceiling)

    async def call(self, fn: Callable[[], Awaitable[T]], *, what: str = "LLM call") -> tuple[T, int]:
        """Run fn with retries; returns (result, attempts).

        When the call finally fails with an API/network error, raises CallFailed carrying the reason and
        the number of attempts. Anything else (a bug) propagates unchanged.
        """
        attempts = 0

        def _wait(state: tenacity.RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            return self.wait_seconds(state.attempt_number, exc)

        def _before_sleep(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            # one line per retried call: DEBUG (-v); a run's INFO log is its progress bar and summaries
            log.debug(
                "%s failed (attempt %d/%d: %s); retrying in %.2fs",
                what, state.attempt_number, self.max_attempts,
                redact(f"{type(exc).__name__}: {exc}")[:300], state.next_action.sleep if state.next_action else 0.0,
            )

        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(max(1, self.max_attempts)),
            wait=_wait,
            retry=tenacity.retry_if_exception(is_retryable),
            before_sleep=_before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    result = await fn()
        except Exception as e:
            if is_call_error(e):
                failure = failure_from(e, attempts)
                # the first such failure says why; the others (often the same outage) are DEBUG lines, and every
                # failure's reason is in the usage ledger
                level = logging.DEBUG if self._reported_failure else logging.WARNING
                self._reported_failure = True
                log.log(level, "%s failed for good after %d attempt(s): %s", what, attempts, failure.reason[:300])
                raise CallFailed(failure) from e
            raise
        return result, attempts


class CallFailed(Exception):
    """A call that failed for good; `.failure` says why."""

    def __init__(self, failure: LLMFailure):
        super().__init__(failure.reason)
        self.failure = failure


async def call_with_retries(policy: RetryPolicy, fn: Callable[[], Awaitable[T]], what: str) -> T:
    """Retries for batch bookkeeping (create, poll, download); raises CallFailed when they run out."""
    result, _ = await policy.call(fn, what=what)
    return result
