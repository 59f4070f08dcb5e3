"""A local HTTP server that speaks the Anthropic Messages API and the OpenAI Chat Completions API.

Tests point the real SDKs at it (ANTHROPIC_BASE_URL=server.url, OpenAI base_url=server.url + "/v1").
It binds to 127.0.0.1 only, on a free port, and serves from a thread.

- Answers come from `server.answer(req) -> str | FakeAnswer`, where req is {"api", "model", "system",
  "messages": [{"role", "content": str}], "body"}; raise FakeItemError in it for a 400 (or an errored
  batch item). Swap it per test (e.g. answer from ground truth).
- Every request is counted (`server.count("messages")`) and logged with its JSON body (`server.log`).
- Faults for the completion endpoints: `server.fault_queue.extend(["429", "500", "529", "slow",
  "malformed"])` for the next calls, or `server.fault_rate` / `server.fault_kinds` at random (seeded).
  429 carries `retry-after: server.retry_after`; "slow" answers after `server.slow_seconds`.
- `server.require_key = "..."`: completion calls without that key get 401.
- `server.latency` seconds per completion call; `server.max_inflight` shows overlap.
- Text completions (`/v1/completions`, OpenAI-compatible servers such as vLLM) with `echo=True`: the prompt is
  tokenized into tabs, line breaks and the text between them (`echo_tokenize`), and every prompt token gets its
  logprob and `logprobs` top alternatives from `server.echo_top(tokens, i) -> {token: logprob}` (default: the
  token itself, certain), with character offsets, as the legacy Completions API returns them.
- Batches: Anthropic Message Batches and OpenAI Files + Batch; a batch ends `batch_ready_after` s after
  it was created.
- Prompt caching, counted as chars/4 tokens a text block: Anthropic caches the prefix up to each block
  marked `cache_control` once it has `cache_min_tokens` (default 0: any marked prefix); a request reads
  the longest marked prefix an earlier request wrote and writes the rest up to its last breakpoint
  (`cache_read_input_tokens`, `cache_creation_input_tokens`; `input_tokens` is the remainder). OpenAI
  caches automatically when `openai_cache_min_tokens` is set (default None: never): the longest
  leading run of messages an earlier request began with, from that many tokens on, in
  `openai_cache_step` steps, reported as `prompt_tokens_details.cached_tokens` (within `prompt_tokens`).
  `usage_log` keeps every usage object returned, in order.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import math
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

FAULT_KINDS = ("429", "500", "529", "slow", "malformed")


class FakeItemError(Exception):
    """Raise from an answer callable: the request is invalid (HTTP 400 / an errored batch item)."""


@dataclass
class FakeAnswer:
    """An answer with explicit per-token logprobs: [(token, logprob, [(alt, logprob), ...]), ...]."""

    text: str
    tokens: list[tuple[str, float, list[tuple[str, float]]]] | None = None


def echo_answer(req: dict[str, Any]) -> str:
    last = req["messages"][-1]["content"] if req["messages"] else ""
    return f"answer to: {last[:40]}"


def echo_tokenize(text: str) -> list[str]:
    """The text completions' tokens: every tab and line break alone, the text between them as one token."""
    return re.findall(r"[\t\n]|[^\t\n]+", text)


def tokenize(text: str) -> list[str]:
    return re.findall(r"\s*\w+|\s*[^\w\s]|\s+", text)


_PAIRS = {"0": "1", "1": "0", "yes": "no", "no": "yes", "Yes": "No", "No": "Yes"}


def default_logprobs(text: str, top: int) -> list[tuple[str, float, list[tuple[str, float]]]]:
    """Each token chosen with p=0.8; a digit's or yes/no's alternative gets the other 0.2."""
    out = []
    for tok in tokenize(text):
        lp = math.log(0.8)
        alts = [(tok, lp)]
        other = _PAIRS.get(tok.strip())
        if other is not None:
            alts.append((tok.replace(tok.strip(), other), math.log(0.2)))
        while len(alts) < top:
            alts.append((f"<alt{len(alts)}>", math.log(0.2 / (2 ** len(alts)))))
        out.append((tok, lp, alts[:top]))
    return out


def _chars(req: dict[str, Any]) -> int:
    return len(req.get("system") or "") + sum(len(m["content"]) for m in req["messages"])


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat().replace("+00:00", "Z")


@dataclass
class LoggedRequest:
    t: float
    method: str
    path: str
    endpoint: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    status: int | None = None


