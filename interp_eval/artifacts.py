"""Run-directory layout, the one Parquet reader and writer, atomic writes and stage manifests.

Every table of a run is declared in catalog.py; `RunDir.read` / `RunDir.write` check each read and
each write against its entry there, so a stage can trust the columns it reads.

A run directory holds `run.json` (config, versions, seeds) and `manifest.jsonl`, one line per
finished stage. A stage counts as finished only once its manifest line is written, and that line is
written only after the stage's files were renamed into place, so a crash never leaves an artifact
that a later stage could mistake for a finished one. A stage that replaces an earlier run's files
first writes a `started` line; the files of a `one_run` table carry the id of the run that wrote them,
and `RunDir.read` checks it against the manifest (catalog.py, "Which run wrote a file").
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from . import catalog
from .catalog import Table
from .errors import UserError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pandas as pd

MANIFEST = catalog.MANIFEST.name
RUN_JSON = catalog.RUN_JSON.name
RUN_ID_KEY = b"interp_eval.run"  # Parquet key-value metadata of a one_run table: the id of the stage run that wrote it
COMPLETE, STARTED = "complete", "started"  # manifest statuses (older runs may hold "invalidated": read like "started")


def new_run_id() -> str:
    """A fresh id for one run of a stage: its manifest lines and its one_run files record it."""
    return uuid.uuid4().hex[:16]


def _stamped(schema: pa.Schema, run_id: str | None) -> pa.Schema:
    return schema if run_id is None else schema.with_metadata({**(schema.metadata or {}), RUN_ID_KEY: run_id.encode()})


def config_hash(config: Any) -> str:
    """A stable short hash of a config (dataclass or JSON-able object)."""
    if is_dataclass(config):
        config = asdict(config)
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto `path` (atomic on POSIX)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


_TMP = re.compile(r"^\..+\.tmp-(\d+)$|^.+\.(\d+)\.tmp$")  # atomic_path's and the LLM part files' temporaries


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid < 2**22  # another user's live process; an impossible pid is no process
    return True


def write_json(path: Path, obj: Any) -> None:
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: Path, table: pa.Table | Any) -> None:
    """Write a pyarrow Table (or pandas DataFrame) atomically, as it is: no catalog check (part files, caches)."""
    if not isinstance(table, pa.Table):
        table = pa.Table.from_pandas(table, preserve_index=False)
    with atomic_path(Path(path)) as tmp:
        pq.write_table(table, tmp)


# -- tables of the catalog -----------------------------------------------------------------------------------------
# Types are checked by kind, not width: pandas writes int64 where the catalog says int32, float64 with NaN
# for an integer column with nulls, large_string for string, and `null` for a column that is all None.

def _kind(t: pa.DataType) -> str:
    if pa.types.is_null(t):
        return "null"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_dictionary(t):
        return _kind(t.value_type)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_kind(t.value_type)}>"
    return str(t)


def _compatible(found: pa.DataType, wanted: pa.DataType) -> bool:
    f, w = _kind(found), _kind(wanted)
    return f == w or f == "null" or f == "list<null>" and w.startswith("list<")


def check_schema(table: Table, schema: pa.Schema, path: Path, writing: bool = False) -> None:
    """One-line UserError when `schema` (of a file, or of rows about to be written) breaks `table`'s catalog entry.

    A missing required column and a column of the wrong kind are errors both ways; a writer may also not
    add a column the catalog does not declare (readers ignore such columns of older files).
    """
    fix = f"a bug in {table.commands}" if writing else f"re-run {table.commands} to rewrite it"
    missing = [c for c in table.columns if c not in schema.names and c not in table.defaults]
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise UserError(f"{path} lacks column(s) {', '.join(missing[:5])}{more} of {table.name} ({fix})")
    for f in schema:
        if f.name not in table.columns:
            if writing:
                raise UserError(f"{path}: column {f.name} is not in the catalog's {table.name} ({fix}: declare it in catalog.py)")
            continue
        wanted = table.schema.field(f.name).type
        if not _compatible(f.type, wanted):
            raise UserError(f"{path}: column {f.name} is {f.type}, {table.name} holds {wanted} ({fix})")


def _file_schema(table: Table, path: Path) -> tuple[pa.Schema, int]:
    if not path.exists():
        raise UserError(f"{table.name} not found: {path} (run {table.commands} first)")
    try:
        meta = pq.read_metadata(path)
        return meta.schema.to_arrow_schema(), meta.num_rows
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise UserError(f"{table.name} is not a readable Parquet file: {path} ({type(exc).__name__}: {exc})") from exc


def read_table(table: Table, path: Path, columns: Sequence[str] | None = None,
               where: Mapping[str, Iterable] | None = None) -> pd.DataFrame:
    """The one Parquet reader: `table`'s rows from `path` as pandas, checked against the catalog.

    columns: a projection (default: every catalog column). where: {column: allowed values}, pushed
    down to the scan so only matching row groups are read. Columns the file lacks but the catalog
    gives a default are added with that default; columns the catalog does not know are not read.
    """
    path = Path(path)
    wanted = list(columns) if columns is not None else table.columns
    unknown = [c for c in [*wanted, *(where or {})] if c not in table.columns]
    if unknown:
        raise ValueError(f"{table.name} has no column(s) {', '.join(unknown)} in the catalog")
    schema, n_rows = _file_schema(table, path)
    if n_rows == 0:  # e.g. a summary of nothing, written by pandas without columns
        return table.empty().select(wanted).to_pandas()
    check_schema(table, schema, path)
    present = set(schema.names)
    filters = []
    for col, values in (where or {}).items():
        values = list(values)
        if col in present and pa.types.is_null(schema.field(col).type):  # all null in an older file: no filter to push
            if None not in values:
                return table.empty().select(wanted).to_pandas()
        elif col in present:
            filters.append((col, "in", values))
        elif table.defaults[col] not in values:  # a filled-in column: its one value decides for every row
            return table.empty().select(wanted).to_pandas()
    in_file = [c for c in schema.names if c in wanted]  # the file's order: a rewrite keeps it
    try:
        data = pq.read_table(path, columns=in_file, filters=filters or None)
    except Exception as exc:
        raise UserError(f"{table.name} is not a readable Parquet file: {path} ({type(exc).__name__}: {str(exc).splitlines()[0]})") from exc
    for col in wanted:
        if col not in present:
            data = data.append_column(table.schema.field(col), pa.array([table.defaults[col]] * data.num_rows, table.schema.field(col).type))
    nulls = [f.name for f in data.schema if pa.types.is_null(f.type)]  # an older file's all-null column
    for col in nulls:
        i = data.schema.get_field_index(col)
        data = data.set_column(i, table.schema.field(col), pa.nulls(data.num_rows, table.schema.field(col).type))
    return data.to_pandas()


def _as_declared(table: Table, data: pa.Table) -> pa.Table:
    """`data` with each column in the catalog's type: a column that is all null in these rows (the ledger's scorer
    when only explain has run) is written as its declared type, not as pyarrow's null type, which a filtered read
    cannot compare with values; an out-of-range integer fails the (safe) cast instead of wrapping."""
    fields = [table.schema.field(f.name) if f.name in table.columns else f for f in data.schema]
    wanted = pa.schema(fields, metadata=data.schema.metadata)
    return data if data.schema.equals(wanted) else data.cast(wanted)


def write_table(table: Table, path: Path, data: pa.Table | pd.DataFrame, run_id: str | None = None) -> None:
    """Write rows of `table` atomically after checking them against the catalog, in the catalog's types.

    run_id: the stage run the file belongs to, stamped into its metadata (one_run tables).
    """
    if not isinstance(data, pa.Table):
        data = pa.Table.from_pandas(data, preserve_index=False)
    if data.num_rows:  # no rows: nothing a reader could misread (it sees the catalog's empty table)
        check_schema(table, data.schema, Path(path), writing=True)
        data = _as_declared(table, data)
    write_parquet(path, data.replace_schema_metadata(_stamped(data.schema, run_id).metadata))


def run_stamp(path: Path) -> str | None:
    """The id of the stage run that wrote a Parquet file, or None for a file without one (hand-made or older)."""
    meta = pq.read_metadata(path).metadata or {}
    return meta[RUN_ID_KEY].decode() if RUN_ID_KEY in meta else None


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("interp-eval", "torch", "transformers", "sae-lens", "anthropic", "openai"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class RunDir:
    """A run directory: the one place that knows where each stage's files live.

    run_id: set by a stage run that writes one_run tables (`new_run_id()`): its writes stamp them with it.
    """

    def __init__(self, root: str | Path, run_id: str | None = None):
        self.root = Path(root)
        self.run_id = run_id

    # layout -------------------------------------------------------------------------------
    @property
    def coders_dir(self) -> Path:
        return self.root / catalog.CODERS_DIR.name

    def coder_dir(self, name: str) -> Path:
        return self.coders_dir / name

    @property
    def activations_dir(self) -> Path:
        return self.root / catalog.ACTIVATIONS_DIR.name

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / catalog.CHECKPOINTS_DIR.name

    def path(self, name: str | Table | catalog.Folder) -> Path:
        return self.root / str(name)

    # tables of the catalog -----------------------------------------------------------------
    def has(self, table: Table) -> bool:
        return self.path(table).exists()

    def read(self, table: Table, columns: Sequence[str] | None = None, where: Mapping[str, Iterable] | None = None) -> "pd.DataFrame":
        """The table's rows, checked against the catalog (see `read_table`) and, for a one_run table, against the
        manifest (`stale`); a UserError when it is missing or may not be read."""
        problem = self.stale(table) if table.one_run and self.has(table) else None
        if problem:
            raise UserError(problem)
        return read_table(table, self.path(table), columns, where)

    def stale(self, table: Table) -> str | None:
        """Why the one_run table's file is not the output of its stage's last finished run (None when it is).

        The rule of catalog.py's "Which run wrote a file": the file's stamp must be the run id of the stage's
        latest manifest line, and that line must say complete; a file without a stamp and a stage without a
        manifest line is a hand-made input (tests build such runs) and is read as it is.
        """
        path, command = self.path(table), table.commands
        if not path.exists():
            return f"{table.name} not found: {path} (run {command} first)"
        try:
            stamp = run_stamp(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            return f"{table.name} is not a readable Parquet file: {path} ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        entry = self.stage_entry(table.stage)
        if entry is None:
            if stamp is None:
                return None
            return f"{path} was written by a {command} that did not finish: re-run {command}"
        if entry.get("status") != COMPLETE:
            return (f"{command} was started again in {self.root} and has not finished, so {table.name} is not the output "
                    f"of a finished run: re-run {command} to finish it")
        if entry.get("run") != stamp:
            return (f"{path} is not from the last finished {command} (it stopped while writing its files, or the file "
                    f"was replaced): re-run {command}")
        return None

    def write(self, table: Table, data: "pa.Table | pd.DataFrame") -> Path:
        """Replace the table atomically with `data`, checked against the catalog (and stamped, if one_run)."""
        write_table(table, self.path(table), data, self._stamp(table))
        return self.path(table)

    def _stamp(self, table: Table) -> str | None:
        if not table.one_run:
            return None
        if self.run_id is None:
            raise ValueError(f"{table.name} is written by one run of {table.commands}: give RunDir its run_id")
        return self.run_id

    def append(self, table: Table, rows: list[dict], replace: Sequence[str] = ()) -> None:
        """Append rows to a table (an atomic rewrite; fine for the small per-run tables).

        With `replace` (key columns), existing rows whose key values appear in `rows` are dropped first,
        so re-running a coder or a latent replaces its rows instead of duplicating them.
        """
        if not rows:
            return
        import pandas as pd

        new = pd.DataFrame(rows)
        if self.has(table):
            old = self.read(table)
            if replace:
                keys = list(replace)
                stale = pd.MultiIndex.from_frame(old[keys]).isin(pd.MultiIndex.from_frame(new[keys]))
                old = old[~stale]
            new = pd.concat([old, new], ignore_index=True)
        self.write(table, new)

    @contextmanager
    def writer(self, table: Table) -> Iterator[pq.ParquetWriter]:
        """Stream record batches of a big table into place: a ParquetWriter on the catalog's schema, renamed on success."""
        with atomic_path(self.path(table)) as tmp:
            with pq.ParquetWriter(tmp, _stamped(table.schema, self._stamp(table))) as writer:
                yield writer

    # run.json -----------------------------------------------------------------------------
    def init(self, config: dict[str, Any] | None = None) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        run_json = self.root / RUN_JSON
        info = json.loads(run_json.read_text()) if run_json.exists() else {"created": time.time()}
        info["versions"] = versions()
        if config:
            info.setdefault("stages", {}).update(config)
        write_json(run_json, info)

    def prepare(self) -> None:
        """Before a stage writes here: stop at once (one OSError naming the folder) if the run folder cannot be
        written, rather than after the work; then remove what a killed process left (remove_stale_tmp). A folder that
        does not exist yet is left to the stage (which refuses or creates it)."""
        if not self.root.is_dir():
            return
        probe = self.root / f".write-probe.tmp-{os.getpid()}"
        try:
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.root)) from None
        self.remove_stale_tmp()

    def remove_stale_tmp(self) -> int:
        """Remove the temporary files and folders a killed process left (ours end in `.tmp-<pid>` or
        `.<pid>.tmp`; the pid's process is gone), in the run folder and below; returns how many. A live process's
        temporaries are left alone."""
        if not self.root.is_dir():
            return 0
        removed = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in [*dirnames, *filenames]:
                m = _TMP.match(name)
                if not m or _alive(int(m.group(1) or m.group(2))):
                    continue
                path = Path(dirpath) / name
                shutil.rmtree(path) if path.is_dir() else path.unlink()
                removed += 1
                if name in dirnames:
                    dirnames.remove(name)
        if removed:
            log.info("removed %d temporary files left by an interrupted run in %s", removed, self.root)
        return removed

    # manifest -----------------------------------------------------------------------------
    def _manifest_entries(self) -> list[dict[str, Any]]:
        path = self.root / MANIFEST
        if not path.exists():
            return []
        entries = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a torn last line from a crash: that stage did not finish
        return entries

    def stage_entry(self, stage: str) -> dict[str, Any] | None:
        """The latest manifest entry of a stage (complete or started), or None if it has none."""
        found = None
        for entry in self._manifest_entries():
            if entry.get("stage") == stage:
                found = entry
        return found

    def is_complete(self, stage: str, cfg_hash: str | None = None) -> bool:
        entry = self.stage_entry(stage)
        if entry is None or entry.get("status") != COMPLETE:
            return False
        return cfg_hash is None or entry.get("config_hash") == cfg_hash

    def mark_complete(self, stage: str, cfg_hash: str, outputs: list[str], **extra: Any) -> None:
        """The stage's files are in place: it is finished (`run=` the run id its one_run files carry)."""
        self._append_manifest({"stage": stage, "status": COMPLETE, "config_hash": cfg_hash, "outputs": outputs,
                               "finished": time.time(), **extra})

    def mark_started(self, stage: str, cfg_hash: str, run_id: str) -> None:
        """A run that will replace the stage's files has begun: until it finishes, readers refuse the old files (the
        user asked for another config, or for a redo). Written only once the run's inputs were checked, so bad input
        changes nothing."""
        self._append_manifest({"stage": stage, "status": STARTED, "config_hash": cfg_hash, "run": run_id, "time": time.time()})

    def _append_manifest(self, entry: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / MANIFEST, "a") as fh:
            fh.write(json.dumps(entry, sort_keys=True, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
