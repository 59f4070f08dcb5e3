"""LLM input tokens billed per latent (explain + detection + fuzzing) at the paper's settings: ours beside delphi's.

    python bench/llm_cost.py [--model claude-sonnet-4-5] [--seed 0] [--delphi-repo PATH]

One latent at the paper's settings: 40 explanation windows of 32 tokens; 50 activating + 50 non-activating
test windows, 5 a prompt (1 explain + 20 detection + 20 fuzzing calls), from real held-out windows of the
packaged corpus, a latent active on one to three neighbouring tokens of each activating window, and a
13-token explanation. Every text is counted with the packaged SmolLM2 tokenizer, plus 4 tokens a message
(the system prompt counts as one) for the role markers; the same counter for both sides.

Ours: the requests the explain and score stages build for a hosted model (interp_eval.explain.prompt,
interp_eval.scoring.classifier with the hosted format of scoring.stage.with_backend_format), turned into
the exact bodies the backend sends (backends/anthropic_backend.message_params, openai_backend.chat_body),
and billed by llm/prompt_cache.py's model of the provider's prompt cache: a prefix ending at a cache
breakpoint (Anthropic; OpenAI: any shared leading messages) is read at the cache-read price once an earlier
call wrote it, if it is at least the model's minimum (prices.json `cache_min`). Billed input tokens are
uncached + (cache-read price / input price) x reads + (cache-write price / input price) x writes: for
Claude 0.1x and 1.25x. Steady state: a first latent (other windows, another explanation) has run before,
so the prefixes shared by all latents are warm; what that first latent wrote is shown apart, paid once per
cache lifetime (5 minutes after the last use), not per latent.

delphi: its default pipeline (DefaultExplainer with activations, DetectionScorer and FuzzingScorer with
5 examples a prompt; EleutherAI/delphi, commit and files in bench/delphi_prompts.py), rebuilt here from its
prompt texts with the same windows, explanation and counter. delphi sends no cache marks, and its fixed
prefixes (600-750 tokens) are under every provider's minimum, so all of it is billed as input.

Levers: the same latent priced with alternatives to today's prompts, each named with what it changes;
"rejected" marks the ones that would change what the scorer judges.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import delphi_prompts as D  # noqa: E402

TARGET = 1 / 3
EXPLANATIONS = ("digits of numbers that express percentages or rates in financial news",
                "surnames of football managers after their first name")  # the measured latent's, the warm-up latent's
OTHER_MODELS = ("claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", "claude-opus-4-5", "gpt-4.1-mini", "gpt-5-mini",
                "gpt-4o-mini")
CALL_TYPES = ("explain", "detection", "fuzzing")


# -- windows -------------------------------------------------------------------------------------------------
def corpus_windows(tokenizer, n: int, window: int) -> list[list[str]]:
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


@dataclass
class Latent:
    explanation: str
    explain: list[tuple[list[str], list[float]]]  # 40 windows with activations
    activating: list[tuple[list[str], list[float]]]  # 50
    negative: list[list[str]]  # 50


def make_latent(pool: list[list[str]], explanation: str, args, rng: random.Random) -> Latent:
    ex = pool[: args.explain_windows]
    act = pool[args.explain_windows : args.explain_windows + args.activating]
    neg = pool[args.explain_windows + args.activating : args.explain_windows + args.activating + args.negative]
    return Latent(explanation, [(t, fake_activations(t, rng)) for t in ex], [(t, fake_activations(t, rng)) for t in act], neg)


# -- delphi, rebuilt from its prompt texts -------------------------------------------------------------------
def _delphi_marks(tokens: list[str], marked: list[bool]) -> str:
    """delphi's `<<...>>` around each run of marked tokens, no spaces moved (explainer.py _highlight, sample.py _highlight)."""
    out, i = [], 0
    while i < len(tokens):
        if marked[i]:
            out.append("<<")
            while i < len(tokens) and marked[i]:
                out.append(tokens[i])
                i += 1
            out.append(">>")
        else:
            out.append(tokens[i])
            i += 1
    return "".join(out)


