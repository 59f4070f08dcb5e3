"""Helpers for tests/test_mining.py: tiny coders, a brute-force reference, a torchrun entry point.

Run as a script (under torchrun) it mines a run directory: `python tests/mining_helpers.py RUN EXTRA`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from oracles import dense_activations

MODEL_NAME = "smollm2-135m-instruct"

# small enough for a few seconds on 2 CPU cores: 16 contexts, 128 windows, 4 batches
MINE_KW = dict(
    tokens=4096, batch_contexts=4, window=32, n_top=5, n_explain=8, n_test=10, n_negative=10,
    reservoir=30, negative_pool=40, min_examples=20, seed=3, device="cpu", checkpoint_every=2,
)
DEAD = [0, 1, 2, 3]  # latents of sae0 that can never fire


def make_run_coders(run: Path) -> None:
    """Two of our coders in RUN/coders: a TopK SAE at layers.0.mlp and a binary skip transcoder at layers.1.mlp."""
    from interp_eval.coders.coder import CoderConfig, SparseCoder
    from interp_eval.coders.saelens import save_coder

    sae = SparseCoder(CoderConfig("sae", "topk", 576, 128, 8, hookpoint="layers.0.mlp", model_name=MODEL_NAME), seed=1)
    with torch.no_grad():
        sae.b_enc[DEAD] = -1e4
    save_coder(sae, run / "coders" / "sae0")
    btc = SparseCoder(CoderConfig("transcoder", "binary", 576, 128, 8, hookpoint="layers.1.mlp", model_name=MODEL_NAME), seed=2)
    save_coder(btc, run / "coders" / "btc1")


def make_saelens_sae(folder: Path) -> None:
    """A standard ReLU SAE built and saved by sae-lens itself, with TransformerLens hook naming."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(0)
    meta = SAEMetadata(model_name="HuggingFaceTB/SmolLM2-135M-Instruct", hook_name="blocks.0.hook_mlp_out")
    sae = StandardSAE(StandardSAEConfig(d_in=576, d_sae=32, metadata=meta))
    with torch.no_grad():
        sae.b_enc.fill_(-3.0)
        sae.b_enc[5] = -1e4  # dead
    sae.save_model(folder)


def brute_force(subject, coder, kw: dict = MINE_KW) -> dict[str, np.ndarray]:
    """Dense activations of every token, straight from the coder, batch by batch as the stage does."""
    from interp_eval.subject.corpus import CorpusConfig, take_contexts
    from interp_eval.subject.hookpoints import capture

    ctxs = take_contexts(CorpusConfig(), subject.tokenizer, "heldout", kw["tokens"])
    dense = []
    for i in range(0, len(ctxs), kw["batch_contexts"]):
        cap = capture(subject, ctxs[i : i + kw["batch_contexts"]], [coder.hookpoint])
        x = cap.read(coder.hookpoint, coder.site).reshape(-1, coder.d_in)
        with torch.no_grad():
            d = dense_activations(coder.ours, x) if coder.ours is not None else coder.dense(x)
        dense.append(d.float())
    acts = torch.cat(dense).numpy()  # [tokens, L]
    n_ctx, ctx_len = ctxs.shape
    w = kw["window"]
    win = acts.reshape(n_ctx, ctx_len // w, w, -1).reshape(-1, w, acts.shape[1])  # [windows, w, L]
    return {
        "acts": acts,
        "windows": win,
        "window_max": win.max(1),  # [windows, L]
        "token_ids": ctxs.reshape(-1, w).numpy(),
    }


def _torchrun_main(run: str, extra: str) -> None:
    import logging

    from interp_eval.mining import MineConfig, run_mine_stage

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    run_mine_stage(run, MineConfig(coders=(extra,), **MINE_KW))
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    _torchrun_main(sys.argv[1], sys.argv[2])
