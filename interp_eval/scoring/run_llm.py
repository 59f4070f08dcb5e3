"""The LLM scorers' runner: every prompt asked in prefix order, each job written once all its prompts are answered."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..artifacts import RunDir
from ..catalog import LLM_USAGE
from ..llm import LLMConfig, LLMResponse, make_client
from ..llm.ask import Question, ask_each
from ..llm.usage import CallTag, ledger_rows
from ..parts import PartWriter
from ..progress import progress_bar
from .classifier import wants_logprobs
from .config import ScoreConfig
from .order import prefix_order
from .registry import Job, LLMScorer, ScorePrompt, get_scorer, labelled
from .rows import ROW_DEFAULTS, base_row, predictions_table


def llm_rows(scorer: LLMScorer, p: ScorePrompt, history: list[LLMResponse], model: str, version: str, wpp: int | None,
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
    base = base_row(p.job, scorer.label, model, version, wpp, cfg)
    preds = []
    for w in scorer.window_rows(p, answer, probs):
        row = {**ROW_DEFAULTS, **base, **w, "parse_ok": answer is not None, "failure": failure, "attempts": len(history),
               "prompt_index": p.index}
        if failure is None and w.get("failure"):  # an answer the scorer cannot use (simulation: logprobs that do not line up)
            row.update(parse_ok=False, failure=w["failure"])
        preds.append(row)
    tag = CallTag(p.job.tests.coder, p.job.tests.latent, explainer=p.job.explainer, scorer=scorer.label, control=p.job.control)
    return preds, ledger_rows(tag, history)


@dataclass
class _OpenJob:
    """A job whose prompts are being answered: its rows so far, and how many prompts are still out."""

    scorer: LLMScorer
    job: Job
    left: int
    preds: list[dict] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)


def run_llm(rd: RunDir, llm_cfg: LLMConfig, todo: dict[str, list[Job]], model: str, versions: dict[str, str], wpp: int,
             cfg: ScoreConfig) -> dict[str, Any]:
    """Ask every LLM scorer's prompts, in prefix order (order.py); each job is written once all its prompts are answered."""
    llm = make_client(llm_cfg)
    logprobs = wants_logprobs(*llm_cfg.resolved())
    # one scorer, then one explanation, at a time: consecutive prompts share the longest prefix (order.py)
    chosen = {s: labelled(get_scorer(s), cfg.negatives) for s in todo}  # as its rows name it (detection@neighbours)
    jobs = prefix_order([(chosen[s], j) for s in todo if chosen[s].uses_llm for j in todo[s]])

    def write(finished: list[_OpenJob]) -> None:
        # the ledger first: a crash between the two writes re-scores these jobs (from the cache), never loses their cost record
        rd.append(LLM_USAGE, [call for o in finished for call in o.calls])
        predictions_table(rd).add([row for o in finished for row in o.preds])

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
                    preds, calls = llm_rows(open_job.scorer, p, answers, model, versions[open_job.scorer.label], wpp, cfg)
                    open_job.preds += preds
                    open_job.calls += calls
                    open_job.left -= 1
                    if open_job.left == 0:
                        out.add(open_job)
                        bar.advance(1)

                await ask_each(llm, questions(), cfg.max_retries, settled, desc="score", batch_state=rd.path("llm_batch_score.json"))

    asyncio.run(go())
    return llm.usage.summary()
