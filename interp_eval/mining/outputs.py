"""Writing the `mine` stage's three files (catalog.py) from the merged coder states.

contexts.parquet is written block by block of latents (about 64 MB of activations each), so the
rows of a whole coder are never held at once; then the tokens of every window it references are
read back from the token stream (windows.py) into windows.parquet; latents.parquet comes last.
Each is stamped with the run id of `rd` (catalog.py, "Which run wrote a file"): the three files are
one set, and a crash between their renames leaves a set that every reader refuses.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch

from ..artifacts import RunDir
from ..coders.discover import CoderModel
from ..coders.saelens import LoadedCoder
from ..subject.corpus import CorpusConfig
from .config import Sampling
from .hard_negatives import HardNegativeInputs, decoder_neighbours, embed_windows
from .output_tokens import output_columns
from ..catalog import CONTEXTS, KINDS, LATENTS, SPLITS, STATUSES, WINDOWS
from .selection import Rows, latent_status, select_rows
from .state import CoderState
from .windows import WindowLayout, decode_tokens, fetch_windows, windows_table

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


def _strings(labels: tuple[str, ...] | list[str], codes: np.ndarray) -> pa.Array:
    return pa.array(list(labels), type=pa.string()).take(pa.array(codes.astype(np.int32)))


def _rows_table(coder: str, rows: Rows) -> pa.Table:
    n, w = rows.activations.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * w)
    return pa.Table.from_arrays(
        [
            _strings([coder], np.zeros(n, np.int32)),
            pa.array(rows.latent.astype(np.int64)),
            pa.array(rows.window_id.astype(np.int64)),
            _strings(KINDS, rows.kind),
            _strings(SPLITS, rows.split),
            pa.array(rows.quantile.astype(np.int8), mask=rows.quantile < 0, type=pa.int8()),
            pa.array(rows.rank.astype(np.int32)),
            pa.ListArray.from_arrays(offsets, pa.array(rows.activations.reshape(-1).astype(np.float32))),
            pa.array(rows.max_activation.astype(np.float32)),
        ],
        schema=CONTEXTS.schema,
    )


def _latents_table(coder: LoadedCoder, state: CoderState, status: np.ndarray, model: CoderModel, effects,
                   neighbours: torch.Tensor) -> pa.Table:
    L = state.d_sae
    n_tok = int(state.n_tokens)
    fc = state.firing_count.cpu().numpy().astype(np.int64)
    return pa.Table.from_arrays(
        [
            _strings([coder.name], np.zeros(L, np.int32)),
            pa.array(np.arange(L, dtype=np.int64)),
            _strings([coder.hookpoint], np.zeros(L, np.int32)),
            pa.array(np.full(L, coder.binary, dtype=bool)),
            pa.array(fc),
            pa.array(np.full(L, n_tok, dtype=np.int64)),
            pa.array(fc / max(n_tok, 1)),
            pa.array(state.max_act.cpu().numpy().astype(np.float32)),
            pa.array(state.n_windows.cpu().numpy().astype(np.int64)),
            _strings(STATUSES, status),
            pa.array([model.trained_on] * L, pa.string()),
            _strings([model.mined_on], np.zeros(L, np.int32)),
            pa.array(np.full(L, model.model_mismatch, dtype=bool)),
            *output_columns(effects, L),
            _id_lists(neighbours),
        ],
        schema=LATENTS.schema,
    )


def _id_lists(ids: torch.Tensor) -> pa.Array:
    """[L, m] ids (-1: none) as a list<int64> column, each row without its -1s."""
    a = ids.numpy()
    keep = a >= 0
    offsets = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(a[keep].astype(np.int64)))


def _pool_embeddings(states: dict[str, CoderState], corpus: CorpusConfig, tokenizer, layout: WindowLayout,
                     tokens: int) -> dict[int, np.ndarray] | None:
    """{window_id: MiniLM embedding} of every pool window (the pool is one set for every coder of a pass); None when
    the sentence embedder is not installed."""
    ids = np.unique(np.concatenate([s.pool_win.cpu().numpy() for s in states.values()]))
    ids = ids[ids >= 0]
    if not len(ids):
        return {}
    token_ids = fetch_windows(corpus, tokenizer, layout, tokens, ids)
    flat = decode_tokens(tokenizer, token_ids).to_pylist()
    width = token_ids.shape[1]
    vecs = embed_windows([flat[i : i + width] for i in range(0, len(flat), width)])
    return None if vecs is None else dict(zip(ids.tolist(), vecs))


def _hard_inputs(coder: LoadedCoder, state: CoderState, pool: dict[int, np.ndarray] | None) -> HardNegativeInputs:
    neighbours = decoder_neighbours(coder.decoder(), state.firing_count > 0)
    emb = None
    if pool is not None:
        dim = len(next(iter(pool.values()))) if pool else 1
        zero = np.zeros(dim, np.float32)
        emb = torch.from_numpy(np.stack([pool.get(int(w), zero) for w in state.pool_win.cpu().tolist()]))
    return HardNegativeInputs(neighbours, emb)


def _chunk_latents(sampling: Sampling) -> int:
    per_latent = (sampling.n_top + sampling.n_explain + sampling.n_test + sampling.n_negative) * sampling.window
    return max(1, (1 << 24) // max(per_latent, 1))  # about 64 MB of activations per block


def write_outputs(
    rd: RunDir, coders: list[LoadedCoder], models: dict[str, CoderModel], states: dict[str, CoderState], sampling: Sampling,
    corpus: CorpusConfig, tokenizer, layout: WindowLayout, tokens: int, effects: dict | None = None,
) -> dict[str, dict]:
    """Write the three files; `models`: each coder's trained-on and mined-on model (coders/discover.py `coder_models`);
    `effects`: each coder's output tokens, or why it has none (output_tokens.py; None: not asked for)."""
    per_coder: dict[str, dict] = {}
    window_ids: list[np.ndarray] = []
    chunk = _chunk_latents(sampling)
    clock = {"start": time.perf_counter()}

    def lap(name: str) -> None:  # the seconds of each part of the writing, for the stage's summary
        now = time.perf_counter()
        clock[name] = clock.get(name, 0.0) + now - clock["start"]
        clock["start"] = now

    pool = _pool_embeddings(states, corpus, tokenizer, layout, tokens)
    lap("pool_embeddings_s")
    hard: dict[str, HardNegativeInputs] = {}
    with rd.writer(CONTEXTS) as writer:
        for coder in coders:
            state = states[coder.name]
            hard[coder.name] = _hard_inputs(coder, state, pool)
            lap("neighbours_s")
            n_rows = 0
            for lo in range(0, state.d_sae, chunk):
                rows = select_rows(state, sampling, coder.binary, lo, min(lo + chunk, state.d_sae), hard[coder.name])
                if len(rows):
                    writer.write_table(_rows_table(coder.name, rows))
                    window_ids.append(np.unique(rows.window_id))
                n_rows += len(rows)
            per_coder[coder.name] = {"rows": n_rows}
            lap("rows_s")
    ids = np.unique(np.concatenate(window_ids)) if window_ids else np.zeros(0, np.int64)
    log.info("reading back the tokens of %d windows", len(ids))
    token_ids = fetch_windows(corpus, tokenizer, layout, tokens, ids)
    rd.write(WINDOWS, windows_table(tokenizer, layout, ids, token_ids))
    lap("windows_s")
    tables = []
    for coder in coders:
        state = states[coder.name]
        status = latent_status(state, sampling.min_examples)
        tables.append(_latents_table(coder, state, status, models[coder.name], (effects or {}).get(coder.name),
                                     hard[coder.name].neighbours))
        counts = np.bincount(status, minlength=len(STATUSES))
        per_coder[coder.name].update(
            hookpoint=coder.hookpoint, binary=coder.binary, latents=state.d_sae, **asdict(models[coder.name]),
            **{label: int(counts[code]) for code, label in enumerate(STATUSES)},
        )
    rd.write(LATENTS, pa.concat_tables(tables))
    lap("latents_s")
    per_coder["_windows"] = {"n": int(len(ids))}
    per_coder["_timing"] = {k: v for k, v in clock.items() if k != "start"}
    return per_coder


