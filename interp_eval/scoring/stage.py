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

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..artifacts import RunDir, config_hash
from ..catalog import EXPLANATIONS, LATENT_SCORES, LATENTS, LLM_USAGE, PREDICTIONS, SCORE_BY_FREQUENCY, SCORE_BY_QUANTILE, SCORE_KEY, SCORE_SUMMARY, WINDOW_EMBEDDINGS
from ..errors import UserError
from ..llm import LLMConfig
from ..llm.usage import spend
from ..mining.outputs import mismatch_lines
from . import aggregate
from .config import HOSTED_WINDOWS_PER_PROMPT, LOCAL_WINDOW_TOKENS, LOCAL_WINDOWS_PER_PROMPT, ScoreConfig, scorers_help, with_backend_format
from .dry_run import dry_run as plan_dry_run
from .embedding import WindowEmbeddings
from .jobs import TestData, done_keys, explained, live_latents, load_tests, make_jobs, read_explanations
from .registry import EXPLAINED, LIVE, Job, get_scorer, labelled, scorer_names
from .rows import load_predictions, predictions_table, to_table
from .run_llm import run_llm
from .run_local import LocalContext, run_local
from ..llm.backends.openai_backend import prompt_logprobs_refusal

__all__ = ["HOSTED_WINDOWS_PER_PROMPT", "LOCAL_WINDOW_TOKENS", "LOCAL_WINDOWS_PER_PROMPT", "ScoreConfig", "TestData", "load_tests",
           "read_explanations", "run_score_stage", "scorers_help", "with_backend_format"]

log = logging.getLogger(__name__)

KEY = list(SCORE_KEY)


