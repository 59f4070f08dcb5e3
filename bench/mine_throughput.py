"""Throughput, overhead and memory of the mine stage.

For each token count, in a fresh subprocess (so peak RSS is that run's own):
  1. the bare forward pass (capture at the coders' hookpoints, stopped after the deepest) over the
     held-out tokens, timed before and after step 2 (the faster counts: the machine may be shared);
     with random-model coders among them (`*-randmodel`), the random model's pass as well, as the
     mining loop makes both;
  2. the full mine stage over the same tokens (forward + encoding + bookkeeping + writing), timed,
     with its own split of forward vs encoding/bookkeeping time.
Prints tokens/s, the time encoding + bookkeeping add as a share of the forward pass (timed inside the
mining loop, and timed bare), the whole mining loop over the bare forward pass (which also carries
any difference between the two forward timings), and peak RSS.

    python bench/mine_throughput.py                       # 100k and 1M tokens, layers.9.mlp, sae + bae x8
    python bench/mine_throughput.py --tokens 16384 65536  # a quick check
    python bench/mine_throughput.py --hookpoint layers.0.mlp --no-bare --tokens 100000 1000000  # memory only

Coders are random-weight by default: one per --kinds entry, expansion --expansion, k --k, at
--hookpoint. Training changes the encoders' cost a little (their bf16-candidate selection proves
most rows with fewer candidates on trained coders, see interp_eval/coders/topk.py): --coders
RUN/coders mines trained coders instead (e.g. runs/demo/coders after `make demo`). The packaged
corpus has ~311k held-out tokens; above that the benchmark treats every document as held out
(--heldout-fraction 1.0, ~1M tokens), which only the benchmark does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from machine import cpu_line, load

os.environ.setdefault("INTERP_EVAL_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# every part of the stage's time, as run_mine_stage reports it (untimed_s: what no timer saw)
PARTS = ["set_up_s", "output_tokens_s", "data_s", "forward_s", "encode_s", "bookkeeping_s", "checkpoint_s", "write_s"]


def make_coders(run: Path, kinds: list[str], hookpoint: str, expansion: int, k: int, model_name: str) -> None:
    from interp_eval.coders.coder import CODER_KINDS, CoderConfig, SparseCoder
    from interp_eval.coders.saelens import save_coder

    for i, short in enumerate(kinds):
        kind, act = CODER_KINDS[short]
        cfg = CoderConfig(kind, act, 576, 576 * expansion, k, hookpoint=hookpoint, model_name=model_name)
        save_coder(SparseCoder(cfg, seed=i), run / "coders" / f"{short}{i}")


def child(args) -> None:
    import torch

    from interp_eval.coders.discover import group_by_subject
    from interp_eval.coders.saelens import load_coder
    from interp_eval.subject.corpus import CorpusConfig, iter_batches, iter_contexts, prefetched
    from interp_eval.subject.hookpoints import capture
    from interp_eval.subject.model import load_subject_model
    from interp_eval.mining import MineConfig, run_mine_stage

    @dataclass(frozen=True)
    class BenchMineConfig(MineConfig):
        """MineConfig over the benchmark's own held-out fraction (the CLI has no such option)."""

        heldout_fraction: float = CorpusConfig.heldout_fraction

        @property
        def corpus(self) -> CorpusConfig:
            return replace(super().corpus, heldout_fraction=self.heldout_fraction)

    torch.set_num_threads(args.threads)
    subject = load_subject_model(args.model, args.device)
    corpus = CorpusConfig(heldout_fraction=args.heldout_fraction)
    run = Path(args.run)
    # the forward passes the mining loop makes: the subject model's, and one per random-model control
    # whose coders are mined with it (e.g. runs/demo/coders' *-randmodel), each to its deepest hookpoint
    groups = group_by_subject([load_coder(p) for p in sorted((run / "coders").iterdir())], subject, False)
    passes = [(g.model(subject), g.hookpoints) for g in groups]
    out = {"tokens_asked": args.child_tokens, "models": len(passes)}
    sync = torch.cuda.synchronize if subject.device.type == "cuda" else (lambda: None)
    asked = MineConfig(batch_contexts=args.batch_contexts, prefetch=args.prefetch)
    batch_contexts, prefetch = asked.batch_for(subject.device), asked.prefetch_for(subject.device)
    out.update(batch_contexts=batch_contexts, prefetch=prefetch)

    def bare() -> tuple[float, int]:
        """The same batches, drawn as the stage draws them, through the same models: what any pass costs."""
        n, t0 = 0, time.perf_counter()
        stream = iter_batches(iter_contexts(corpus, subject.tokenizer, "heldout", args.child_tokens), batch_contexts)
        for batch in prefetched(stream, prefetch):
            batch = batch.to(subject.device, non_blocking=True)
            for model, hookpoints in passes:
                capture(model, batch, hookpoints)
            n += batch.numel()
        sync()
        return time.perf_counter() - t0, n

    if not args.no_bare:  # warm up, then time the bare pass before and after mining; keep the faster
        first = next(iter_batches(iter_contexts(corpus, subject.tokenizer, "heldout", 256 * batch_contexts), batch_contexts))
        for model, hookpoints in passes:
            capture(model, first, hookpoints)
        out["bare_s"], out["bare_tokens"] = bare()
    t0 = time.perf_counter()
    summary = run_mine_stage(
        run, BenchMineConfig(tokens=args.child_tokens, heldout_fraction=corpus.heldout_fraction,
                             batch_contexts=batch_contexts, prefetch=prefetch, checkpoint_every=10**9, force=True),
        subject=subject,
    )
    out["stage_s"] = time.perf_counter() - t0
    if not args.no_bare:
        out["bare_s"] = min(out["bare_s"], bare()[0])
    out.update({k: summary[k] for k in ("tokens", "windows", "elapsed_s", "untimed_s", "writing", *PARTS)})
    from interp_eval.coders import topk as topk_mod

    st = topk_mod.CANDIDATE_STATS
    out["selection"] = "bf16 candidates" if st["rows"] else "dense fp32"
    out["fallback"] = st["fallback_rows"] / st["rows"] if st["rows"] else None
    out["auto"] = [c.summary() for c in topk_mod.AUTO_CHOICES.values()]
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(out), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--hookpoint", default="layers.9.mlp")
    ap.add_argument("--kinds", nargs="+", default=["sae", "bae"], help="coder kinds: sae bae tc btc")
    ap.add_argument("--coders", type=Path, default=None, help="a folder of trained coders to mine instead of random ones")
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch-contexts", type=int, default=None, help="default: the stage's on the device (32 CPU, 256 GPU)")
    ap.add_argument("--prefetch", type=int, default=None, help="default: the stage's on the device (0 CPU, 2 GPU)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="subject model (default: the packaged one), as --model of the stages")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--heldout-fraction", type=float, default=None, help="default: 0.3, or 1.0 above 300k tokens")
    ap.add_argument("--no-bare", action="store_true", help="skip the bare forward pass (memory only)")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    ap.add_argument("--child-tokens", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_tokens:
        child(args)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from interp_eval.subject.model import PACKAGED

    with tempfile.TemporaryDirectory(prefix="mine-bench-") as tmp:
        if args.coders is not None:
            (Path(tmp) / "coders").mkdir()
            for folder in sorted(p for p in args.coders.iterdir() if p.is_dir()):
                (Path(tmp) / "coders" / folder.name).symlink_to(folder.resolve())
            names = sorted(p.name for p in (Path(tmp) / "coders").iterdir())
            what = f"trained, from {args.coders}: {', '.join(names)}"
        else:
            make_coders(Path(tmp), args.kinds, args.hookpoint, args.expansion, args.k, args.model or PACKAGED)
            what = f"random, {', '.join(args.kinds)} at {args.hookpoint}, {576 * args.expansion} latents, k={args.k}"
        batches = f"{args.batch_contexts} x 256 tokens" if args.batch_contexts else "the device's default size"
        print(f"subject model: {args.model or PACKAGED}; coders: {what}; batches of {batches}; device {args.device}, "
              f"{args.threads} threads; {cpu_line()}")
        print(f"load average at start: {load()}")
        results = []
        for n in args.tokens:
            frac = args.heldout_fraction if args.heldout_fraction is not None else (1.0 if n > 300_000 else 0.3)
            cmd = [sys.executable, __file__, "--run", tmp, "--child-tokens", str(n), "--device", args.device,
                   "--threads", str(args.threads), "--heldout-fraction", str(frac)] + (["--no-bare"] if args.no_bare else [])
            cmd += ["--batch-contexts", str(args.batch_contexts)] if args.batch_contexts else []
            cmd += ["--prefetch", str(args.prefetch)] if args.prefetch is not None else []
            cmd += ["--model", args.model] if args.model else []
            proc = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                sys.exit(f"child failed:\n{proc.stderr[-3000:]}")
            r = json.loads(line[0][7:])
            results.append(r)
            extra = r["encode_s"] + r["bookkeeping_s"]
            msg = f"{r['tokens']:>9,d} tokens: stage {r['stage_s']:.1f}s ({r['tokens'] / r['stage_s']:,.0f} tok/s); " \
                  f"in-loop forward {r['forward_s']:.1f}s + encode {r['encode_s']:.1f}s + bookkeeping " \
                  f"{r['bookkeeping_s']:.1f}s (+{100 * extra / r['forward_s']:.1f}% over the in-loop forward)"
            if "bare_s" in r:
                loop = r["forward_s"] + extra
                msg += f"; bare forward ({r['models']} model(s)) {r['bare_s']:.1f}s ({r['bare_tokens'] / r['bare_s']:,.0f} tok/s): " \
                       f"encode + bookkeeping = +{100 * extra / r['bare_s']:.1f}% of it, " \
                       f"mining loop / bare = {loop / r['bare_s']:.3f} (+{100 * (loop / r['bare_s'] - 1):.1f}%)"
            msg += f"; batches of {r['batch_contexts']} contexts, prefetch {r['prefetch']}"
            msg += "; every part of the stage: " + ", ".join(f"{k[:-2]} {r[k]:.2f}s" for k in PARTS + ["untimed_s"])
            msg += f" = {r['elapsed_s']:.2f}s (writing: " + ", ".join(f"{k[:-2]} {v:.2f}s" for k, v in r["writing"].items()) + ")"
            if "bare_s" in r:
                msg += f"; stage / bare = {r['elapsed_s'] / r['bare_s']:.3f}, mining loop with its batches drawn / bare = " \
                       f"{(r['forward_s'] + extra + r['data_s']) / r['bare_s']:.3f}"
            msg += f"; peak RSS {r['peak_rss_mib']:,.0f} MiB"
            sel = r.get("selection", "")
            if r.get("fallback") is not None:
                sel += f", {r['fallback']:.1%} of rows recomputed"
            for au in r.get("auto") or []:
                if au.get("dense_s_per_row"):
                    sel += (f"; auto chose {'candidates' if au['candidates'] else 'dense'} (dense "
                            f"{au['dense_s_per_row'] * 1e6:.1f} vs candidates {au['candidates_s_per_row'] * 1e6:.1f} us/row)")
            msg += f"; encoder selection: {sel}; load average after: {load()}"
            print(msg, flush=True)
        if len(results) >= 2:
            a, b = results[0], results[-1]
            print(f"peak RSS {b['tokens']:,d} vs {a['tokens']:,d} tokens: {b['peak_rss_mib'] / a['peak_rss_mib']:.3f}x")


if __name__ == "__main__":
    main()
