"""What the score stage scores: the selected latents, their test sets, each scorer's jobs, and which jobs a
previous run already finished (the resume)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pandas as pd

from ..artifacts import RunDir
from ..catalog import CONTEXTS, EXPLANATIONS, NEGATIVES, SPLIT_EXPLAIN, SPLIT_TEST, STATUS_OK, WINDOWS
from ..errors import UserError
from ..latent_selection import pick
from ..prompting import render
from .config import ScoreConfig
from .controls import shuffled_sources
from .registry import CONTROL_NONE, CONTROL_SHUFFLED, LIVE, NO_EXPLAINER, Job
from .testset import LatentTests, TestRows, build_latent_tests

log = logging.getLogger(__name__)


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


def explained(ex: pd.DataFrame, lat: pd.DataFrame, cfg: ScoreConfig) -> pd.DataFrame:
    """The selected explained latents: coder, latent, explainer, explanation (`lat`: latents.parquet, whose live
    latents a --sample is drawn from)."""
    columns = ["coder", "latent", "explainer", "explanation"]
    ok = ex[ex["explanation"].notna() & ex["parse_ok"].fillna(False).astype(bool)]
    if cfg.coders:
        ok = ok[ok["coder"].isin(cfg.coders)]
    if cfg.explainers:
        ok = ok[ok["explainer"].isin(cfg.explainers)]
    pool = live_latents(lat, replace(cfg, sample=None, latents=None)) if cfg.sample is not None else None
    return pick(ok, ["coder", "explainer"], cfg.latents, cfg.sample, cfg.sample_seed, pool)[columns].reset_index(drop=True)


def live_latents(lat: pd.DataFrame, cfg: ScoreConfig) -> pd.DataFrame:
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
    kind = NEGATIVES[cfg.negatives]  # the non-activating windows this run scores with
    for (coder, latent), at in groups.items():
        key = (coder, int(latent))
        mine = rows.take(at)
        explain = mine.split == SPLIT_EXPLAIN
        explain_ids[key] = mine.window_id[explain].tolist()
        known[key] = set(mine.window_id[~np.isin(mine.kind, list(NEGATIVES.values()))].tolist())
        tests[key] = build_latent_tests(
            coder, int(latent), "", binary.get(coder, False), mine.take(np.flatnonzero(~explain)), explain_ids[key], tokens_of,
            n_activating=cfg.n_activating, n_negative=cfg.n_negative, seed=cfg.seed, marks=marks,
            window_tokens=cfg.window_tokens, negative_kind=kind,
        )
    if cfg.negatives != "random" and not (rows.kind == kind).any():
        raise UserError(f"--negatives {cfg.negatives}: {CONTEXTS} has no {kind} windows (mined by an interp-eval without "
                        "hard negatives, or without the sentence embedder for similar): run `interp-eval mine --force`")
    for key in keys - set(tests):
        tests[key] = LatentTests(key[0], key[1], "", binary.get(key[0], False), [])
    return TestData(tests, explain_ids, known, {w: render(t) for w, t in tokens_of.items()})


def make_jobs(scorer, selected: pd.DataFrame, live: pd.DataFrame, data: TestData, cfg: ScoreConfig) -> list[Job]:
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


def explanation_sha(explanation: str) -> str:
    return hashlib.sha256(str(explanation).encode()).hexdigest()[:12]


def done_keys(pred: pd.DataFrame, jobs: Sequence[Job], scorer, model: str, version: str, wpp: int | None, cfg: ScoreConfig) -> set:
    """Jobs whose rows match the current model, scorer version, seed, explanation and test windows, with no failed window."""
    p = pred[pred["scorer"] == scorer.label]
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