def delphi_explain(latent: Latent) -> list[dict]:
    """delphi/explainers/default/default.py _build_prompt + prompt_builder.build_prompt (activations=True, cot=False):
    system, 3 few-shot pairs, then each window highlighted (> 0.3 x its max) followed by its `Activations:` line
    (explainer.py _join_activations: up to 11 marked tokens with their 0-10 activation, samplers.py normalisation)."""
    peak = max(max(a) for _, a in latent.explain)
    lines = []
    for tokens, acts in latent.explain:
        top = max(acts)
        marked = [a > 0.3 * top for a in acts]
        lines.append(_delphi_marks(tokens, marked))
        pairs = [f'("{t}" : {min(10, math.ceil(10 * a / peak))}), ' for t, a, m in zip(tokens, acts, marked) if m][:11]
        lines.append("Activations: " + "".join(pairs))
    messages = [{"role": "system", "content": D.EXPLAIN_SYSTEM.format(prompt="")}]
    for n in (1, 2, 3):
        messages += [{"role": "user", "content": getattr(D, f"EXPLAIN_EXAMPLE_{n}_ACTIVATIONS")},
                     {"role": "assistant", "content": getattr(D, f"EXPLAIN_EXAMPLE_{n}_EXPLANATION")}]
    messages.append({"role": "user", "content": "\n" + "\n".join(lines) + "\n"})
    return messages


def delphi_scoring(scorer: str, latent: Latent, per_prompt: int) -> list[list[dict]]:
    """delphi/scorers/classifier/{detection,fuzz}.py _prepare + classifier.py (shuffle with seed 42, batches of 5,
    `Example {i}: {text}` from 0) + prompts/{detection,fuzz}_prompt.py prompt(): system, 3 few-shot pairs, then the
    explanation and the examples. Fuzzing marks activating windows at >= 0.3 x their max (sample.py) and, in each
    non-activating window, ceil(the mean count of active tokens of the activating windows) tokens (seeded like sample.py)."""
    prefix = "DETECTION" if scorer == "detection" else "FUZZING"
    n_wrong = math.ceil(sum(sum(a > 0 for a in acts) for _, acts in latent.activating) / len(latent.activating))
    texts = []
    for tokens, acts in latent.activating:
        texts.append("".join(tokens) if scorer == "detection" else _delphi_marks(tokens, [a >= 0.3 * max(acts) for a in acts]))
    for tokens in latent.negative:
        if scorer == "detection":
            texts.append("".join(tokens))
        else:  # the token at len - len // 4 and n_wrong - 1 others drawn with seed 22, as sample.py does
            anchor = len(tokens) - len(tokens) // 4
            others = [i for i in range(len(tokens)) if i != anchor]
            chosen = {anchor, *random.Random(22).sample(others, min(n_wrong, len(tokens)) - 1)}
            texts.append(_delphi_marks(tokens, [i in chosen for i in range(len(tokens))]))
    random.Random(42).shuffle(texts)
    fixed = [{"role": "system", "content": getattr(D, f"{prefix}_SYSTEM_PROMPT")}]
    for one in ("ONE", "TWO", "THREE"):
        fixed += [{"role": "user", "content": getattr(D, f"{prefix}_EXAMPLE_{one}")},
                  {"role": "assistant", "content": getattr(D, f"{prefix}_RESPONSE_{one}")}]
    out = []
    for start in range(0, len(texts), per_prompt):
        examples = "\n".join(f"Example {i}: {t}" for i, t in enumerate(texts[start : start + per_prompt]))
        user = getattr(D, f"{prefix}_GENERATION_PROMPT").format(explanation=latent.explanation, examples=examples)
        out.append([*fixed, {"role": "user", "content": user}])
    return out


def check_delphi_texts(repo: Path) -> None:
    """Compare delphi_prompts.py with the string constants of a delphi checkout (its files are plain assignments)."""
    import ast

    for prefix, rel in D.SOURCES.items():
        tree = ast.parse((repo / rel).read_text())
        found = {n.targets[0].id: n.value.value for n in tree.body
                 if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name) and isinstance(n.value, ast.Constant)}
        for ours, theirs in D.NAMES.items():
            if ours.startswith(prefix + "_") and found.get(theirs) != getattr(D, ours):
                raise SystemExit(f"delphi_prompts.{ours} differs from {theirs} in {repo / rel}")
    print(f"delphi_prompts.py matches {repo}")


