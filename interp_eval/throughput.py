"""This machine's throughputs, measured in under a minute, and a preset's time per stage estimated from them.

`reproduce --preset P --dry-run` prints the estimate before anything starts. Each figure is timed on this machine
with the preset's own shapes (after one warm-up call, so one-off costs such as loading or compiling stay out):
- the subject model's forward pass to the deepest hooked layer (what caching activations and mining cost per model
  pass) and its full forward pass with logits (what the reconstruction eval costs per coder);
- a few training steps of each coder kind at the preset's width, batch and optimiser, on random activations;
- one coder's encoding of a batch (what each coder adds to mining);
- the sentence embedder on windows (the embedding scorers);
- with the offline model: one explanation of the preset's explanation windows, one-window scoring prompts that share
  an explanation (as the score stage orders them, so its KV-cache reuse counts), and one intruder prompt. A hosted
  model's time depends on its provider and concurrency and is not estimated.

The estimate is arithmetic on those figures and the plan's counts (estimate_stages); what it leaves out (corpus
tokenisation, Parquet writes, report) is small next to it on this project's machines. Trust it to about 20%: a
loaded machine runs slower than the moment it was measured.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from typing import Any, Callable

from .errors import UserError

log = logging.getLogger(__name__)

# an embedding scorer's own work per latent (its AUC and its control's, explanation embedded), beside the windows'
# embeddings: 15,747 latents of the demo took 1.7 min with 6,250 windows embedded at ~100 a second (AMD EPYC, 2 cores)
FREE_SCORER_S_PER_LATENT = 0.0025


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _best(fn: Callable[[], Any], repeats: int = 2, warmup: int = 1) -> float:
    """Seconds of the fastest of `repeats` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


@contextmanager
def _quiet():
    level = logging.getLogger("interp_eval").level
    logging.getLogger("interp_eval").setLevel(logging.WARNING)
    try:
        yield
    finally:
        logging.getLogger("interp_eval").setLevel(level)


def measure_subject(p, device: str = "cpu") -> dict[str, float]:
    """Forward tokens/s to the deepest hooked layer and with the whole model (logits included)."""
    import torch

    from .subject.hookpoints import capture
    from .subject.model import load_subject_model

    subject = load_subject_model(p.train.model, device)
    deepest = max(p.hookpoints, key=lambda h: int(h.split(".")[1]))
    ids = torch.randint(0, subject.tokenizer.vocab_size, (8, min(p.train.ctx_len, 256)), device=subject.device)
    with torch.no_grad():
        partial = _best(lambda: capture(subject, ids, [deepest]))
        full = _best(lambda: subject.model(ids[:4]), repeats=1)
    return {"forward_tokens_per_s": ids.numel() / partial, "full_forward_tokens_per_s": ids[:4].numel() / full,
            "d_model": subject.d_model}


def measure_coders(p, d_model: int, device: str = "cpu") -> dict[str, float]:
    """Training tokens/s of each coder kind the preset trains, and one coder's encoding tokens/s."""
    from dataclasses import replace

    import torch

    from .coders.coder import SparseCoder, fvu
    from .coders.optim import Optimizer, default_lr
    from .coders.train import optimizer_step

    kinds = sorted({*p.coders, *(v.kind for v in p.variants), *p.control_coders})
    batch = min(p.coder.batch_size, 4096)
    x = torch.randn(batch, d_model, device=device)
    out: dict[str, float] = {}
    for kind in kinds:
        cfg = replace(p.coder, coder=kind, k=p.ks[0]).coder_config(d_model, d_model, "m")
        coder = SparseCoder(cfg, device=device, seed=0)
        opt = Optimizer(coder.parameters(), p.coder.optimizer, default_lr(cfg.activation, p.coder.optimizer, cfg.d_sae), 100, 10)

        def step():
            y_hat, _ = coder(x)
            fvu(x, y_hat).backward()
            optimizer_step(coder, opt)

        # the encoder's `auto` selection times its candidates on its first calls (coders/topk.py): warm up past them
        out[f"train_tokens_per_s.{kind}"] = batch / _best(step, repeats=3, warmup=12)
        if kind == p.coders[0]:
            with torch.no_grad():
                out["encode_tokens_per_s"] = batch / _best(lambda: coder.encode(x), repeats=3, warmup=3)
    return out


