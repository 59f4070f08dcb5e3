"""What every backend offers the client."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from ..retry import RetryPolicy
from ..types import LLMFailure, LLMRequest, LLMResponse


class Backend(ABC):
    name: str
    model: str            # the id sent to the provider (or the GGUF path)
    cache_model: str      # the model part of the response-cache key
    key_env: str | None = None  # the environment variable the API key came from
    max_concurrency: int | None = None  # a hard cap, e.g. 1 for an in-process model
    timeout: float | None = None  # seconds one request may take (None: no limit, e.g. an in-process model)

    @abstractmethod
    async def complete(self, request: LLMRequest) -> LLMResponse:
        """One attempt; raises the SDK's exception on an error (the client retries)."""

    def reset(self) -> None:
        """Forget clients bound to an event loop (called when the client is used from a new loop)."""

    async def aclose(self) -> None:
        """Release network clients."""


class HostedBackend(Backend):
    """A provider reached through its official async SDK client, made lazily and closed on demand.

    The SDK's own retries are turned off by `_make_sdk` (tenacity in the client is the one place
    retries happen); the API key is never part of the repr.
    """

    base_url: str | None = None
    _sdk: Any = None

    @abstractmethod
    def _make_sdk(self) -> Any:
        """A new SDK client bound to the running event loop."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def sdk(self) -> Any:
        if self._sdk is None:
            self._sdk = self._make_sdk()
        return self._sdk

    def reset(self) -> None:
        self._sdk = None

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None


@dataclass
class BatchPoll:
    """One look at a submitted batch."""

    batch_id: str
    finished: bool  # ended, whether every request was answered or not
    done: int  # requests answered or failed so far
    info: Any  # the provider's batch object, which batch_results reads once the batch has ended


@dataclass
class BatchResults:
    """What an ended batch returned, by custom_id (the request's cache key)."""

    answers: dict[str, LLMResponse | LLMFailure]
    rest: LLMFailure | None = None  # why the requests missing from `answers` failed, when the batch says


class BatchBackend(HostedBackend):
    """A provider with a batch API (half price, answers within 24 h). llm/batch.py decides what to
    send, keeps the state file and caches the results; these methods speak the provider's protocol,
    each SDK call retried under `policy` (they raise CallFailed when the retries run out)."""

    @abstractmethod
    async def submit_batch(self, requests: dict[str, LLMRequest], policy: RetryPolicy) -> dict[str, str]:
        """Create one batch of `requests` keyed by custom_id; returns its ids ("id" and any others)."""

    @abstractmethod
    async def poll_batch(self, batch_id: str, size: int, policy: RetryPolicy) -> BatchPoll:
        """The status of a batch of `size` requests."""

    @abstractmethod
    async def batch_results(self, ended: BatchPoll, policy: RetryPolicy) -> BatchResults:
        """Download and parse the results of an ended batch (an answer, or why it failed, per request)."""
