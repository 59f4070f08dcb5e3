"""Each mined coder's output-centric view: per latent, the tokens its decoder row promotes and suppresses
(subject/logit_lens.py), read through the model its coders are mined on (a random-model control's through the
random model). Computed once per mining run, beside the pass: a decoder-rows x vocabulary product per coder (about
a second for 4,608 latents of SmolLM2-135M on 2 CPU cores)."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from ..coders.saelens import LoadedCoder
from ..subject.logit_lens import LogitEffects, logit_effects, vocabulary, why_not, written_site
from ..subject.model import SubjectModel

log = logging.getLogger(__name__)

DISABLED = "mined with --output-tokens 0"


def output_tokens(groups: list[tuple[SubjectModel, list[LoadedCoder]]], k: int) -> dict[str, LogitEffects | str]:
    """{coder name: its latents' LogitEffects, or the one-line reason it has none}."""
    out: dict[str, LogitEffects | str] = {}
    vocab: list[str] | None = None
    for model, coders in groups:
        for c in coders:
            if k == 0:
                out[c.name] = DISABLED
                continue
            site = written_site(model, c.hookpoint, c.site, c.transcoder, c.out_hookpoint)
            reason = why_not(site)
            if reason is not None:
                log.info("mine: %s has no output tokens: %s", c.name, reason)
                out[c.name] = reason
                continue
            if vocab is None:
                vocab = vocabulary(model.tokenizer, int(model.model.get_output_embeddings().weight.shape[0]))
            out[c.name] = logit_effects(model, site, c.decoder(), k, vocab=vocab)
    return out


def output_columns(effects: LogitEffects | str | None, n: int) -> list[pa.Array]:
    """latents.parquet's promotes, promote_logits, suppresses, suppress_logits and output_note for `n` latents."""
    strings, floats = pa.list_(pa.string()), pa.list_(pa.float32())
    if not isinstance(effects, LogitEffects):
        note = effects or DISABLED
        return [pa.nulls(n, strings), pa.nulls(n, floats), pa.nulls(n, strings), pa.nulls(n, floats),
                pa.array([note] * n, pa.string())]

    def lists(rows: np.ndarray) -> pa.Array:
        width = rows.shape[1]
        offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
        return pa.ListArray.from_arrays(offsets, pa.array(rows.reshape(-1).astype(np.float32)))

    return [pa.array(effects.promoted, strings), lists(effects.promoted_logits), pa.array(effects.suppressed, strings),
            lists(effects.suppressed_logits), pa.nulls(n, pa.string())]


__all__ = ["output_columns", "output_tokens"]
