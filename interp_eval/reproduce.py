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


def _name(p: Preset, kind: str, hp: str, k: int, seed: int, suffix: str = "") -> str:
    return f"{kind}-{hp}-k{k}" + (f"-{suffix}" if suffix else "") + (f"-s{seed}" if len(p.seeds) > 1 else "")


def _grid(p: Preset, seeds: tuple[int, ...] | None = None) -> list[tuple[TrainConfig, str]]:
    """(config, variant suffix or ""): the grid (kinds x hookpoints x ks x seeds) and each variant at the same points."""
    seeds = p.seeds if seeds is None else seeds
    out = []
    for hp in p.hookpoints:
        for c in p.coders:
            out += [(replace(p.coder, coder=c, hookpoint=hp, k=k, seed=seed, name=_name(p, c, hp, k, seed)), "")
                    for k in p.ks for seed in seeds]
        for v in p.variants:
            out += [(replace(p.coder, coder=v.kind, hookpoint=hp, k=k, seed=seed, name=_name(p, v.kind, hp, k, seed, v.suffix),
                             **dict(v.settings)), v.suffix) for k in p.ks for seed in seeds]
    return out


def train_configs(p: Preset, seeds: tuple[int, ...] | None = None) -> list[TrainConfig]:
    """Every coder the preset trains on the subject model, in training order."""
    return [c for c, _ in _grid(p, seeds)]


def control_configs(p: Preset) -> list[TrainConfig]:
    """The random-model control coders: `p.control_coders` at every hookpoint, k and control seed (the train
    stage appends `-randmodel` to their names)."""
    return train_configs(replace(p, coders=p.control_coders, variants=()), seeds=p.control_seeds)


def llm_coders(p: Preset) -> tuple[str, ...] | None:
    """The coders the LLM explains and scores: the grid's `p.llm_kinds` and `p.llm_variants` at `p.llm_hookpoints` and
    `p.llm_seeds`, and (`p.llm_controls`) their random-model controls; None where that is every coder of the run."""
    from .coders.stage import control_name

    def chosen(c: TrainConfig) -> bool:
        return ((p.llm_hookpoints is None or c.hookpoint in p.llm_hookpoints) and (p.llm_seeds is None or c.seed in p.llm_seeds)
                and (p.llm_kinds is None or c.coder in p.llm_kinds))

    trained = [c.coder_name for c, v in _grid(p) if chosen(c) and (not v or v in p.llm_variants)]
    controls = [control_name(c.coder_name) for c in control_configs(p) if chosen(c)] if p.llm_controls else []
    if len(trained) + len(controls) == len(train_configs(p)) + len(control_configs(p)):
        return None
    return tuple(trained + controls)


def llm_stage_configs(p: Preset) -> tuple:
    """(explain, score) configs as reproduce runs them: restricted to `llm_coders(p)` where the preset says so."""
    coders = llm_coders(p)
    if coders is None:
        return p.explain, p.score
    return replace(p.explain, coders=coders), replace(p.score, coders=coders)


def _scoring_requests(p: Preset, window, backend: str, control: bool) -> list:
    """One latent's LLM scoring prompts at the preset's sizes, with stand-in windows: detection/fuzzing with the
    latent's own explanation (and again with the shuffled control's when `control`), the intruder's trials."""
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
            out += [build_request(scorer, explanation, [sw] * wpp)] * n_prompts * (2 if control else 1)
        elif scorer == "intruder":  # no explanation; its control is chance, not a second run
            from .scoring import intruder

            out += [intruder.build_request([sw] * cfg.intruder_windows)] * cfg.intruder_trials
    return out


def llm_latents(p: Preset) -> tuple[int, int, int]:
    """(coders, latents, control latents) the LLM explains and scores, assuming every coder has enough live latents."""
    coders = llm_coders(p)
    n_coders = len(coders) if coders is not None else len(train_configs(p)) + len(control_configs(p))
    per_coder = p.explain.sample if p.explain.sample is not None else (p.explain.latents or 0)
    cap = p.score.sample if p.score.sample is not None else p.score.latents if isinstance(p.score.latents, int) else None
    per_coder_scored = min(per_coder, cap) if per_coder and cap is not None else per_coder
    control = per_coder_scored if p.score.control_latents is None else min(p.score.control_latents, per_coder_scored)
    return n_coders, n_coders * per_coder, n_coders * control


