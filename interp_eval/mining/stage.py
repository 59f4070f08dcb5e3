"""The `mine` stage: one pass of the subject model over held-out tokens feeds every coder at once.

Per batch of contexts: one forward pass (stopped after the deepest hooked layer), then each coder
encodes its hookpoint's activations and folds the sparse code into its `CoderState` (fixed-size
tensors: memory depends on latents x kept windows, never on the number of tokens). Coders are
grouped by the model they were trained on: the subject model, or its random-model control
`random:<model>:<seed>` (rebuilt from the subject's config, see subject/model.py). Each batch goes
through every group's model, so trained and control coders see the same held-out tokens in one
pass and share one windows table (same tokenizer, same tokens). With `--allow-model-mismatch` a coder
trained on another model (a base-model coder on the instruct subject) joins the subject's group; the
config record (run.json, the config hash), the manifest line and latents.parquet (`trained_on`,
`mined_on`, `model_mismatch`) record it. Under torchrun, rank r mines
batches r, r + world, ...; the states are merged exactly at the end and rank 0 writes the Parquet
files (see catalog.py). Every `checkpoint_every` batches each rank saves its state atomically under
RUN/checkpoints/; an interrupted run resumes from there (or from zero if the checkpoint is missing
or was made with other settings). The stage is complete only once its manifest line is written,
after the three files were renamed into place, each stamped with the run's id (catalog.py, "Which
run wrote a file"), so a set left mixed by a crash between them is refused by every reader. Nothing
of the run directory changes until the inputs are checked (coders against the model, a non-empty
held-out split): then a run replacing an earlier mining writes a `started` manifest line, so that
mining's files cannot pass for the new config's; run.json records the config with the finished
files.

Memory: per coder about latents x 1.25 (n_top + reservoir) x window x 4 bytes of kept activations
plus keys (the 1.25: room between compactions, see state.capacity; 4,608 latents at the defaults:
~183 MiB; 36,864 latents: ~1.4 GiB), allocated up front, plus per-batch temporaries of latents x
batch windows, plus the weights of each random-model control mined (~0.5 GiB fp32 for a 135M
model). Nothing grows with the number of tokens.

The stage's parts: config.py (what it is asked), coders/discover.py (which coders, checked against
the model), state.py (each coder's streaming state), checkpoints.py (resume points), selection.py
(which kept windows become rows) and outputs.py (the three files). Here: set-up, the pass, finish.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..artifacts import RunDir, config_hash, new_run_id
from ..coders.discover import SubjectGroup, coder_folders, coder_models, fingerprint, group_by_subject
from ..coders.load import load_any_coder
from ..coders.saelens import LoadedCoder
from ..distributed import DistInfo, init_distributed
from ..errors import UserError
from ..progress import progress_bar
from ..subject.corpus import iter_batches, iter_contexts, prefetched
from ..subject.hookpoints import capture
from ..subject.model import SubjectModel, load_subject_model
from .checkpoints import Progress, checkpoint_path, load_checkpoint, save_checkpoint
from .config import MineConfig
from .output_tokens import output_tokens
from .outputs import summary_from_files, write_outputs
from ..catalog import CONTEXTS, LATENTS, WINDOWS
from .state import CoderState, all_gather_state
from .windows import WindowLayout

log = logging.getLogger(__name__)

STAGE = "mine"
OUTPUTS = [LATENTS, WINDOWS, CONTEXTS]


class BookkeepingThreads:
    """On CPU, run the state updates with 1 thread or all of them, whichever measures faster here.

    The updates are many small memory-bound ops. On an idle machine all threads about halve their
    time; on a busy one every op ends in a barrier that waits for a descheduled thread, and 1 thread
    is several times faster. So the first `trials` batches after the first alternate the two and the
    faster median is kept. One trial each: the gaps are large either way, and every 1-thread trial
    is a slow batch on an idle machine. The forward pass and the encoders always use all threads;
    results do not depend on it.
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
@dataclass
class _Pass:
    """What the set-up settles once and the loop and the finish read."""

    rd: RunDir
    cfg: MineConfig
    dist: DistInfo
    subject: SubjectModel
    coders: list[LoadedCoder]
    groups: list[SubjectGroup]
    layout: WindowLayout
    record: dict  # the mining config, as the manifest records it
    cfg_hash: str  # its hash: the stage is complete for this hash only
    ckpt: Path  # this rank's checkpoint
    ckpt_hash: str  # the config hash plus what a checkpoint also depends on (batch size, ranks)
    run_id: str  # this run's id: its manifest lines and its three files record it
    batch: int  # contexts per batch (the config's, else the device's default)
    effects: dict | None = None  # each coder's output tokens, or why it has none (rank 0, made beside the pass)

    @property
    def n_contexts(self) -> int:
        return self.cfg.tokens // self.cfg.ctx_len

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n_contexts / self.batch)

    @property
    def rank_batches(self) -> int:
        """Batches this rank mines: r, r + world, ..."""
        return len(range(self.dist.rank, self.n_batches, self.dist.world))


