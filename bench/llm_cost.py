"""LLM calls and billed input tokens per latent: explain + detection + fuzzing, against delphi's default.

    python bench/llm_cost.py [--windows 32] [--seed 0]

Builds the real requests this project sends for one latent at the paper's settings (40 explanation
windows of 32 tokens; 50 activating + 50 non-activating test windows; 5 windows a prompt) from real
held-out corpus windows, with the real prompt templates and request builders, and counts their input
tokens with the packaged SmolLM2 tokenizer (system + every message + 4 tokens a message, as the LLM
layer's estimate) and with chars/4.

delphi's side is the figure from its default pipeline (1 explain + 20 detection + 20 fuzzing calls,
about 36,000 input tokens per latent, from its prompt templates); it uses no prompt caching.
Target: at most half of delphi's billed input tokens for the same 200 scored windows per latent.

Prompt caching is shown two ways: as if every call after the first read its fixed system + few-shot
prefix from the cache at 0.1x (Anthropic's cache-read price; cache writes at 1.25x happen once per
5 minutes, negligible over many latents), and as it really applies: Anthropic caches only prefixes
of at least 1024 tokens (Sonnet / Opus; more for Haiku), so shorter prefixes are billed in full.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DELPHI_CALLS = 41
DELPHI_INPUT_TOKENS = 36_000
CACHE_READ_FACTOR = 0.1
ANTHROPIC_MIN_CACHE_PREFIX = 1024
MESSAGE_OVERHEAD = 4
EXPLANATION = "digits of numbers that express percentages or rates in financial news"


def corpus_windows(tokenizer, n: int, window: int):
    from interp_eval.subject.corpus import CorpusConfig, iter_contexts

    out = []
    for ids in iter_contexts(CorpusConfig(ctx_len=window), tokenizer, "heldout"):
        out.append([tokenizer.decode([int(t)]) for t in ids])
        if len(out) == n:
            return out
    raise SystemExit(f"the corpus gave only {len(out)} windows of {window} tokens")


def fake_activations(tokens: list[str], rng: random.Random) -> list[float]:
    """A latent active on one to three neighbouring visible tokens, like a typical feature."""
    acts = [0.0] * len(tokens)
    visible = [i for i, t in enumerate(tokens) if t.strip()] or [0]
    start = rng.choice(visible)
    for j in range(start, min(len(tokens), start + rng.randint(1, 3))):
        acts[j] = rng.uniform(1.0, 5.0)
    return acts


def explain_request(windows, rng):
    """(request, exact): the explain stage's own request, or an approximation when that module is missing."""
    try:
        from interp_eval.explain.prompt import Window, build_request

        return build_request([Window(t, fake_activations(t, rng)) for t in windows]), True
    except ImportError:
        from interp_eval.llm import LLMRequest
        from interp_eval.prompting import highlighted

        text = "Excerpts:\n" + "\n".join(f"{i}. {highlighted(t, fake_activations(t, rng))}" for i, t in enumerate(windows, 1))
        system = "Say what the marked tokens have in common. " * 10  # ~100 tokens of instructions
        return LLMRequest(messages=[{"role": "user", "content": text}], system=system, max_tokens=200, stage="explain"), False


def score_requests(scorer: str, act_windows, neg_windows, rng, wpp: int):
    import numpy as np

    from interp_eval.scoring.classifier import build_request
    from interp_eval.scoring.testset import LatentTests, ScoreWindow, mark_fuzz

    ws = [ScoreWindow(i, 1, i % 10, t, np.asarray(fake_activations(t, rng), np.float32)) for i, t in enumerate(act_windows)]
    ws += [ScoreWindow(1000 + i, 0, None, t, np.zeros(len(t), np.float32)) for i, t in enumerate(neg_windows)]
    mark_fuzz(ws, 0, "bench", 0)
    rng.shuffle(ws)
    tests = LatentTests("bench", 0, EXPLANATION, False, ws)
    return [build_request(scorer, EXPLANATION, group) for group in tests.prompts(wpp)]


