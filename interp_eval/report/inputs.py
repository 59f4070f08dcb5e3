"""Reading a run directory for the report: every artifact optional, each absence recorded as a note.

Every table is read through the catalog (catalog.py), so its columns are there and of their type: the
report checks no column. Small tables (recon_eval, latents, explanations, scores, summaries, the LLM
ledger) are read whole. The big ones (contexts, windows, predictions) are read later, filtered to the
latents the feature browser shows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..artifacts import RunDir
from ..catalog import (
    CONTROL_NONE, EXPLAINER_LLM, EXPLANATIONS, LATENT_SCORES, LATENTS, LLM_USAGE, NO_EXPLAINER, PREDICTIONS, RECON_EVAL,
    SCORE_BY_FREQUENCY, SCORE_BY_QUANTILE, SCORE_SUMMARY, TRAIN_METRICS, Table,
)
from ..errors import UserError

TYPES = ("SAE", "BAE", "TC", "BTC")
_TYPE_OF = {("sae", "topk"): "SAE", ("sae", "binary"): "BAE", ("transcoder", "topk"): "TC", ("transcoder", "binary"): "BTC"}
_FAMILY = {"SAE": "sae", "BAE": "sae", "TC": "transcoder", "BTC": "transcoder"}


def type_from_name(name: str) -> str | None:
    """SAE/BAE/TC/BTC from a coder name's prefix (`btc-...`, `bae...`), or None."""
    m = re.match(r"(btc|bae|tc|sae)(?![a-z])", str(name).lower())
    return m.group(1).upper() if m else None


def coder_type(kind: object, activation: object, name: str) -> str | None:
    """The coder type from recon_eval's kind + activation, else from the name prefix."""
    t = _TYPE_OF.get((str(kind).lower(), str(activation).lower()))
    return t or type_from_name(name)


@dataclass
class RunData:
    rd: RunDir
    recon: pd.DataFrame | None = None
    train: pd.DataFrame | None = None
    latents: pd.DataFrame | None = None
    explanations: pd.DataFrame | None = None
    usage: pd.DataFrame | None = None  # the LLM ledger
    scores: pd.DataFrame | None = None
    has_predictions: bool = False
    summary: pd.DataFrame | None = None
    all_summary: pd.DataFrame | None = None  # every scorer x explainer, with power (scorers table)
    by_quantile: pd.DataFrame | None = None
    by_frequency: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    coders: pd.DataFrame = field(default_factory=pd.DataFrame)  # index coder: type ... d_sae, MODEL_COLUMNS

    def has(self, name: str) -> bool:
        return getattr(self, name) is not None and len(getattr(self, name)) > 0


def _optional(rd: RunDir, table: Table, notes: list[str] | None) -> pd.DataFrame | None:
    """The table, or None with a note (unless `notes` is None) on what is left out."""
    if not rd.has(table):
        if notes is not None:
            notes.append(f"{table} not found (written by {table.commands}): the parts built from it are left out")
        return None
    return rd.read(table)


def load_run(run: str | Path) -> RunData:
    rd = RunDir(run)
    if not rd.root.is_dir():
        raise UserError(f"--run {rd.root}: no such run directory")
    notes: list[str] = []
    if not rd.has(RECON_EVAL) and not rd.has(LATENTS):
        raise UserError(f"--run {rd.root}: neither {RECON_EVAL} nor {LATENTS} found: run `interp-eval train` or `interp-eval mine` first")
    data = RunData(rd=rd, notes=notes)
    data.recon = _optional(rd, RECON_EVAL, notes)
    data.train = _optional(rd, TRAIN_METRICS, notes)
    data.latents = _optional(rd, LATENTS, notes)
    data.explanations = _optional(rd, EXPLANATIONS, notes)
    data.scores = _optional(rd, LATENT_SCORES, notes)
    # no notes of their own: the latent_scores note covers the score stage, and by_frequency needs --freq-adjust
    data.summary = _optional(rd, SCORE_SUMMARY, None)
    data.by_quantile = _optional(rd, SCORE_BY_QUANTILE, None)
    data.by_frequency = _optional(rd, SCORE_BY_FREQUENCY, None)
    data.usage = _optional(rd, LLM_USAGE, notes)
    data.has_predictions = rd.has(PREDICTIONS)
    if not data.has_predictions and data.scores is not None:
        notes.append(f"{PREDICTIONS} not found: the feature browser shows no scorer decisions")
    data.all_summary = data.summary
    data.scores = headline_rows(data.scores, scores=True)
    for name in ("summary", "by_quantile", "by_frequency"):
        setattr(data, name, headline_rows(getattr(data, name)))
    data.coders = coder_info(data)
    return data


