"""Reading a run directory for the report: every artifact optional, each absence recorded as a note.

Small tables (recon_eval, latents, explanations, scores, summaries, usage) are read whole. The big
ones (contexts, windows, predictions) are read later, filtered to the latents the feature browser
shows, by `read_filtered`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds

from ..artifacts import RunDir, read_parquet
from ..errors import UserError

RECON_EVAL = "recon_eval.parquet"
TRAIN_METRICS = "train_metrics.parquet"
LATENTS = "latents.parquet"
WINDOWS = "windows.parquet"
CONTEXTS = "contexts.parquet"
EXPLANATIONS = "explanations.parquet"
from ..llm.usage import LLM_USAGE
LATENT_SCORES = "latent_scores.parquet"
PREDICTIONS = "predictions.parquet"
SCORE_SUMMARY = "score_summary.parquet"
SCORE_BY_QUANTILE = "score_by_quantile.parquet"
SCORE_BY_FREQUENCY = "score_by_frequency.parquet"
SCORE_CALLS = "score_calls.parquet"

# which stage writes each optional file, for the notes
_WRITER = {
    RECON_EVAL: "train", TRAIN_METRICS: "train", LATENTS: "mine", EXPLANATIONS: "explain", LLM_USAGE: "explain/score",
    LATENT_SCORES: "score", SCORE_SUMMARY: "score", SCORE_BY_QUANTILE: "score", SCORE_BY_FREQUENCY: "score --freq-adjust",
    SCORE_CALLS: "score",
}

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
    usage: pd.DataFrame | None = None
    scores: pd.DataFrame | None = None
    predictions_path: Path | None = None
    summary: pd.DataFrame | None = None
    all_summary: pd.DataFrame | None = None  # every scorer x explainer, with power (scorers table)
    by_quantile: pd.DataFrame | None = None
    by_frequency: pd.DataFrame | None = None
    score_calls: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    coders: pd.DataFrame = field(default_factory=pd.DataFrame)  # index coder: type, family, binary, hookpoint, k, d_sae

    def has(self, name: str) -> bool:
        return getattr(self, name) is not None and len(getattr(self, name)) > 0


def _optional(rd: RunDir, name: str, notes: list[str], fallback: str | None = None) -> pd.DataFrame | None:
    """The table, or None with a note: what is left out, or (`fallback`) where its numbers come from instead."""
    path = rd.path(name)
    if not path.exists():
        what = fallback or "the parts built from it are left out"
        notes.append(f"{name} not found (written by `interp-eval {_WRITER.get(name, '?')}`): {what}")
        return None
    return read_parquet(path, name)


def load_run(run: str | Path) -> RunData:
    rd = RunDir(run)
    if not rd.root.is_dir():
        raise UserError(f"--run {rd.root}: no such run directory")
    notes: list[str] = []
    if not rd.path(RECON_EVAL).exists() and not rd.path(LATENTS).exists():
        raise UserError(f"--run {rd.root}: neither {RECON_EVAL} nor {LATENTS} found: run `interp-eval train` or `interp-eval mine` first")
    data = RunData(rd=rd, notes=notes)
    data.recon = _optional(rd, RECON_EVAL, notes)
    data.train = _optional(rd, TRAIN_METRICS, notes)
    data.latents = _optional(rd, LATENTS, notes)
    data.explanations = _optional(rd, EXPLANATIONS, notes)
    data.scores = _optional(rd, LATENT_SCORES, notes)
    data.summary = _optional(rd, SCORE_SUMMARY, [])  # no note of its own: the latent_scores note covers the score stage
    data.by_quantile = _optional(rd, SCORE_BY_QUANTILE, notes, "recall by activation quantile is computed from predictions.parquet"
                                 if rd.path(PREDICTIONS).exists() else None)
    data.usage = _optional(rd, LLM_USAGE, notes)
    if rd.path(SCORE_BY_FREQUENCY).exists():  # only with --freq-adjust: no note when absent
        data.by_frequency = read_parquet(rd.path(SCORE_BY_FREQUENCY), SCORE_BY_FREQUENCY)
    if rd.path(SCORE_CALLS).exists():
        data.score_calls = read_parquet(rd.path(SCORE_CALLS), SCORE_CALLS)
    if rd.path(PREDICTIONS).exists():
        data.predictions_path = rd.path(PREDICTIONS)
    elif data.scores is not None:
        notes.append(f"{PREDICTIONS} not found: the feature browser shows no scorer decisions")
    data.all_summary = data.summary
    for name in ("scores", "summary", "by_quantile", "by_frequency"):
        setattr(data, name, headline_rows(getattr(data, name)))
    data.coders = coder_info(data)
    return data


SHOWN_EXPLAINERS = ("llm", "none")  # the coder table: LLM explanations and explanation-free scorers


def headline_rows(df: pd.DataFrame | None) -> pd.DataFrame | None:
    """The rows the coder table and claims read: scores (not control rows) of LLM explanations or no explanation."""
    if df is None:
        return None
    if "control" in df:
        df = df[df["control"] == "none"]
    if "explainer" in df:
        df = df[df["explainer"].isin(SHOWN_EXPLAINERS)]
    return df.reset_index(drop=True)


def coder_info(data: RunData) -> pd.DataFrame:
    """One row per coder (index: coder): type, family (sae|transcoder), binary, hookpoint, k, d_sae."""
    rows: dict[str, dict] = {}
    if data.has("recon"):
        for r in data.recon.drop_duplicates("coder", keep="last").to_dict("records"):
            t = coder_type(r.get("kind"), r.get("activation"), r["coder"])
            rows[r["coder"]] = {
                "type": t, "hookpoint": r.get("hookpoint"), "k": r.get("k"), "d_sae": r.get("d_sae"),
                "binary": str(r.get("activation")).lower() == "binary" if "activation" in r else None,
            }
    if data.has("latents"):
        lat = data.latents
        for coder, g in lat.groupby("coder", sort=False):
            row = rows.setdefault(coder, {})
            if row.get("hookpoint") is None and "hookpoint" in g:
                row["hookpoint"] = g["hookpoint"].iloc[0]
            if row.get("binary") is None and "binary" in g:
                row["binary"] = bool(g["binary"].iloc[0])
            if row.get("d_sae") is None:
                row["d_sae"] = len(g)
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
        })
    df = pd.DataFrame(out, columns=["coder", "type", "family", "binary", "hookpoint", "k", "d_sae"])
    order = {t: i for i, t in enumerate(TYPES)}
    df["_t"] = df["type"].map(lambda t: order.get(t, 9))
    df["_k"] = df["k"].fillna(-1)
    df = df.sort_values(["hookpoint", "_t", "_k", "coder"], na_position="last").drop(columns=["_t", "_k"])
    return df.set_index("coder")


def read_filtered(path: Path, what: str, columns: list[str] | None = None, **equals) -> pd.DataFrame:
    """Read a Parquet file keeping only rows whose columns lie in the given value sets (pushed down to the scan)."""
    try:
        dataset = ds.dataset(path, format="parquet")
        names = set(dataset.schema.names)
        cond = None
        for col, values in equals.items():
            if col not in names:
                continue
            c = ds.field(col).isin(list(values))
            cond = c if cond is None else cond & c
        cols = [c for c in columns if c in names] if columns else None
        return dataset.to_table(columns=cols, filter=cond).to_pandas()
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path} (run the stage that writes it first)") from None
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise UserError(f"{what} is not a readable Parquet file: {path} ({type(exc).__name__}: {exc})") from exc
