"""The score stage's dry run: what it would send and cost, per scorer and in all, without sending anything."""

from __future__ import annotations

from typing import Any

from ..llm import LLMConfig
from ..llm.client import dry_run as llm_dry_run
from .classifier import wants_logprobs
from .config import ScoreConfig
from .registry import CONTROL_NONE, Job, get_scorer


def dry_run(llm_cfg: LLMConfig, todo: dict[str, list[Job]], cfg: ScoreConfig, counts: dict) -> dict[str, Any]:
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
