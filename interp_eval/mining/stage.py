"""The `mine` stage: one pass of the subject model over held-out tokens feeds every coder at once.

Per batch of contexts: one forward pass (stopped after the deepest hooked layer), then each coder
encodes its hookpoint's activations and folds the sparse code into its `CoderState` (fixed-size
tensors: memory depends on latents x kept windows, never on the number of tokens). Coders are
grouped by the model they were trained on: the subject model, or its random-model control
`random:<model>:<seed>` (rebuilt from the subject's config, see subject/model.py). Each batch goes
through every group's model, so trained and control coders see the same held-out tokens in one
pass and share one windows table (same tokenizer, same tokens). Under torchrun, rank r mines
batches r, r + world, ...; the states are merged exactly at the end and rank 0 writes the Parquet
files (see schema.py). Every `checkpoint_every` batches each rank saves its state atomically under
RUN/checkpoints/; an interrupted run resumes from there (or from zero if the checkpoint is missing
or was made with other settings). The stage is complete only once its manifest line is written,
after the three files were renamed into place; starting a run with another config first marks an
older completion invalid, so its files cannot pass for the new one's.

Memory: per coder about latents x 1.25 (n_top + reservoir) x window x 4 bytes of kept activations
plus keys (the 1.25: room between compactions, see state.capacity; 4,608 latents at the defaults:
~183 MiB; 36,864 latents: ~1.4 GiB), allocated up front, plus per-batch temporaries of latents x
batch windows, plus the weights of each random-model control mined (~0.5 GiB fp32 for a 135M
model). Nothing grows with the number of tokens.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..artifacts import RunDir, atomic_path, config_hash, read_parquet, write_parquet
from ..coders.saelens import SAE_CFG, SAE_WEIGHTS, LoadedCoder, is_saelens_folder, load_coder
from ..coders.train import init_distributed
from ..errors import UserError
from ..subject.corpus import CorpusConfig, iter_batches, iter_contexts
from ..subject.hookpoints import capture, valid_hookpoints
from ..subject.model import RandomModelSpec, SubjectModel, load_subject_model, parse_random_spec, random_subject_model
from ..progress import progress_bar
from .schema import (
    CONTEXTS,
    CONTEXTS_SCHEMA,
    KINDS,
    LATENTS,
    LATENTS_SCHEMA,
    SPLITS,
    STATUSES,
    WINDOWS,
)
from .state import CoderState, Rows, Sampling, all_gather_state, latent_status, select_rows
from .windows import WindowLayout, fetch_windows, windows_table

log = logging.getLogger(__name__)

STAGE = "mine"
OUTPUTS = [LATENTS, WINDOWS, CONTEXTS]
_CKPT_VERSION = 2  # 2: lazily compacted top-N and reservoir buffers with their thresholds


# --------------------------------------------------------------------------- coders
def _coder_folders(rd: RunDir, extra: Iterable[str | Path]) -> list[tuple[str, Path]]:
    found: list[tuple[str, Path]] = []
    if rd.coders_dir.is_dir():
        for folder in sorted(p for p in rd.coders_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not is_saelens_folder(folder):
                raise UserError(
                    f"{folder} is not a SAELens coder folder (needs {SAE_CFG} and {SAE_WEIGHTS}): "
                    "remove it or re-run `interp-eval train`"
                )
            found.append((folder.name, folder))
    for path in extra:
        folder = Path(path).expanduser()
        if not folder.exists():
            raise UserError(f"--coder {path}: no such folder")
        if not is_saelens_folder(folder):
            raise UserError(f"--coder {path}: not a SAELens coder folder (needs {SAE_CFG} and {SAE_WEIGHTS})")
        found.append((folder.name, folder))
    if not found:
        raise UserError(
            f"no coders to mine: {rd.coders_dir} holds none and no --coder PATH was given "
            "(run `interp-eval train` first or pass a SAELens folder with --coder)"
        )
    names = [n for n, _ in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"two coders are both named {dup[0]!r} (coder names are folder names): rename one folder")
    return found


def _same_model(a: str, b: str) -> bool:
    norm = lambda s: s.strip().rstrip("/").split("/")[-1].lower()  # noqa: E731
    return norm(a) == norm(b)


@dataclass
class SubjectGroup:
    """The coders that encode one subject model's activations, and the hookpoints they read."""

    seed: int | None  # None: the --model subject itself; else its random-model control with this seed
    coders: list[LoadedCoder]
    hookpoints: list[str]  # in execution order; the forward pass stops after the last

    def model_name(self, subject: SubjectModel) -> str:
        return subject.name if self.seed is None else RandomModelSpec(base=subject.name, seed=self.seed).name

    def model(self, subject: SubjectModel) -> SubjectModel:
        return subject if self.seed is None else random_subject_model(subject, self.seed)


