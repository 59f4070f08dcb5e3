"""The `score` stage: every registered scorer (registry.py) on the explained latents, with its control.

Reads `latents.parquet`, `windows.parquet`, `contexts.parquet` (test windows only; see testset.py)
and `explanations.parquet`; writes

- `predictions.parquet`: one row per (coder, latent, scorer, explainer, control, test window; per
  trial for the intruder), see catalog.PREDICTIONS. `control` is "none" for the scores and
  "shuffled" for the shuffled control (controls.py); control rows never enter the scores;
- `llm_usage.parquet` (the LLM ledger, appended): one row per LLM call (retries included), tagged with
  its coder, latent, scorer, explainer and control: tokens, dollars, cache hits, failures;
- `window_embeddings.parquet`: MiniLM embeddings of the run's windows (embedding scorers), made once;
- `latent_scores.parquet`, `score_summary.parquet` (with each scorer's power and its interval),
  `score_by_quantile.parquet` and, with freq_adjust, `score_by_frequency.parquet` (see aggregate.py).

Which latents: scorers that need an explanation score every selected explained latent, once per
explainer (`explainer` column of explanations.parquet); example-embedding scores every live latent
(or the first N with `latents`); the intruder scores the explained latents.

Resume: a job (one latent, scorer, explainer and control) is written as soon as all its prompts are
answered: `chunk` jobs or a few seconds' worth at a time (parts.PartWriter; one Parquet part file each,
renamed into place, merged into predictions.parquet at the end), so a slow call holds back only its
own job. A re-run scores only the jobs that have no finished rows for the same explanation (or
reference), model, scorer version, seed, windows per prompt and test windows, or that have failed
windows: a provider error is asked again, an answer that never parsed gets new corrective turns after
its cached ones (llm/ask.py); the response cache makes everything else free. Windows whose answer
stayed unparseable after `max_retries` corrective turns are kept as failures (prediction null,
parse_ok false) and reported per latent and per coder.

The aggregates cover every job in predictions.parquet, including ones scored by an earlier run and
not selected this time. The stage's manifest entry ("score", config hash) is written only when no
window is left without an answer because of a provider error.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from ..config_fields import NOT_AN_OPTION, count_or_all, flags
from ..artifacts import RunDir, config_hash
from ..catalog import (
    CONTEXTS, EXPLANATIONS, KIND_NEGATIVE, LATENT_SCORES, LATENTS, LLM_USAGE, PREDICTIONS, SCORE_BY_FREQUENCY, SCORE_BY_QUANTILE,
    SCORE_KEY, SCORE_PARTS, SCORE_SUMMARY, SPLIT_EXPLAIN, SPLIT_TEST, STATUS_OK, WINDOW_EMBEDDINGS, WINDOWS,
)
from ..errors import UserError
from ..latent_selection import pick
from ..llm import LLMConfig, LLMResponse, make_client
from ..llm.ask import Question, ask_each
from ..parts import PartedTable, PartWriter
from ..progress import progress_bar
from ..llm.client import dry_run as llm_dry_run
from ..llm.usage import CallTag, ledger_rows, spend
from ..mining.outputs import mismatch_lines
from ..prompting import render
from . import aggregate
from .classifier import wants_logprobs
from .controls import shuffled_sources
from .order import prefix_order
from .embedding import WindowEmbeddings
from .registry import CONTROL_NONE, CONTROL_SHUFFLED, EXPLAINED, LIVE, NO_EXPLAINER, Job, LLMScorer, LocalScorer, ScorePrompt, get_scorer, scorer_names
from .testset import LatentTests, TestRows, build_latent_tests

log = logging.getLogger(__name__)

KEY = list(SCORE_KEY)
LOCAL_WINDOWS_PER_PROMPT = 1  # the offline model's format, chosen by measured power (README)
HOSTED_WINDOWS_PER_PROMPT = 5  # the paper's
LOCAL_WINDOW_TOKENS = 16  # the offline model sees 16 of a window's 32 tokens around its peak: more power, faster (README)


def __getattr__(name: str):  # SCORERS: the registered scorer names, read when asked (plugins may add more)
    if name == "SCORERS":
        return scorer_names()
    raise AttributeError(name)


def scorers_help() -> str:
    return "Scorer (repeatable): " + ", ".join(scorer_names()) + "."


@dataclass
class ScoreConfig:
    scorers: tuple[str, ...] = field(default=("detection", "fuzzing"), metadata=flags("--scorer", help=scorers_help))
    """Scorers to run (registry.py)."""
    coders: tuple[str, ...] | None = field(default=None, metadata=flags("--coder"))
    """Only these coders (repeatable)."""
    latents: int | tuple[int, ...] | None = field(default=None, metadata=flags("--latents", parser=count_or_all))  # or indices
    """Score the first N explained latents of each coder (default: all explained; example-embedding: all live)."""
    sample: int | None = None
    """Or a seeded random sample of N live latents of each coder (the latents `explain --sample N` explained with the
    same seed; latent_selection.py): the same latents for every scorer and its control."""
    sample_seed: int = 0
    """Seed of --sample (explain's --seed)."""
    windows_per_prompt: int | None = None
    """Test windows per LLM prompt (default: 5, the paper's, for hosted models; 1 for the offline model, chosen by
    measured power)."""
    n_activating: int = 50
    """Activating test windows per latent (at most)."""
    n_negative: int = 50
    """Non-activating test windows per latent (at most)."""
    seed: int = 0
    """Seed of window order, subsampling, fuzzing marks and bootstrap intervals."""
    freq_adjust: bool = field(default=False, metadata=flags("--freq-adjust"))
    """Also report the frequency-weighted F1 and scores by firing-frequency bin."""
    max_retries: int = 2
    """Corrective re-asks after an answer that is not a list of 0/1 digits."""
    control_latents: int | None = None
    """Latents per coder scored again with another latent's explanation (the shuffled control; default: all, 0: none)."""
    explainers: tuple[str, ...] | None = field(default=None, metadata=flags("--explainer"))
    """Only these explainers' explanations (default: every explainer in explanations.parquet)."""
    intruder_windows: int = 5
    """Windows per intruder prompt (chance 1/n)."""
    intruder_trials: int = 4
    """Intruder prompts per latent."""
    window_tokens: int | None = None
    """LLM scorers: cut each test window to N tokens around its highest activation; 0: whole windows (default: 16
    for the offline model, chosen by measured power; whole windows for hosted models)."""
    chunk: int = field(default=64, metadata=NOT_AN_OPTION)
    """Finished jobs (a latent's scoring by one scorer, explainer and control) per part file (or fewer, every
    parts.WRITE_SECONDS): the resume granularity."""

    def __post_init__(self):  # sequences given in code (lists) become the tuples the config hash and the CLI use
        self.scorers = tuple(self.scorers)
        self.coders = tuple(self.coders) if self.coders else None
        self.explainers = tuple(self.explainers) if self.explainers else None
        if self.latents is not None and not isinstance(self.latents, int):
            self.latents = tuple(int(x) for x in self.latents)

    def validate(self) -> None:
        if not self.scorers:
            raise UserError("--scorer: name at least one scorer")
        for s in self.scorers:
            get_scorer(s)
        if len(set(self.scorers)) != len(self.scorers):
            raise UserError("--scorer: each scorer once")
        for name in ("n_activating", "n_negative", "intruder_trials"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if self.windows_per_prompt is not None and self.windows_per_prompt < 1:
            raise UserError("--windows-per-prompt must be at least 1")
        if self.window_tokens is not None and self.window_tokens < 0:
            raise UserError("--window-tokens must be >= 0 (0: whole windows)")
        if self.intruder_windows < 2:
            raise UserError("--intruder-windows must be at least 2")
        if "intruder" in self.scorers and self.n_activating < self.intruder_windows - 1:
            raise UserError(
                f"--intruder-windows {self.intruder_windows} needs {self.intruder_windows - 1} activating test windows a "
                f"latent (--n-activating {self.n_activating}): no intruder trial could be formed; lower "
                "--intruder-windows or raise --n-activating")
        if self.max_retries < 0:
            raise UserError("--max-retries must be >= 0")
        if self.control_latents is not None and self.control_latents < 0:
            raise UserError("--control-latents must be >= 0 (0: no control)")
        if isinstance(self.latents, int) and self.latents < 1:
            raise UserError("--latents must be at least 1")
        if self.sample is not None and self.latents is not None:
            raise UserError("give --latents or --sample, not both")
        if self.sample is not None and self.sample < 1:
            raise UserError("--sample must be at least 1")


def with_backend_format(cfg: ScoreConfig, backend: str) -> ScoreConfig:
    """Fill the prompt format the user left open with the backend's default: the offline model gets one window a
    prompt cut to 16 tokens (chosen by measured power, README), hosted models the paper's 5 whole windows."""
    local = backend == "local"
    wpp = cfg.windows_per_prompt or (LOCAL_WINDOWS_PER_PROMPT if local else HOSTED_WINDOWS_PER_PROMPT)
    cut = cfg.window_tokens if cfg.window_tokens is not None else (LOCAL_WINDOW_TOKENS if local else 0)
    return replace(cfg, windows_per_prompt=wpp, window_tokens=cut or None)


# -- inputs ----------------------------------------------------------------------------------------------
def read_explanations(rd: RunDir) -> pd.DataFrame:
    """explanations.parquet, one row per (coder, latent, explainer), without the rows explained from an earlier
    mining run (another `mine_config`): their latents' test windows are not the ones their explainer saw."""
    ex = rd.read(EXPLANATIONS).drop_duplicates(["coder", "latent", "explainer"], keep="last")
    mined = rd.stage_entry("mine")
    stale = ex["mine_config"].notna() & (ex["mine_config"] != (mined or {}).get("config_hash"))
    if stale.any():
        log.warning("%d explanations are of an earlier mining run and are not scored: re-run `interp-eval explain` "
                    "to explain them anew", int(stale.sum()))
    return ex[~stale].reset_index(drop=True)


def _explained(ex: pd.DataFrame, lat: pd.DataFrame, cfg: ScoreConfig) -> pd.DataFrame:
    """The selected explained latents: coder, latent, explainer, explanation (`lat`: latents.parquet, whose live
    latents a --sample is drawn from)."""
    columns = ["coder", "latent", "explainer", "explanation"]
    ok = ex[ex["explanation"].notna() & ex["parse_ok"].fillna(False).astype(bool)]
    if cfg.coders:
        ok = ok[ok["coder"].isin(cfg.coders)]
    if cfg.explainers:
        ok = ok[ok["explainer"].isin(cfg.explainers)]
    pool = _live(lat, replace(cfg, sample=None, latents=None)) if cfg.sample is not None else None
    return pick(ok, ["coder", "explainer"], cfg.latents, cfg.sample, cfg.sample_seed, pool)[columns].reset_index(drop=True)


def _live(lat: pd.DataFrame, cfg: ScoreConfig) -> pd.DataFrame:
    """The selected live latents: coder, latent."""
    live = lat[lat["status"] == STATUS_OK]
    if cfg.coders:
        live = live[live["coder"].isin(cfg.coders)]
    return pick(live[["coder", "latent"]], ["coder"], cfg.latents, cfg.sample, cfg.sample_seed).reset_index(drop=True)


@dataclass
class TestData:
    tests: dict[tuple[str, int], LatentTests]  # explanation "" (set per job)
    explain_ids: dict[tuple[str, int], list[int]]
    known: dict[tuple[str, int], set[int]]  # every window a latent is known to fire in (explain + test)
    texts: dict[int, str]  # un-highlighted text of every window read


def load_tests(rd: RunDir, keys: set[tuple[str, int]], latents: pd.DataFrame, cfg: ScoreConfig, marks: bool = True) -> TestData:
    """The test set of every latent in `keys`; explanation windows are read for the leak check and as references.

    `marks=False` skips the fuzzing marks (only scorers that show highlighted windows need them).
    """
    if not keys:
        return TestData({}, {}, {}, {})
    coders = sorted({c for c, _ in keys})
    ctx = rd.read(CONTEXTS, where={"coder": coders, "split": [SPLIT_EXPLAIN, SPLIT_TEST]},
                  columns=["coder", "latent", "window_id", "kind", "split", "quantile", "rank", "activations"])
    keep = pd.MultiIndex.from_arrays([ctx["coder"], ctx["latent"].astype(np.int64)]).isin(list(keys))
    ctx = ctx[keep].reset_index(drop=True)
    rows = TestRows.of(ctx)
    groups = ctx.groupby(["coder", "latent"], sort=False).indices
    ids = sorted(set(rows.window_id.tolist()))
    win = rd.read(WINDOWS, where={"window_id": ids}, columns=["window_id", "tokens"])
    tokens_of = {int(w): list(t) for w, t in zip(win["window_id"], win["tokens"])}
    binary = dict(zip(latents["coder"], latents["binary"].astype(bool)))
    tests, explain_ids, known = {}, {}, {}
    for (coder, latent), at in groups.items():
        key = (coder, int(latent))
        mine = rows.take(at)
        explain = mine.split == SPLIT_EXPLAIN
        explain_ids[key] = mine.window_id[explain].tolist()
        known[key] = set(mine.window_id[mine.kind != KIND_NEGATIVE].tolist())
        tests[key] = build_latent_tests(
            coder, int(latent), "", binary.get(coder, False), mine.take(np.flatnonzero(~explain)), explain_ids[key], tokens_of,
            n_activating=cfg.n_activating, n_negative=cfg.n_negative, seed=cfg.seed, marks=marks,
            window_tokens=cfg.window_tokens,
        )
    for key in keys - set(tests):
        tests[key] = LatentTests(key[0], key[1], "", binary.get(key[0], False), [])
    return TestData(tests, explain_ids, known, {w: render(t) for w, t in tokens_of.items()})


def _jobs(scorer, selected: pd.DataFrame, live: pd.DataFrame, data: TestData, cfg: ScoreConfig) -> list[Job]:
    """The scorer's jobs: own explanations (or references), then its shuffled control."""
    jobs: list[Job] = []
    if scorer.needs_explanation:
        for (coder, explainer), g in selected.groupby(["coder", "explainer"], sort=True):
            text = dict(zip(g["latent"].astype(int), g["explanation"].astype(str)))
            for latent, e in text.items():
                jobs.append(Job(replace(data.tests[(coder, latent)], explanation=e), explainer, CONTROL_NONE, latent))
            if scorer.control == CONTROL_SHUFFLED:
                for latent, src in shuffled_sources(list(text), cfg.control_latents, cfg.seed, coder, explainer).items():
                    jobs.append(Job(replace(data.tests[(coder, latent)], explanation=text[src]), explainer, CONTROL_SHUFFLED, src))
        return jobs
    rows = live if scorer.latents == LIVE else selected.drop_duplicates(["coder", "latent"])
    for coder, g in rows.groupby("coder", sort=True):
        lats = sorted(g["latent"].astype(int))
        for latent in lats:
            ref = tuple(data.explain_ids.get((coder, latent), []))
            jobs.append(Job(replace(data.tests[(coder, latent)], explanation=_ref_text(latent, ref)), NO_EXPLAINER, CONTROL_NONE, latent, ref))
        if scorer.control == CONTROL_SHUFFLED:
            for latent, src in shuffled_sources(lats, cfg.control_latents, cfg.seed, coder, NO_EXPLAINER).items():
                ref = tuple(data.explain_ids.get((coder, src), []))
                jobs.append(Job(replace(data.tests[(coder, latent)], explanation=_ref_text(src, ref)), NO_EXPLAINER, CONTROL_SHUFFLED, src, ref))
    return jobs


def _ref_text(latent: int, ref: tuple[int, ...]) -> str:
    return f"reference windows of latent {latent}: {','.join(map(str, ref))}"


# -- stored results ----------------------------------------------------------------------------------------
def _predictions(rd: RunDir) -> PartedTable:
    """predictions.parquet, written in part files as jobs finish (the resume granularity)."""
    return PartedTable(rd, PREDICTIONS, tuple(KEY), SCORE_PARTS)


def _load_predictions(rd: RunDir) -> pd.DataFrame:
    """predictions.parquet plus any part files (from this run or a crashed one); for each key the newest rows win."""
    df = _predictions(rd).read()
    df["source_latent"] = df["source_latent"].fillna(df["latent"])  # rows from before controls: their own latent
    return df


def _to_table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    df = df[[f.name for f in schema]]
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def explanation_sha(explanation: str) -> str:
    return hashlib.sha256(str(explanation).encode()).hexdigest()[:12]


def _done_keys(pred: pd.DataFrame, jobs: Sequence[Job], scorer, model: str, version: str, wpp: int | None, cfg: ScoreConfig) -> set:
    """Jobs whose rows match the current model, scorer version, seed, explanation and test windows, with no failed window."""
    p = pred[pred["scorer"] == scorer.name]
    if p.empty:
        return set()
    want = {j.key: (scorer.expected_windows(j), explanation_sha(j.tests.explanation)) for j in jobs}
    done = set()
    for key, g in p.groupby(["coder", "latent", "explainer", "control"]):
        key = (key[0], int(key[1]), key[2], key[3])
        if key not in want:
            continue
        windows, sha = want[key]
        same = (
            (g["model"] == model).all() and (g["seed"] == cfg.seed).all() and (g["prompt_version"] == version).all()
            and (wpp is None or (g["windows_per_prompt"] == wpp).all())
            and sorted(g["window_id"].astype(int)) == windows
            and (g["explanation_sha"] == sha).all()
            and g["failure"].isna().all()
        )
        if same:
            done.add(key)
    return done


def _base_row(job: Job, scorer_name: str, model: str, version: str, wpp: int | None, cfg: ScoreConfig) -> dict:
    t = job.tests
    return {
        "coder": t.coder, "latent": t.latent, "scorer": scorer_name, "explainer": job.explainer, "control": job.control,
        "source_latent": job.source_latent if job.source_latent is not None else t.latent, "model": model,
        "prompt_version": version, "explanation_sha": explanation_sha(t.explanation), "windows_per_prompt": wpp, "seed": cfg.seed,
    }


_ROW_DEFAULTS = {"prediction": None, "probability": None, "similarity": None, "answer": None, "parse_ok": True, "failure": None,
                 "attempts": 0, "prompt_index": None, "position": None, "quantile": None}


# -- LLM scorers -------------------------------------------------------------------------------------------
def _llm_rows(scorer: LLMScorer, p: ScorePrompt, history: list[LLMResponse], model: str, version: str, wpp: int | None,
              cfg: ScoreConfig) -> tuple[list[dict], list[dict]]:
    last = history[-1]
    answer = scorer.parse(last.text, p) if last.ok else None
    probs = scorer.probabilities(last, p) if answer is not None else None
    if answer is not None:
        failure = None
    elif not last.ok:
        failure = f"llm: {last.error}"
    else:
        failure = f"parse: no valid answer for {p.answer_size} item(s) after {len(history)} answer(s); last: {(last.text or '')[:80]!r}"
    base = _base_row(p.job, scorer.name, model, version, wpp, cfg)
    preds = [{**_ROW_DEFAULTS, **base, **w, "parse_ok": answer is not None, "failure": failure, "attempts": len(history),
              "prompt_index": p.index} for w in scorer.window_rows(p, answer, probs)]
    tag = CallTag(p.job.tests.coder, p.job.tests.latent, explainer=p.job.explainer, scorer=scorer.name, control=p.job.control)
    return preds, ledger_rows(tag, history)


@dataclass
class _OpenJob:
    """A job whose prompts are being answered: its rows so far, and how many prompts are still out."""

    scorer: LLMScorer
    job: Job
    left: int
    preds: list[dict] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)


def _run_llm(rd: RunDir, llm_cfg: LLMConfig, todo: dict[str, list[Job]], model: str, versions: dict[str, str], wpp: int,
             cfg: ScoreConfig) -> dict[str, Any]:
    """Ask every LLM scorer's prompts, in prefix order (order.py); each job is written once all its prompts are answered."""
    llm = make_client(llm_cfg)
    logprobs = wants_logprobs(*llm_cfg.resolved())
    # one scorer, then one explanation, at a time: consecutive prompts share the longest prefix (order.py)
    jobs = prefix_order([(get_scorer(s), j) for s in todo if get_scorer(s).uses_llm for j in todo[s]])

    def write(finished: list[_OpenJob]) -> None:
        # the ledger first: a crash between the two writes re-scores these jobs (from the cache), never loses their cost record
        rd.append(LLM_USAGE, [call for o in finished for call in o.calls])
        _predictions(rd).add([row for o in finished for row in o.preds])

    def questions():  # a generator: prompts are built only as the pipeline takes them
        for scorer, job in jobs:
            prompts = scorer.prompts(job, cfg, logprobs)
            open_job = _OpenJob(scorer, job, len(prompts))
            for p in prompts:
                yield Question(p.request, lambda text, s=scorer, p=p: s.parse(text, p),
                               lambda request, text, s=scorer, p=p: s.retry(request, text, p), about=(open_job, p))

    async def go() -> None:
        async with llm, PartWriter(write, every=cfg.chunk) as out:
            with progress_bar(f"score ({llm.model})", total=len(jobs), unit="jobs", enabled=llm_cfg.progress) as bar:

                def settled(q: Question, answers: list[LLMResponse]) -> None:
                    open_job, p = q.about
                    preds, calls = _llm_rows(open_job.scorer, p, answers, model, versions[open_job.scorer.name], wpp, cfg)
                    open_job.preds += preds
                    open_job.calls += calls
                    open_job.left -= 1
                    if open_job.left == 0:
                        out.add(open_job)
                        bar.advance(1)

                await ask_each(llm, questions(), cfg.max_retries, settled, desc="score", batch_state=rd.path("llm_batch_score.json"))

    asyncio.run(go())
    return llm.usage.summary()


# -- scorers without an LLM ----------------------------------------------------------------------------------
@dataclass
class LocalContext:
    embeddings: WindowEmbeddings


def _run_local(rd: RunDir, scorer: LocalScorer, jobs: list[Job], context: LocalContext, versions: dict[str, str],
               cfg: ScoreConfig) -> None:
    model = scorer.model("")
    step = max(1, cfg.chunk) * 64
    with progress_bar(scorer.name, total=len(jobs), unit="jobs") as bar:
        for start in range(0, len(jobs), step):
            part = jobs[start : start + step]
            rows = []
            for job, windows in zip(part, scorer.score(part, context)):
                base = _base_row(job, scorer.name, model, versions[scorer.name], None, cfg)
                rows += [{**_ROW_DEFAULTS, **base, **w} for w in windows]
            _predictions(rd).add(rows)
            context.embeddings.save()
            bar.advance(len(part))


# -- the stage ---------------------------------------------------------------------------------------------
def run_score_stage(run: str | Path, cfg: ScoreConfig | None = None, llm_cfg: LLMConfig | None = None,
                    dry_run: bool = False) -> dict[str, Any]:
    """Score the explained latents with each scorer and its control; returns counts, usage and the per-coder summary.

    llm_cfg: the scorer LLM (None: the offline local model); not needed for scorers without an LLM.
    """
    cfg = cfg or ScoreConfig()
    cfg.validate()
    rd = RunDir(run)
    if not dry_run:
        rd.prepare()
    lat = rd.read(LATENTS)
    if cfg.coders:
        missing = set(cfg.coders) - set(lat["coder"])
        if missing:
            raise UserError(f"--coder {', '.join(sorted(missing))}: not in {LATENTS} (coders: {', '.join(sorted(set(lat['coder'])))})")
    for line in mismatch_lines(lat[lat["coder"].isin(cfg.coders)] if cfg.coders else lat):
        log.warning("score: %s", line)
    chosen = [get_scorer(s) for s in cfg.scorers]
    uses_llm = any(s.uses_llm for s in chosen)
    llm_cfg = llm_cfg if llm_cfg is not None else LLMConfig(model=None)
    backend, model = llm_cfg.resolved() if uses_llm else ("none", "")
    cfg = with_backend_format(cfg, backend)
    wpp = cfg.windows_per_prompt
    cut_tag = f"+cut{cfg.window_tokens}" if cfg.window_tokens else ""  # a cut window is another test: no reuse across cuts
    versions = {s.name: s.version() + (cut_tag if s.uses_llm else "") for s in chosen}
    wants_explanations = any(s.needs_explanation or s.latents == EXPLAINED for s in chosen)
    all_expl = read_explanations(rd) if wants_explanations else pd.DataFrame(columns=["coder", "latent", "explainer", "explanation"])
    selected = _explained(all_expl, lat, cfg) if wants_explanations else all_expl
    if wants_explanations and selected.empty:
        raise UserError(f"nothing to score: {EXPLANATIONS} has no explained latent"
                        f"{' of --coder ' + ', '.join(cfg.coders) if cfg.coders else ''}"
                        f"{' among --latents' if cfg.latents is not None else ''} (run `interp-eval explain` first)")
    live = _live(lat, cfg) if any(s.latents == LIVE for s in chosen) else selected.iloc[0:0]
    keys = set(zip(selected["coder"], selected["latent"].astype(int))) | set(zip(live["coder"], live["latent"].astype(int)))
    data = load_tests(rd, keys, lat, cfg, marks=any(s.needs_marks for s in chosen))
    pred = _load_predictions(rd)
    todo: dict[str, list[Job]] = {}
    counts: dict[str, Any] = {"selected": len(keys), "no_test_windows": sum(not t.windows for t in data.tests.values()),
                              "jobs": {}, "to_score": {}, "already_done": {}}
    for s in chosen:
        jobs = [j for j in _jobs(s, selected, live, data, cfg) if j.tests.windows]
        if hasattr(s, "prepare"):  # scorers that pair a latent with others (the intruder)
            s.prepare(jobs, data.tests, data.known, cfg)
        done = _done_keys(pred, jobs, s, s.model(model), versions[s.name], wpp if s.uses_llm else None, cfg)
        todo[s.name] = [j for j in jobs if j.key not in done]
        counts["jobs"][s.name] = len(jobs)
        counts["to_score"][s.name] = len(todo[s.name])
        counts["already_done"][s.name] = len(jobs) - len(todo[s.name])
    stage_hash = config_hash({"score": asdict(cfg), "backend": backend, "model": model, "versions": versions})

    if dry_run:
        return _dry_run(llm_cfg, todo, cfg, counts)

    log.info("scoring %s%s", ", ".join(f"{len(v)} jobs ({s})" for s, v in todo.items()), f" with {model}" if uses_llm else "")
    usage: dict[str, Any] = {}
    if any(todo[s.name] for s in chosen if s.uses_llm):
        usage = _run_llm(rd, llm_cfg, {s.name: todo[s.name] for s in chosen if s.uses_llm}, model, versions, wpp, cfg)
    local = [s for s in chosen if not s.uses_llm and todo[s.name]]
    if local:
        context = LocalContext(WindowEmbeddings(rd.path(WINDOW_EMBEDDINGS), data.texts))
        for s in local:
            _run_local(rd, s, todo[s.name], context, versions, cfg)

    # consolidate: predictions into their final file, then the aggregates
    pred = _load_predictions(rd)
    _predictions(rd).write(_to_table(pred, PREDICTIONS.schema))

    # the aggregates of this run's scorers, beside the rows other scorers' runs wrote (their predictions are untouched)
    ours = pred[pred["scorer"].isin(cfg.scorers)]
    scores = aggregate.latent_scores(ours, lat, all_expl if len(all_expl) else None)
    calls = rd.read(LLM_USAGE, where={"scorer": sorted(set(ours["scorer"]))}) if rd.has(LLM_USAGE) else LLM_USAGE.empty().to_pandas()
    if not calls.empty:
        per = spend(calls, KEY)[[*KEY, "calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd"]]
        scores = scores.merge(per, on=KEY, how="left")
    summ = aggregate.summary(scores, ours, lat, all_expl if len(all_expl) else None, freq_adjust=cfg.freq_adjust, seed=cfg.seed,
                             chance={s.name: s.chance(cfg) for s in chosen})
    scores = _with_other_scorers(rd, LATENT_SCORES, scores, cfg.scorers)
    rd.write(LATENT_SCORES, scores)
    rd.write(SCORE_SUMMARY, _with_other_scorers(rd, SCORE_SUMMARY, summ, cfg.scorers))
    rd.write(SCORE_BY_QUANTILE, _with_other_scorers(rd, SCORE_BY_QUANTILE, aggregate.by_quantile(ours), cfg.scorers))
    written = [PREDICTIONS, LATENT_SCORES, SCORE_SUMMARY, SCORE_BY_QUANTILE]
    if local:
        written.append(WINDOW_EMBEDDINGS)
    if cfg.freq_adjust:
        rd.write(SCORE_BY_FREQUENCY, aggregate.by_frequency(scores))
        written.append(SCORE_BY_FREQUENCY)
    outputs = [t.name for t in written]

    in_sel = np.array([k in keys for k in zip(pred["coder"], pred["latent"].astype(int))], dtype=bool)
    mine = pred[in_sel & pred["scorer"].isin(cfg.scorers).to_numpy()]
    llm_errors = int(mine["failure"].fillna("").str.startswith("llm").sum())
    parse_failures = int(mine["failure"].fillna("").str.startswith("parse").sum())
    if llm_errors == 0:
        rd.mark_complete("score", stage_hash, outputs, scorers=list(cfg.scorers), latents=len(keys))
    if llm_errors or parse_failures:
        log.warning("%d windows without a prediction (%d provider errors, %d unparseable after retries): re-run the same "
                    "command to ask them again", llm_errors + parse_failures, llm_errors, parse_failures)
    return {**counts, "window_failures": {"parse": parse_failures, "llm": llm_errors}, "usage": usage,
            "summary": summ.to_dict("records"), "outputs": outputs, "complete": llm_errors == 0, "windows_per_prompt": wpp}


def _with_other_scorers(rd: RunDir, table, new: pd.DataFrame, scorers: Sequence[str]) -> pd.DataFrame:
    """`new` (this run's scorers' rows) plus the rows of every other scorer already in `table`: aggregating only what
    this run scored keeps a run of one LLM scorer from re-aggregating the explanation-free scorers' many rows."""
    if not rd.has(table):
        return new
    old = rd.read(table)
    old = old[~old["scorer"].isin(list(scorers))]
    if old.empty:
        return new
    if new.empty:
        return old.reset_index(drop=True)
    return pd.concat([old, new], ignore_index=True)


def _dry_run(llm_cfg: LLMConfig, todo: dict[str, list[Job]], cfg: ScoreConfig, counts: dict) -> dict[str, Any]:
    """Print and return what scoring would send and cost: per scorer and in all, input split into uncached
    tokens and the provider's prompt-cache reads and writes, each with its price (llm/prompt_cache.py)."""
    from ..llm import DryRunEstimate

    out: dict[str, Any] = {**counts, "dry_run": {}}
    lines = []
    logprobs = wants_logprobs(*llm_cfg.resolved())
    total: DryRunEstimate | None = None
    for name, jobs in todo.items():
        scorer = get_scorer(name)
        if not scorer.uses_llm:
            n = sum(len(j.tests.windows) for j in jobs)
            lines.append(f"{name}: {len(jobs)} jobs, {n} windows, no LLM calls")
            continue
        reqs = [p.request for j in jobs for p in scorer.prompts(j, cfg, logprobs)]
        est = llm_dry_run(llm_cfg, reqs)
        out["dry_run"][name] = est.to_dict()
        total = est if total is None else total + est
        controls = sum(j.control != CONTROL_NONE for j in jobs)
        lines.append(f"{name}: {len(jobs)} jobs ({controls} control), {est.calls} calls; {est.describe()}")
    if total is None:
        out["dry_run_total"] = {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0}
        lines.append("total: no LLM calls; nothing sent")
    else:
        out["dry_run_total"] = {"calls": total.to_send, "input_tokens": total.input_tokens, "output_tokens": total.output_tokens,
                                "cost_usd": total.cost_usd, "uncached_input_tokens": total.uncached_input_tokens,
                                "cache_read_tokens": total.cache_read_tokens, "cache_write_tokens": total.cache_write_tokens,
                                "cost_parts": total.cost_parts}
        lines.append(f"total: {total.describe()} (first answers only; retries not included); nothing sent")
    for line in lines:
        print(line)
    out["lines"] = lines
    return out
