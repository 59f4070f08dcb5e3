"""One class per provider; each turns an LLMRequest into one API call and the reply into an LLMResponse."""

from __future__ import annotations

from .base import Backend, BatchBackend

__all__ = ["Backend", "BatchBackend", "make_backend"]


def make_backend(
    name: str,
    model: str,
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float = 120.0,
    local_n_ctx: int = 8192,
    local_threads: int | None = None,
) -> Backend:
    if name == "anthropic":
        from .anthropic_backend import AnthropicBackend

        return AnthropicBackend(model, base_url=base_url, api_key=api_key, timeout=timeout)
    if name == "openai":
        from .openai_backend import OpenAIBackend

        return OpenAIBackend(model, base_url=base_url, api_key=api_key, timeout=timeout)
    if name == "local":
        from .local_backend import LocalBackend

        return LocalBackend(model, n_ctx=local_n_ctx, n_threads=local_threads)
    raise ValueError(f"unknown backend {name!r}")