def _set_up(rd: RunDir, cfg: MineConfig, subject: SubjectModel | None) -> _Pass:
    """Find and check the coders, load the subject model and the coders, and hash the config."""
    layout = WindowLayout(cfg.ctx_len, cfg.window)
    folders = coder_folders(rd, cfg.coders)
    d = init_distributed()
    subject = subject if subject is not None else load_subject_model(cfg.model, cfg.device)
    coders = [load_any_coder(folder, name, device=subject.device) for name, folder in folders]
    for c in coders:
        c.eval()
    groups = group_by_subject(coders, subject, cfg.allow_model_mismatch)
    record = {
        "model": subject.name,
        "models": [g.model_name(subject) for g in groups],
        "corpus": asdict(cfg.corpus),
        "tokens": cfg.tokens,
        "sampling": asdict(cfg.sampling),
        "coders": [{"name": c.name, "fingerprint": fingerprint(c.folder)} for c in coders],
        "output_tokens": cfg.output_tokens,
    }
    if cfg.allow_model_mismatch:  # recorded, so hashed, only when given: earlier runs' hashes stay valid
        record["allow_model_mismatch"] = True
        record["model_mismatch"] = {n: m.trained_on for n, m in coder_models(groups, subject).items() if m.model_mismatch}
    cfg_hash = config_hash(record)
    batch = cfg.batch_for(subject.device)
    ckpt_hash = config_hash({**record, "batch_contexts": batch, "world": d.world, "rank": d.rank})
    return _Pass(rd, cfg, d, subject, coders, groups, layout, record, cfg_hash, checkpoint_path(rd, d.rank), ckpt_hash,
                 new_run_id(), batch)


def _check_corpus(p: _Pass) -> None:
    """Stop on an empty held-out split before the run directory is touched (the pass would find out only at its end)."""
    if next(iter_contexts(p.cfg.corpus, p.subject.tokenizer, "heldout", p.cfg.ctx_len), None) is None:
        raise UserError(
            f"--dataset {p.cfg.dataset}: the held-out split is empty (no documents with text, or fewer than "
            f"{p.cfg.ctx_len} tokens in all)"
        )


def _start(p: _Pass) -> Progress:
    """This rank's progress: from its checkpoint when one fits the config, else from zero."""
    resumed = None if p.cfg.force else load_checkpoint(p.ckpt, p.ckpt_hash, p.subject.device)
    if resumed is not None and set(resumed.states) == {c.name for c in p.coders}:
        log.info("mine: resuming from %s after %d batches", p.ckpt, resumed.done)
        return resumed
    return Progress(0, {c.name: CoderState.empty(c.d_sae, p.cfg.sampling, p.subject.device) for c in p.coders})


