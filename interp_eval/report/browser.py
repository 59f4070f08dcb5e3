"""The feature browser's data: which latents the page lists, their windows and their scorer decisions.

Per coder the page lists the explained (or scored) latents, up to `max_latents`, plus `extra_latents`
others (the most frequent first, so ultra-high-frequency and too-rare latents are visible too). Each
listed latent carries its top windows, a sample of its explanation/test windows spread over the
activation deciles, and every scorer decision (label vs prediction); the text of at most
`decision_windows` of the decision windows is embedded (wrong answers first), so the page stays
small. Window tokens are stored once per window; activations are stored sparsely as [position, value].
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config_fields import NOT_AN_OPTION, flags
from ..errors import UserError
from ..catalog import CONTEXTS, CONTROL_NONE, KIND_QUANTILE, KIND_TOP, PREDICTIONS, WINDOWS
from .inputs import SHOWN_EXPLAINERS, RunData

SCORE_FIELDS = ("f1", "balanced_accuracy", "precision", "recall", "accuracy", "auc", "n", "failures")


@dataclass
class BrowserConfig:
    max_latents: int = field(default=100, metadata=flags("--browser-latents"))
    """Explained latents per coder listed in the HTML feature browser."""
    extra_latents: int = field(default=10, metadata=flags("--browser-extra"))
    """Other latents per coder listed there (most frequent first)."""
    top_windows: int = field(default=8, metadata=NOT_AN_OPTION)
    """Top-activating windows shown per latent."""
    sample_windows: int = field(default=8, metadata=NOT_AN_OPTION)
    """Windows of the explanation sample shown per latent."""
    decision_windows: int = field(default=12, metadata=NOT_AN_OPTION)
    """Decision windows per latent whose text is embedded (wrong answers first)."""

    def __post_init__(self):
        if self.max_latents < 0 or self.extra_latents < 0:
            raise UserError("--browser-latents and --browser-extra must be >= 0")


def _num(v, digits: int = 4):
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    if math.isnan(f) or math.isinf(f):
        return None
    return float(f"{f:.{digits}g}")


def _int(v):
    return None if v is None or pd.isna(v) else int(v)


def _sparse(acts) -> list[list]:
    a = np.asarray(acts if acts is not None else [], dtype=np.float64)
    nz = np.flatnonzero(a)
    return [[int(i), _num(a[i], 3)] for i in nz]


def _decisions(p: pd.DataFrame | None, n_text: int) -> tuple[dict, dict, list[int]]:
    """The latent's test windows once ({window, label, quantile}), each scorer's answers aligned with them
    ({scorer: {prediction, probability, similarity, failure}}, all-null fields left out), and the windows whose
    text to embed: wrong or missing answers first, then activating windows, up to `n_text`."""
    if p is None or p.empty:
        return {"window": [], "label": [], "quantile": []}, {}, []
    p = p.sort_values(["label", "window_id"], ascending=[False, True])
    first = p.drop_duplicates("window_id")
    order = {int(w): i for i, w in enumerate(first["window_id"])}
    tests = {"window": [int(w) for w in first["window_id"]], "label": [_int(v) for v in first["label"]],
             "quantile": [_int(v) for v in first["quantile"]]}
    if all(q is None for q in tests["quantile"]):
        del tests["quantile"]
    decisions: dict[str, dict[str, list]] = {}
    wrong: set[int] = set()
    for scorer, g in p.groupby("scorer", sort=True):
        cols = {f: [None] * len(order) for f in ("prediction", "probability", "similarity", "failure")}
        for d in g.to_dict("records"):
            i = order[int(d["window_id"])]
            pred = _int(d.get("prediction"))
            cols["prediction"][i] = pred
            cols["probability"][i] = _num(d.get("probability"), 3)
            cols["similarity"][i] = _num(d.get("similarity"), 3)
            cols["failure"][i] = d.get("failure") if isinstance(d.get("failure"), str) else None
            if scorer != "embedding" and (pred is None or pred != _int(d.get("label"))):
                wrong.add(int(d["window_id"]))
        decisions[str(scorer)] = {f: v for f, v in cols.items() if any(x is not None for x in v)}
    ranked = sorted(tests["window"], key=lambda w: (w not in wrong, -(tests["label"][order[w]] or 0), order[w]))
    return tests, decisions, ranked[:n_text]


def select_latents(data: RunData, cfg: BrowserConfig) -> pd.DataFrame:
    """The (coder, latent) pairs to list, with a `why` column: explained (explained or scored) | other."""
    keys: list[dict] = []
    explained = set()
    if data.has("explanations"):
        explained |= set(zip(data.explanations["coder"], data.explanations["latent"].astype(int)))
    if data.has("scores"):
        explained |= set(zip(data.scores["coder"], data.scores["latent"].astype(int)))
    lat = data.latents if data.has("latents") else None
    for coder in data.coders.index:
        mine = sorted(x for c, x in explained if c == coder)[: cfg.max_latents]
        keys += [{"coder": coder, "latent": x, "why": "explained"} for x in mine]
        if lat is not None and cfg.extra_latents > 0:
            others = lat[(lat["coder"] == coder) & ~lat["latent"].astype(int).isin(mine)]
            others = others.sort_values(["frequency", "latent"], ascending=[False, True]).head(cfg.extra_latents)
            keys += [{"coder": coder, "latent": int(x), "why": "other"} for x in others["latent"]]
    return pd.DataFrame(keys, columns=["coder", "latent", "why"])


def _keep_pairs(df: pd.DataFrame, chosen: set[tuple[str, int]]) -> pd.DataFrame:
    if df.empty:
        return df
    mask = [(c, int(l)) in chosen for c, l in zip(df["coder"], df["latent"])]
    return df[np.asarray(mask, dtype=bool)]


def _spread(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """n rows spread evenly over `rows` (already ordered)."""
    if len(rows) <= n:
        return rows
    idx = np.unique(np.linspace(0, len(rows) - 1, n).round().astype(int))
    return rows.iloc[idx]


def build_browser(data: RunData, cfg: BrowserConfig) -> tuple[dict, list[str]]:
    """The browser payload and notes on what it leaves out."""
    notes: list[str] = []
    sel = select_latents(data, cfg)
    chosen = set(zip(sel["coder"], sel["latent"].astype(int)))
    coders = sorted({c for c, _ in chosen})
    ids = sorted({l for _, l in chosen})

    lat_info = {}
    if data.has("latents"):
        for r in _keep_pairs(data.latents, chosen).to_dict("records"):
            lat_info[(r["coder"], int(r["latent"]))] = r
    expl = {}
    if data.has("explanations"):
        for r in data.explanations.drop_duplicates(["coder", "latent"], keep="last").to_dict("records"):
            expl[(r["coder"], int(r["latent"]))] = r
    scores: dict[tuple[str, int], dict] = {}
    if data.has("scores"):
        for r in _keep_pairs(data.scores, chosen).to_dict("records"):
            scores.setdefault((r["coder"], int(r["latent"])), {})[r["scorer"]] = {f: _num(r[f]) for f in SCORE_FIELDS}

    ctx = pd.DataFrame()
    rd = data.rd
    if rd.has(CONTEXTS) and chosen:
        ctx = _keep_pairs(rd.read(CONTEXTS, where={"coder": coders, "latent": ids}), chosen)
    elif chosen:
        notes.append(f"{CONTEXTS} not found: the feature browser shows no windows")
    preds = pd.DataFrame()
    if data.has_predictions and chosen:
        cols = ["coder", "latent", "scorer", "window_id", "label", "prediction", "probability", "similarity", "quantile", "parse_ok", "failure"]
        where = {"coder": coders, "latent": ids, "control": [CONTROL_NONE], "explainer": SHOWN_EXPLAINERS}
        preds = _keep_pairs(rd.read(PREDICTIONS, columns=cols, where=where), chosen)

    by_latent_ctx = {k: g for k, g in ctx.groupby(["coder", "latent"])} if len(ctx) else {}
    by_latent_pred = {k: g for k, g in preds.groupby(["coder", "latent"])} if len(preds) else {}
    needed_windows: set[int] = set()
    latents_out = []
    for r in sel.to_dict("records"):
        key = (r["coder"], int(r["latent"]))
        li, ex = lat_info.get(key, {}), expl.get(key, {})
        g = by_latent_ctx.get(key, pd.DataFrame(columns=["kind", "split", "rank", "quantile", "window_id", "activations"]))
        acts = {int(w): a for w, a in zip(g["window_id"], g["activations"])}
        top = g[g["kind"] == KIND_TOP].sort_values("rank").head(cfg.top_windows)
        samp = g[g["kind"] == KIND_QUANTILE].sort_values(["quantile", "split", "rank"], ascending=[False, True, True], na_position="last")
        samp = _spread(samp, cfg.sample_windows)
        tests, decisions, text_windows = _decisions(by_latent_pred.get(key), cfg.decision_windows)
        shown = [int(w) for w in top["window_id"]] + [int(w) for w in samp["window_id"]] + text_windows
        needed_windows.update(shown)
        latents_out.append({
            "coder": r["coder"], "latent": int(r["latent"]), "listed": r["why"],
            "status": li.get("status"), "frequency": _num(li.get("frequency")), "firing_count": _int(li.get("firing_count")),
            "n_windows": _int(li.get("n_windows")), "max_activation": _num(li.get("max_activation")),
            "explanation": ex.get("explanation") if isinstance(ex.get("explanation"), str) else None,
            "explain_failure": ex.get("failure") if isinstance(ex.get("failure"), str) else None,
            "scores": scores.get(key, {}),
            "top": [int(w) for w in top["window_id"]],
            "sampled": [{"window": int(w), "split": s, "quantile": _int(q)}
                        for w, s, q in zip(samp["window_id"], samp["split"], samp["quantile"])],
            "tests": tests,
            "decisions": decisions,
            "acts": {str(w): _sparse(acts.get(w)) for w in dict.fromkeys(shown) if w in acts},
        })
    windows = {}
    if needed_windows:
        if rd.has(WINDOWS):
            win = rd.read(WINDOWS, columns=["window_id", "tokens"], where={"window_id": sorted(needed_windows)})
            windows = {str(int(w)): [str(t) for t in toks] for w, toks in zip(win["window_id"], win["tokens"])}
        else:
            notes.append(f"{WINDOWS} not found: the feature browser shows no window text")
    n_listed = {c: int((sel["coder"] == c).sum()) for c in data.coders.index}
    total = data.latents.groupby("coder").size().to_dict() if data.has("latents") else {}
    capped = [f"{c}: {n_listed[c]} of {total[c]}" for c in data.coders.index if c in total and n_listed[c] < total[c]]
    if capped:
        notes.append(f"The feature browser lists the explained latents (up to {cfg.max_latents} per coder) and "
                     f"{cfg.extra_latents} others per coder, most frequent first ({'; '.join(capped)}); "
                     "use --browser-latents / --browser-extra to list more.")
    info = data.coders.reset_index()
    payload = {
        "coders": [{"name": r["coder"], "type": r["type"], "binary": None if r["binary"] is None or pd.isna(r["binary"]) else bool(r["binary"]),
                    "hookpoint": r["hookpoint"], "k": _int(r["k"])} for r in info.to_dict("records")],
        "latents": latents_out,
        "windows": windows,
    }
    return payload, notes