def count(tokenizer, request) -> tuple[int, int, int]:
    """(total input tokens, of which the fixed cacheable prefix, chars/4 total)."""
    def n(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + MESSAGE_OVERHEAD

    parts = ([request.system] if request.system is not None else []) + [m["content"] for m in request.messages]
    fixed = 0  # parts in the fixed prefix: the system prompt and the first cache_prefix messages
    if request.cache_prefix is not None:
        fixed = (request.system is not None) + request.cache_prefix
    tokens = [n(p) for p in parts]
    chars = sum(len(p) for p in parts) // 4 + MESSAGE_OVERHEAD * len(parts)
    return sum(tokens), sum(tokens[:fixed]), chars


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--window", type=int, default=32, help="tokens per window (paper: 32)")
    ap.add_argument("--explain-windows", type=int, default=40)
    ap.add_argument("--activating", type=int, default=50)
    ap.add_argument("--negative", type=int, default=50)
    ap.add_argument("--windows-per-prompt", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from transformers import AutoTokenizer

    from interp_eval.subject.model import packaged_model_dir

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir())
    rng = random.Random(args.seed)
    need = args.explain_windows + args.activating + args.negative
    pool = corpus_windows(tokenizer, need * 3, args.window)
    rng.shuffle(pool)
    ex_w = pool[: args.explain_windows]
    act_w = pool[args.explain_windows : args.explain_windows + args.activating]
    neg_w = pool[args.explain_windows + args.activating : need]

    ex_req, exact = explain_request(ex_w, rng)
    stages = {"explain": [ex_req]}
    for scorer in ("detection", "fuzzing"):
        stages[scorer] = score_requests(scorer, act_w, neg_w, rng, args.windows_per_prompt)

    rows = []
    for stage, reqs in stages.items():
        counted = [count(tokenizer, r) for r in reqs]
        total = sum(c[0] for c in counted)
        prefix = counted[0][1]
        cached_all = total - (len(reqs) - 1) * prefix * (1 - CACHE_READ_FACTOR)  # the first call writes, the rest read
        cached_real = cached_all if prefix >= ANTHROPIC_MIN_CACHE_PREFIX else total
        rows.append((stage, len(reqs), total, sum(c[2] for c in counted), prefix, cached_all, cached_real))

    print(f"per latent: {args.explain_windows} explain windows of {args.window} tokens, "
          f"{args.activating}+{args.negative} test windows, {args.windows_per_prompt} a prompt; tokens by the SmolLM2 tokenizer"
          + ("" if exact else "\n(the explain prompt module is missing: its request is approximated)"))
    head = f"{'stage':<10}{'calls':>6}{'input tok':>11}{'chars/4':>9}{'prefix/call':>13}{'billed, prefix cached':>23}{'billed, Anthropic rule':>24}"
    print(head)
    print("-" * len(head))
    for stage, calls, total, chars, prefix, ca, cr in rows:
        print(f"{stage:<10}{calls:>6}{total:>11,}{chars:>9,}{prefix:>13,}{ca:>23,.0f}{cr:>24,.0f}")
    tot = [sum(r[i] for r in rows) for i in (1, 2, 3, 5, 6)]
    print("-" * len(head))
    print(f"{'ours':<10}{tot[0]:>6}{tot[1]:>11,}{tot[2]:>9,}{'':>13}{tot[3]:>23,.0f}{tot[4]:>24,.0f}")
    print(f"{'delphi':<10}{DELPHI_CALLS:>6}{DELPHI_INPUT_TOKENS:>11,}{'':>9}{'':>13}{DELPHI_INPUT_TOKENS:>23,}{DELPHI_INPUT_TOKENS:>24,}")
    target = DELPHI_INPUT_TOKENS / 2
    billed = tot[4]
    print(f"\ntarget: at most {target:,.0f} billed input tokens per latent (half of delphi's) for the same "
          f"{args.activating + args.negative} windows x 2 scorers")
    print(f"ours without caching: {tot[1]:,} ({tot[1] / DELPHI_INPUT_TOKENS:.0%} of delphi) -> {'MET' if tot[1] <= target else 'NOT MET'}")
    print(f"ours as Anthropic bills it: {billed:,.0f} ({billed / DELPHI_INPUT_TOKENS:.0%} of delphi); "
          f"with every fixed prefix cached: {tot[3]:,.0f} ({tot[3] / DELPHI_INPUT_TOKENS:.0%})")
    short = [r[0] for r in rows if r[4] < ANTHROPIC_MIN_CACHE_PREFIX]
    if short:
        print(f"note: the fixed prefixes of {', '.join(short)} are under Anthropic's {ANTHROPIC_MIN_CACHE_PREFIX}-token caching "
              "minimum, so they are billed in full; they are kept short because a short uncached prefix costs less than a "
              "1024-token cached one (102 tokens a call at 0.1x)")


if __name__ == "__main__":
    main()
