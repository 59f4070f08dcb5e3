"""Encoding a JumpReLU SAE's sparse code: sae-lens's `encode` then a top-k of its dense code (the old path) against
our threshold selection (`saelens.jumprelu_sparse`, what `LoadedCoder.encode_sparse` now runs for JumpReLU folders).

A random sae-lens JumpReLU SAE of realistic size is saved and loaded as the stages load it; each latent's threshold is
set at its (1 - fire / d_sae) quantile on calibration rows, so about `--fire` latents fire a row. The two paths are
timed alternately, `--rounds` times, and each one's fastest round counts (the machine may be shared). Prints rows/s
of each and their ratio, after checking that they give the same code.

    python bench/jumprelu_encode.py                              # d_sae 16384 and 36864, 8,192 rows
    python bench/jumprelu_encode.py --d-sae 16384 --rounds 1     # a quick check
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_line, load


def old_encode_sparse(coder, x):
    """The path JumpReLU folders took before: sae-lens's dense encode, then a top-k over the widest row's nonzeros."""
    import torch

    with torch.no_grad():
        dense = coder.dense(x).float()
        width = max(1, int((dense != 0).sum(-1).max().item()))
        return torch.topk(dense, width, dim=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-in", type=int, default=576)
    ap.add_argument("--d-sae", type=int, nargs="+", default=[16_384, 36_864])
    ap.add_argument("--rows", type=int, default=8_192)
    ap.add_argument("--fire", type=float, default=80, help="latents firing a row, on average")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig

    from interp_eval.coders.saelens import load_coder

    torch.set_num_threads(args.threads)
    print(f"{cpu_line()}; {args.threads} threads; load {load()}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.rows, args.d_in, generator=g)
    for d_sae in args.d_sae:
        sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=args.d_in, d_sae=d_sae))
        with torch.no_grad():
            sae.W_enc.normal_(0, args.d_in**-0.5, generator=g)
            sae.b_enc.normal_(0, 0.1, generator=g)
            sae.b_dec.normal_(0, 0.1, generator=g)
            calib = 4096
            pre = (torch.randn(calib, args.d_in, generator=g) - sae.b_dec) @ sae.W_enc + sae.b_enc
            sae.threshold.copy_(pre.kthvalue(round(calib * (1 - args.fire / d_sae)), dim=0).values)
            del pre
        with tempfile.TemporaryDirectory() as tmp:
            sae.save_model(Path(tmp) / "jumprelu")
            coder = load_coder(Path(tmp) / "jumprelu")
        assert coder.sparse is not None
        new = coder.encode_sparse(x)
        v, i = old_encode_sparse(coder, x)
        same = torch.equal(torch.zeros(args.rows, d_sae).scatter_add_(1, new.indices, new.values),
                           torch.zeros(args.rows, d_sae).scatter_add_(1, i, v))
        nnz = (new.values != 0).sum(1).float()
        best = {"sae-lens encode + top-k": float("inf"), "ours": float("inf")}
        for _ in range(args.rounds):
            for name, fn in (("sae-lens encode + top-k", lambda: old_encode_sparse(coder, x)),
                             ("ours", lambda: coder.encode_sparse(x))):
                t = time.perf_counter()
                fn()
                best[name] = min(best[name], time.perf_counter() - t)
        old, ours = (args.rows / best[k] for k in best)
        print(f"d_in {args.d_in}, d_sae {d_sae:,d}, {args.rows:,d} rows, latents firing a row: mean {nnz.mean():.1f}, "
              f"max {int(nnz.max())}; same code: {same}")
        print(f"  sae-lens encode + top-k: {old:>10,.0f} rows/s   ours: {ours:>10,.0f} rows/s   ratio {ours / old:.2f}x")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