def plan(p: Preset, llm_cfg: LLMConfig, timing: dict | None = None) -> dict:
    """What a run of preset `p` would do and cost, computed without running or sending anything; with `timing`
    (throughput.measure's figures for this machine) also the estimated time of each stage."""
    from .explain.prompt import Window, build_request
    from .llm.client import chars_tokens, price_rates
    from .llm.pricing import PriceTable
    from .llm.prompt_cache import estimate_usage
    from .llm.types import Usage

    n_controls = len(control_configs(p))
    n_coders = len(train_configs(p)) + n_controls
    n_llm_coders, latents, control_latents = llm_latents(p)
    backend, model = llm_cfg.resolved()

    def one_latent(word: str, control: bool) -> list:  # stand-in windows of 32 ordinary tokens (~4 characters each), one marked
        window = Window([word] * 32, [1.0] + [0.0] * 31)
        return [build_request([window] * p.mine.n_explain)] + _scoring_requests(p, window, backend, control)

    # the provider's prompt cache: the first latent writes the fixed prefixes, the others read them
    prices = PriceTable.load(llm_cfg.prices_path)
    first, later, plain = one_latent(" word", True), one_latent(" text", True), one_latent(" text", False)
    used = estimate_usage(backend, model, first + later + plain, chars_tokens, prices)
    steady = sum(used[len(first):len(first) + len(later)], Usage())
    steady_plain = sum(used[len(first) + len(later):], Usage())
    scale = lambda u, n: Usage(u.input_tokens * n, 0, u.cache_read_tokens * n, u.cache_write_tokens * n)  # noqa: E731
    usage = sum(used[: len(first)], Usage()) + scale(steady, max(control_latents - 1, 0)) + scale(steady_plain, latents - control_latents)
    if latents == 0:
        usage = Usage()
    usage.output_tokens = control_latents * sum(r.expected_output_tokens or r.max_tokens for r in first) + (
        latents - control_latents) * sum(r.expected_output_tokens or r.max_tokens for r in plain)
    batch = llm_cfg.batch and backend != "local"
    bill = prices.bill(backend, model, usage, batch=batch)
    calls = control_latents * len(first) + (latents - control_latents) * len(plain)
    input_tokens = usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens
    cost = None if bill is None else bill.total
    info = {
        "preset": p.name,
        "coders": n_coders,
        "control_coders": n_controls,
        "control_kinds": list(p.control_coders),
        "variants": [f"{v.kind.upper()} {v.suffix}" for v in p.variants],
        "hookpoints": list(p.hookpoints),
        "ks": list(p.ks),
        "seeds": list(p.seeds),
        "train_tokens_per_coder": p.coder.tokens,
        "epochs": p.coder.epochs,
        "mine_tokens": p.mine.tokens,
        "llm_coders": n_llm_coders,
        "latents_explained": latents,
        "control_latents": control_latents,
        "llm_model": model,
        "llm_backend": backend,
        "llm_calls": calls,
        "input_tokens": input_tokens,
        "output_tokens": usage.output_tokens,
        "cost_usd": cost,
        "uncached_input_tokens": usage.input_tokens,
        "cache_read_tokens": usage.cache_read_tokens,
        "cache_write_tokens": usage.cache_write_tokens,
        "cost_parts": None if bill is None else bill.parts(),
        "prices": price_rates(prices, backend, model, batch),
        "batch": batch,
        "assumptions": list(p.assumptions),
        "note": "LLM figures assume every selected latent is live and nothing is in the response cache yet, and include "
                "the shuffled control (the control latents scored a second time); prompt-cache reads and writes follow the "
                "provider's rules for the model (llm/prompt_cache.py)",
    }
    if timing is not None:
        from .throughput import estimate_stages

        info["estimate"], info["timing"] = estimate_stages(p, info, timing), timing
    return info


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
    explain_cfg, score_cfg = llm_stage_configs(p)
    timed("explain", run_explain_stage, run, explain_cfg, llm_cfg)
    if p.free_score.scorers:  # the token look-up table covers every live latent, for free
        from .scoring.registry import LIVE, get_scorer

        timed("explain_token_table", run_explain_stage, run, ExplainConfig(explainer="token-table"))
        on_live = tuple(s for s in p.free_score.scorers if get_scorer(s).latents == LIVE)
        on_explained = tuple(s for s in p.free_score.scorers if s not in on_live)
        if on_live:
            timed("score_live", run_score_stage, run, replace(p.free_score, scorers=on_live, latents=None, sample=None))
        if on_explained:
            timed("score_free", run_score_stage, run, replace(p.free_score, scorers=on_explained))
    if score_cfg.scorers:
        timed("score", run_score_stage, run, score_cfg, llm_cfg)
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
        + (f"; variants: {', '.join(info['variants'])}" if info.get("variants") else "")
        + (f"; {info['control_coders']} of them random-model controls: {', '.join(info['control_kinds']).upper()} "
           "on a randomly initialised copy of the subject model" if info["control_coders"] else "") + ")",
        f"  train: {info['train_tokens_per_coder']:,} tokens per coder" + (f" x {info['epochs']} epochs" if info.get("epochs", 1) > 1 else ""),
        f"  mine: {info['mine_tokens']:,} held-out tokens, every coder in one pass",
        f"  explain + score: {info['latents_explained']:,} latents of {info['llm_coders']} coders "
        f"({info['control_latents']:,} of them also with the shuffled control), {info['llm_calls']:,} LLM calls on "
        f"{info['llm_model']} ({info['llm_backend']})",
        f"  tokens: ~{info['input_tokens']:,} input (~{info['uncached_input_tokens']:,} uncached, "
        f"~{info['cache_read_tokens']:,} prompt-cache reads, ~{info['cache_write_tokens']:,} prompt-cache writes), "
        f"~{info['output_tokens']:,} output; estimated cost {cost}" + (" (batch API: half price)" if info["batch"] else ""),
        f"  note: {info['note']}",
    ]
    lines += [f"  assumption: {a}" for a in info["assumptions"]]
    if info.get("estimate"):
        from .throughput import format_estimate

        lines += format_estimate(info["timing"], info["estimate"])
    return "\n".join(lines)


__all__ = ["format_plan", "plan", "run_reproduce", "train_configs"]