def _mine(p: _Pass, progress: Progress, on_batch: Callable[[int], None] | None) -> None:
    """The pass: each of this rank's batches through every subject model, its codes folded into the states."""
    cfg, d, dev, timing = p.cfg, p.dist, p.subject.device, progress.timing
    state_mb = sum(s.nbytes() for s in progress.states.values()) / 2**20
    log.info(
        "mine: %d coder(s) (%s), %d held-out tokens in %d batches of %d contexts x %d tokens%s; state %.0f MiB",
        len(p.coders), "; ".join(f"{', '.join(c.name for c in g.coders)} on {g.model_name(p.subject)} at {', '.join(g.hookpoints)}"
                                 for g in p.groups),
        p.n_contexts * cfg.ctx_len, p.n_batches, p.batch, cfg.ctx_len,
        f" (rank {d.rank} of {d.world})" if d.world > 1 else "", state_mb,
    )
    t0 = time.perf_counter()
    models = [g.model(p.subject) for g in p.groups]  # random-model controls are built here, from the subject's config
    if d.is_main:
        p.effects = output_tokens([(m, g.coders) for g, m in zip(p.groups, models)], cfg.output_tokens)
    timing["output_tokens_s"] += time.perf_counter() - t0
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    bookkeeping_threads = BookkeepingThreads(dev)
    contexts = iter_contexts(cfg.corpus, p.subject.tokenizer, "heldout", p.n_contexts * cfg.ctx_len)
    stream = prefetched(iter_batches(contexts, p.batch), cfg.prefetch_for(dev))
    batches = enumerate(stream)
    with closing(stream), progress_bar("mine", total=p.rank_batches, unit="batches") as bar:
        bar.advance(progress.done)
        while True:
            t_data = time.perf_counter()  # drawing and tokenising the batch (or waiting for the prefetch thread)
            b, batch = next(batches, (None, None))
            if batch is None:
                break
            if b % d.world != d.rank or b // d.world < progress.done:
                timing["data_s"] += time.perf_counter() - t_data
                continue
            local = b // d.world
            batch = batch.to(dev, non_blocking=True)
            wids = p.layout.batch_window_ids(b * p.batch, batch.shape[0], device=dev)
            timing["data_s"] += time.perf_counter() - t_data
            codes = []
            for g, m in zip(p.groups, models):  # the same tokens through each subject model; its coders encode
                t0 = time.perf_counter()
                cap = capture(m, batch, g.hookpoints)
                sync()
                t1 = time.perf_counter()
                for c in g.coders:
                    acts = cap.read(c.hookpoint, c.site)
                    if acts.shape[-1] != c.d_in:
                        raise UserError(
                            f"coder {c.folder}: d_in {c.d_in} does not match the {c.site} size {acts.shape[-1]} at {c.hookpoint}"
                        )
                    codes.append((c, c.encode_sparse(acts.reshape(-1, acts.shape[-1]))))
                del cap
                sync()
                timing["forward_s"] += t1 - t0
                timing["encode_s"] += time.perf_counter() - t1
            t2 = time.perf_counter()
            with bookkeeping_threads():
                for c, code in codes:
                    progress.states[c.name].update(code.values, code.indices, cfg.ctx_len, wids, cfg.seed)
            del codes
            sync()
            timing["bookkeeping_s"] += time.perf_counter() - t2
            progress.done = local + 1
            t3 = time.perf_counter()
            if progress.done % cfg.checkpoint_every == 0 and progress.done < p.rank_batches:
                save_checkpoint(p.ckpt, p.ckpt_hash, progress)
            timing["checkpoint_s"] += time.perf_counter() - t3
            bar.advance(1)
            fwd = max(timing["forward_s"], 1e-9)
            extra = timing["encode_s"] + timing["bookkeeping_s"]
            bar.set_postfix(f"mining +{100 * extra / fwd:.0f}% over the forward pass")
            if on_batch is not None:
                on_batch(progress.done)


