"""The example-embedding scorer (no LLM, no explanation): do a latent's activating windows resemble each other?

The reference is the latent's explanation windows (activating, `split == "explain"`); the test set is
its held-out activating test windows (label 1) and its non-activating test windows (label 0), never
an explanation window. Each test window's score is its mean cosine similarity (MiniLM embeddings of
the un-highlighted text) to the reference windows; per latent the score is the AUC of activating vs
non-activating test windows.

The raw AUC is biased (activating windows of any latent are not random text), so it is measured
against the shuffled control: the same test windows scored against another latent's reference
windows (a seeded derangement, controls.py). Power = own - shuffled.

Windows are embedded once per run (embedding.WindowEmbeddings) and shared by every latent and coder,
which makes this cheap enough to run on every live latent. Written from the design of delphi's
ExampleEmbeddingScorer and arXiv 2507.08473, not from their code.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .embedding import MiniLMScorer, WindowEmbeddings
from .registry import LIVE, Job, register_scorer


@register_scorer
class ExampleEmbedding(MiniLMScorer):
    name = "example-embedding"
    description = "similarity of held-out windows to the latent's explanation windows (MiniLM); AUC, no explanation"
    needs_explanation = False
    latents = LIVE

    def score(self, jobs: Sequence[Job], context) -> list[list[dict]]:
        emb: WindowEmbeddings = context.embeddings
        out = []
        for job in jobs:
            ws = job.tests.windows
            if not ws or not job.reference:
                out.append([])
                continue
            centre = emb.get(list(job.reference)).mean(axis=0)
            sims = emb.get([w.window_id for w in ws]) @ centre
            out.append([{"window_id": w.window_id, "label": w.label, "quantile": w.quantile, "similarity": float(s)}
                        for w, s in zip(ws, np.asarray(sims, dtype=np.float64))])
        return out