def measure_embedder(n: int = 64) -> float:
    """Windows a second through the sentence embedder (the embedding scorers)."""
    from .scoring.embedding import Embedder

    embedder = Embedder()
    texts = [f"The minister said on day {i} that the new rules would come into force next year." for i in range(n)]
    return n / _best(lambda: embedder.encode(texts), repeats=1)


def measure_local_llm(p, llm_cfg) -> dict[str, float]:
    """Seconds an explanation, a one-window scoring prompt (KV prefix shared with the explanation before it) and an
    intruder prompt take on the offline model, with the preset's formats and real corpus windows."""
    import asyncio
    from dataclasses import replace

    import numpy as np

    from .explain.prompt import Window, build_request as explain_request
    from .llm import make_client
    from .scoring.classifier import LLM_SCORERS, build_request as score_request
    from .scoring.intruder import build_request as intruder_request
    from .scoring.stage import with_backend_format
    from .scoring.testset import ScoreWindow

    texts = _corpus_windows(p, 24)
    explain_windows = [Window(t, [1.0 if i == 12 else 0.0 for i in range(len(t))]) for t in texts[: p.mine.n_explain]]
    cfg = with_backend_format(p.score, "local")
    cut = cfg.window_tokens or 32

    def score_window(t: list[str], i: int) -> ScoreWindow:
        t = t[:cut]
        acts = np.array([1.0 if j == len(t) // 2 else 0.0 for j in range(len(t))], dtype=np.float32)
        return ScoreWindow(window_id=i, label=1, quantile=None, tokens=t, activations=acts, fuzz_mask=list(acts > 0))

    with tempfile.TemporaryDirectory() as tmp:
        client = make_client(replace(llm_cfg, cache_path=os.path.join(tmp, "c.sqlite"), use_cache=False, progress=False))

        async def timed(request) -> float:
            t = time.perf_counter()
            await client.complete(request)
            return time.perf_counter() - t

        async def run() -> dict[str, float]:
            out = {}
            await timed(explain_request(explain_windows))  # warm-up: loads the model, fills the KV cache
            out["llm_explain_s"] = await timed(explain_request(explain_windows[::-1]))
            for scorer in [s for s in cfg.scorers if s in LLM_SCORERS]:
                windows = [score_window(t, i) for i, t in enumerate(texts[8:14])]
                await timed(score_request(scorer, "a stand-in explanation of about ten words", windows[:1]))
                took = [await timed(score_request(scorer, "quotes of what a minister or official said", [w])) for w in windows[1:]]
                out[f"llm_window_s.{scorer}"] = float(np.median(took))
            if "intruder" in cfg.scorers:
                windows = [score_window(t, i) for i, t in enumerate(texts[14:14 + cfg.intruder_windows])]
                out["llm_intruder_s"] = await timed(intruder_request(windows))
            await client.aclose()
            return out

        return asyncio.run(run())


def _corpus_windows(p, n: int) -> list[list[str]]:
    """`n` held-out corpus windows of 32 tokens, as token strings."""
    from transformers import AutoTokenizer

    from .subject.corpus import CorpusConfig, iter_contexts
    from .subject.model import packaged_model_dir

    tok = AutoTokenizer.from_pretrained(packaged_model_dir())
    out = []
    for _, ids in zip(range(n), iter_contexts(CorpusConfig(dataset=p.mine.dataset, ctx_len=32), tok, "heldout")):
        out.append([tok.decode([t]) for t in ids.tolist()])
    return out


def measure(p, llm_cfg=None, device: str = "cpu") -> dict[str, Any]:
    """Every figure the estimate needs, for preset `p` on this machine (`llm_cfg`: the offline model's config,
    None to leave the LLM out)."""
    t = time.perf_counter()
    with _quiet():
        out: dict[str, Any] = {"cpu": cpu_name(), "cores": os.cpu_count(), "load": os.getloadavg()[0]}
        out.update(measure_subject(p, device))
        out.update(measure_coders(p, out["d_model"], device))
        out["embed_windows_per_s"] = measure_embedder()
        if llm_cfg is not None and llm_cfg.resolved()[0] == "local":
            try:
                out.update(measure_local_llm(p, llm_cfg))
            except UserError as e:  # e.g. the offline model is not installed: estimate the rest
                out["llm_missing"] = str(e)
    out["measured_in_s"] = time.perf_counter() - t
    return out


def estimate_stages(p, plan: dict, timing: dict) -> dict[str, float | None]:
    """Seconds per stage of `reproduce` for preset `p` (plan: reproduce.plan's counts), from `timing`."""
    from .reproduce import control_configs, train_configs

    models = 1 + bool(p.control_coders)
    fwd, full = timing["forward_tokens_per_s"], timing["full_forward_tokens_per_s"]
    coders = train_configs(p) + control_configs(p)
    cache = models * p.coder.tokens * len(p.hookpoints) / fwd
    fit = sum(c.tokens * c.epochs / timing[f"train_tokens_per_s.{c.coder}"] for c in coders)
    recon = (len(coders) + models) * p.train.eval_tokens / full
    mine = models * p.mine.tokens / fwd + len(coders) * p.mine.tokens / timing["encode_tokens_per_s"]
    windows = p.mine.tokens / p.mine.window  # every window of the mined tokens, about: each is embedded once
    live = sum(c.expansion for c in coders) * timing["d_model"]  # at most: every latent live
    free = windows / timing["embed_windows_per_s"] + live * len(p.free_score.scorers) * FREE_SCORER_S_PER_LATENT
    out: dict[str, float | None] = {"train": cache + fit + recon, "mine": mine, "free_score": free}
    if "llm_explain_s" in timing:
        from .scoring.stage import with_backend_format

        cfg = with_backend_format(p.score, "local")
        windows_each = math.ceil((cfg.n_activating + cfg.n_negative) / cfg.windows_per_prompt)
        out["explain"] = plan["latents_explained"] * timing["llm_explain_s"]
        score = 0.0
        for s in cfg.scorers:
            if f"llm_window_s.{s}" in timing:
                score += (plan["latents_explained"] + plan["control_latents"]) * windows_each * timing[f"llm_window_s.{s}"]
            elif s == "intruder":
                score += plan["latents_explained"] * cfg.intruder_trials * timing["llm_intruder_s"]
        out["score"] = score
    else:
        out["explain"] = out["score"] = None  # a hosted model sets its own pace; a missing offline model is not timed
    out["total"] = None if out["score"] is None else sum(v for v in out.values() if v is not None)
    return out


def format_estimate(timing: dict, est: dict) -> list[str]:
    lines = [f"  estimated time on this machine ({timing['cpu']}, {timing['cores']} cores, load {timing['load']:.1f} "
             f"while measuring; measured in {timing['measured_in_s']:.0f} s):"]
    for stage, s in est.items():
        if stage != "total":
            why = f"not estimated: {timing['llm_missing']}" if "llm_missing" in timing else "set by the provider (not estimated)"
            lines.append(f"    {stage:<11} " + (why if s is None else f"{s / 60:6.1f} min"))
    if est.get("total") is not None:
        lines.append(f"    {'total':<11} {est['total'] / 60:6.1f} min ({est['total'] / 3600:.2f} h)")
    rates = [f"forward {timing['forward_tokens_per_s']:,.0f} tok/s"] + [
        f"{k.split('.')[1]} {v:,.0f} tok/s" for k, v in timing.items() if k.startswith("train_tokens_per_s.")]
    if "llm_explain_s" in timing:
        rates.append(f"explain {timing['llm_explain_s']:.1f} s")
        rates += [f"{k.split('.')[1]} {v:.2f} s/window" for k, v in timing.items() if k.startswith("llm_window_s.")]
        if "llm_intruder_s" in timing:
            rates.append(f"intruder {timing['llm_intruder_s']:.1f} s/trial")
    lines.append("    from: " + ", ".join(rates))
    return lines