def __getattr__(name: str):  # SCORERS: the registered scorer names, read when asked (plugins may add more)
    if name == "SCORERS":
        return scorer_names()
    raise AttributeError(name)


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
    chosen = [labelled(get_scorer(s), cfg.negatives) for s in cfg.scorers]
    labels = [s.label for s in chosen]  # as the rows name them (detection@neighbours with hard negatives)
    uses_llm = any(s.uses_llm for s in chosen)
    llm_cfg = llm_cfg if llm_cfg is not None else LLMConfig(model=None)
    backend, model = llm_cfg.resolved() if uses_llm else ("none", "")
    if any(s.needs_prompt_logprobs for s in chosen):
        refusal = prompt_logprobs_refusal(backend, llm_cfg.base_url)
        if refusal:
            raise UserError(refusal)
    cfg = with_backend_format(cfg, backend)
    wpp = cfg.windows_per_prompt
    cut_tag = f"+cut{cfg.window_tokens}" if cfg.window_tokens else ""  # a cut window is another test: no reuse across cuts
    versions = {s.label: s.version() + (cut_tag if s.uses_llm else "") for s in chosen}
    wants_explanations = any(s.needs_explanation or s.latents == EXPLAINED for s in chosen)
    all_expl = read_explanations(rd) if wants_explanations else pd.DataFrame(columns=["coder", "latent", "explainer", "explanation"])
    selected = explained(all_expl, lat, cfg) if wants_explanations else all_expl
    if wants_explanations and selected.empty:
        raise UserError(f"nothing to score: {EXPLANATIONS} has no explained latent"
                        f"{' of --coder ' + ', '.join(cfg.coders) if cfg.coders else ''}"
                        f"{' among --latents' if cfg.latents is not None else ''} (run `interp-eval explain` first)")
    live = live_latents(lat, cfg) if any(s.latents == LIVE for s in chosen) else selected.iloc[0:0]
    keys = set(zip(selected["coder"], selected["latent"].astype(int))) | set(zip(live["coder"], live["latent"].astype(int)))
    data = load_tests(rd, keys, lat, cfg, marks=any(s.needs_marks for s in chosen))
    pred = load_predictions(rd)
    todo: dict[str, list[Job]] = {}
    counts: dict[str, Any] = {"selected": len(keys), "no_test_windows": sum(not t.windows for t in data.tests.values()),
                              "jobs": {}, "to_score": {}, "already_done": {}}
    for s in chosen:
        jobs = [j for j in make_jobs(s, selected, live, data, cfg) if j.tests.windows]
        if hasattr(s, "prepare"):  # scorers that pair a latent with others (the intruder)
            s.prepare(jobs, data.tests, data.known, cfg)
        if hasattr(s, "prepare_run"):  # scorers that run the subject model first (steering; stand-ins in a dry run)
            s.prepare_run(rd, jobs, cfg, dry_run=dry_run)
        done = done_keys(pred, jobs, s, s.model(model), versions[s.label], wpp if s.uses_llm else None, cfg)
        todo[s.label] = [j for j in jobs if j.key not in done]
        counts["jobs"][s.label] = len(jobs)
        counts["to_score"][s.label] = len(todo[s.label])
        counts["already_done"][s.label] = len(jobs) - len(todo[s.label])
    stage_hash = config_hash({"score": asdict(cfg), "backend": backend, "model": model, "versions": versions})

    if dry_run:
        return plan_dry_run(llm_cfg, todo, cfg, counts)

    log.info("scoring %s%s", ", ".join(f"{len(v)} jobs ({s})" for s, v in todo.items()), f" with {model}" if uses_llm else "")
    usage: dict[str, Any] = {}
    if any(todo[s.label] for s in chosen if s.uses_llm):
        usage = run_llm(rd, llm_cfg, {s.label: todo[s.label] for s in chosen if s.uses_llm}, model, versions, wpp, cfg)
    local = [s for s in chosen if not s.uses_llm and todo[s.label]]
    if local:
        context = LocalContext(WindowEmbeddings(rd.path(WINDOW_EMBEDDINGS), data.texts))
        for s in local:
            run_local(rd, s, todo[s.label], context, versions, cfg)

    # consolidate: predictions into their final file, then the aggregates
    pred = load_predictions(rd)
    predictions_table(rd).write(to_table(pred, PREDICTIONS.schema))

    # the aggregates of this run's scorers, beside the rows other scorers' runs wrote (their predictions are untouched)
    ours = pred[pred["scorer"].isin(labels)]
    scores = aggregate.latent_scores(ours, lat, all_expl if len(all_expl) else None)
    calls = rd.read(LLM_USAGE, where={"scorer": sorted(set(ours["scorer"]))}) if rd.has(LLM_USAGE) else LLM_USAGE.empty().to_pandas()
    if not calls.empty:
        per = spend(calls, KEY)[[*KEY, "calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "cost_usd"]]
        scores = scores.merge(per, on=KEY, how="left")
    summ = aggregate.summary(scores, ours, lat, all_expl if len(all_expl) else None, freq_adjust=cfg.freq_adjust, seed=cfg.seed,
                             chance={s.label: s.chance(cfg) for s in chosen})
    scores = _with_other_scorers(rd, LATENT_SCORES, scores, labels)
    rd.write(LATENT_SCORES, scores)
    rd.write(SCORE_SUMMARY, _with_other_scorers(rd, SCORE_SUMMARY, summ, labels))
    rd.write(SCORE_BY_QUANTILE, _with_other_scorers(rd, SCORE_BY_QUANTILE, aggregate.by_quantile(ours), labels))
    written = [PREDICTIONS, LATENT_SCORES, SCORE_SUMMARY, SCORE_BY_QUANTILE]
    if local:
        written.append(WINDOW_EMBEDDINGS)
    if cfg.freq_adjust:
        rd.write(SCORE_BY_FREQUENCY, aggregate.by_frequency(scores))
        written.append(SCORE_BY_FREQUENCY)
    outputs = [t.name for t in written]

    in_sel = np.array([k in keys for k in zip(pred["coder"], pred["latent"].astype(int))], dtype=bool)
    mine = pred[in_sel & pred["scorer"].isin(labels).to_numpy()]
    llm_errors = int(mine["failure"].fillna("").str.startswith("llm").sum())
    parse_failures = int(mine["failure"].fillna("").str.startswith("parse").sum())
    if llm_errors == 0:
        rd.mark_complete("score", stage_hash, outputs, scorers=labels, latents=len(keys))
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