class FakeLLMServer:
    def __init__(self, answer: Callable[[dict[str, Any]], str | FakeAnswer] | None = None, seed: int = 0):
        self.answer = answer or echo_answer
        self.latency = 0.0
        self.fault_rate = 0.0
        self.fault_kinds: tuple[str, ...] = FAULT_KINDS
        self.fault_queue: deque[str] = deque()
        self.retry_after: str | None = "0.05"
        self.slow_seconds = 2.0
        self.batch_ready_after = 0.2
        self.require_key: str | None = None  # answer 401 unless the request carries this key
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.calls: Counter[str] = Counter()
        self.answered: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.log: list[LoggedRequest] = []
        self.inflight = 0
        self.max_inflight = 0
        self.batches: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self._prefixes: dict[str, float] = {}  # cached prefix -> when it was written
        self.cache_min_tokens = 0
        self.openai_cache_min_tokens: int | None = None
        self.openai_cache_step = 1
        self.usage_log: list[dict[str, Any]] = []
        self.echo_top: Callable[[list[str], int], dict[str, float]] = lambda tokens, i: {tokens[i]: 0.0}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> "FakeLLMServer":
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> "FakeLLMServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def count(self, endpoint: str | None = None) -> int:
        """Requests received (faulty ones included) for one endpoint, or in all."""
        with self._lock:
            return sum(self.calls.values()) if endpoint is None else self.calls[endpoint]

    def completion_calls(self) -> int:
        return self.count("messages") + self.count("chat") + self.count("completions")

    def bodies(self, endpoint: str) -> list[Any]:
        with self._lock:
            return [r.body for r in self.log if r.endpoint == endpoint]

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()
            self.answered.clear()
            self.faults.clear()
            self.log.clear()
            self.usage_log.clear()
            self.max_inflight = 0

    # -- behaviour -----------------------------------------------------------------------------------------
    def _next_fault(self) -> str | None:
        with self._lock:
            if self.fault_queue:
                return self.fault_queue.popleft()
            if self.fault_rate and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds)
        return None

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def _answer(self, req: dict[str, Any]) -> FakeAnswer:
        got = self.answer(req)
        return got if isinstance(got, FakeAnswer) else FakeAnswer(str(got))

    def _anthropic_message(self, body: dict[str, Any], arrived: float | None = None) -> dict[str, Any]:
        system = body.get("system")
        req = {
            "api": "anthropic",
            "model": body.get("model"),
            "system": _text_of(system) if system is not None else None,
            "messages": [{"role": m["role"], "content": _text_of(m["content"])} for m in body.get("messages", [])],
            "body": body,
        }
        ans = self._answer(req)
        # prompt caching: a prefix ends at each block marked with cache_control
        blocks: list[tuple[str, bool]] = []
        if isinstance(system, list):
            blocks += [(b.get("text", ""), "cache_control" in b) for b in system]
        elif system:
            blocks.append((system, False))
        for m in body.get("messages", []):
            c = m["content"]
            blocks += [(c, False)] if isinstance(c, str) else [(b.get("text", ""), "cache_control" in b) for b in c]
        total = sum(len(t) // 4 for t, _ in blocks) + 3
        points, tokens = [], 0
        for i, (text, mark) in enumerate(blocks):
            tokens += len(text) // 4
            if mark and tokens and tokens >= self.cache_min_tokens:
                points.append((json.dumps([body.get("model"), blocks[: i + 1]]), tokens))
        with self._lock:
            read = max((n for k, n in points if self._written_before(k, arrived)), default=0)
            write = max(0, points[-1][1] - read) if points else 0
            self._remember(k for k, _ in points)
        usage = {"input_tokens": total - read - write, "cache_read_input_tokens": read, "cache_creation_input_tokens": write}
        out_tokens = len(tokenize(ans.text))
        return {
            "id": f"msg_{uuid.uuid4().hex[:12]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [{"type": "text", "text": ans.text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": self._log_usage({**usage, "output_tokens": out_tokens}),
        }

    def _log_usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            self.usage_log.append(usage)
        return usage

    def _written_before(self, key: str, arrived: float | None) -> bool:
        """A prefix is read only by a request that arrived after an earlier answer wrote it (caller holds the lock)."""
        written = self._prefixes.get(key)
        return written is not None and (arrived is None or written <= arrived)

    def _remember(self, keys) -> None:
        now = time.monotonic()
        for k in keys:
            self._prefixes.setdefault(k, now)

    def _openai_cached(self, body: dict[str, Any], arrived: float | None = None) -> int:
        """Tokens of the longest leading run of messages an earlier request began with (automatic caching)."""
        if self.openai_cache_min_tokens is None:
            return 0
        lead, tokens, keys = [], 0, []
        for m in body.get("messages", []):
            lead.append([m["role"], _text_of(m["content"])])
            tokens += len(_text_of(m["content"])) // 4
            if tokens >= self.openai_cache_min_tokens:
                keys.append((json.dumps([body.get("model"), lead]), tokens))
        with self._lock:
            hit = max((n for k, n in keys if self._written_before(k, arrived)), default=0)
            self._remember(k for k, _ in keys)
        if not hit:
            return 0
        m = self.openai_cache_min_tokens
        return m + (hit - m) // self.openai_cache_step * self.openai_cache_step

    def _openai_completion(self, body: dict[str, Any], arrived: float | None = None) -> dict[str, Any]:
        msgs = body.get("messages", [])
        system = next((m["content"] for m in msgs if m["role"] == "system"), None)
        req = {
            "api": "openai",
            "model": body.get("model"),
            "system": system,
            "messages": [{"role": m["role"], "content": _text_of(m["content"])} for m in msgs if m["role"] != "system"],
            "body": body,
        }
        ans = self._answer(req)
        tokens = ans.tokens or default_logprobs(ans.text, max(int(body.get("top_logprobs") or 0), 1))
        logprobs = None
        if body.get("logprobs"):
            k = int(body.get("top_logprobs") or 0)
            logprobs = {
                "content": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": [
                        {"token": a, "logprob": alp, "bytes": list(a.encode())} for a, alp in alts[:k]
                    ]}
                    for t, lp, alts in tokens
                ],
                "refusal": None,
            }
        prompt = sum(len(_text_of(m["content"])) // 4 for m in msgs) + 3
        cached = self._openai_cached(body, arrived)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": ans.text, "refusal": None},
                "logprobs": logprobs,
                "finish_reason": "stop",
            }],
            "usage": self._log_usage({
                "prompt_tokens": prompt,
                "completion_tokens": len(tokens),
                "total_tokens": prompt + len(tokens),
                "prompt_tokens_details": {"cached_tokens": cached},
            }),
        }

    def _text_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """A legacy /v1/completions answer; with echo=True, the prompt's tokens with their logprobs and offsets."""
        prompt = str(body.get("prompt") or "")
        tokens = echo_tokenize(prompt) if body.get("echo") else []
        k = int(body.get("logprobs") or 0)
        offsets, at = [], 0
        for t in tokens:
            offsets.append(at)
            at += len(t)
        tops = [None] + [dict(sorted(self.echo_top(tokens, i).items(), key=lambda kv: -kv[1])[:k]) for i in range(1, len(tokens))]
        logprobs = {
            "tokens": tokens, "text_offset": offsets, "top_logprobs": tops,
            "token_logprobs": [None] + [tops[i].get(tokens[i], -20.0) for i in range(1, len(tokens))],
        } if body.get("logprobs") is not None else None
        return {
            "id": f"cmpl-{uuid.uuid4().hex[:12]}", "object": "text_completion", "created": int(time.time()), "model": body.get("model"),
            "choices": [{"index": 0, "text": (prompt if body.get("echo") else "") + " 0", "logprobs": logprobs, "finish_reason": "length"}],
            "usage": self._log_usage({"prompt_tokens": len(tokens), "completion_tokens": 1, "total_tokens": len(tokens) + 1}),
        }

    # -- batches ---------------------------------------------------------------------------------------------
    def _batch_done(self, batch: dict[str, Any]) -> bool:
        return time.time() >= batch["created"] + self.batch_ready_after

    def anthropic_batch_json(self, batch: dict[str, Any]) -> dict[str, Any]:
        done = self._batch_done(batch)
        n = len(batch["items"])
        ok = sum(1 for r in batch["items"] if r["result"]["type"] == "succeeded")
        return {
            "id": batch["id"],
            "type": "message_batch",
            "processing_status": "ended" if done else "in_progress",
            "request_counts": {
                "processing": 0 if done else n,
                "succeeded": ok if done else 0,
                "errored": n - ok if done else 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": _iso(batch["created"]),
            "expires_at": _iso(batch["created"] + 86400),
            "ended_at": _iso(batch["created"] + self.batch_ready_after) if done else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.url}/v1/messages/batches/{batch['id']}/results" if done else None,
        }

    def openai_batch_json(self, batch: dict[str, Any]) -> dict[str, Any]:
        done = self._batch_done(batch)
        n = len(batch["items"])
        failed = sum(1 for r in batch["items"] if r["response"]["status_code"] != 200)
        return {
            "id": batch["id"],
            "object": "batch",
            "endpoint": batch["endpoint"],
            "input_file_id": batch["input_file_id"],
            "completion_window": "24h",
            "status": "completed" if done else "in_progress",
            "created_at": int(batch["created"]),
            "output_file_id": batch["output_file_id"] if done else None,
            "error_file_id": batch["error_file_id"] if done else None,
            "request_counts": {"total": n, "completed": n - failed if done else 0, "failed": failed if done else 0},
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # many clients connect at once; the default backlog of 5 drops SYNs


class _Handler(BaseHTTPRequestHandler):
    fake: FakeLLMServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing ----------------------------------------------------------------------------------------------
    def _send(self, status: int, payload: Any = None, *, raw: bytes | None = None, headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", f"req_{uuid.uuid4().hex[:8]}")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout)
        if self._entry is not None:
            self._entry.status = status

    def _read_body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _record(self, endpoint: str, body: Any) -> LoggedRequest:
        f = self.fake
        entry = LoggedRequest(time.time(), self.command, self.path, endpoint, body, dict(self.headers.items()))
        with f._lock:
            f.calls[endpoint] += 1
            f.log.append(entry)
        return entry

    def _error(self, status: int, api: str, kind: str, message: str, headers: dict[str, str] | None = None) -> None:
        if api == "anthropic":
            payload = {"type": "error", "error": {"type": kind, "message": message}}
        else:
            payload = {"error": {"message": message, "type": kind, "code": kind, "param": None}}
        self._send(status, payload, headers=headers)

    # -- routing -------------------------------------------------------------------------------------------------
    _entry: LoggedRequest | None = None

    def do_POST(self) -> None:
        raw = self._read_body()
        path = self.path.split("?")[0]
        if path == "/v1/files":
            self._entry = self._record("files_create", None)
            return self._files_create(raw)
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            self._entry = self._record("bad_json", None)
            return self._send(400, {"error": {"message": "invalid JSON"}})
        if path == "/v1/messages":
            self._entry = self._record("messages", body)
            return self._completion("anthropic", body)
        if path == "/v1/chat/completions":
            self._entry = self._record("chat", body)
            return self._completion("openai", body)
        if path == "/v1/completions":
            self._entry = self._record("completions", body)
            return self._completion("openai-text", body)
        if path == "/v1/messages/batches":
            self._entry = self._record("anthropic_batch_create", body)
            return self._anthropic_batch_create(body)
        if path == "/v1/batches":
            self._entry = self._record("openai_batch_create", body)
            return self._openai_batch_create(body)
        self._entry = self._record("unknown", body)
        self._send(404, {"error": {"message": f"no route {path}"}})

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        f = self.fake
        m = re.fullmatch(r"/v1/messages/batches/([\w-]+)(/results)?", path)
        if m:
            batch = f.batches.get(m.group(1))
            if m.group(2):
                self._entry = self._record("anthropic_batch_results", None)
                if batch is None or not f._batch_done(batch):
                    return self._error(404, "anthropic", "not_found_error", "no results yet")
                lines = "".join(json.dumps({"custom_id": r["custom_id"], "result": r["result"]}) + "\n" for r in batch["items"])
                return self._send(200, raw=lines.encode(), content_type="application/binary")
            self._entry = self._record("anthropic_batch_retrieve", None)
            if batch is None:
                return self._error(404, "anthropic", "not_found_error", "no such batch")
            return self._send(200, f.anthropic_batch_json(batch))
        m = re.fullmatch(r"/v1/batches/([\w-]+)", path)
        if m:
            self._entry = self._record("openai_batch_retrieve", None)
            batch = f.batches.get(m.group(1))
            if batch is None:
                return self._error(404, "openai", "not_found", "no such batch")
            return self._send(200, f.openai_batch_json(batch))
        m = re.fullmatch(r"/v1/files/([\w-]+)/content", path)
        if m:
            self._entry = self._record("files_content", None)
            file = f.files.get(m.group(1))
            if file is None:
                return self._error(404, "openai", "not_found", "no such file")
            return self._send(200, raw=file["data"], content_type="application/octet-stream")
        self._entry = self._record("unknown", None)
        self._send(404, {"error": {"message": f"no route {path}"}})

    # -- completions ---------------------------------------------------------------------------------------------
    def _completion(self, api: str, body: dict[str, Any]) -> None:
        f = self.fake
        if f.require_key is not None and f.require_key not in " ".join(self.headers.values()):
            return self._error(401, api, "authentication_error", "invalid x-api-key")
        with f._lock:
            f.inflight += 1
            f.max_inflight = max(f.max_inflight, f.inflight)
        try:
            arrived = time.monotonic()
            f._sleep(f.latency)
            fault = f._next_fault()
            if fault is not None:
                with f._lock:
                    f.faults[fault] += 1
            if fault == "429":
                headers = {"retry-after": f.retry_after} if f.retry_after is not None else {}
                return self._error(429, api, "rate_limit_error", "rate limited", headers)
            if fault == "500":
                return self._error(500, api, "api_error", "internal error")
            if fault == "529":
                return self._error(529, api, "overloaded_error", "overloaded")
            if fault == "malformed":
                return self._send(200, raw=b'{"id": "broken", "content": [{"type": "te')
            if fault == "slow":
                f._sleep(f.slow_seconds)
            try:
                payload = (f._anthropic_message(body, arrived) if api == "anthropic" else f._text_completion(body)
                           if api == "openai-text" else f._openai_completion(body, arrived))
            except FakeItemError as e:
                return self._error(400, api, "invalid_request_error", str(e))
            with f._lock:
                f.answered[{"anthropic": "messages", "openai-text": "completions"}.get(api, "chat")] += 1
            self._send(200, payload)
        finally:
            with f._lock:
                f.inflight -= 1

    # -- Anthropic Message Batches ---------------------------------------------------------------------------
    def _anthropic_batch_create(self, body: dict[str, Any]) -> None:
        f = self.fake
        items = []
        for r in body.get("requests", []):
            try:
                result = {"type": "succeeded", "message": f._anthropic_message(r["params"])}
            except FakeItemError as e:
                result = {"type": "errored", "error": {"type": "error", "error": {"type": "invalid_request_error", "message": str(e)}}}
            items.append({"custom_id": r["custom_id"], "result": result})
        bid = f"msgbatch_{uuid.uuid4().hex[:16]}"
        batch = {"id": bid, "created": time.time(), "items": items}
        with f._lock:
            f.batches[bid] = batch
        self._send(200, f.anthropic_batch_json(batch))

    # -- OpenAI Files + Batch ---------------------------------------------------------------------------------
    def _files_create(self, raw: bytes) -> None:
        f = self.fake
        ctype = self.headers.get("Content-Type", "")
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + raw
        )
        fields: dict[str, tuple[str | None, bytes]] = {}
        for part in msg.iter_parts():
            name = part.get_param("name", header="content-disposition")
            fields[str(name)] = (part.get_filename(), part.get_payload(decode=True) or b"")
        if "file" not in fields:
            return self._error(400, "openai", "invalid_request_error", "missing file")
        fid = f"file-{uuid.uuid4().hex[:16]}"
        data = fields["file"][1]
        purpose = fields.get("purpose", (None, b"batch"))[1].decode()
        with f._lock:
            f.files[fid] = {"data": data, "purpose": purpose}
        self._send(200, {
            "id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
            "filename": fields["file"][0] or "upload", "purpose": purpose, "status": "processed",
        })

    def _openai_batch_create(self, body: dict[str, Any]) -> None:
        f = self.fake
        file = f.files.get(body.get("input_file_id", ""))
        if file is None:
            return self._error(400, "openai", "invalid_request_error", "no such input file")
        items = []
        for line in file["data"].decode().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            try:
                response = {"status_code": 200, "request_id": uuid.uuid4().hex[:8], "body": f._openai_completion(r["body"])}
            except FakeItemError as e:
                response = {"status_code": 400, "request_id": uuid.uuid4().hex[:8],
                            "body": {"error": {"message": str(e), "type": "invalid_request_error", "code": None}}}
            items.append({"id": f"batch_req_{uuid.uuid4().hex[:8]}", "custom_id": r["custom_id"], "response": response, "error": None})
        bid = f"batch_{uuid.uuid4().hex[:16]}"
        out_id, err_id = f"file-{uuid.uuid4().hex[:16]}", f"file-{uuid.uuid4().hex[:16]}"
        ok = [i for i in items if i["response"]["status_code"] == 200]
        bad = [i for i in items if i["response"]["status_code"] != 200]
        with f._lock:
            f.files[out_id] = {"data": "".join(json.dumps(i) + "\n" for i in ok).encode(), "purpose": "batch_output"}
            if bad:
                f.files[err_id] = {"data": "".join(json.dumps(i) + "\n" for i in bad).encode(), "purpose": "batch_output"}
            f.batches[bid] = {
                "id": bid, "created": time.time(), "items": items, "endpoint": body.get("endpoint"),
                "input_file_id": body["input_file_id"], "output_file_id": out_id, "error_file_id": err_id if bad else None,
            }
        self._send(200, f.openai_batch_json(f.batches[bid]))
