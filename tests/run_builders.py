"""Hand-built run directories in the mine stage's Parquet contract, from real corpus tokens.

For testing the LLM stages without a model pass: each latent "fires" on one chosen word, so its
windows, activations and labels are known exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from interp_eval.catalog import CONTEXTS, LATENTS, WINDOWS

WORDS = ["the", "of", "to", "and", "in", "a", "is", "for", "that", "on", "was", "with", "said", "he", "it", "by",
         "as", "at", "be", "has", "have", "from", "are", "but", "his", "not", "will", "an", "which", "its"]


def build_mined_run(run: Path, tokenizer, coders=("sae-x", "bae-x"), n_latents: int = 6, n_explain: int = 8,
                    n_test: int = 10, n_negative: int = 10, window: int = 16, seed: int = 0, rare: int = 1,
                    n_windows: int = 4000, hard_negatives: bool = False) -> dict:
    """Write latents/windows/contexts Parquet; latent i of every coder fires on WORDS[i].

    The last `rare` latents of each coder are marked too_rare. With `hard_negatives`, each latent also gets
    `neighbour_negative` test windows: windows where it does not fire but latent i + 1's word occurs. Returns {"truth": {(coder, latent, window_id): label}}.
    """
    from interp_eval.subject.corpus import CorpusConfig, iter_contexts

    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    cfg = CorpusConfig(ctx_len=window)
    ids = [c.tolist() for _, c in zip(range(n_windows), iter_contexts(cfg, tokenizer, "heldout"))]
    toks = [[tokenizer.decode([t]) for t in w] for w in ids]
    win_rows = {"window_id": [], "context": [], "position": [], "token_ids": [], "tokens": []}
    for i, (w, t) in enumerate(zip(ids, toks)):
        win_rows["window_id"].append(i)
        win_rows["context"].append(i)
        win_rows["position"].append(0)
        win_rows["token_ids"].append(w)
        win_rows["tokens"].append(t)
    pq.write_table(pa.table(win_rows, schema=WINDOWS.schema), run / "windows.parquet")
    rng = np.random.default_rng(seed)
    lat_rows, ctx_rows = [], []
    truth = {}
    for coder in coders:
        binary = coder.startswith("b")
        for latent in range(n_latents):
            word = WORDS[latent]
            acts = [[(1.0 if binary else float(1 + rng.integers(1, 9))) if tok.strip().lower() == word else 0.0 for tok in t] for t in toks]
            pos = [i for i, a in enumerate(acts) if max(a) > 0]
            neg = [i for i, a in enumerate(acts) if max(a) == 0]
            chosen = rng.permutation(pos)[: n_explain + n_test]
            explain, test = chosen[:n_explain], chosen[n_explain:]
            negs = rng.permutation(neg)[:n_negative]
            nxt = WORDS[(latent + 1) % n_latents]
            hard = [i for i in neg if any(tok.strip().lower() == nxt for tok in toks[i])][:n_negative] if hard_negatives else []
            status = "too_rare" if latent >= n_latents - rare else "ok"
            firing = int(sum(sum(a > 0 for a in acts[i]) for i in pos))
            lat_rows.append({"coder": coder, "latent": latent, "hookpoint": "layers.9.mlp", "binary": binary,
                             "firing_count": firing, "n_tokens": len(ids) * window, "frequency": firing / (len(ids) * window),
                             "max_activation": float(max(max(acts[i]) for i in pos)), "n_windows": len(pos), "status": status})
            for kind, split, group, label in (("quantile", "explain", explain, 1), ("quantile", "test", test, 1),
                                              ("random_negative", "test", negs, 0),
                                              ("neighbour_negative", "test", hard, 0)):
                for rank, w in enumerate(group):
                    w = int(w)
                    q = None if binary or kind != "quantile" else rank % 10
                    ctx_rows.append({"coder": coder, "latent": latent, "window_id": w, "kind": kind, "split": split,
                                     "quantile": q, "rank": rank, "activations": acts[w], "max_activation": float(max(acts[w]))})
                    if split == "test":
                        truth[(coder, latent, w)] = label
    pq.write_table(pa.Table.from_pylist(lat_rows, schema=LATENTS.schema), run / "latents.parquet")
    pq.write_table(pa.Table.from_pylist(ctx_rows, schema=CONTEXTS.schema), run / "contexts.parquet")
    return {"truth": truth}
