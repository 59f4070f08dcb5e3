"""The `explain` stage: one explanation per selected latent and explainer, saved chunk by chunk as it comes.

Four explainers (`ExplainConfig.explainer`):
- `llm`: an LLM reads the windows (marked tokens) and a one-line summary of the most frequent marked
  tokens. An answer without a parseable `[EXPLANATION]:` line, or one that repeats a few-shot answer
  (copies.py), is asked again with a corrective follow-up turn (so the response cache does not replay
  the bad answer) up to `max_retries` times, then recorded as a failure (llm/ask.py).
- `llm-outputs`: the same, plus one line with the tokens the latent's decoder row promotes and suppresses
  (latents.parquet, written by mine: subject/logit_lens.py); the prompt is otherwise the paper's.
- `output`: an LLM reads only those promoted and suppressed tokens (Gur-Arieh et al. 2025's output-centric
  description): what the latent makes the model write next, not where it fires.
- `token-table`: no LLM; the most frequent marked tokens with their counts (tokens.py).

All but `output` see only `split == "explain"` windows (never test windows); a selected latent with none gets a
failed row saying what to change (`no_windows` in the counts) and the stage goes on. A latent without output tokens
(a coder writing to the MLP's normalised input, or a run mined before they were recorded) gets such a row from the
two output explainers, saying why (`no_outputs`). A row's key is (coder, latent,
explainer): both explainers' explanations of a latent live side by side. A re-run skips latents
already explained by the same explainer, model and prompt version and retries failures: a provider
error is asked again, an answer that never parsed gets new corrective turns after its cached ones;
the response cache means no paid call is ever repeated. Rows written before the `explainer` column
existed count as `llm` rows. Latents are written as their answers settle, `chunk` at a time or every
few seconds (parts.PartWriter; part files under explain.parts/), merged into explanations.parquet when
the stage ends; a crashed run's parts count as done.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..config_fields import NOT_AN_OPTION, count_or_all, flags
from ..artifacts import RunDir, config_hash, read_table
from ..errors import UserError
from ..latent_selection import pick
from ..llm import LLMConfig, LLMRequest, LLMResponse, make_client
from ..llm.ask import Question, ask_each
from ..llm.client import dry_run as llm_dry_run
from ..catalog import (
    CONTEXTS, EXPLAIN_PARTS, EXPLAINERS, EXPLANATIONS, LATENTS, LLM_USAGE, RUN_JSON, SPLIT_EXPLAIN, STATUS_OK, WINDOWS,
)
from ..catalog import EXPLAINER_LLM as LLM, EXPLAINER_TOKEN_TABLE as TOKEN_TABLE
from ..catalog import EXPLAINER_LLM_OUTPUTS as LLM_OUTPUTS, EXPLAINER_OUTPUT as OUTPUT, LLM_EXPLAINERS
from ..mining.outputs import mismatch_lines
from ..llm.usage import CallTag, ledger_rows
from ..parts import PartedTable, PartWriter
from ..progress import progress_bar
from .diversity import diversity
from .prompt import (
    OutputTokens, Window, build_output_request, build_request, fewshot_explanations, judge_answer, prompt_version,
    retry_request,
)
from .tokens import TOKEN_TABLE_VERSION, token_table_explanation

log = logging.getLogger(__name__)

KEY = ["coder", "latent", "explainer"]


@dataclass
class ExplainConfig:
    explainer: str = LLM
    """llm (an LLM reads the windows), llm-outputs (the windows and the tokens the latent promotes and suppresses),
    output (an LLM reads only those tokens) or token-table (no LLM: the most frequent marked tokens with counts)."""
    latents: int | None = field(default=None, metadata=flags("--latents", parser=count_or_all))
    """Explain the first N live latents of each coder (the paper's choice), or 'all' (the default)."""
    sample: int | None = None
    """Or a seeded random sample of N live latents of each coder (latent_selection.py: `score --sample N` with the
    same seed scores the same latents)."""
    seed: int = 0
    """Seed of --sample."""
    coders: tuple[str, ...] | None = field(default=None, metadata=flags("--coder"))
    """Only these coders (repeatable)."""
    show_activations: bool = field(default=False, metadata=flags("--show-activations"))
    """Continuous coders: list 0-10 activations of marked tokens."""
    max_retries: int = 2
    """Re-asks after an unparseable answer or a copied few-shot answer."""
    chunk: int = field(default=64, metadata=NOT_AN_OPTION)
    """Finished latents per part file (or fewer, every parts.WRITE_SECONDS): the resume granularity."""

    def __post_init__(self):
        if self.explainer not in EXPLAINERS:
            raise UserError(f"--explainer {self.explainer}: use one of {', '.join(EXPLAINERS)}")
        if self.latents is not None and self.sample is not None:
            raise UserError("give --latents or --sample, not both")


def select_latents(latents: pd.DataFrame, cfg: ExplainConfig) -> pd.DataFrame:
    """Live latents (status ok) per coder: all of them, the first N by index, or a seeded sample of N."""
    live = latents[latents["status"] == STATUS_OK]
    if cfg.coders:
        missing = set(cfg.coders) - set(latents["coder"])
        if missing:
            raise UserError(f"--coder {', '.join(sorted(missing))}: not in {LATENTS} (coders: {', '.join(sorted(set(latents['coder'])))})")
        live = live[live["coder"].isin(cfg.coders)]
    return pick(live, ["coder"], cfg.latents, cfg.sample, cfg.seed)


def load_explain_windows(rd: RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    contexts = rd.read(CONTEXTS, where={"split": [SPLIT_EXPLAIN]})
    windows = rd.read(WINDOWS).set_index("window_id")
    return contexts, windows


def read_explanations(path: str | Path) -> pd.DataFrame:
    """explanations.parquet (rows from before the `explainer` column read as `llm`: the catalog's default)."""
    return read_table(EXPLANATIONS, Path(path))


def _windows_of(explain_rows: pd.DataFrame, windows: pd.DataFrame) -> list[Window]:
    rows = explain_rows.sort_values(["quantile", "rank"], na_position="first")
    return [Window(list(windows.at[w, "tokens"]), [float(a) for a in acts]) for w, acts in zip(rows["window_id"], rows["activations"])]


def _row(coder: str, latent: int, explainer: str, model: str, version: str, n_windows: int, explanation: str | None,
         failure: str | None, responses: Sequence[LLMResponse] = ()) -> dict:
    """One explanations row; the answers' tokens and dollars go to the LLM ledger (llm_usage.parquet)."""
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
        "raw_answer": responses[-1].text if responses else None,
    }


def _llm_failure(last: LLMResponse, copied: str | None, attempts: int) -> str:
    if not last.ok:
        return last.error or "the call failed"
    if copied is not None:
        return f"repeated the few-shot answer {copied!r} after {attempts} answers"
    return f"no parseable [EXPLANATION]: line after {attempts} answers"


def run_explain_stage(run: str | Path, cfg: ExplainConfig | None = None, llm_cfg: LLMConfig | None = None,
                      dry_run: bool = False) -> dict:
    """Explain the selected latents; returns counts (explained, failed, already_done, no_windows, too_rare, dead) and
    diversity. `no_windows`: selected latents with no explanation windows, written as failed rows that say what to
    change; they do not stop the stage nor count in `failed` (a re-run cannot help them).

    `llm_cfg` is only read by the `llm` explainer (None: the default, the offline local model).
    """
    cfg = cfg or ExplainConfig()
    llm_cfg = llm_cfg or LLMConfig()
    rd = RunDir(run)
    if not dry_run:
        rd.prepare()
    latents = rd.read(LATENTS)
    chosen = select_latents(latents, cfg)
    for line in mismatch_lines(latents[latents["coder"].isin(chosen["coder"])]):
        log.warning("explain: %s", line)
    explain_rows, windows = load_explain_windows(rd)
    if cfg.explainer in LLM_EXPLAINERS:
        backend, model = llm_cfg.resolved()
        version = prompt_version(outputs=cfg.explainer == LLM_OUTPUTS, alone=cfg.explainer == OUTPUT)
    else:
        backend, model, version = None, TOKEN_TABLE, TOKEN_TABLE_VERSION
    # explanations belong to one mining run: re-mined (e.g. retrained) coders are explained afresh
    mined = rd.stage_entry("mine")
    mine_config = mined.get("config_hash") if mined else None
    store = _explanations(rd)
    done: set[tuple[str, int]] = set()
    if rd.has(EXPLANATIONS) or store.has_parts():  # parts: what a crashed run finished
        prev = store.read()
        same = (prev["explainer"] == cfg.explainer) & (prev["explainer_model"] == model) & (prev["prompt_version"] == version)
        same &= prev["mine_config"].fillna("") == (mine_config or "")
        ok = prev[prev["parse_ok"] & same]
        done = set(zip(ok["coder"], ok["latent"].astype(int)))
    by_latent = {key: grp for key, grp in explain_rows.groupby(["coder", "latent"])}
    binary = dict(zip(latents["coder"], latents["binary"]))
    outputs = _output_tokens(chosen) if cfg.explainer in (LLM_OUTPUTS, OUTPUT) else {}
    todo: list[tuple[str, int, list[Window]]] = []
    no_windows: list[tuple[str, int]] = []  # nothing to explain from: failed rows, counted apart (see _no_windows_failure)
    no_outputs: list[tuple[str, int, str]] = []  # an output explainer's latents without output tokens, and why
    for coder, latent in zip(chosen["coder"], chosen["latent"].astype(int)):
        if (coder, latent) in done:
            continue
        if outputs and not isinstance(outputs[(coder, latent)], OutputTokens):
            no_outputs.append((coder, latent, str(outputs[(coder, latent)])))
            continue
        if cfg.explainer == OUTPUT:  # reads no window
            todo.append((coder, latent, []))
            continue
        group = by_latent.get((coder, latent))
        if group is None or group.empty:
            no_windows.append((coder, latent))
            continue
        todo.append((coder, latent, _windows_of(group, windows)))
    counts = {
        "explainer": cfg.explainer,
        "selected": len(chosen),
        "already_done": len(chosen) - len(todo) - len(no_windows) - len(no_outputs),
        "no_windows": len(no_windows),
        "no_outputs": len(no_outputs),
        "too_rare": int((latents["status"] == "too_rare").sum()),
        "dead": int((latents["status"] == "dead").sum()),
    }
    stage_hash = config_hash({"explain": asdict(cfg), "model": model, "backend": backend, "prompt": version})
    requests: list[LLMRequest] = []
    if cfg.explainer == OUTPUT:
        requests = [build_output_request(outputs[(c, lat)]) for c, lat, _ in todo]
    elif cfg.explainer in LLM_EXPLAINERS:
        requests = [build_request(w, show_activations=cfg.show_activations and not binary.get(c, False),
                                  outputs=outputs.get((c, lat))) for c, lat, w in todo]
    if dry_run:
        est = llm_dry_run(llm_cfg, requests).to_dict() if cfg.explainer in LLM_EXPLAINERS else None
        return {**counts, "dry_run": est}
    log.info("explaining %d latents with %s (%d already done)", len(todo), model, counts["already_done"])
    if no_windows:
        why = _no_windows_failure(rd)
        log.warning("%d selected latents have no explanation windows in %s (first: %s latent %d); recorded as failures, "
                    "the others are explained: %s", len(no_windows), CONTEXTS, *no_windows[0], why)
        _write(store, [_row(c, lat, cfg.explainer, model, version, 0, None, why) for c, lat in no_windows], mine_config)
    if no_outputs:
        log.warning("%d selected latents have no output tokens (first: %s latent %d: %s); recorded as failures, the "
                    "others are explained", len(no_outputs), *no_outputs[0])
        _write(store, [_row(c, lat, cfg.explainer, model, version, 0, None, f"no output tokens: {why}")
                       for c, lat, why in no_outputs], mine_config)
    if cfg.explainer == TOKEN_TABLE:
        rows = []
        for c, lat, w in todo:
            expl = token_table_explanation(w)
            rows.append(_row(c, lat, TOKEN_TABLE, TOKEN_TABLE, version, len(w), expl,
                             None if expl else "no marked tokens in its explanation windows"))
        failed, usage = _write(store, rows, mine_config), None
    else:
        failed, usage = _explain_llm(rd, store, llm_cfg, cfg, todo, requests, model, version, mine_config)
    if store.has_parts():
        store.write(store.read())
    if failed == 0:
        rd.mark_complete("explain", stage_hash, [EXPLANATIONS.name], explained=len(todo), explainer=cfg.explainer)
    else:
        log.warning("%d latents failed to get an explanation: re-run the same command to retry them", failed)
    div = diversity(rd.read(EXPLANATIONS), fewshot_explanations(cfg.explainer == OUTPUT))
    div = div[div["explainer"] == cfg.explainer]
    for r in div.itertuples():
        log.info("%s / %s: %d distinct explanations of %d explained latents (diversity %.2f), %d few-shot copies",
                 r.coder, r.explainer, r.distinct, r.explained, r.diversity, r.fewshot_copies)
    return {**counts, "explained": len(todo) - failed, "failed": failed, "usage": usage, "diversity": div}


def _output_tokens(chosen: pd.DataFrame) -> dict[tuple[str, int], OutputTokens | str]:
    """{(coder, latent): its output tokens (latents.parquet), or why it has none} of the chosen latents."""
    out: dict[tuple[str, int], OutputTokens | str] = {}
    for c, lat, up, down, note in zip(chosen["coder"], chosen["latent"].astype(int), chosen["promotes"],
                                      chosen["suppresses"], chosen["output_note"]):
        ok = up is not None and down is not None
        out[(c, int(lat))] = OutputTokens(list(up), list(down)) if ok else (note or "none recorded in latents.parquet")
    return out


def _no_windows_failure(rd: RunDir) -> str:
    """The failure of a selected latent without explanation windows, saying what to change: neither a re-run of
    explain nor one of mine with the same settings (skipped as already complete) gives it any."""
    try:
        n_explain = json.loads(rd.path(RUN_JSON).read_text())["stages"]["mine"]["sampling"]["n_explain"]
    except (OSError, ValueError, KeyError, TypeError):
        n_explain = None  # a hand-made run
    head = f"no explanation windows in {CONTEXTS}"
    if n_explain == 0:
        return f"{head}: mined with --n-explain 0; mine again with --n-explain 1 or more"
    if n_explain is not None:
        return (f"{head} although mined with --n-explain {n_explain}: an earlier interp-eval could lose them when "
                f"--n-explain is below --n-quantiles; mine again with `interp-eval mine --force` (or raise --n-explain)")
    return f"{head}: mine with --n-explain 1 or more (`interp-eval mine --force` to mine again with the same settings)"


def _explanations(rd: RunDir) -> PartedTable:
    """explanations.parquet, written in part files as latents finish (a newer row replaces the same (coder, latent, explainer))."""
    return PartedTable(rd, EXPLANATIONS, tuple(KEY), EXPLAIN_PARTS)


def _write(store: PartedTable, rows: list[dict], mine_config: str | None) -> int:
    """Add rows as one part; returns how many are failures."""
    store.add([{**r, "mine_config": mine_config} for r in rows])
    return sum(r["explanation"] is None for r in rows)


def _explain_llm(rd: RunDir, store: PartedTable, llm_cfg: LLMConfig, cfg: ExplainConfig, todo: list[tuple[str, int, list[Window]]],
                 requests: list[LLMRequest], model: str, version: str, mine_config: str | None) -> tuple[int, dict]:
    """Ask the LLM; each latent is written once its answers settle (see the module). Returns (failures, usage summary)."""
    failed = 0
    alone = cfg.explainer == OUTPUT
    fewshot = fewshot_explanations(alone)
    llm = make_client(llm_cfg)

    def write(finished: list[tuple[dict, list[dict]]]) -> None:
        nonlocal failed
        # the ledger first: a crash between the two writes re-asks these latents (from the cache), never loses their cost
        rd.append(LLM_USAGE, [call for _, calls in finished for call in calls])
        failed += _write(store, [row for row, _ in finished], mine_config)

    questions = [
        Question(request, lambda text: judge_answer(text, fewshot).explanation,
                 lambda req, text: retry_request(req, text or "", judge_answer(text, fewshot).copied, alone), about=(c, lat, len(w)))
        for (c, lat, w), request in zip(todo, requests)
    ]

    async def go() -> None:
        async with llm, PartWriter(write, every=cfg.chunk) as out:
            with progress_bar(f"explain ({llm.model})", total=len(todo), enabled=llm_cfg.progress) as bar:

                def settled(q: Question, answers: list[LLMResponse]) -> None:
                    (c, lat, n_windows), last = q.about, answers[-1]
                    verdict = judge_answer(last.text, fewshot)
                    explanation = verdict.explanation if last.ok else None
                    failure = None if explanation else _llm_failure(last, verdict.copied, len(answers))
                    out.add((_row(c, lat, cfg.explainer, model, version, n_windows, explanation, failure, answers),
                             ledger_rows(CallTag(c, lat, explainer=cfg.explainer), answers)))
                    bar.advance(1)

                await ask_each(llm, questions, cfg.max_retries, settled, desc="explain", batch_state=rd.path("llm_batch_explain.json"))

    asyncio.run(go())
    return failed, llm.usage.summary()