def _random_spec(model_name: str) -> RandomModelSpec | None:
    try:
        return parse_random_spec(model_name)
    except UserError:  # e.g. random:random:..., which no subject matches
        return None


def _group_by_subject(coders: list[LoadedCoder], subject: SubjectModel) -> list[SubjectGroup]:
    """Coders grouped by the model they encode: `subject` first, then its random-model controls by seed.

    A coder's model must be `subject` or `random:<subject>:<seed>`; any other is refused, since its
    activations cannot come from this pass.
    """
    hookpoints = valid_hookpoints(subject)
    subject_is_random = parse_random_spec(subject.name) is not None
    by_seed: dict[int | None, list[LoadedCoder]] = {}  # None: the subject itself
    for c in coders:
        name = str(c.model_name or "")
        spec = _random_spec(name)
        if not name or _same_model(name, subject.name):
            seed = None
        elif spec is not None and not subject_is_random and _same_model(spec.base, subject.name):
            seed = spec.seed
        else:
            raise UserError(
                f"coder {c.folder} was trained on model {name!r} but the subject model is {subject.name!r}: "
                f"pass --model {spec.base if spec else name} or leave this coder out"
            )
        _check_coder(c, subject, hookpoints)  # a random copy has the subject's architecture
        by_seed.setdefault(seed, []).append(c)
    return [
        SubjectGroup(seed, by_seed[seed], sorted({c.hookpoint for c in by_seed[seed]}, key=hookpoints.index))
        for seed in sorted(by_seed, key=lambda s: -1 if s is None else s)
    ]


def _check_coder(coder: LoadedCoder, subject: SubjectModel, hookpoints: list[str]) -> None:
    where = f"coder {coder.folder}"
    if coder.hookpoint not in hookpoints:
        shown = f"{hookpoints[0]} ... {hookpoints[-1]}" if hookpoints else "none"
        raise UserError(f"{where}: hookpoint {coder.hookpoint!r} does not exist in {subject.name} (valid: {shown})")
    if coder.site not in ("input", "output"):
        raise UserError(f"{where}: hook_site {coder.site!r} is not 'input' or 'output'")
    if coder.d_in != subject.d_model:
        raise UserError(
            f"{where}: d_in {coder.d_in} does not match the MLP {coder.site} size {subject.d_model} "
            f"of {coder.hookpoint} in {subject.name}"
        )


def _fingerprint(folder: Path) -> str:
    h = hashlib.sha256((folder / SAE_CFG).read_bytes())
    st = (folder / SAE_WEIGHTS).stat()
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- checkpoints
def _zero_timing() -> dict[str, float]:
    return {"forward_s": 0.0, "encode_s": 0.0, "bookkeeping_s": 0.0}


def _ckpt_path(rd: RunDir, rank: int) -> Path:
    return rd.checkpoints_dir / f"mine-rank{rank}.pt"


def _save_ckpt(path: Path, cfg_hash: str, done: int, states: dict[str, CoderState], timing: dict) -> None:
    blob = {
        "version": _CKPT_VERSION,
        "config_hash": cfg_hash,
        "batches_done": done,
        "timing": dict(timing),
        "states": {name: s.state_dict() for name, s in states.items()},
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def _load_ckpt(path: Path, cfg_hash: str, device) -> tuple[int, dict[str, CoderState], dict] | None:
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # written atomically, so this means it was damaged afterwards
        log.warning("mining checkpoint %s is unreadable (%s): starting from zero", path, type(exc).__name__)
        return None
    if blob.get("version") != _CKPT_VERSION or blob.get("config_hash") != cfg_hash:
        log.info("mining checkpoint %s was made with other settings: starting from zero", path)
        return None
    states = {name: CoderState.from_state_dict(d, device) for name, d in blob["states"].items()}
    return int(blob["batches_done"]), states, {**_zero_timing(), **blob.get("timing", {})}


# --------------------------------------------------------------------------- tables
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
        schema=CONTEXTS_SCHEMA,
    )


def _latents_table(coder: LoadedCoder, state: CoderState, status: np.ndarray) -> pa.Table:
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
        ],
        schema=LATENTS_SCHEMA,
    )


