"""The `explain` stage: one explanation per selected latent and explainer, appended to explanations.parquet as it comes.

Two explainers (`ExplainConfig.explainer`):
- `llm`: an LLM reads the windows (marked tokens) and a one-line summary of the most frequent marked
  tokens. An answer without a parseable `[EXPLANATION]:` line, or one that repeats a few-shot answer
  (copies.py), is asked again with a corrective follow-up turn (so the response cache does not replay
  the bad answer) up to `max_retries` times, then recorded as a failure.
- `token-table`: no LLM; the most frequent marked tokens with their counts (tokens.py).

Both see only `split == "explain"` windows (never test windows). A row's key is (coder, latent,
explainer): both explainers' explanations of a latent live side by side. A re-run skips latents
already explained by the same explainer, model and prompt version and retries failures; the
response cache means no paid call is ever repeated. Rows written before the `explainer` column
existed count as `llm` rows.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..artifacts import RunDir, append_parquet, config_hash, read_parquet, write_parquet
from ..errors import UserError
from ..llm import LLMConfig, LLMRequest, LLMResponse, make_client
from ..llm.client import dry_run as llm_dry_run
from ..llm.usage import LLM_USAGE
from ..mining.schema import CONTEXTS, LATENTS, SPLIT_EXPLAIN, STATUS_OK, WINDOWS
from .diversity import diversity
from .prompt import Window, build_request, fewshot_explanations, judge_answer, prompt_version, retry_request
from .tokens import TOKEN_TABLE_VERSION, token_table_explanation

log = logging.getLogger(__name__)

EXPLANATIONS = "explanations.parquet"
LLM, TOKEN_TABLE = "llm", "token-table"
EXPLAINERS = (LLM, TOKEN_TABLE)
KEY = ["coder", "latent", "explainer"]


@dataclass
class ExplainConfig:
    explainer: str = LLM  # llm | token-table
    latents: int | None = None  # the first N live latents of each coder (the paper's choice); None: all
    sample: int | None = None  # or a seeded random sample of N live latents; both None: every live latent
    seed: int = 0
    coders: tuple[str, ...] | None = None
    show_activations: bool = False  # continuous coders: add 0-10 activations of marked tokens
    max_retries: int = 2
    chunk: int = 64  # latents per write: the resume granularity


def select_latents(latents: pd.DataFrame, cfg: ExplainConfig) -> pd.DataFrame:
    """Live latents (status ok) per coder: all of them, the first N by index, or a seeded sample of N."""
    live = latents[latents["status"] == STATUS_OK]
    if cfg.coders:
        missing = set(cfg.coders) - set(latents["coder"])
        if missing:
            raise UserError(f"--coder {', '.join(sorted(missing))}: not in {LATENTS} (coders: {', '.join(sorted(set(latents['coder'])))})")
        live = live[live["coder"].isin(cfg.coders)]
    picked = []
    for coder, group in live.groupby("coder", sort=True):
        group = group.sort_values("latent")
        if cfg.sample is not None:
            rng = np.random.default_rng([cfg.seed, *coder.encode()])
            idx = np.sort(rng.choice(len(group), size=min(cfg.sample, len(group)), replace=False))
            group = group.iloc[idx]
        elif cfg.latents is not None:
            group = group.head(cfg.latents)
        picked.append(group)
    return pd.concat(picked, ignore_index=True) if picked else live.iloc[0:0]


def load_explain_windows(rd: RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    contexts = read_parquet(rd.path(CONTEXTS), CONTEXTS)
    windows = read_parquet(rd.path(WINDOWS), WINDOWS).set_index("window_id")
    return contexts[contexts["split"] == SPLIT_EXPLAIN], windows


def read_explanations(path: str | Path) -> pd.DataFrame:
    """explanations.parquet with an `explainer` on every row (rows from before the column: `llm`)."""
    df = read_parquet(Path(path), EXPLANATIONS)
    df["explainer"] = df["explainer"].fillna(LLM) if "explainer" in df else LLM
    return df


def _windows_of(explain_rows: pd.DataFrame, windows: pd.DataFrame) -> list[Window]:
    rows = explain_rows.sort_values(["quantile", "rank"], na_position="first")
    return [Window(list(windows.at[w, "tokens"]), [float(a) for a in acts]) for w, acts in zip(rows["window_id"], rows["activations"])]


def _row(coder: str, latent: int, explainer: str, model: str, version: str, n_windows: int, explanation: str | None,
         failure: str | None, responses: Sequence[LLMResponse] = ()) -> dict:
    usage = [r.usage for r in responses]
    costs = [r.cost_usd for r in responses]
    return {
        "coder": coder,
        "latent": int(latent),
        "explainer": explainer,
        "explanation": explanation,
        "explainer_model": model,
        "prompt_version": version,
        "n_windows": n_windows,
        "parse_ok": explanation is not None,
        "failure": failure,
        "attempts": len(responses),
        "input_tokens": sum(u.input_tokens for u in usage),
        "output_tokens": sum(u.output_tokens for u in usage),
        "cache_read_tokens": sum(u.cache_read_tokens for u in usage),
        "cache_write_tokens": sum(u.cache_write_tokens for u in usage),
        "cost_usd": None if any(c is None for c in costs) else float(sum(costs)),
        "cached": bool(responses) and all(r.cached for r in responses),
        "raw_answer": responses[-1].text if responses else None,
    }


def _llm_failure(last: LLMResponse, copied: str | None, attempts: int) -> str:
    if not last.ok:
        return last.error or "the call failed"
    if copied is not None:
        return f"repeated the few-shot answer {copied!r} after {attempts} answers"
    return f"no parseable [EXPLANATION]: line after {attempts} answers"


async def _explain_chunk(llm, requests: list[LLMRequest], max_retries: int, batch_state: Path,
                         fewshot: Sequence[str]) -> list[tuple[list[LLMResponse], str | None, str | None]]:
    """(answers, accepted explanation, failure) per request, after up to max_retries corrective turns."""
    responses = await llm.complete_many(requests, desc="explain", batch_state_path=batch_state)
    history = [[r] for r in responses]
    verdicts = [judge_answer(r.text, fewshot) for r in responses]
    current = list(requests)
    for _ in range(max_retries):
        redo = [i for i, h in enumerate(history) if h[-1].ok and verdicts[i].explanation is None]
        if not redo:
            break
        retries = [retry_request(current[i], history[i][-1].text or "", verdicts[i].copied) for i in redo]
        answers = await llm.complete_many(retries, desc="explain (retry)", progress=False)
        for i, req, ans in zip(redo, retries, answers):
            current[i] = req
            history[i].append(ans)
            verdicts[i] = judge_answer(ans.text, fewshot)
    out = []
    for h, v in zip(history, verdicts):
        explanation = v.explanation if h[-1].ok else None
        out.append((h, explanation, None if explanation else _llm_failure(h[-1], v.copied, len(h))))
    return out


def _upgrade(path: Path) -> None:
    """Give an explanations.parquet from before the `explainer` column that column (its rows are `llm`)."""
    if path.exists():
        df = read_parquet(path, EXPLANATIONS)
        if "explainer" not in df or df["explainer"].isna().any():
            write_parquet(path, read_explanations(path))


def run_explain_stage(run: str | Path, llm_cfg: LLMConfig | None = None, cfg: ExplainConfig | None = None,
                      dry_run: bool = False) -> dict:
    """Explain the selected latents; returns counts (explained, failed, already_done, too_rare, dead) and diversity.

    `llm_cfg` is only read by the `llm` explainer (None: the default, the offline local model).
    """
    cfg = cfg or ExplainConfig()
    if cfg.explainer not in EXPLAINERS:
        raise UserError(f"--explainer {cfg.explainer}: use one of {', '.join(EXPLAINERS)}")
    llm_cfg = llm_cfg or LLMConfig()
    rd = RunDir(run)
    latents = read_parquet(rd.path(LATENTS), LATENTS)
    chosen = select_latents(latents, cfg)
    explain_rows, windows = load_explain_windows(rd)
    if cfg.explainer == LLM:
        backend, model = llm_cfg.resolved()
        version = prompt_version()
    else:
        backend, model, version = None, TOKEN_TABLE, TOKEN_TABLE_VERSION
    # explanations belong to one mining run: re-mined (e.g. retrained) coders are explained afresh
    mined = rd.stage_entry("mine")
    mine_config = mined.get("config_hash") if mined else None
    out_path = rd.path(EXPLANATIONS)
    done: set[tuple[str, int]] = set()
    if out_path.exists():
        prev = read_explanations(out_path)
        same = (prev["explainer"] == cfg.explainer) & (prev["explainer_model"] == model) & (prev["prompt_version"] == version)
        if "mine_config" in prev:
            same &= prev["mine_config"].fillna("") == (mine_config or "")
        ok = prev[prev["parse_ok"] & same]
        done = set(zip(ok["coder"], ok["latent"].astype(int)))
    by_latent = {key: grp for key, grp in explain_rows.groupby(["coder", "latent"])}
    binary = dict(zip(latents["coder"], latents["binary"]))
    todo: list[tuple[str, int, list[Window]]] = []
    for coder, latent in zip(chosen["coder"], chosen["latent"].astype(int)):
        if (coder, latent) in done:
            continue
        group = by_latent.get((coder, latent))
        if group is None or group.empty:
            raise UserError(f"{CONTEXTS} has no explanation windows for {coder} latent {latent}: re-run `interp-eval mine`")
        todo.append((coder, latent, _windows_of(group, windows)))
    counts = {
        "explainer": cfg.explainer,
        "selected": len(chosen),
        "already_done": len(chosen) - len(todo),
        "too_rare": int((latents["status"] == "too_rare").sum()),
        "dead": int((latents["status"] == "dead").sum()),
    }
    stage_hash = config_hash({"explain": asdict(cfg), "model": model, "backend": backend, "prompt": version})
    requests: list[LLMRequest] = []
    if cfg.explainer == LLM:
        requests = [build_request(w, show_activations=cfg.show_activations and not binary.get(c, False)) for c, _, w in todo]
    if dry_run:
        est = llm_dry_run(llm_cfg, requests).to_dict() if cfg.explainer == LLM else None
        return {**counts, "dry_run": est}
    _upgrade(out_path)
    log.info("explaining %d latents with %s (%d already done)", len(todo), model, counts["already_done"])
    if cfg.explainer == TOKEN_TABLE:
        rows = []
        for c, lat, w in todo:
            expl = token_table_explanation(w)
            rows.append(_row(c, lat, TOKEN_TABLE, TOKEN_TABLE, version, len(w), expl,
                             None if expl else "no marked tokens in its explanation windows"))
        failed, usage = _write(out_path, rows, mine_config), None
    else:
        failed, usage = _explain_llm(rd, llm_cfg, cfg, todo, requests, model, version, mine_config)
    if failed == 0:
        rd.mark_complete("explain", stage_hash, [EXPLANATIONS], explained=len(todo), explainer=cfg.explainer)
    else:
        log.warning("%d latents failed to get an explanation: re-run the same command to retry them", failed)
    div = diversity(read_explanations(out_path), fewshot_explanations())
    div = div[div["explainer"] == cfg.explainer]
    for r in div.itertuples():
        log.info("%s / %s: %d distinct explanations of %d explained latents (diversity %.2f), %d few-shot copies",
                 r.coder, r.explainer, r.distinct, r.explained, r.diversity, r.fewshot_copies)
    return {**counts, "explained": len(todo) - failed, "failed": failed, "usage": usage, "diversity": div}


def _write(out_path: Path, rows: list[dict], mine_config: str | None) -> int:
    """Append rows (replacing the same (coder, latent, explainer)); returns how many are failures."""
    append_parquet(out_path, [{**r, "mine_config": mine_config} for r in rows], replace=KEY)
    return sum(r["explanation"] is None for r in rows)


def _explain_llm(rd: RunDir, llm_cfg: LLMConfig, cfg: ExplainConfig, todo: list[tuple[str, int, list[Window]]],
                 requests: list[LLMRequest], model: str, version: str, mine_config: str | None) -> tuple[int, dict]:
    """Ask the LLM, chunk by chunk (the resume granularity); returns (failures, usage summary)."""
    failed = 0
    fewshot = fewshot_explanations()
    llm = make_client(llm_cfg)

    async def go() -> None:
        nonlocal failed
        # a provider batch is submitted whole; otherwise chunks bound what a crash can lose
        chunk = max(1, len(todo)) if llm_cfg.batch else cfg.chunk
        async with llm:
            for start in range(0, len(todo), chunk):
                part, reqs = todo[start : start + chunk], requests[start : start + chunk]
                results = await _explain_chunk(llm, reqs, cfg.max_retries, rd.path("llm_batch_explain.json"), fewshot)
                rows = [_row(c, lat, LLM, model, version, len(w), expl, failure, hist)
                        for (c, lat, w), (hist, expl, failure) in zip(part, results)]
                failed += _write(rd.path(EXPLANATIONS), rows, mine_config)

    asyncio.run(go())
    append_parquet(rd.path(LLM_USAGE), llm.usage.rows())
    return failed, llm.usage.summary()
