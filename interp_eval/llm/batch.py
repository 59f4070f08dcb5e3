"""Batch APIs (half price, answers within 24 h): Anthropic Message Batches and OpenAI Batch.

This module is the provider-neutral driver; each BatchBackend (llm/backends/) submits, polls and
parses batches in its provider's protocol.

run_batch() sends only the requests missing from the response cache, writes the pending batch ids to
a small JSON state file (in the run directory) before polling, and on a restart polls those ids again
instead of resubmitting. Results are folded into the same response cache; failures inside a batch
come back as failures with their reasons. Results are returned in request order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from interp_eval.progress import progress_bar

from .backends import BatchBackend
from .backends.base import BatchPoll
from .retry import CallFailed
from .types import LLMFailure, LLMRequest, LLMResponse

if TYPE_CHECKING:  # the client imports this module: the driver uses only its public methods
    from .client import LLMClient

log = logging.getLogger("interp_eval.llm.batch")

MAX_BATCH_REQUESTS = 10_000
MAX_BATCH_BYTES = 100 << 20
STATE_VERSION = 1


# -- state file ----------------------------------------------------------------------------------------
def load_state(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
    except json.JSONDecodeError:
        log.warning("ignoring unreadable batch state file %s", path)
        return None
    return state if isinstance(state, dict) and state.get("version") == STATE_VERSION else None


def save_state(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=1))
    os.replace(tmp, path)


# -- the driver ----------------------------------------------------------------------------------------
async def run_batch(
    client: "LLMClient", requests: Sequence[LLMRequest], state_path: Path, *, progress: bool = True, desc: str = "batch"
) -> list[LLMResponse]:
    backend = client.backend
    keys = [client.key(r) for r in requests]
    unique: dict[str, LLMRequest] = {}
    for k, r in zip(keys, requests):
        unique.setdefault(k, r)
    fresh: dict[str, LLMResponse] = {}

    state = load_state(state_path)
    if state is not None:
        if state.get("backend") != backend.name:
            log.warning("batch state %s belongs to the %s backend, not %s: ignoring it", state_path, state.get("backend"), backend.name)
        else:
            log.info("resuming %d pending batch(es) from %s", len(state["batches"]), state_path)
            fresh.update(await _finish(client, state, progress, desc))
        state_path.unlink(missing_ok=True)

    cached = client.cache.contains_many(unique) if client.cache is not None else set()
    todo = {k: r for k, r in unique.items() if k not in cached and k not in fresh}
    if todo:
        state = {"version": STATE_VERSION, "backend": backend.name, "model": backend.model, "created": time.time(), "batches": []}
        for chunk in _chunks(client, todo):
            try:
                state["batches"].append(await _submit(client, chunk))
            except CallFailed as e:  # the batch could not be created: each of its requests failed
                for k, r in chunk.items():
                    fresh[k] = LLMResponse(text=None, backend=backend.name, model=backend.model, failure=e.failure, batch=True, stage=r.stage)
                continue
            save_state(state_path, state)  # before polling: a restart must find the id
        if state["batches"]:
            fresh.update(await _finish(client, state, progress, desc))
        state_path.unlink(missing_ok=True)

    # Results in request order. A fresh answer counts (and costs) once; repeats are cache hits.
    results: list[LLMResponse] = []
    used: set[str] = set()
    for k, r in zip(keys, requests):
        if k in fresh and k not in used:
            used.add(k)
            resp = fresh[k]
            resp.stage = r.stage
            client.usage.add(resp)
        else:
            resp = client.cached_response(r, k)  # records the hit
            if resp is None:
                prior = fresh.get(k)
                failure = prior.failure if prior is not None and prior.failure else LLMFailure("BatchMissingResult", "no result for this request")
                resp = LLMResponse(text=None, backend=backend.name, model=backend.model, failure=failure, batch=True, stage=r.stage)
                client.usage.add(resp)
        results.append(resp)
    for k, resp in fresh.items():  # paid for by a resumed batch although no longer asked for
        if k not in used and k not in unique:
            client.usage.add(resp)
    return results


def _chunks(client: "LLMClient", todo: dict[str, LLMRequest]) -> list[dict[str, LLMRequest]]:
    chunks: list[dict[str, LLMRequest]] = [{}]
    size = 0
    for k, r in todo.items():
        n = len(json.dumps(r.key_fields()))
        if chunks[-1] and (len(chunks[-1]) >= MAX_BATCH_REQUESTS or size + n > MAX_BATCH_BYTES):
            chunks.append({})
            size = 0
        chunks[-1][k] = r
        size += n
    return chunks


async def _submit(client: "LLMClient", chunk: dict[str, LLMRequest]) -> dict[str, Any]:
    """Create one batch; custom_id is the cache key (64 hex chars fit both APIs)."""
    backend = _batch_backend(client)
    info = await backend.submit_batch(chunk, client.policy)
    log.info("submitted %s batch %s with %d requests", backend.name, info["id"], len(chunk))
    return {**info, "stages": {k: r.stage for k, r in chunk.items()}}


async def _finish(client: "LLMClient", state: dict[str, Any], progress: bool, desc: str) -> dict[str, LLMResponse]:
    """Poll every batch in `state` until it ends, then fetch, price and cache its results."""
    backend = _batch_backend(client)
    total = sum(len(b["stages"]) for b in state["batches"])
    ended: dict[str, BatchPoll] = {}
    with progress_bar(f"{desc} ({backend.model}, batch)", total=total, enabled=progress) as bar:
        while True:
            done = await _poll_once(client, state, ended)
            bar.set_completed(min(done, total))
            if len(ended) == len(state["batches"]):
                break
            await asyncio.sleep(client.cfg.batch_poll_interval)
        bar.set_completed(total)

    fresh: dict[str, LLMResponse] = {}
    for b in state["batches"]:
        try:
            got = await backend.batch_results(ended[b["id"]], client.policy)
        except CallFailed:
            log.error("cannot download the results of batch %s; its id stays in the state file: rerun to resume", b["id"])
            raise
        rest = got.rest or LLMFailure("BatchMissingResult", f"batch {b['id']} returned no result for this request")
        for k, stage in b["stages"].items():
            item = got.answers.get(k, rest)
            if isinstance(item, LLMFailure):
                resp = LLMResponse(text=None, backend=backend.name, model=backend.model, failure=item)
            else:
                resp = item
                bill = client.prices.bill(backend.name, backend.model, resp.usage, batch=True)
                resp.cost_usd, resp.cost_parts = (None, None) if bill is None else (bill.total, bill.parts())
            resp.batch, resp.stage, resp.attempts = True, stage, 1
            fresh[k] = resp
    if client.cache is not None:
        client.cache.put_many((k, backend.name, backend.cache_model, r.to_cache()) for k, r in fresh.items() if r.ok)
    failed = sum(not r.ok for r in fresh.values())
    log.info("batch results: %d answered, %d failed", len(fresh) - failed, failed)
    return fresh


async def _poll_once(client: "LLMClient", state: dict[str, Any], ended: dict[str, BatchPoll]) -> int:
    """Ask for every unfinished batch's status once; returns how many requests are done."""
    backend = _batch_backend(client)
    done = 0
    for b in state["batches"]:
        if b["id"] in ended:
            done += len(b["stages"])
            continue
        try:
            poll = await backend.poll_batch(b["id"], len(b["stages"]), client.policy)
        except CallFailed:
            log.error("cannot reach the %s batch API to poll batch %s; its id stays in the state file: rerun to resume", backend.name, b["id"])
            raise
        done += poll.done
        if poll.finished:
            ended[b["id"]] = poll
    return done


def _batch_backend(client: "LLMClient") -> BatchBackend:
    assert isinstance(client.backend, BatchBackend), f"the {client.backend.name} backend has no batch API"
    return client.backend