def _chunk_latents(sampling: Sampling) -> int:
    per_latent = (sampling.n_top + sampling.n_explain + sampling.n_test + sampling.n_negative) * sampling.window
    return max(1, (1 << 24) // max(per_latent, 1))  # about 64 MB of activations per block


def _write_outputs(
    rd: RunDir, coders: list[LoadedCoder], states: dict[str, CoderState], sampling: Sampling,
    corpus: CorpusConfig, tokenizer, layout: WindowLayout, tokens: int,
) -> dict[str, dict]:
    per_coder: dict[str, dict] = {}
    window_ids: list[np.ndarray] = []
    chunk = _chunk_latents(sampling)
    with atomic_path(rd.path(CONTEXTS)) as tmp:
        with pq.ParquetWriter(tmp, CONTEXTS_SCHEMA) as writer:
            for coder in coders:
                state = states[coder.name]
                n_rows = 0
                for lo in range(0, state.d_sae, chunk):
                    rows = select_rows(state, sampling, coder.binary, lo, min(lo + chunk, state.d_sae))
                    if len(rows):
                        writer.write_table(_rows_table(coder.name, rows))
                        window_ids.append(np.unique(rows.window_id))
                    n_rows += len(rows)
                per_coder[coder.name] = {"rows": n_rows}
    ids = np.unique(np.concatenate(window_ids)) if window_ids else np.zeros(0, np.int64)
    log.info("reading back the tokens of %d windows", len(ids))
    token_ids = fetch_windows(corpus, tokenizer, layout, tokens, ids)
    write_parquet(rd.path(WINDOWS), windows_table(tokenizer, layout, ids, token_ids))
    tables = []
    for coder in coders:
        state = states[coder.name]
        status = latent_status(state, sampling.min_examples)
        tables.append(_latents_table(coder, state, status))
        counts = np.bincount(status, minlength=3)
        per_coder[coder.name].update(
            hookpoint=coder.hookpoint, binary=coder.binary, latents=state.d_sae,
            ok=int(counts[0]), too_rare=int(counts[1]), dead=int(counts[2]),
        )
    write_parquet(rd.path(LATENTS), pa.concat_tables(tables))
    per_coder["_windows"] = {"n": int(len(ids))}
    return per_coder


def _summary_from_files(rd: RunDir) -> dict[str, dict]:
    df = read_parquet(rd.path(LATENTS), LATENTS)
    out: dict[str, dict] = {}
    for name, g in df.groupby("coder", sort=True):
        counts = g["status"].value_counts()
        out[str(name)] = {
            "hookpoint": str(g["hookpoint"].iloc[0]), "binary": bool(g["binary"].iloc[0]), "latents": int(len(g)),
            "ok": int(counts.get("ok", 0)), "too_rare": int(counts.get("too_rare", 0)), "dead": int(counts.get("dead", 0)),
            "n_tokens": int(g["n_tokens"].iloc[0]),
        }
    return out


class BookkeepingThreads:
    """On CPU, run the state updates with 1 thread or all of them, whichever measures faster here.

    The updates are many small memory-bound ops. On an idle machine all threads about halve their
    time (measured: 66 -> 37 ms per batch and coder on 2 cores); on a busy one every op ends in a
    barrier that waits for a descheduled thread (measured: 1.3 s vs 0.15 s with 1 thread on 2 shared
    cores). So the first `trials` batches after the first alternate the two and the faster median
    is kept. One trial each: the gaps are large (1.6x on an idle machine, 8x on a busy one) and every
    1-thread trial costs ~100 ms on an idle one. The forward pass and the encoders always use all
    threads; results do not depend on it.
    """

    def __init__(self, device: torch.device, trials: int = 2):
        self.all = torch.get_num_threads()
        self.times: dict[int, list[float]] = {1: [], self.all: []}
        self.trials = trials
        self.calls = 0
        self.choice: int | None = None if device.type == "cpu" and self.all > 1 else self.all

    @contextmanager
    def __call__(self) -> Iterator[None]:
        self.calls += 1
        n = self.choice or (1 if len(self.times[1]) <= len(self.times[self.all]) else self.all)
        if self.choice is None and self.calls == 1:
            n = self.all  # the first batch (slower: every state slot is empty) is not a trial
        previous = torch.get_num_threads()
        torch.set_num_threads(n)
        start = time.perf_counter()
        try:
            yield
        finally:
            torch.set_num_threads(previous)
            if self.choice is None and self.calls > 1:
                self.times[n].append(time.perf_counter() - start)
                if min(len(t) for t in self.times.values()) >= self.trials // 2:
                    med = {k: sorted(t)[len(t) // 2] for k, t in self.times.items()}
                    self.choice = min(med, key=med.get)
                    log.info("mine: bookkeeping on %d thread(s) (median %s)", self.choice,
                             ", ".join(f"{k} thread(s) {v * 1e3:.0f} ms" for k, v in med.items()))


# --------------------------------------------------------------------------- the stage
def run_mine_stage(
    run: str | Path,
    tokens: int = 200_000,
    extra_coders: Iterable[str | Path] = (),
    model: str | SubjectModel | None = None,
    corpus: CorpusConfig | None = None,
    device: str = "auto",
    window: int = 32,
    n_top: int = 20,
    n_explain: int = 40,
    n_test: int = 50,
    n_negative: int = 50,
    reservoir: int = 200,
    negative_pool: int = 500,
    n_quantiles: int = 10,
    min_examples: int = 200,
    seed: int = 0,
    batch_contexts: int = 32,
    checkpoint_every: int = 100,
    force: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Mine every coder of the run (plus `extra_coders` SAELens folders) over `tokens` held-out tokens.

    `reservoir` (default 200) is the uniform sample of activating windows per latent from which the
    n_explain + n_test quantile windows are drawn: 20 per activation decile, enough for 4 + 5.
    `negative_pool` (default 500) random windows, with their codes, supply the non-activating
    windows: a latent firing on 3% of tokens is quiet in ~38% of 32-token windows, still ~190 of 500.
    `model` may be an already loaded SubjectModel. `on_batch(batches_done)` is called after each
    batch (and after its checkpoint), e.g. to interrupt a test run.
    Returns a summary dict: tokens, windows, per-coder latent status counts, timings.
    """
    started = time.perf_counter()
    sampling = Sampling(
        window=window, n_top=n_top, n_explain=n_explain, n_test=n_test, n_negative=n_negative,
        reservoir=reservoir, negative_pool=negative_pool, n_quantiles=n_quantiles,
        min_examples=min_examples, seed=seed,
    )
    for name, value in (("tokens", tokens), ("batch_contexts", batch_contexts), ("checkpoint_every", checkpoint_every)):
        if value <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {value}")
    corpus = corpus or CorpusConfig()
    layout = WindowLayout(corpus.ctx_len, window)
    n_ctx = tokens // corpus.ctx_len
    if n_ctx == 0:
        raise UserError(f"--tokens {tokens} is less than one context of {corpus.ctx_len} tokens")
    rd = RunDir(run)
    folders = _coder_folders(rd, extra_coders)

    d = init_distributed()
    subject = model if isinstance(model, SubjectModel) else load_subject_model(model, device)
    dev = subject.device
    coders = [load_coder(folder, name, device=dev) for name, folder in folders]
    for c in coders:
        if c.ours is None:
            c.sae.eval()
    groups = _group_by_subject(coders, subject)

    cfg = {
        "model": subject.name,
        "models": [g.model_name(subject) for g in groups],
        "corpus": asdict(corpus),
        "tokens": tokens,
        "sampling": asdict(sampling),
        "coders": [{"name": c.name, "fingerprint": _fingerprint(c.folder)} for c in coders],
    }
    cfg_hash = config_hash(cfg)
    if not force and rd.is_complete(STAGE, cfg_hash) and all(rd.path(o).exists() for o in OUTPUTS):
        log.info("mine: already complete for this config (%s); skipped (pass --force to redo)", rd.root)
        per = _summary_from_files(rd)
        return {"run": str(rd.root), "skipped": True, "tokens": next(iter(per.values()))["n_tokens"] if per else 0, "coders": per}
    if d.is_main:
        if rd.stage_entry(STAGE) is not None and not rd.is_complete(STAGE, cfg_hash):
            rd.invalidate(STAGE)  # files of an older mining config must not pass for this one
        rd.init({STAGE: cfg})

    ckpt_hash = config_hash({**cfg, "batch_contexts": batch_contexts, "world": d.world, "rank": d.rank})
    ckpt = _ckpt_path(rd, d.rank)
    resumed = None if force else _load_ckpt(ckpt, ckpt_hash, dev)
    if resumed is not None and set(resumed[1]) == {c.name for c in coders}:
        done, states, timing = resumed
        log.info("mine: resuming from %s after %d batches", ckpt, done)
    else:
        done, timing = 0, _zero_timing()
        states = {c.name: CoderState.empty(c.d_sae, sampling, dev) for c in coders}

    resumed_batches = done
    n_batches = math.ceil(n_ctx / batch_contexts)
    mine_batches = len(range(d.rank, n_batches, d.world))
    state_mb = sum(s.nbytes() for s in states.values()) / 2**20
    log.info(
        "mine: %d coder(s) (%s), %d held-out tokens in %d batches of %d contexts x %d tokens%s; state %.0f MiB",
        len(coders), "; ".join(f"{', '.join(c.name for c in g.coders)} on {g.model_name(subject)} at {', '.join(g.hookpoints)}"
                               for g in groups),
        n_ctx * corpus.ctx_len, n_batches, batch_contexts, corpus.ctx_len,
        f" (rank {d.rank} of {d.world})" if d.world > 1 else "", state_mb,
    )
    models = [g.model(subject) for g in groups]  # random-model controls are built here, from the subject's config
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    bookkeeping_threads = BookkeepingThreads(dev)
    contexts = iter_contexts(corpus, subject.tokenizer, "heldout", n_ctx * corpus.ctx_len)
    with progress_bar("mine", total=mine_batches, unit="batches") as bar:
        bar.advance(done)
        for b, batch in enumerate(iter_batches(contexts, batch_contexts)):
            if b % d.world != d.rank:
                continue
            local = b // d.world
            if local < done:
                continue
            wids = layout.batch_window_ids(b * batch_contexts, batch.shape[0], device=dev)
            codes = []
            for g, m in zip(groups, models):  # the same tokens through each subject model; its coders encode
                t0 = time.perf_counter()
                cap = capture(m, batch, g.hookpoints)
                sync()
                t1 = time.perf_counter()
                for c in g.coders:
                    acts = (cap.mlp_in if c.site == "input" else cap.mlp_out)[c.hookpoint]
                    if acts.shape[-1] != c.d_in:
                        raise UserError(
                            f"coder {c.folder}: d_in {c.d_in} does not match the MLP {c.site} size {acts.shape[-1]} at {c.hookpoint}"
                        )
                    codes.append((c, c.encode_sparse(acts.reshape(-1, acts.shape[-1]))))
                del cap
                sync()
                timing["forward_s"] += t1 - t0
                timing["encode_s"] += time.perf_counter() - t1
            t2 = time.perf_counter()
            with bookkeeping_threads():
                for c, code in codes:
                    states[c.name].update(code.values, code.indices, corpus.ctx_len, wids, seed)
            del codes
            sync()
            timing["bookkeeping_s"] += time.perf_counter() - t2
            done = local + 1
            if done % checkpoint_every == 0 and done < mine_batches:
                _save_ckpt(ckpt, ckpt_hash, done, states, timing)
            bar.advance(1)
            fwd = max(timing["forward_s"], 1e-9)
            extra = timing["encode_s"] + timing["bookkeeping_s"]
            bar.set_postfix(f"mining +{100 * extra / fwd:.0f}% over the forward pass")
            if on_batch is not None:
                on_batch(done)
    del models

    if d.world > 1:
        states = {name: all_gather_state(s) for name, s in states.items()}
    n_tokens = int(next(iter(states.values())).n_tokens)
    if n_tokens == 0:
        raise UserError(
            f"--dataset {corpus.dataset}: the held-out split is empty (no documents with text, or fewer than "
            f"{corpus.ctx_len} tokens in all)"
        )
    if n_tokens < n_ctx * corpus.ctx_len:
        log.warning("mine: the held-out split has only %d tokens; mined those (%d asked for)", n_tokens, tokens)

    per: dict[str, dict] = {}
    if d.is_main:
        per = _write_outputs(rd, coders, states, sampling, corpus, subject.tokenizer, layout, n_ctx * corpus.ctx_len)
        n_windows = per.pop("_windows")["n"]
        rd.mark_complete(STAGE, cfg_hash, OUTPUTS, tokens=n_tokens, coders=[c.name for c in coders])
        for name, p in per.items():
            log.info(
                "mine: %s: %d latents: %d ok, %d too_rare (fewer than %d activating windows), %d dead; %d rows",
                name, p["latents"], p["ok"], p["too_rare"], sampling.min_examples, p["dead"], p["rows"],
            )
    else:
        n_windows = 0
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
    if ckpt.exists():
        ckpt.unlink()
    elapsed = time.perf_counter() - started
    fwd = timing["forward_s"]
    extra = timing["encode_s"] + timing["bookkeeping_s"]
    return {
        "run": str(rd.root),
        "skipped": False,
        "models": cfg["models"],
        "resumed_batches": resumed_batches,
        "tokens": n_tokens,
        "windows": n_windows,
        "coders": per,
        "forward_s": fwd,
        "encode_s": timing["encode_s"],
        "bookkeeping_s": timing["bookkeeping_s"],
        "overhead": extra / fwd if fwd > 0 else float("nan"),
        "elapsed_s": elapsed,
        "outputs": [str(rd.path(o)) for o in OUTPUTS],
    }


__all__ = ["run_mine_stage", "STAGE", "OUTPUTS"]
