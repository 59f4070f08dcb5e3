"""What the result exports (neuronpedia.py, delphi.py) read about a run besides its tables: run.json's mining
settings, each coder's cfg.json, and the explanations the score stage would score.

Everything here is optional input: a run without run.json or without a coder's folder (a coder mined with
`--coder PATH` from elsewhere) still exports, with the fields these would fill left at their defaults.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from ..artifacts import RunDir
from ..catalog import EXPLANATIONS, LATENTS, RUN_JSON


def run_json(rd: RunDir) -> dict[str, Any]:
    path = rd.path(RUN_JSON)
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def mine_settings(rd: RunDir) -> dict[str, Any]:
    """run.json's `mine` stage config: model, tokens, corpus {dataset, ctx_len}, sampling {window, n_quantiles, ...}."""
    return (run_json(rd).get("stages") or {}).get("mine") or {}


def sampling(rd: RunDir) -> dict[str, Any]:
    return mine_settings(rd).get("sampling") or {}


def coder_cfg(rd: RunDir, coder: str) -> dict[str, Any]:
    """The coder folder's cfg.json (SAELens or sparsify), or {} when the run does not hold the folder."""
    path = rd.coder_dir(coder) / "cfg.json"
    try:
        cfg = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, json.JSONDecodeError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def mined_models(rd: RunDir) -> dict[str, str]:
    """coder -> the model its activations were mined from, where latents.parquet records it (`mined_on`)."""
    if "mined_on" not in LATENTS.columns:
        return {}
    lat = rd.read(LATENTS, columns=["coder", "mined_on"]).dropna().drop_duplicates("coder")
    return dict(zip(lat["coder"], lat["mined_on"].astype(str)))


def mismatches(rd: RunDir) -> dict[str, str]:
    """coder -> the model it was trained on, for coders mined on another one (`--allow-model-mismatch`)."""
    if "model_mismatch" not in LATENTS.columns:
        return {}
    lat = rd.read(LATENTS, columns=["coder", "trained_on", "model_mismatch"]).drop_duplicates("coder")
    lat = lat[lat["model_mismatch"].fillna(False).astype(bool)]
    return dict(zip(lat["coder"], lat["trained_on"].fillna("another model").astype(str)))


def coder_model(rd: RunDir, coder: str, mined: dict[str, str] | None = None) -> str | None:
    """The subject model whose activations a coder's latents describe: latents.parquet's `mined_on` (in `mined`),
    else the coder's cfg.json metadata, else the model the run mined."""
    if mined and mined.get(coder):
        return mined[coder]
    meta = coder_cfg(rd, coder).get("metadata") or {}
    ours = ((meta.get("interp_eval") or {}).get("coder") or {}) if isinstance(meta, dict) else {}
    return meta.get("model_name") or ours.get("model_name") or mine_settings(rd).get("model")


def coder_description(rd: RunDir, coder: str) -> dict[str, Any]:
    """kind (sae | transcoder), activation (topk | binary), k, d_in, d_sae of one of our coders (empty for others)."""
    meta = coder_cfg(rd, coder).get("metadata") or {}
    ours = ((meta.get("interp_eval") or {}).get("coder") or {}) if isinstance(meta, dict) else {}
    return {k: ours[k] for k in ("kind", "activation", "k", "d_in", "d_sae") if k in ours}


def slug(text: str) -> str:
    """Lower case letters, digits, '-' and '_' only (Neuronpedia's id alphabet); anything else becomes '-'."""
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9_-]", "-", str(text).lower())).strip("-") or "x"


def explanations(rd: RunDir) -> tuple[pd.DataFrame, list[str]]:
    """The explanations the score stage reads (the last row per coder, latent and explainer, of the current mining
    run), those that exist (not failed); and one line per kind of row left out, with why."""
    if not rd.has(EXPLANATIONS):
        return EXPLANATIONS.empty().to_pandas(), [f"no {EXPLANATIONS.name}: no explanations exported (run `interp-eval explain`)"]
    from ..scoring.stage import read_explanations

    everything = rd.read(EXPLANATIONS).drop_duplicates(["coder", "latent", "explainer"], keep="last")
    current = read_explanations(rd)
    notes = []
    if len(current) < len(everything):
        notes.append(f"{len(everything) - len(current)} explanations of an earlier mining run (re-run `interp-eval explain`)")
    failed = current["explanation"].isna()
    if failed.any():
        notes.append(f"{int(failed.sum())} failed explanations (no text)")
    return current[~failed].reset_index(drop=True), notes


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
