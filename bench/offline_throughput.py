"""Offline throughput with its power: scored latents an hour for the offline default, and what that speed measures.

    python bench/offline_throughput.py --run runs/demo --latents 5            # 5 latents of each coder (30 in runs/demo)
    python bench/offline_throughput.py --run runs/demo --latents 5 --legacy   # the same before issue 15's changes

On N latents of each coder of a mined run (its mining tables are copied to a scratch run: no explanation, no
score, an empty LLM response cache) it runs the offline default of the demo preset (interp_eval/config.py), in one
process and on one loaded model, as `reproduce` does:
- explain: the local model explains each latent (the demo's explanation windows);
- detection: the LLM scorer chosen by measured power (one window a prompt cut to 16 tokens, P(1) from logprobs,
  the demo's 5 + 5 test windows), every latent again with another latent's explanation (the shuffled control);
- the embedding scorers (embedding on the LLM explanations, example-embedding), each with its shuffled control.
It prints latents an hour (explain + detection + embedding scorers; the one-off model load apart), the per-stage
split, what the local model evaluated (prompt tokens kept in the KV cache, forward passes, guessed answer tokens
kept), and the power of each scorer at that speed: AUC with the own explanation minus AUC with the shuffled one,
paired per latent and pooled over coders, with its bootstrap 95% interval. Load average (`uptime`) beside each
timing: this machine's 2 cores are shared, so repeat on a quiet machine.

--legacy measures the code before issue 15 in the same process and conditions: prompts in (coder, latent) order
(own and control jobs of a latent alternate, so the explanation prefix is evaluated for every job) and no guessed
answer tokens (every answer token its own forward pass). --threads sets llama.cpp's threads (default: its choice).
--explain-windows K / --explain-tokens T try a cheaper explainer input on the scratch copy (K of the latent's
explanation windows spread over its quantiles; each cut to T tokens around its peak): measure power before
adopting one.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from interp_eval.artifacts import RunDir, run_stamp, write_table  # noqa: E402
from interp_eval.catalog import CONTEXTS, EXPLANATIONS, LATENT_SCORES, LATENTS, MANIFEST, PREDICTIONS, RUN_JSON, SPLIT_EXPLAIN, WINDOWS  # noqa: E402
from interp_eval.config import get_preset  # noqa: E402
from interp_eval.llm import LLMConfig  # noqa: E402

COPIED = (LATENTS, WINDOWS, CONTEXTS, MANIFEST, RUN_JSON)  # what explain and score read of the run


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def shrink_explain_windows(work: Path, keep: int | None, tokens: int | None) -> None:
    """On the scratch copy only: keep `keep` of each latent's explanation windows (spread over its quantile order)
    and cut each to `tokens` tokens around its highest activation (new window ids, so test windows are untouched)."""
    ctx = pd.read_parquet(work / CONTEXTS.name)
    win = pd.read_parquet(work / WINDOWS.name)
    is_ex = ctx["split"] == SPLIT_EXPLAIN
    ex = ctx[is_ex].sort_values(["coder", "latent", "quantile", "rank"], na_position="first")
    if keep:
        parts = []
        for _, g in ex.groupby(["coder", "latent"], sort=False):
            idx = np.unique(np.linspace(0, len(g) - 1, num=min(keep, len(g))).round().astype(int))
            parts.append(g.iloc[idx])
        ex = pd.concat(parts)
    if tokens:
        src = win.set_index("window_id")
        next_id = int(win["window_id"].max()) + 1
        extra, new_ids, cut_acts = [], [], []
        for w, acts in zip(ex["window_id"], ex["activations"]):
            row = src.loc[w]
            a = np.asarray(acts)
            s = 0
            if len(a) > tokens:
                s = min(max(0, int(np.argmax(a)) - tokens // 2), len(a) - tokens)
            extra.append({"window_id": next_id, "context": row["context"], "position": int(row["position"]) + s,
                          "token_ids": list(row["token_ids"])[s : s + tokens], "tokens": list(row["tokens"])[s : s + tokens]})
            new_ids.append(next_id)
            cut_acts.append(a[s : s + tokens].tolist())
            next_id += 1
        win = pd.concat([win, pd.DataFrame(extra)[win.columns]], ignore_index=True)
        ex = ex.assign(window_id=new_ids, activations=cut_acts)
    ctx = pd.concat([ctx[~is_ex], ex], ignore_index=True)
    for table, df in ((WINDOWS, win), (CONTEXTS, ctx)):  # keep the mining run's stamp: the scratch run stays valid
        write_table(table, work / table.name, df, run_stamp(work / table.name))


def legacy_mode() -> None:
    """The behaviour before issue 15: (coder, latent) order, no guessed answer tokens."""
    from interp_eval.llm.backends import local_backend
    from interp_eval.scoring import run_llm

    run_llm.prefix_order = lambda jobs: sorted(jobs, key=lambda sj: (sj[1].tests.coder, sj[1].tests.latent))
    local_backend.Drafts.guess = lambda self, *args, **kwargs: []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=ROOT / "runs" / "demo", help="a mined run (its mining tables are copied)")
    ap.add_argument("--latents", type=int, default=5, help="first N live latents of each coder")
    ap.add_argument("--coder", action="append", default=None, help="only these coders (repeatable; default: all)")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: its choice)")
    ap.add_argument("--legacy", action="store_true", help="the call order and decoding before issue 15")
    ap.add_argument("--explain-windows", type=int, default=None, help="keep K explanation windows a latent (scratch copy)")
    ap.add_argument("--explain-tokens", type=int, default=None, help="cut explanation windows to T tokens (scratch copy)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the scratch run here (to re-score it later)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    args = ap.parse_args()
    os.environ.setdefault("INTERP_EVAL_PROGRESS", "0")
    logging.basicConfig(level=logging.WARNING)

    from interp_eval.explain.stage import run_explain_stage
    from interp_eval.llm.backends import local_backend
    from interp_eval.scoring import run_score_stage
    from scorer_power import pooled_power

    if args.legacy:
        legacy_mode()
    preset = get_preset("demo")
    coders = tuple(args.coder) if args.coder else None
    explain_cfg = replace(preset.explain, latents=args.latents, coders=coders)
    detection_cfg = replace(preset.score, scorers=("detection",), latents=args.latents, coders=coders)
    free_cfg = replace(preset.free_score, latents=args.latents, coders=coders, explainers=("llm",), freq_adjust=False)

    with tempfile.TemporaryDirectory(prefix="offline-throughput-") as scratch:
        work = args.keep or Path(scratch) / "run"
        work.mkdir(parents=True, exist_ok=True)
        for entry in COPIED:
            if (args.run / entry.name).exists():
                shutil.copy2(args.run / entry.name, work / entry.name)
        if args.explain_windows or args.explain_tokens:
            shrink_explain_windows(work, args.explain_windows, args.explain_tokens)
        llm_cfg = LLMConfig(model=None, cache_path=Path(scratch) / "llm_cache.sqlite", progress=False, local_threads=args.threads)
        times: dict[str, float] = {}
        loads: dict[str, str] = {}

        t = time.perf_counter()
        local_backend.load_model(local_backend.packaged_model_path(), llm_cfg.local_n_ctx, False, args.threads)
        times["model load (once)"] = time.perf_counter() - t
        stats: dict[str, dict] = {}

        def stage(name: str, fn, *a):
            before = dict(local_backend.STATS)
            loads[name] = load()
            t0 = time.perf_counter()
            out = fn(*a)
            times[name] = time.perf_counter() - t0
            loads[name] += " -> " + load().split(" ", 1)[1]
            stats[name] = {k: local_backend.STATS[k] - before[k] for k in before}
            return out

        ex = stage("explain", run_explain_stage, work, explain_cfg, llm_cfg)
        det = stage("detection + control", run_score_stage, work, detection_cfg, llm_cfg)
        stage("embedding scorers", run_score_stage, work, free_cfg)

        rd = RunDir(work)
        n = int(rd.read(EXPLANATIONS, columns=["parse_ok"])["parse_ok"].sum())
        pred = rd.read(PREDICTIONS, columns=["scorer", "control"])
        scores = rd.read(LATENT_SCORES)
        windows = int((pred["scorer"] == "detection").sum())

    work_s = times["explain"] + times["detection + control"] + times["embedding scorers"]
    per_hour = 3600 * n / work_s
    print(f"offline default, {n} latents ({args.latents} a coder) of {args.run}, threads {args.threads or 'one a physical core (%d)' % local_backend.physical_cores()}"
          f"{', LEGACY (before issue 15)' if args.legacy else ''}"
          + (f", explanation windows {args.explain_windows or 'all'} cut to {args.explain_tokens or 'whole'} tokens"
             if args.explain_windows or args.explain_tokens else ""))
    print(f"  {per_hour:.0f} latents/hour ({work_s / n:.1f} s a latent; {work_s:.0f} s in all, model load {times['model load (once)']:.1f} s apart)")
    for name in ("explain", "detection + control", "embedding scorers"):
        s = stats.get(name, {})
        extra = ""
        if s.get("calls"):
            extra = (f"; {s['calls']} calls, prompt tokens {s['prompt_tokens']:,} of which {s['reused_tokens']:,} kept in the KV "
                     f"cache ({s['reused_tokens'] / max(1, s['prompt_tokens']):.0%}), {s['evaluated_tokens']:,} evaluated, "
                     f"{s['passes']:,} forward passes, answer tokens {s['answer_tokens']:,}, guessed {s['guessed']:,} of which "
                     f"{s['guess_hits']:,} kept")
        per = f"{times[name] / n:.2f} s a latent" + (f", {times[name] / windows:.3f} s a window" if name.startswith("detection") else "")
        print(f"  {name:<20} {times[name]:7.1f} s  {per}  [{loads[name]}]{extra}")
    print(f"  explained {ex['explained']} of {ex['selected']} (failed {ex['failed']}); detection windows {windows} "
          f"(own + shuffled control), parse failures {det['window_failures']['parse']}")
    rows = []
    for scorer in ("detection", "embedding", "example-embedding"):
        p = pooled_power(scores, scorer, "auc")
        rows.append({"scorer": scorer, "own AUC": p.own, "shuffled AUC": p.control, "power": p.power,
                     "95% CI": f"[{p.ci_low:+.3f}, {p.ci_high:+.3f}]", "latents": p.latents, "has power": p.has_power})
    print("power, pooled over coders (own explanation - shuffled, paired per latent):")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:+.3f}" if abs(v) < 0.5 else f"{v:.3f}"))
    if args.json:
        args.json.write_text(json.dumps({"latents": n, "latents_per_hour": per_hour, "seconds": times, "loads": loads,
                                         "stats": stats, "power": rows, "args": {k: str(v) for k, v in vars(args).items()}}, indent=1))


if __name__ == "__main__":
    main()