MODEL_COLUMNS = ("trained_on", "mined_on", "model_mismatch")  # latents.parquet's per-coder models (--allow-model-mismatch)
SHOWN_EXPLAINERS = (EXPLAINER_LLM, NO_EXPLAINER)  # the coder table: LLM explanations and explanation-free scorers


def headline_rows(df: pd.DataFrame | None, scores: bool = False) -> pd.DataFrame | None:
    """The rows the coder table and claims read: of LLM explanations or of no explanation, and (`scores`, the
    per-latent table, the only one that holds control rows) not of a control."""
    if df is None:
        return None
    keep = df["explainer"].isin(SHOWN_EXPLAINERS)
    if scores:
        keep &= df["control"] == CONTROL_NONE
    return df[keep].reset_index(drop=True)


def coder_info(data: RunData) -> pd.DataFrame:
    """One row per coder (index: coder): type, family (sae|transcoder), binary, hookpoint, k, d_sae and, from the
    mining pass, the model it was trained on, the model it was mined on and whether they differ (MODEL_COLUMNS)."""
    rows: dict[str, dict] = {}
    if data.has("recon"):
        for r in data.recon.drop_duplicates("coder", keep="last").to_dict("records"):
            rows[r["coder"]] = {
                "type": coder_type(r["kind"], r["activation"], r["coder"]), "hookpoint": r["hookpoint"], "k": r["k"],
                "d_sae": r["d_sae"], "binary": str(r["activation"]).lower() == "binary",
            }
    if data.has("latents"):
        lat = data.latents
        for coder, g in lat.groupby("coder", sort=False):
            row = rows.setdefault(coder, {})
            if row.get("hookpoint") is None:
                row["hookpoint"] = g["hookpoint"].iloc[0]
            if row.get("binary") is None:
                row["binary"] = bool(g["binary"].iloc[0])
            if row.get("d_sae") is None:
                row["d_sae"] = len(g)
            row.update({c: g[c].iloc[0] for c in MODEL_COLUMNS if c in g})  # (a RunData made by hand may lack them)
    for source in ("scores", "explanations", "train"):
        if data.has(source):
            for coder in getattr(data, source)["coder"].unique():
                rows.setdefault(coder, {})
    out = []
    for coder, row in rows.items():
        t = row.get("type") or type_from_name(coder)
        k = row.get("k")
        if k is None or pd.isna(k):
            m = re.search(r"-k(\d+)(?:\D|$)", str(coder))
            k = int(m.group(1)) if m else None
        binary = row.get("binary")
        if binary is None and t is not None:
            binary = t in ("BAE", "BTC")
        out.append({
            "coder": coder, "type": t or "?", "family": _FAMILY.get(t or "", None), "binary": binary,
            "hookpoint": row.get("hookpoint"), "k": None if k is None or pd.isna(k) else int(k),
            "d_sae": None if row.get("d_sae") is None or pd.isna(row.get("d_sae")) else int(row["d_sae"]),
            "trained_on": row.get("trained_on"), "mined_on": row.get("mined_on"),
            "model_mismatch": row.get("model_mismatch") == True,  # noqa: E712 (None or NaN: no mismatch)
        })
    df = pd.DataFrame(out, columns=["coder", "type", "family", "binary", "hookpoint", "k", "d_sae", *MODEL_COLUMNS])
    order = {t: i for i, t in enumerate(TYPES)}
    df["_t"] = df["type"].map(lambda t: order.get(t, 9))
    df["_k"] = df["k"].fillna(-1)
    df = df.sort_values(["hookpoint", "_t", "_k", "coder"], na_position="last").drop(columns=["_t", "_k"])
    return df.set_index("coder")
