"""Is training the same in every process? Train one coder several times from one activation cache, each in a fresh
process, and print each run's weights hash and the first step whose training FVU differs from a reference run's.

    python bench/train_determinism.py RUN/activations/train-<key>/layers.9.mlp --coder btc --runs 2
    python bench/train_determinism.py ... --reference RUN/train_metrics.parquet --name btc-layers.9.mlp-k32
    python bench/train_determinism.py ... --threads 1 2        # does the thread count change the result?

The settings are the demo's (expansion 8, k 32, 300k tokens, batch 1024, Signum). README, "The demo", has what it
found: the same hash in every fresh process at 2 threads, another from step 48 on at 1 thread.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

ONE_RUN = r"""
import hashlib, json, sys, tempfile, torch
from interp_eval.subject.activations import ActivationCache
from interp_eval.coders.train import TrainConfig, train_coder
folder, coder, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
cfg = TrainConfig(coder=coder, hookpoint="layers.9.mlp", k=32, expansion=8, tokens=300_000, batch_size=1024,
                  optimizer="signum", checkpoint_every=10**9)
trained, rows, _ = train_coder(tempfile.mkdtemp(), cfg, ActivationCache(folder), "m", torch.device("cpu"), resume=False)
h = hashlib.sha256()
for _, v in sorted(trained.state_dict().items()):
    h.update(v.contiguous().numpy().tobytes())
print(json.dumps({"hash": h.hexdigest()[:16], "fvu": [r["fvu"] for r in rows]}))
"""


def first_difference(a: list[float], b: list[float]) -> int | None:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache", help="an activation cache folder: RUN/activations/train-<key>/<hookpoint>")
    ap.add_argument("--coder", default="btc")
    ap.add_argument("--runs", type=int, default=2, help="fresh processes per thread count")
    ap.add_argument("--threads", type=int, nargs="+", default=[2])
    ap.add_argument("--reference", default=None, help="a train_metrics.parquet to compare each run's per-step FVU with")
    ap.add_argument("--name", default=None, help="the coder's name in --reference")
    args = ap.parse_args()
    ref = None
    if args.reference:
        import pandas as pd

        m = pd.read_parquet(args.reference)
        ref = m[m["coder"] == args.name].sort_values("step")["fvu"].tolist()
    first = None
    for threads in args.threads:
        for i in range(args.runs):
            out = subprocess.run([sys.executable, "-c", ONE_RUN, args.cache, args.coder, str(threads)], check=True,
                                 capture_output=True, text=True, cwd=tempfile.gettempdir())
            got = json.loads(out.stdout.strip().splitlines()[-1])
            first = first or got["fvu"]
            line = f"threads {threads} run {i}: weights {got['hash']}, final FVU {got['fvu'][-1]:.9f}, " \
                   f"first step differing from the first run: {first_difference(first, got['fvu'])}"
            if ref is not None:
                line += f", from the reference: {first_difference(ref, got['fvu'])}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
