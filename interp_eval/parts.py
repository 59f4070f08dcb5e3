"""A keyed table written in parts: each batch of a stage's finished work is one part file.

Stages that work through latents as their LLM answers come in (explain, score) must not lose finished
work to a crash, and must not rewrite everything already written each time. So each batch of finished
rows goes to one part file under the stage's parts folder (written to a temporary name, then renamed
into place); `read` sees the table plus every part, this run's or a crashed run's, and keeps for each
key the rows of the newest file; `write` replaces the table with the merged rows and removes the parts.
`PartWriter` decides when a batch is written: after `every` finished items or `seconds` at most, so a
slow call never keeps the finished rows of other latents off disk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generic, Sequence, TypeVar

import pandas as pd
import pyarrow as pa

from .artifacts import RunDir, read_table, write_table
from .catalog import Folder, Table


@dataclass(frozen=True)
class PartedTable:
    rd: RunDir
    table: Table
    key: tuple[str, ...]  # rows of a newer file replace every row with the same key values
    parts: Folder  # the catalog's parts folder of the stage that writes `table`

    @property
    def _dir(self) -> Path:
        return self.rd.path(self.parts)

    def _part_files(self) -> list[Path]:
        stem = Path(self.table.name).stem
        return sorted(self._dir.glob(f"{stem}-*.parquet")) if self._dir.exists() else []

    def add(self, rows: Sequence[dict]) -> None:
        """One part file with `rows` (named by time, so files sort oldest first)."""
        if not rows:
            return
        path = self._dir / f"{Path(self.table.name).stem}-{time.time_ns():020d}-{os.getpid()}.parquet"
        write_table(self.table, path, pa.Table.from_pylist(list(rows), schema=self.table.schema))

    def read(self) -> pd.DataFrame:
        """The table and its parts, for each key the rows of the newest file; the table's empty frame if neither exists."""
        frames = [self.rd.read(self.table)] if self.rd.has(self.table) else []
        frames += [read_table(self.table, p) for p in self._part_files()]
        if not frames:
            return self.table.empty().to_pandas()
        for i, f in enumerate(frames):
            f["_src"] = i
        df = pd.concat(frames, ignore_index=True)
        newest = df.groupby(list(self.key))["_src"].transform("max")
        return df[df["_src"] == newest].drop(columns="_src").reset_index(drop=True)

    def has_parts(self) -> bool:
        return bool(self._part_files())

    def write(self, df: pd.DataFrame | pa.Table) -> None:
        """Replace the table with `df` (normally `read()`, the merged rows), then remove the parts."""
        self.rd.write(self.table, df)
        shutil.rmtree(self._dir, ignore_errors=True)


T = TypeVar("T")
WRITE_SECONDS = 10.0  # finished work waits at most this long for its part file


class PartWriter(Generic[T]):
    """Finished items, written `every` at a time, at least every `seconds`, and when the block ends (even on an error).

        async with PartWriter(write, every=64) as out:
            ... out.add(item) as each item is finished ...

    write(items) writes one part (and whatever belongs with it, e.g. the items' LLM ledger rows); it runs
    on the event loop, between awaits, so it sees no half-added item.
    """

    def __init__(self, write: Callable[[list[T]], None], every: int, seconds: float = WRITE_SECONDS):
        self.write, self.every, self.seconds = write, max(1, every), seconds
        self._items: list[T] = []
        self._timer: asyncio.Task | None = None

    def add(self, item: T) -> None:
        self._items.append(item)
        if len(self._items) >= self.every:
            self.flush()

    def flush(self) -> None:
        items, self._items = self._items, []
        if items:
            self.write(items)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.seconds)
            self.flush()

    async def __aenter__(self) -> "PartWriter[T]":
        self._timer = asyncio.ensure_future(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._timer is not None
        self._timer.cancel()
        try:
            await self._timer  # re-raises a failed timed write
        except asyncio.CancelledError:
            pass
        self.flush()


__all__ = ["PartWriter", "PartedTable"]