def _finish(p: _Pass, progress: Progress) -> dict:
    """Merge the ranks' states, write the files and the manifest line (rank 0), drop the checkpoint."""
    cfg, d, rd = p.cfg, p.dist, p.rd
    states = progress.states
    if d.world > 1:
        states = {name: all_gather_state(s) for name, s in states.items()}
    n_tokens = int(next(iter(states.values())).n_tokens)
    if n_tokens < p.n_contexts * cfg.ctx_len:
        log.warning("mine: the held-out split has only %d tokens; mined those (%d asked for)", n_tokens, cfg.tokens)

    per: dict[str, dict] = {}
    n_windows, writing = 0, {}
    if d.is_main:
        per = write_outputs(RunDir(rd.root, run_id=p.run_id), p.coders, coder_models(p.groups, p.subject), states,
                            cfg.sampling, cfg.corpus, p.subject.tokenizer, p.layout, p.n_contexts * cfg.ctx_len, p.effects)
        n_windows = per.pop("_windows")["n"]
        writing = per.pop("_timing")
        rd.init({STAGE: p.record})
        mismatch = {"model_mismatch": p.record["model_mismatch"]} if p.record.get("model_mismatch") else {}
        # where each coder was read from (not hashed: a run directory may move), for the scorers that run a coder again
        # (steering); each with the fingerprint it was mined with, so a coder retrained since is never used
        folders = {c.name: {"folder": str(Path(c.folder).resolve()), "fingerprint": r["fingerprint"]}
                   for c, r in zip(p.coders, p.record["coders"])}
        rd.mark_complete(STAGE, p.cfg_hash, OUTPUTS, run=p.run_id, tokens=n_tokens, coders=[c.name for c in p.coders],
                         model=p.record["model"], coder_folders=folders, **mismatch)
        for name, c in per.items():
            log.info(
                "mine: %s: %d latents: %d ok, %d too_rare (fewer than %d activating windows), %d dead; %d rows",
                name, c["latents"], c["ok"], c["too_rare"], cfg.min_examples, c["dead"], c["rows"],
            )
    if d.world > 1:
        import torch.distributed as dist

        dist.barrier()
    if p.ckpt.exists():
        p.ckpt.unlink()
    return {"tokens": n_tokens, "windows": n_windows, "coders": per, "writing": writing}


def run_mine_stage(run: str | Path, cfg: MineConfig | None = None, subject: SubjectModel | None = None,
                   on_batch: Callable[[int], None] | None = None) -> dict:
    """Mine every coder of the run (plus the `cfg.coders` SAELens or sparsify folders) over `cfg.tokens` held-out tokens.

    `subject` is an already loaded subject model (else `cfg.model` is loaded). `on_batch(batches_done)`
    is called after each batch (and after its checkpoint), e.g. to interrupt a test run.
    Returns a summary dict: tokens, windows, per-coder latent status counts, and the seconds of every part:
    set_up_s (coders, model, checks, checkpoint), output_tokens_s, the loop's data_s (drawing and tokenising
    batches), forward_s, encode_s, bookkeeping_s and checkpoint_s, write_s (merging, the files; `writing` splits
    it: the pool windows' MiniLM embeddings, decoder neighbours, rows, windows and latents tables), and
    untimed_s, whatever of elapsed_s no timer saw (the progress bar, loop control).
    """
    started = time.perf_counter()
    cfg = cfg or MineConfig()
    rd = RunDir(run)
    p = _set_up(rd, cfg, subject)
    if not cfg.force and rd.is_complete(STAGE, p.cfg_hash) and not any(rd.stale(o) for o in OUTPUTS):
        log.info("mine: already complete for this config (%s); skipped (pass --force to redo)", rd.root)
        per = summary_from_files(rd)
        return {"run": str(rd.root), "skipped": True, "tokens": next(iter(per.values()))["n_tokens"] if per else 0, "coders": per}
    _check_corpus(p)
    if p.dist.is_main:
        rd.prepare()
    if p.dist.is_main and rd.stage_entry(STAGE) is not None:
        rd.mark_started(STAGE, p.cfg_hash, p.run_id)  # the earlier mining's files must not pass for this one's

    progress = _start(p)
    resumed_batches = progress.done
    set_up_s = time.perf_counter() - started
    loop_timing = dict(progress.timing)
    _mine(p, progress, on_batch)
    t_finish = time.perf_counter()
    done = _finish(p, progress)
    timing = progress.timing
    fwd = timing["forward_s"]
    extra = timing["encode_s"] + timing["bookkeeping_s"]
    elapsed = time.perf_counter() - started
    parts = {"set_up_s": set_up_s, **timing, "write_s": time.perf_counter() - t_finish}
    # this invocation's parts (a resumed pass's timing also holds the earlier invocations'), and what no timer saw
    this_run = sum(v - loop_timing.get(k, 0.0) for k, v in parts.items())
    return {
        "run": str(rd.root),
        "skipped": False,
        "models": p.record["models"],
        "resumed_batches": resumed_batches,
        "batch_contexts": p.batch,
        **done,
        **parts,
        "untimed_s": elapsed - this_run,
        "overhead": extra / fwd if fwd > 0 else float("nan"),
        "elapsed_s": elapsed,
        "outputs": [str(rd.path(o)) for o in OUTPUTS],
    }


__all__ = ["MineConfig", "run_mine_stage", "STAGE", "OUTPUTS"]
