"""OpenAI and any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, OpenRouter) via AsyncOpenAI,
online and through the Batch API."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from typing import Any
from urllib.parse import urlparse

import openai

from interp_eval.errors import UserError

from ..redact import redact, register_secret
from ..retry import MalformedResponseError, RetryPolicy, call_with_retries
from ..types import LLMFailure, LLMRequest, LLMResponse, TokenLogprob, Usage
from .base import BatchBackend, BatchPoll, BatchResults

log = logging.getLogger("interp_eval.llm.openai")

KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"
MAX_TOP_LOGPROBS = 20
_NO_KEY = "no-key-needed"  # local servers ignore the key, but the SDK wants one
_CHAT_PATH = "/v1/chat/completions"
_ENDED = ("completed", "failed", "expired", "cancelled")  # batch statuses after which nothing more comes


def is_local_url(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    if host in ("localhost", "") or host.endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_private or ip.is_unspecified


def is_official(base_url: str | None) -> bool:
    """Whether requests go to OpenAI's own API (no --base-url, or api.openai.com), not an OpenAI-compatible server."""
    return base_url is None or "api.openai.com" in base_url


def prompt_logprobs_refusal(backend: str, base_url: str | None) -> str | None:
    """Why this backend cannot score a prompt (`LLMRequest.echo_marker`, the simulation scorer), or None when it can:
    the offline model can, an OpenAI-compatible server through /v1/completions with echo can, Anthropic's API and
    OpenAI's own models cannot."""
    if backend == "local":
        return None
    base_url = base_url or os.environ.get(BASE_URL_ENV)
    if backend == "openai" and not is_official(base_url):
        return None
    who = "Anthropic's API returns no token logprobs" if backend == "anthropic" else \
        "OpenAI's own models return no logprobs for the prompt"
    return (f"--scorer simulation reads the simulator's logprobs at every token of the prompt, and {who}: use the offline "
            "model (--model local) or an OpenAI-compatible server that echoes prompt logprobs (--base-url, e.g. vLLM)")


