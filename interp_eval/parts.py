"""A keyed table written in parts: each finished chunk of a stage's work is one part file.

Stages that work through latents chunk by chunk (explain, score) must not lose finished chunks to a
crash, and must not rewrite everything already written on every chunk. So each chunk's rows go to
one part file under the stage's parts folder (written to a temporary name, then renamed into place);
`read` sees the table plus every part, this run's or a crashed run's, and keeps for each key the
rows of the newest file; `write` replaces the table with the merged rows and removes the parts.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

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


__all__ = ["PartedTable"]
