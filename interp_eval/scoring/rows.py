"""predictions.parquet as the runners write it: part files as jobs finish, and the columns every row shares."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa

from ..artifacts import RunDir
from ..catalog import PREDICTIONS, SCORE_KEY, SCORE_PARTS
from ..parts import PartedTable
from .config import ScoreConfig
from .jobs import explanation_sha
from .registry import Job

KEY = list(SCORE_KEY)


def predictions_table(rd: RunDir) -> PartedTable:
    """predictions.parquet, written in part files as jobs finish (the resume granularity)."""
    return PartedTable(rd, PREDICTIONS, tuple(KEY), SCORE_PARTS)


def load_predictions(rd: RunDir) -> pd.DataFrame:
    """predictions.parquet plus any part files (from this run or a crashed one); for each key the newest rows win."""
    df = predictions_table(rd).read()
    df["source_latent"] = df["source_latent"].fillna(df["latent"])  # rows from before controls: their own latent
    return df


def to_table(df: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    df = df[[f.name for f in schema]]
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def base_row(job: Job, scorer_name: str, model: str, version: str, wpp: int | None, cfg: ScoreConfig) -> dict:
    t = job.tests
    return {
        "coder": t.coder, "latent": t.latent, "scorer": scorer_name, "explainer": job.explainer, "control": job.control,
        "source_latent": job.source_latent if job.source_latent is not None else t.latent, "model": model,
        "prompt_version": version, "explanation_sha": explanation_sha(t.explanation), "windows_per_prompt": wpp, "seed": cfg.seed,
    }


ROW_DEFAULTS = {"prediction": None, "probability": None, "similarity": None, "answer": None, "parse_ok": True, "failure": None,
                 "attempts": 0, "prompt_index": None, "position": None, "quantile": None, "simulated": None, "actual": None}