def chat_body(request: LLMRequest, model: str, *, official: bool = True) -> dict[str, Any]:
    """The /v1/chat/completions body of `request` (online and in the Batch API alike); needs no key.

    A cached prefix needs nothing marked here: the system prompt and the first messages go first,
    byte for byte as given, which is what OpenAI's automatic prompt cache (prompts from 1,024 tokens,
    matched in 128-token steps) and other OpenAI-compatible prefix caches key on.
    `official`: api.openai.com, whose newer models only accept max_completion_tokens.
    """
    messages: list[dict[str, str]] = []
    if request.system is not None:
        messages.append({"role": "system", "content": request.system})
    messages.extend(dict(m) for m in request.messages)
    body: dict[str, Any] = {"model": model, "messages": messages}
    body["max_completion_tokens" if official else "max_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = list(request.stop)
    if request.logprobs:
        body["logprobs"] = True
        if request.top_logprobs:
            body["top_logprobs"] = min(request.top_logprobs, MAX_TOP_LOGPROBS)
    return body


class OpenAIBackend(BatchBackend):
    name = "openai"
    key_env = KEY_ENV

    def __init__(self, model: str, *, base_url: str | None = None, api_key: str | None = None, timeout: float = 120.0):
        self.base_url = base_url or os.environ.get(BASE_URL_ENV) or None
        key = api_key or os.environ.get(KEY_ENV)
        if not key:
            if self.base_url is None:
                raise UserError(f"{KEY_ENV} is not set: export it, or use --model local for the offline model")
            if not is_local_url(self.base_url):
                raise UserError(f"{KEY_ENV} is not set (the server at --base-url {self.base_url} needs one): export it")
            key = _NO_KEY
        register_secret(key)
        self._key = key
        self.official = is_official(self.base_url)
        self.model = model
        self.cache_model = model
        self.timeout = timeout

    def _make_sdk(self) -> Any:
        return openai.AsyncOpenAI(api_key=self._key, base_url=self.base_url, timeout=self.timeout, max_retries=0)

    def build_body(self, request: LLMRequest) -> dict[str, Any]:
        """The /v1/chat/completions body (also the `body` of a Batch API line)."""
        if request.echo_marker is not None:
            raise UserError("prompt scoring (echo) has no chat or Batch API form: it goes through /v1/completions online")
        return chat_body(request, self.model, official=self.official)

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if request.echo_marker is not None:
            return await self._echo(request)
        completion = await self.sdk.chat.completions.create(**self.build_body(request), timeout=self.timeout)
        data = completion.model_dump() if hasattr(completion, "model_dump") else completion
        return parse_chat_completion(data, backend=self.name, model=self.model)

    async def _echo(self, request: LLMRequest) -> LLMResponse:
        """Prompt scoring on an OpenAI-compatible server (vLLM and others): the legacy /v1/completions endpoint with
        echo=True returns every prompt token's logprob and top alternatives; OpenAI's own models do not."""
        if self.official:
            raise UserError(prompt_logprobs_refusal(self.name, self.base_url))
        pieces = request.echo_pieces()
        completion = await self.sdk.completions.create(
            model=self.model, prompt="".join(pieces), max_tokens=1, temperature=0.0, echo=True,
            logprobs=min(max(request.top_logprobs, 1), MAX_TOP_LOGPROBS), timeout=self.timeout)
        data = completion.model_dump() if hasattr(completion, "model_dump") else completion
        return parse_echo_completion(data, pieces, backend=self.name, model=self.model)

    # -- Batch API ---------------------------------------------------------------------------------
    async def submit_batch(self, requests: dict[str, LLMRequest], policy: RetryPolicy) -> dict[str, str]:
        """Upload the requests as a JSONL file, then create the batch that reads it."""
        lines = [
            json.dumps({"custom_id": k, "method": "POST", "url": _CHAT_PATH, "body": self.build_body(r)})
            for k, r in requests.items()
        ]
        data = ("\n".join(lines) + "\n").encode("utf-8")
        upload = await call_with_retries(
            policy, lambda: self.sdk.files.create(file=("requests.jsonl", data, "application/jsonl"), purpose="batch"), "batch upload"
        )
        batch = await call_with_retries(
            policy,
            lambda: self.sdk.batches.create(input_file_id=upload.id, endpoint=_CHAT_PATH, completion_window="24h"),
            "batch create",
        )
        return {"id": batch.id, "input_file_id": upload.id}

    async def poll_batch(self, batch_id: str, size: int, policy: RetryPolicy) -> BatchPoll:
        info = await call_with_retries(policy, lambda: self.sdk.batches.retrieve(batch_id), "batch poll")
        counts = info.request_counts
        done = int(counts.completed + counts.failed) if counts else 0
        return BatchPoll(batch_id, finished=info.status in _ENDED, done=done, info=info)

    async def batch_results(self, ended: BatchPoll, policy: RetryPolicy) -> BatchResults:
        """Answers and per-request errors from the output and error files, and the failure of the rest."""
        batch = ended.info
        answers: dict[str, LLMResponse | LLMFailure] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await call_with_retries(policy, lambda fid=file_id: self.sdk.files.content(fid), "batch download")
            for line in content.text.splitlines():
                if line.strip():
                    row = json.loads(line)
                    answers[row.get("custom_id")] = self._batch_answer(row)
        rest = None
        if batch.status == "failed":
            errors = getattr(getattr(batch, "errors", None), "data", None) or []
            reason = "; ".join(f"{e.code}: {e.message}" for e in errors) or "the batch failed validation"
            rest = LLMFailure("batch_failed", redact(reason))
        elif batch.status in ("expired", "cancelled"):
            rest = LLMFailure(f"batch_{batch.status}", f"the batch was {batch.status} before this request ran")
        return BatchResults(answers, rest)

    def _batch_answer(self, row: dict[str, Any]) -> LLMResponse | LLMFailure:
        """One line of a batch's output or error file: the parsed completion, or why the request failed."""
        response = row.get("response") or {}
        if response.get("status_code") == 200 and not row.get("error"):
            try:
                return parse_chat_completion(response.get("body"), backend=self.name, model=self.model)
            except MalformedResponseError as e:
                return LLMFailure("MalformedResponseError", str(e))
        err = row.get("error") or ((response.get("body") or {}).get("error")) or {}
        code = err.get("code") or err.get("type") or "error"
        return LLMFailure(f"batch_errored:{code}", redact(str(err.get("message") or err)), status_code=response.get("status_code"))


def parse_echo_completion(data: Any, pieces: list[str], *, backend: str, model: str) -> LLMResponse:
    """A /v1/completions answer with echo=True -> LLMResponse whose logprobs are the entries at the marked points
    (the prompt token that starts at each boundary between pieces, with its top alternatives)."""
    try:
        lp = data["choices"][0]["logprobs"]
        tokens, offsets = [str(t) for t in lp["tokens"]], [int(o) for o in lp["text_offset"]]
        token_lps, tops = lp["token_logprobs"], lp["top_logprobs"]
        at = {o: i for i, o in reversed(list(enumerate(offsets)))}  # the first token starting at each offset
        points, end = [], 0
        for piece in pieces[:-1]:
            end += len(piece)
            points.append(end)
        entries = []
        for point in points:
            if point not in at or at[point] == 0:
                raise ValueError(f"no prompt token starts at character {point} (the server's tokens cross a marked point)")
            i = at[point]
            alternatives = tops[i] or {}
            entries.append(TokenLogprob(tokens[i], float(token_lps[i]), [(str(t), float(v)) for t, v in alternatives.items()]))
        u = data.get("usage") or {}
        usage = Usage(input_tokens=int(u.get("prompt_tokens") or 0), output_tokens=int(u.get("completion_tokens") or 0))
        reported = str(data.get("model") or model)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise MalformedResponseError(f"echoed completion without the expected logprobs: {type(e).__name__}: {e}") from None
    return LLMResponse(text="", backend=backend, model=reported, usage=usage, logprobs=entries, finish_reason="echo")


def parse_chat_completion(data: Any, *, backend: str, model: str) -> LLMResponse:
    """An OpenAI-shaped chat completion dict (also what llama-cpp-python returns) -> LLMResponse."""
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        if not isinstance(text, str):
            raise TypeError("message content is not a string")
        lp = choice.get("logprobs") or {}
        content = lp.get("content") if isinstance(lp, dict) else None
        logprobs = None
        if content is not None:
            logprobs = [
                TokenLogprob(
                    token=str(t["token"]),
                    logprob=float(t["logprob"]),
                    top=[(str(a["token"]), float(a["logprob"])) for a in (t.get("top_logprobs") or [])],
                )
                for t in content
            ]
        u = data.get("usage") or {}
        details = u.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or 0)
        written = int(details.get("cache_write_tokens") or 0)
        usage = Usage(
            input_tokens=max(int(u.get("prompt_tokens") or 0) - cached - written, 0),
            output_tokens=int(u.get("completion_tokens") or 0),
            cache_read_tokens=cached,
            cache_write_tokens=written,
        )
        reported = str(data.get("model") or model)
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as e:
        raise MalformedResponseError(f"chat completion without the expected fields: {type(e).__name__}: {e}") from None
    return LLMResponse(text=text, backend=backend, model=reported, usage=usage, logprobs=logprobs, finish_reason=finish)
