"""Operations a training step dispatches on the GPU's code path, counted on CPU.

At 4,608 latents a training step on a GPU is bound by the host launching its kernels, not by the GPU
(README, "On a GPU"): its time follows the number of operations dispatched. This counts, with a
TorchDispatchMode, every aten operation of one step (forward, loss, backward, the decoder-norm
projection, the optimiser) of each coder kind, with the branches a CUDA step takes forced on CPU: the
chunked sparse products in the GPU's chunk size (`kernels.chunk_elements`), the dense encoder without
the CPU's row blocks or bf16 candidates. Views count too (each costs host time). `--cpu-chunks`
counts with the CPU's chunk size instead, for the difference.

    python bench/train_ops.py                       # 4,608 latents, batch 4,096, k 32
    python bench/train_ops.py --latents 36864 --k 128
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from interp_eval.coders import kernels, topk  # noqa: E402
from interp_eval.coders.coder import CODER_KINDS, CoderConfig, SparseCoder, fvu  # noqa: E402
from interp_eval.coders.optim import Optimizer  # noqa: E402
from interp_eval.coders.train import optimizer_step  # noqa: E402


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_step(kind: str, latents: int, k: int, batch: int, d: int = 576) -> collections.Counter:
    full, act = CODER_KINDS[kind]
    coder = SparseCoder(CoderConfig(full, act, d, latents, k), seed=0)
    opt = Optimizer(coder.parameters(), "adam", 1e-4, 1000, 0)
    x = torch.randn(batch, d)
    for _ in range(2):  # the second step: the optimiser's state exists
        with CountOps() as counter:
            y_hat, _ = coder(x)
            fvu(x, y_hat).backward()
            optimizer_step(coder, opt)
    return counter.ops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latents", type=int, default=4608)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--cpu-chunks", action="store_true", help="the CPU's chunk size, not the GPU's")
    a = ap.parse_args()
    kernels.SPARSE_T_MM = "index_add"  # CUDA has no CSR branch
    topk.ENCODE_PRECISION, topk.ENCODE_CHUNK_ROWS = "fp32", 0
    if not a.cpu_chunks:
        kernels.chunk_elements = lambda device: kernels._CHUNK_ELEMENTS_GPU
    print(f"latents {a.latents}, k {a.k}, batch {a.batch}, chunks of {'CPU' if a.cpu_chunks else 'GPU'} size; "
          f"aten operations one training step dispatches (views included):")
    for kind in ("sae", "bae", "tc", "btc"):
        ops = count_step(kind, a.latents, a.k, a.batch)
        top = ", ".join(f"{n.removeprefix('aten.')} {c}" for n, c in ops.most_common(6))
        print(f"  {kind}: {sum(ops.values())} ({top})")


if __name__ == "__main__":
    main()
