"""Mining throughput at residual-stream and attention hookpoints against the same coders at an MLP hookpoint.

The capture of any site must cost no more than the MLP's: one forward pass, stopped once the last hooked module
has run. For each hookpoint the same coders (random-weight SAE and BAE, same shapes and seeds) are mined over the
same held-out tokens; the hookpoints are timed round-robin, `--rounds` times, and each one's fastest round counts
(the machine may be shared). Prints tokens/s per hookpoint and its ratio to the MLP hookpoint's.

    python bench/mine_hookpoints.py                          # layer 9: mlp, block output, attention, block input
    python bench/mine_hookpoints.py --tokens 16384 --rounds 1  # a quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_line, load
from mine_throughput import make_coders

os.environ.setdefault("INTERP_EVAL_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", type=int, default=9)
    ap.add_argument("--hookpoints", nargs="+", default=None,
                    help="default: layers.L.mlp (the reference), layers.L, layers.L.self_attn, blocks.L.hook_resid_pre")
    ap.add_argument("--tokens", type=int, default=65_536)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--expansion", type=int, default=8)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from interp_eval.mining import MineConfig, run_mine_stage
    from interp_eval.subject.model import PACKAGED, load_subject_model

    torch.set_num_threads(args.threads)
    layer = args.layer
    hookpoints = args.hookpoints or [f"layers.{layer}.mlp", f"layers.{layer}", f"layers.{layer}.self_attn",
                                     f"blocks.{layer}.hook_resid_pre"]
    subject = load_subject_model(None, "cpu")
    print(f"mining {args.tokens:,d} held-out tokens with a random SAE + BAE ({576 * args.expansion} latents, k={args.k}) "
          f"at each hookpoint, {args.rounds} round(s) round-robin; {args.threads} threads; {cpu_line()}")
    print(f"load average at start: {load()}")
    with tempfile.TemporaryDirectory(prefix="mine-hookpoints-") as tmp:
        runs = {}
        for hp in hookpoints:
            runs[hp] = Path(tmp) / hp
            make_coders(runs[hp], ["sae", "bae"], hp, args.expansion, args.k, PACKAGED)
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for hp in hookpoints:
                t0 = time.perf_counter()
                summary = run_mine_stage(runs[hp], MineConfig(tokens=args.tokens, checkpoint_every=10**9, force=True, device="cpu"),
                                         subject=subject)
                best[hp] = min(best.get(hp, float("inf")), time.perf_counter() - t0)
        ref = best[hookpoints[0]]
        for hp in hookpoints:
            rate = summary["tokens"] / best[hp]
            print(f"{hp:<28} {best[hp]:7.1f} s  {rate:9,.0f} tok/s  time / {hookpoints[0]}'s = {best[hp] / ref:.3f}")
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
