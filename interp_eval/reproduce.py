"""`reproduce`: train -> mine -> explain -> score -> report for every coder variant of a preset.

Each stage skips the work its manifest (or its per-latent resume) says is done with the same
config; a changed config re-runs that stage, and the later stages see the change through their own
config hashes (mining fingerprints the coder weights; explanations are keyed by the mining run).
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from .artifacts import RunDir, versions, write_json
from .coders.train import TrainConfig
from .config import Preset
from .llm import LLMConfig

log = logging.getLogger(__name__)


def train_configs(p: Preset) -> list[TrainConfig]:
    many_seeds = len(p.seeds) > 1
    return [
        replace(p.coder, coder=c, hookpoint=hp, k=k, seed=seed, name=f"{c}-{hp}-k{k}" + (f"-s{seed}" if many_seeds else ""))
        for hp in p.hookpoints for c in p.coders for k in p.ks for seed in p.seeds
    ]


def control_configs(p: Preset) -> list[TrainConfig]:
    """The random-model control coders: `p.control_coders` at every hookpoint, k and seed (the train
    stage appends `-randmodel` to their names)."""
    return train_configs(replace(p, coders=p.control_coders))


def _scoring_requests(p: Preset, window, backend: str) -> list:
    """One latent's LLM scoring prompts at the preset's sizes, with stand-in windows: detection/fuzzing twice (the
    latent's own explanation and the shuffled control), the intruder's trials once."""
    import math

    import numpy as np

    from .scoring.classifier import LLM_SCORERS, build_request
    from .scoring.stage import with_backend_format
    from .scoring.testset import ScoreWindow

    sw = ScoreWindow(window_id=0, label=1, quantile=None, tokens=list(window.tokens),
                     activations=np.asarray(window.activations), fuzz_mask=[a > 0 for a in window.activations])
    cfg = with_backend_format(p.score, backend)
    wpp = cfg.windows_per_prompt
    n_prompts = math.ceil((cfg.n_activating + cfg.n_negative) / wpp)
    explanation = "a stand-in explanation of about ten words for the estimate"
    out = []
    for scorer in cfg.scorers:
        if scorer in LLM_SCORERS:
            out += [build_request(scorer, explanation, [sw] * wpp)] * n_prompts * 2  # own + shuffled control
        elif scorer == "intruder":  # no explanation; its control is chance, not a second run
            from .scoring import intruder

            out += [intruder.build_request([sw] * cfg.intruder_windows)] * cfg.intruder_trials
    return out


def plan(p: Preset, llm_cfg: LLMConfig) -> dict:
    """What a run of preset `p` would do and cost, computed without running or sending anything."""
    from .explain.prompt import Window, build_request
    from .llm.client import chars_tokens, price_rates
    from .llm.pricing import PriceTable
    from .llm.prompt_cache import estimate_usage
    from .llm.types import Usage

    n_controls = len(control_configs(p))
    n_coders = len(train_configs(p)) + n_controls
    latents = n_coders * p.explain.latents
    backend, model = llm_cfg.resolved()

    def one_latent(word: str) -> list:  # stand-in windows of 32 ordinary tokens (~4 characters each), one marked
        window = Window([word] * 32, [1.0] + [0.0] * 31)
        return [build_request([window] * p.mine.n_explain)] + _scoring_requests(p, window, backend)

    # the provider's prompt cache: the first latent writes the fixed prefixes, the others read them
    prices = PriceTable.load(llm_cfg.prices_path)
    first, later = one_latent(" word"), one_latent(" text")
    used = estimate_usage(backend, model, first + later, chars_tokens, prices)
    steady = sum(used[len(first):], Usage())
    usage = sum(used[: len(first)], Usage()) + Usage(
        steady.input_tokens * (latents - 1), 0, steady.cache_read_tokens * (latents - 1), steady.cache_write_tokens * (latents - 1))
    if latents == 0:
        usage = Usage()
    usage.output_tokens = latents * sum(r.expected_output_tokens or r.max_tokens for r in first)
    batch = llm_cfg.batch and backend != "local"
    bill = prices.bill(backend, model, usage, batch=batch)
    per_latent = first
    input_tokens = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    output_tokens = usage.output_tokens
    cost = None if bill is None else bill.total
    return {
        "preset": p.name,
        "coders": n_coders,
        "control_coders": n_controls,
        "control_kinds": list(p.control_coders),
        "hookpoints": list(p.hookpoints),
        "ks": list(p.ks),
        "seeds": list(p.seeds),
        "train_tokens_per_coder": p.coder.tokens,
        "mine_tokens": p.mine.tokens,
        "latents_explained": latents,
        "llm_model": model,
        "llm_backend": backend,
        "llm_calls": latents * len(per_latent),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cost_usd": cost,
        "uncached_input_tokens": usage.input_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cost_parts": None if bill is None else bill.parts(),
        "prices": price_rates(prices, backend, model, batch),
        "batch": batch,
        "assumptions": list(p.assumptions),
        "note": "LLM figures assume every selected latent is live and nothing is in the response cache yet, and include "
                "the shuffled control (every scored latent scored twice); prompt-cache reads and writes follow the "
                "provider's rules for the model (llm/prompt_cache.py)",
    }


def run_reproduce(p: Preset, run: str | Path, llm_cfg: LLMConfig, device: str = "auto", results: str | Path | None = None) -> dict:
    from .coders.stage import RANDOM_MODEL_CONTROL, run_train_stage
    from .explain.stage import ExplainConfig, run_explain_stage
    from .mining.stage import run_mine_stage
    from .report.stage import run_report_stage
    from .scoring.stage import run_score_stage

    rd = RunDir(run)
    rd.init({"reproduce": asdict(p)})
    timings: dict[str, float] = {}

    def timed(name, fn, *a, **kw):
        t = time.perf_counter()
        log.info("== %s ==", name)
        out = fn(*a, **kw)
        timings[name] = round(time.perf_counter() - t, 1)
        return out

    train = replace(p.train, device=device)
    timed("train", run_train_stage, run, replace(train, coders=tuple(train_configs(p))))
    if p.control_coders:
        timed("train_control", run_train_stage, run,
              replace(train, coders=tuple(control_configs(p)), control=RANDOM_MODEL_CONTROL))
    timed("mine", run_mine_stage, run, replace(p.mine, device=device))
    timed("explain", run_explain_stage, run, p.explain, llm_cfg)
    if p.free_score.scorers:  # the token look-up table covers every live latent, for free
        from .scoring.registry import LIVE, get_scorer

        timed("explain_token_table", run_explain_stage, run, ExplainConfig(explainer="token-table"))
        on_live = tuple(s for s in p.free_score.scorers if get_scorer(s).latents == LIVE)
        on_explained = tuple(s for s in p.free_score.scorers if s not in on_live)
        if on_live:
            timed("score_live", run_score_stage, run, replace(p.free_score, scorers=on_live, latents=None))
        if on_explained:
            timed("score_free", run_score_stage, run, replace(p.free_score, scorers=on_explained))
    if p.score.scorers:
        timed("score", run_score_stage, run, p.score, llm_cfg)
    written = timed("report", run_report_stage, run)
    info = {
        "preset": asdict(p),
        "command": " ".join(["interp-eval", *sys.argv[1:]]) if sys.argv else "",
        "seconds": timings,
        "total_seconds": round(sum(timings.values()), 1),
        "versions": versions(),
        "llm": {"model": llm_cfg.model, "base_url": llm_cfg.base_url, "batch": llm_cfg.batch},
    }
    write_json(rd.path("results") / "reproduce.json", info)
    if results is not None:
        _publish(rd.path("results"), Path(results))
    return {"written": written, **info}


def _publish(src: Path, dst: Path) -> None:
    """Copy the run's results folder (tables, plots, report, reproduce.json) to a committed location."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst, dirs_exist_ok=True)
    log.info("results copied to %s", dst)


def format_plan(info: dict) -> str:
    cost = "unknown (no price for this model)" if info["cost_usd"] is None else f"${info['cost_usd']:,.2f}"
    parts, rates = info.get("cost_parts"), info.get("prices")
    if parts and rates and info["cost_usd"]:
        names = {"input": "uncached input", "cache_read": "cache reads", "cache_write": "cache writes", "output": "output"}
        cost += " (" + ", ".join(f"{names[k]} ${parts[k]:,.2f} at ${rates[k]:g}/M" for k in names) + ")"
    lines = [
        f"preset {info['preset']}: {info['coders']} coders (SAE, BAE, TC, BTC x hookpoints {', '.join(info['hookpoints'])} "
        f"x k {info['ks']} x seeds {info['seeds']}"
        + (f"; {info['control_coders']} of them random-model controls: {', '.join(info['control_kinds']).upper()} "
           "on a randomly initialised copy of the subject model" if info["control_coders"] else "") + ")",
        f"  train: {info['train_tokens_per_coder']:,} tokens per coder",
        f"  mine: {info['mine_tokens']:,} held-out tokens, every coder in one pass",
        f"  explain + score: {info['latents_explained']:,} latents, {info['llm_calls']:,} LLM calls on "
        f"{info['llm_model']} ({info['llm_backend']})",
        f"  tokens: ~{info['input_tokens']:,} input (~{info['uncached_input_tokens']:,} uncached, "
        f"~{info['cache_read_tokens']:,} prompt-cache reads, ~{info['cache_write_tokens']:,} prompt-cache writes), "
        f"~{info['output_tokens']:,} output; estimated cost {cost}" + (" (batch API: half price)" if info["batch"] else ""),
        f"  note: {info['note']}",
    ]
    lines += [f"  assumption: {a}" for a in info["assumptions"]]
    return "\n".join(lines)


__all__ = ["format_plan", "plan", "run_reproduce", "train_configs"]
