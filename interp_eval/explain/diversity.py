"""Explanation diversity per coder and explainer: distinct explanations / explained latents.

A healthy explainer gives different latents different explanations; one that answers many latents
with the same phrase (often a few-shot answer) has low diversity. Two explanations are the same when
their normalised texts are equal (copies.normalise: case, punctuation and spacing ignored).
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from .copies import fewshot_copy, normalise

COLUMNS = ["coder", "explainer", "explained", "distinct", "diversity", "fewshot_copies"]


def diversity(explanations: pd.DataFrame, fewshot: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (coder, explainer): explained, distinct, diversity = distinct / explained, fewshot_copies.

    `explanations` is explanations.parquet as read by `stage.read_explanations` (a frame without an
    `explainer` column counts as `llm`); the last row of each (coder, latent, explainer) counts, and
    only parsed explanations. `fewshot_copies` counts explanations that repeat one of `fewshot`
    (default: the few-shot answers of the current explainer prompt; copies.fewshot_copy).
    """
    if fewshot is None:
        from .prompt import fewshot_explanations

        fewshot = fewshot_explanations()
    df = explanations if "explainer" in explanations else explanations.assign(explainer="llm")
    df = df.drop_duplicates(["coder", "latent", "explainer"], keep="last")
    ok = df["explanation"].notna()
    if "parse_ok" in df:
        ok &= df["parse_ok"].fillna(False).astype(bool)
    rows = []
    for (coder, explainer), g in df[ok].groupby(["coder", "explainer"], sort=True):
        texts = [str(t) for t in g["explanation"]]
        distinct = len({normalise(t) for t in texts})
        rows.append({"coder": coder, "explainer": explainer, "explained": len(texts), "distinct": distinct,
                     "diversity": distinct / len(texts),
                     "fewshot_copies": sum(fewshot_copy(t, fewshot) is not None for t in texts)})
    return pd.DataFrame(rows, columns=COLUMNS)