# -- ours ------------------------------------------------------------------------------------------------------
def our_requests(latent: Latent, seed: int) -> dict[str, list]:
    """The explain stage's request and the score stage's detection and fuzzing requests in the hosted format."""
    import numpy as np

    from interp_eval.explain.prompt import Window, build_request as explain_request
    from interp_eval.scoring.classifier import build_request
    from interp_eval.scoring.stage import ScoreConfig, with_backend_format
    from interp_eval.scoring.testset import LatentTests, ScoreWindow, mark_fuzz

    fmt = with_backend_format(ScoreConfig(), "anthropic")
    ws = [ScoreWindow(i, 1, i % 10, t, np.asarray(a, np.float32)) for i, (t, a) in enumerate(latent.activating)]
    ws += [ScoreWindow(1000 + i, 0, None, t, np.zeros(len(t), np.float32)) for i, t in enumerate(latent.negative)]
    ws = [w.cut(fmt.window_tokens) for w in ws]
    mark_fuzz(ws, seed, "bench", 0)
    random.Random(seed).shuffle(ws)
    tests = LatentTests("bench", 0, latent.explanation, False, ws)
    out = {"explain": [explain_request([Window(t, a) for t, a in latent.explain])]}
    for scorer in ("detection", "fuzzing"):  # no logprobs: Anthropic gives none
        out[scorer] = [build_request(scorer, latent.explanation, group, logprobs=False) for group in tests.prompts(fmt.windows_per_prompt)]
    return out


# -- billing ---------------------------------------------------------------------------------------------------
@dataclass
class Row:
    calls: int = 0
    tokens: int = 0  # all input tokens
    uncached: int = 0
    read: int = 0
    write: int = 0

    def billed(self, r: float, w: float) -> float:
        return self.uncached + r * self.read + w * self.write

    def add(self, u) -> None:
        self.calls += 1
        self.uncached += u.input_tokens
        self.read += u.cache_read_tokens
        self.write += u.cache_write_tokens
        self.tokens += u.input_tokens + u.cache_read_tokens + u.cache_write_tokens


def ratios(prices, model: str) -> tuple[float, float]:
    p = prices.price(model)
    if p is None:
        raise SystemExit(f"no price for {model} in interp_eval/data/prices.json")
    return p.cache_read / p.input, p.cache_write / p.input


def bill(model: str, warmup: dict[str, list], measured: dict[str, list], count, prices) -> tuple[dict[str, Row], dict[str, Row]]:
    """Per call type: the warm-up latent's usage (cold cache) and the measured latent's (warm), in send order:
    all explain calls, then each latent's detection and fuzzing calls."""
    from interp_eval.llm.prompt_cache import PromptCache, cache_rule, wire_body

    backend = "anthropic" if model.startswith("claude") else "openai"
    cache = PromptCache(cache_rule(backend, model, prices), count)
    rows: tuple[dict[str, Row], dict[str, Row]] = ({t: Row() for t in CALL_TYPES}, {t: Row() for t in CALL_TYPES})
    order = [(0, "explain"), (1, "explain"), (0, "detection"), (0, "fuzzing"), (1, "detection"), (1, "fuzzing")]
    for which, kind in order:
        for r in (warmup, measured)[which][kind]:
            rows[which][kind].add(cache.bill(wire_body(backend, model, r)))
    return rows


def delphi_rows(latent: Latent, per_prompt: int, count) -> dict[str, Row]:
    from interp_eval.llm.prompt_cache import split_body
    from interp_eval.llm.types import Usage

    calls = {"explain": [delphi_explain(latent)], "detection": delphi_scoring("detection", latent, per_prompt),
             "fuzzing": delphi_scoring("fuzzing", latent, per_prompt)}
    rows = {t: Row() for t in CALL_TYPES}
    for kind, bodies in calls.items():
        for messages in bodies:
            rows[kind].add(Usage(input_tokens=split_body({"messages": messages}, "", count).total))
    return rows


