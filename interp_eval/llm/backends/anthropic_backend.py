"""Claude through the official anthropic SDK (AsyncAnthropic), online and through Message Batches.
No logprobs: the API gives none."""

from __future__ import annotations

import logging
import os
from typing import Any

import anthropic

from interp_eval.errors import UserError

from ..redact import redact, register_secret
from ..retry import MalformedResponseError, RetryPolicy, call_with_retries
from ..types import LLMFailure, LLMRequest, LLMResponse, Usage
from .base import BatchBackend, BatchPoll, BatchResults

log = logging.getLogger("interp_eval.llm.anthropic")

KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"
_SDK_KWARGS = ("model", "max_tokens", "messages", "system", "stop_sequences")
_CACHE_MARK = {"type": "ephemeral"}


def message_params(request: LLMRequest, model: str) -> dict[str, Any]:
    """The Messages API body of `request` (online and in Message Batches alike); needs no key.

    The fixed prefix (`request.cache_prefix`: the system prompt and the first N messages) ends in one
    `cache_control` breakpoint, on the system prompt (N = 0) or on the N-th message; everything after
    it varies from call to call. The breakpoint is sent whatever the prefix's length: the API caches
    a marked prefix only from the model's minimum length on (prices.json `cache_min`) and bills a
    shorter one as ordinary input, without an error.
    """
    mark_at = request.cache_prefix
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(request.messages):
        if mark_at is not None and mark_at > 0 and i == mark_at - 1:
            messages.append({"role": m["role"], "content": [{"type": "text", "text": m["content"], "cache_control": dict(_CACHE_MARK)}]})
        else:
            messages.append({"role": m["role"], "content": m["content"]})
    params: dict[str, Any] = {"model": model, "max_tokens": request.max_tokens, "messages": messages}
    if request.system is not None:
        if mark_at == 0:
            params["system"] = [{"type": "text", "text": request.system, "cache_control": dict(_CACHE_MARK)}]
        else:
            params["system"] = request.system
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.top_p is not None:
        params["top_p"] = request.top_p
    if request.stop:
        params["stop_sequences"] = list(request.stop)
    return params


class AnthropicBackend(BatchBackend):
    name = "anthropic"
    key_env = KEY_ENV

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None, timeout: float = 120.0):
        key = api_key or os.environ.get(KEY_ENV)
        if not key:
            raise UserError(f"{KEY_ENV} is not set: export it, or use --model local for the offline model")
        register_secret(key)
        self._key = key
        self.base_url = base_url or os.environ.get(BASE_URL_ENV) or None
        self.model = model
        self.cache_model = model
        self.timeout = timeout

    def _make_sdk(self) -> Any:
        return anthropic.AsyncAnthropic(api_key=self._key, base_url=self.base_url, timeout=self.timeout, max_retries=0)

    def build_params(self, request: LLMRequest) -> dict[str, Any]:
        """The Messages API body (also a Message Batches `params` entry)."""
        return message_params(request, self.model)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        params = self.build_params(request)
        known = {k: v for k, v in params.items() if k in _SDK_KWARGS}
        extra = {k: v for k, v in params.items() if k not in _SDK_KWARGS}
        message = await self.sdk.messages.create(**known, extra_body=extra or None, timeout=self.timeout)
        return self.parse_message(message)

    def parse_message(self, message: Any) -> LLMResponse:
        """A Message (SDK object) -> LLMResponse."""
        try:
            blocks = message.content
            text = "".join(b.text for b in blocks if getattr(b, "type", None) == "text")
            u = message.usage
            usage = Usage(
                input_tokens=int(u.input_tokens or 0),
                output_tokens=int(u.output_tokens or 0),
                cache_read_tokens=int(getattr(u, "cache_read_input_tokens", None) or 0),
                cache_write_tokens=int(getattr(u, "cache_creation_input_tokens", None) or 0),
            )
            model = str(getattr(message, "model", None) or self.model)
            finish = getattr(message, "stop_reason", None)
        except (AttributeError, TypeError, ValueError) as e:
            raise MalformedResponseError(f"Anthropic message without the expected fields: {e}") from None
        return LLMResponse(text=text, backend=self.name, model=model, usage=usage, logprobs=None, finish_reason=finish)

    # -- Message Batches ---------------------------------------------------------------------------
    async def submit_batch(self, requests: dict[str, LLMRequest], policy: RetryPolicy) -> dict[str, str]:
        items = [{"custom_id": k, "params": self.build_params(r)} for k, r in requests.items()]
        batch = await call_with_retries(policy, lambda: self.sdk.messages.batches.create(requests=items), "batch create")
        return {"id": batch.id}

    async def poll_batch(self, batch_id: str, size: int, policy: RetryPolicy) -> BatchPoll:
        info = await call_with_retries(policy, lambda: self.sdk.messages.batches.retrieve(batch_id), "batch poll")
        done = size - int(info.request_counts.processing)
        return BatchPoll(batch_id, finished=info.processing_status == "ended", done=done, info=info)

    async def batch_results(self, ended: BatchPoll, policy: RetryPolicy) -> BatchResults:
        async def fetch() -> list[Any]:
            return [item async for item in await self.sdk.messages.batches.results(ended.batch_id)]

        items = await call_with_retries(policy, fetch, "batch results")
        return BatchResults({item.custom_id: self._batch_answer(item.result) for item in items})

    def _batch_answer(self, result: Any) -> LLMResponse | LLMFailure:
        """One batch item's result: the parsed message, or why the request failed."""
        if result.type == "succeeded":
            try:
                return self.parse_message(result.message)
            except MalformedResponseError as e:
                return LLMFailure("MalformedResponseError", str(e))
        if result.type == "errored":
            err = getattr(result.error, "error", None)
            kind = getattr(err, "type", None) or "error"
            message = getattr(err, "message", None) or str(result.error)
            return LLMFailure(f"batch_errored:{kind}", redact(str(message)))
        return LLMFailure(f"batch_{result.type}", f"the batch request was {result.type}")  # canceled, expired
