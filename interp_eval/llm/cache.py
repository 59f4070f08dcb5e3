"""Content-addressed response cache in SQLite, shared by every stage and every backend.

key = sha256 of (backend, model, system, messages, sampling params, logprobs settings). Only
successful responses are stored, and only what the model said (text, logprobs, usage): never a key,
header or URL. WAL mode plus a busy timeout lets several processes share one file.

A damaged file (a crash of the disk or file system, or something else written over it) is found on
open by SQLite's `PRAGMA quick_check` and reported as one line: the cache only saves money and time,
so moving it aside loses nothing else, and the run directory is not touched.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from interp_eval.errors import UserError
from interp_eval.paths import cache_dir

from .types import LLMRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    response TEXT NOT NULL
)
"""


def default_cache_path() -> Path:
    return cache_dir() / "llm_cache.sqlite"


def request_key(backend: str, model: str, request: LLMRequest) -> str:
    payload = {"backend": backend, "model": model, **request.key_fields()}
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Thread-safe within a process (one connection behind a lock); WAL for several processes."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = sqlite3.connect(str(self.path), timeout=60.0, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise self._unusable(exc) from None
        try:
            with self._sql() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                problems = [r[0] for r in conn.execute("PRAGMA quick_check(1)")]
                if problems != ["ok"]:
                    raise self._unusable(" ".join(problems))
                conn.execute(_SCHEMA)
        except UserError:
            self._conn.close()
            raise

    def _unusable(self, reason: object) -> UserError:
        """The one line for a cache file SQLite cannot use: what to do, and that nothing else is lost."""
        if isinstance(reason, sqlite3.OperationalError) and "locked" in str(reason):
            return UserError(f"LLM response cache {self.path} stayed locked by another process for 60 s: "
                             "wait for it to finish, or pass --llm-cache another file")
        detail = " ".join(str(reason).split())  # SQLite's reports span lines
        return UserError(f"LLM response cache {self.path} is damaged ({detail}): move it aside (or pass --llm-cache "
                         "another file) and re-run; only cached answers are lost, the run directory is untouched")

    @contextmanager
    def _sql(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock; an SQLite failure becomes the one-line error."""
        with self._lock:
            try:
                yield self._conn
            except sqlite3.Error as exc:
                raise self._unusable(exc) from None

    def get(self, key: str) -> dict[str, Any] | None:
        with self._sql() as conn:
            row = conn.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def contains_many(self, keys: Iterable[str]) -> set[str]:
        keys = list(dict.fromkeys(keys))
        found: set[str] = set()
        with self._sql() as conn:
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                found.update(r[0] for r in conn.execute(f"SELECT key FROM responses WHERE key IN ({marks})", chunk))
        return found

    def put(self, key: str, backend: str, model: str, response: dict[str, Any]) -> None:
        self.put_many([(key, backend, model, response)])

    def put_many(self, rows: Iterable[tuple[str, str, str, dict[str, Any]]]) -> None:
        now = time.time()
        data = [(k, b, m, now, json.dumps(r, ensure_ascii=False)) for k, b, m, r in rows]
        if not data:
            return
        with self._sql() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR REPLACE INTO responses (key, backend, model, created, response) VALUES (?, ?, ?, ?, ?)", data
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._sql() as conn:
            return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