# -- levers ------------------------------------------------------------------------------------------------------
def levers(measured: dict[str, list], ours: dict[str, Row], delphi_total: int, r: float, w: float, minimum: int,
           count) -> list[tuple[str, float]]:
    """The measured latent's requests priced with one change each: billed input tokens per latent."""
    from interp_eval.llm.prompt_cache import MESSAGE_OVERHEAD, split_body

    def fixed_of(req) -> int:  # the system prompt (+ few-shot): the prefix every latent shares
        msgs = [{"role": "system", "content": req.system}] + [dict(m) for m in req.messages[: req.cache_prefix]]
        return split_body({"messages": msgs}, "", count).total

    def total_of(req) -> int:
        return split_body({"messages": [{"role": "system", "content": req.system}, *req.messages]}, "", count).total

    def numbers_of(req) -> int:  # the "1. " before each window
        user = req.messages[-1]["content"]
        return sum(count(line) - count(line.split(". ", 1)[1]) for line in user.splitlines() if line[:1].isdigit() and ". " in line)

    base = sum(ours[t].billed(r, w) for t in CALL_TYPES)
    scorer = [q for t in ("detection", "fuzzing") for q in measured[t]]
    expl_line = count("Explanation: " + EXPLANATIONS[0]) + MESSAGE_OVERHEAD  # with its message's role markers
    padded = sum(r * (max(fixed_of(q), minimum) + expl_line) + total_of(q) - fixed_of(q) - expl_line for q in scorer)
    scorers_now = sum(ours[t].billed(r, w) for t in ("detection", "fuzzing"))
    [ex] = measured["explain"]
    explain_padded = r * max(fixed_of(ex), minimum) + total_of(ex) - fixed_of(ex)
    once = sum(fixed_of(q) + expl_line for q in measured["fuzzing"])  # fuzzing's system + explanation, sent once a pair
    return [
        ("as sent (the table above)", base),
        (f"scorer prefixes padded to the cache minimum ({minimum:,}) and read from the cache, the explanation cached per "
         "latent (the issue's first two levers)", base - scorers_now + padded),
        (f"the explain prefix padded to {minimum:,} and read from the cache", base - ours["explain"].billed(r, w) + explain_padded),
        ("no window numbers (`1. `) in the scorer prompts", base - sum(numbers_of(q) for q in scorer)),
        ("rejected: detection and fuzzing in one request (detection would see fuzzing's marks: not two independent "
         "judgements)", base - once),
        ("delphi", float(delphi_total)),
    ]