def summary_from_files(rd: RunDir) -> dict[str, dict]:
    df = rd.read(LATENTS)
    out: dict[str, dict] = {}
    for name, g in df.groupby("coder", sort=True):
        counts = g["status"].value_counts()
        out[str(name)] = {
            "hookpoint": str(g["hookpoint"].iloc[0]), "binary": bool(g["binary"].iloc[0]), "latents": int(len(g)),
            **{label: int(counts.get(label, 0)) for label in STATUSES},
            "n_tokens": int(g["n_tokens"].iloc[0]),
            "trained_on": g["trained_on"].iloc[0], "mined_on": g["mined_on"].iloc[0], "model_mismatch": bool(g["model_mismatch"].iloc[0]),
        }
    return out


def mismatch_lines(latents: pd.DataFrame) -> list[str]:
    """One line per coder of latents.parquet that was mined on a model it was not trained on (--allow-model-mismatch)."""
    rows = latents[latents["model_mismatch"].eq(True)].drop_duplicates("coder")  # null (a hand-made file): no
    return [f"coder {r.coder} was trained on {r.trained_on} but mined on {r.mined_on} (--allow-model-mismatch): its results "
            "describe the coder on a model it was not trained on" for r in rows.itertuples()]


__all__ = ["mismatch_lines", "summary_from_files", "write_outputs"]