# -- the report ------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="claude-sonnet-4-5", help="whose cache rules and prices bill our requests (prices.json)")
    ap.add_argument("--window", type=int, default=32, help="tokens per window (paper: 32)")
    ap.add_argument("--explain-windows", type=int, default=40)
    ap.add_argument("--activating", type=int, default=50)
    ap.add_argument("--negative", type=int, default=50)
    ap.add_argument("--windows-per-prompt", type=int, default=5, help="delphi's (ours is the hosted format's, 5)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--delphi-repo", type=Path, default=None, help="a delphi checkout: check delphi_prompts.py against it")
    args = ap.parse_args()
    if args.delphi_repo is not None:
        check_delphi_texts(args.delphi_repo)

    from transformers import AutoTokenizer

    from interp_eval.llm.pricing import PriceTable
    from interp_eval.llm.prompt_cache import cache_rule
    from interp_eval.subject.model import packaged_model_dir

    tokenizer = AutoTokenizer.from_pretrained(packaged_model_dir())

    @lru_cache(maxsize=None)
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    rng = random.Random(args.seed)
    need = args.explain_windows + args.activating + args.negative
    pool = corpus_windows(tokenizer, need * 3, args.window)
    rng.shuffle(pool)
    latent = make_latent(pool[:need], EXPLANATIONS[0], args, rng)
    warm = make_latent(pool[need : 2 * need], EXPLANATIONS[1], args, rng)
    ours_req, warm_req = our_requests(latent, args.seed), our_requests(warm, args.seed + 1)
    prices = PriceTable.load()
    r, w = ratios(prices, args.model)
    first, ours = bill(args.model, warm_req, ours_req, count, prices)
    delphi = delphi_rows(latent, args.windows_per_prompt, count)
    rule = cache_rule("anthropic" if args.model.startswith("claude") else "openai", args.model, prices)

    print(f"One latent: {args.explain_windows} explanation windows of {args.window} tokens, {args.activating} + {args.negative} test "
          f"windows, {args.windows_per_prompt} a prompt; SmolLM2 tokens + 4 a message.")
    print(f"Ours billed as {args.model} bills it: cache reads {r:g}x, writes {w:g}x the input price, prefixes from "
          f"{rule.min_tokens:,} tokens cached; steady state (the shared prefixes warm).")
    print(f"delphi: {D.DELPHI_REPO}@{D.DELPHI_COMMIT[:12]} default prompts rebuilt with the same windows; no prompt caching.\n")
    head = (f"{'call type':<10}{'calls':>6}{'input':>8}{'uncached':>10}{'cache rd':>10}{'cache wr':>10}{'billed':>10}"
            f"  |{'delphi calls':>13}{'billed':>9}{'ours/delphi':>13}")
    print(head)
    print("-" * len(head))
    tot_ours = tot_delphi = 0.0
    for t in CALL_TYPES:
        o, d = ours[t], delphi[t]
        b = o.billed(r, w)
        tot_ours += b
        tot_delphi += d.tokens
        print(f"{t:<10}{o.calls:>6}{o.tokens:>8,}{o.uncached:>10,}{o.read:>10,}{o.write:>10,}{b:>10,.0f}  |"
              f"{d.calls:>13}{d.tokens:>9,}{b / d.tokens:>13.0%}")
    print("-" * len(head))
    tt = Row(sum(ours[t].calls for t in CALL_TYPES), sum(ours[t].tokens for t in CALL_TYPES), sum(ours[t].uncached for t in CALL_TYPES),
             sum(ours[t].read for t in CALL_TYPES), sum(ours[t].write for t in CALL_TYPES))
    print(f"{'total':<10}{tt.calls:>6}{tt.tokens:>8,}{tt.uncached:>10,}{tt.read:>10,}{tt.write:>10,}{tot_ours:>10,.0f}  |"
          f"{sum(d.calls for d in delphi.values()):>13}{tot_delphi:>9,.0f}{tot_ours / tot_delphi:>13.1%}")
    once = {t: first[t].write - ours[t].write for t in CALL_TYPES}
    print("\nonce per cache lifetime, not per latent (prefixes the first latent wrote and later ones read): "
          + (", ".join(f"{t} {v:,} tokens at {w:g}x" for t, v in once.items()) if any(once.values()) else "none"))
    verdict = "MET" if tot_ours <= TARGET * tot_delphi else "NOT MET"
    print(f"target: at most {TARGET:.0%} of delphi's billed input tokens, {TARGET * tot_delphi:,.0f}: ours {tot_ours:,.0f} "
          f"({tot_ours / tot_delphi:.1%}) -> {verdict}")

    print("\nThe same requests on other models (billed input tokens per latent, steady state):")
    for m in OTHER_MODELS:
        rm, wm = ratios(prices, m)
        _, rows = bill(m, warm_req, ours_req, count, prices)
        total = sum(rows[t].billed(rm, wm) for t in CALL_TYPES)
        cached = sum(rows[t].read for t in CALL_TYPES)
        print(f"  {m:<18} {total:>7,.0f}  {total / tot_delphi:>6.1%} of delphi   ({cached:,} tokens read from the prompt cache, "
              f"reads {rm:g}x, minimum {cache_rule('anthropic' if m.startswith('claude') else 'openai', m, prices).min_tokens:,})")

    print(f"\nLevers ({args.model}; billed input tokens per latent):")
    for name, value in levers(ours_req, ours, int(tot_delphi), r, w, rule.min_tokens, count):
        print(f"  {value:>7,.0f}  {value / tot_delphi:>6.1%}  {name}")


if __name__ == "__main__":
    main()
