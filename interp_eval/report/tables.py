"""The report's tables: one row per coder (reconstruction, interpretability, coverage, LLM spend), LLM usage.

Every number comes from a stage's artifact; a missing artifact leaves its columns empty (NaN). The
interpretability figures come from `score_summary.parquet` where it has them and are otherwise
computed here from `latent_scores.parquet` with the score stage's own definitions (mean over
latents with a seeded percentile bootstrap 95% interval; the paper's frequency-weighted F1).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..scoring.aggregate import auc_only
from .inputs import PREDICTIONS, SHOWN_EXPLAINERS, RunData, read_filtered

LLM_SCORERS = ("detection", "fuzzing")
CI_METRICS = ("f1", "balanced_accuracy")
UNIFORM = "uniform"

RECON_COLUMNS = ("fvu", "ce_loss_increase", "l0", "dead_fraction", "uhf_fraction_0.01", "uhf_fraction_0.1")


# -- per-latent values ---------------------------------------------------------------------------------


def scored_latents(data: RunData, scorer: str) -> pd.DataFrame:
    """latent_scores rows of one scorer for latents that got a score, with firing_count/hookpoint filled from latents."""
    if not data.has("scores"):
        return pd.DataFrame(columns=["coder", "latent", "f1", "balanced_accuracy", "auc", "firing_count", "frequency", "hookpoint"])
    s = data.scores[data.scores["scorer"] == scorer].copy()
    if auc_only(scorer):
        s = s[s["auc"].notna()] if "auc" in s else s.iloc[0:0]
    elif "n" in s and "failures" in s:
        s = s[s["n"] > s["failures"]]
    if data.has("latents"):
        extra = [c for c in ("firing_count", "frequency", "hookpoint", "status") if c not in s or s[c].isna().all()]
        if extra:
            s = s.drop(columns=[c for c in extra if c in s]).merge(
                data.latents[["coder", "latent", *[c for c in extra if c in data.latents]]], on=["coder", "latent"], how="left")
    for c in ("f1", "balanced_accuracy", "auc", "firing_count", "frequency"):
        if c not in s:
            s[c] = np.nan
    if "hookpoint" not in s:
        s["hookpoint"] = s["coder"].map(data.coders["hookpoint"]) if len(data.coders) else None
    return s.reset_index(drop=True)


def scorer_metric(scorer: str) -> str:
    """The per-latent metric shown and compared for a scorer: F1 where it makes 0/1 calls on windows, else AUC or accuracy."""
    from ..scoring.registry import get_scorer

    try:
        metrics = get_scorer(scorer).metrics
    except Exception:  # a plugin scorer that is not loaded now
        return "f1"
    return "f1" if "f1" in metrics else metrics[0]


def interpretability_scorers(data: RunData) -> list[str]:
    """Scorers with per-latent scores in this run, the paper's (detection, fuzzing) first."""
    if not data.has("scores"):
        return []
    return sorted(set(data.scores["scorer"]), key=lambda s: (s not in ("detection", "fuzzing"), s))


def bootstrap_mean_ci(values, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float, int]:
    from ..scoring.metrics import bootstrap_mean_ci as boot

    return boot(np.asarray(values, dtype=np.float64), n_boot=n_boot, seed=seed)


def frequency_weighted(scores, counts, groups) -> float:
    from ..scoring.metrics import frequency_weighted as fw

    return fw(np.asarray(scores, dtype=np.float64), np.asarray(counts, dtype=np.float64), list(groups))


# -- per (coder, scorer) ---------------------------------------------------------------------------------

def score_stats(data: RunData) -> pd.DataFrame:
    """Per (coder, scorer): {metric}_mean/_ci_low/_ci_high/_latents for f1, balanced_accuracy, auc; freq_weighted_f1."""
    summ = data.summary if data.has("summary") else None
    rows = []
    scorers = set()
    if data.has("scores"):
        scorers |= set(data.scores["scorer"].unique())
    if summ is not None and "scorer" in summ:
        scorers |= set(summ["scorer"].unique())
    coders = list(data.coders.index)
    for scorer in sorted(scorers):
        per = scored_latents(data, scorer)
        for coder in coders:
            row: dict = {"coder": coder, "scorer": scorer}
            srow = None
            if summ is not None and {"coder", "scorer"} <= set(summ.columns):
                hit = summ[(summ["coder"] == coder) & (summ["scorer"] == scorer)]
                srow = hit.iloc[-1] if len(hit) else None
            g = per[per["coder"] == coder]
            for m in ("f1", "balanced_accuracy", "auc"):
                keys = [f"{m}_mean", f"{m}_ci_low", f"{m}_ci_high"]
                if srow is not None and all(k in srow.index for k in keys) and not pd.isna(srow[keys[0]]):
                    row.update({k: float(srow[k]) for k in keys})
                    row[f"{m}_latents"] = int(srow[f"{m}_latents"]) if f"{m}_latents" in srow.index else int(g[m].notna().sum())
                else:
                    mean, lo, hi, n = bootstrap_mean_ci(g[m].astype(float).to_numpy()) if len(g) else (math.nan,) * 3 + (0,)
                    row.update({keys[0]: mean, keys[1]: lo, keys[2]: hi, f"{m}_latents": n})
            fw = math.nan
            if srow is not None and "freq_weighted_f1" in srow.index and not pd.isna(srow["freq_weighted_f1"]):
                fw = float(srow["freq_weighted_f1"])
            elif len(g) and g["firing_count"].notna().any():
                fw = frequency_weighted(g["f1"].astype(float), g["firing_count"].fillna(0).astype(float), g["hookpoint"].astype(str))
            row["freq_weighted_f1"] = fw
            row["scored"] = int(srow["scored"]) if srow is not None and "scored" in srow.index else len(g)
            if len(g) or srow is not None:
                rows.append(row)
    return pd.DataFrame(rows)


# -- per coder ---------------------------------------------------------------------------------------------

def coverage(data: RunData) -> pd.DataFrame:
    """Per coder: latents, dead, too_rare, explained, explain_failed, scored, score_failed."""
    out = pd.DataFrame(index=data.coders.index)
    for c in ("latents", "dead", "too_rare", "explained", "explain_failed", "scored", "score_failed"):
        out[c] = np.nan
    if data.has("latents"):
        lat = data.latents
        out["latents"] = lat.groupby("coder").size()
        if "status" in lat:
            out["dead"] = lat[lat["status"] == "dead"].groupby("coder").size()
            out["too_rare"] = lat[lat["status"] == "too_rare"].groupby("coder").size()
            out[["dead", "too_rare"]] = out[["dead", "too_rare"]].fillna(0)
    if data.has("explanations"):
        ex = data.explanations.drop_duplicates(["coder", "latent"], keep="last")
        ok = ex["explanation"].notna() if "explanation" in ex else pd.Series(False, index=ex.index)
        out["explained"] = ex[ok].groupby("coder").size()
        out["explain_failed"] = ex[~ok].groupby("coder").size()
        out[["explained", "explain_failed"]] = out[["explained", "explain_failed"]].fillna(0)
    if data.has("scores"):
        sc = data.scores
        if "n" in sc and "failures" in sc:
            only_auc = sc["scorer"].map(auc_only).astype(bool)
            got = (sc["n"] > sc["failures"]) | (only_auc & sc.get("auc", pd.Series(np.nan, index=sc.index)).notna())
        else:
            got = pd.Series(True, index=sc.index)
        per = sc.assign(got=got).groupby(["coder", "latent"])["got"].any().reset_index()
        out["scored"] = per[per["got"]].groupby("coder").size()
        out["score_failed"] = per[~per["got"]].groupby("coder").size()
        out[["scored", "score_failed"]] = out[["scored", "score_failed"]].fillna(0)
    return out


def llm_spend(data: RunData) -> pd.DataFrame:
    """Per coder: LLM calls (explain attempts + score calls) and their cost in USD (NaN when any cost is unknown)."""
    out = pd.DataFrame(index=data.coders.index)
    out["llm_calls"] = np.nan
    out["cost_usd"] = np.nan
    parts = []
    if data.has("explanations"):
        ex = data.explanations
        calls = ex["attempts"] if "attempts" in ex else pd.Series(1, index=ex.index)
        cost = ex["cost_usd"] if "cost_usd" in ex else pd.Series(np.nan, index=ex.index)
        parts.append(pd.DataFrame({"coder": ex["coder"], "calls": calls.astype(float), "cost": cost.astype(float)}))
    if data.has("score_calls"):
        sc = data.score_calls
        cost = sc["cost_usd"] if "cost_usd" in sc else pd.Series(np.nan, index=sc.index)
        parts.append(pd.DataFrame({"coder": sc["coder"], "calls": 1.0, "cost": cost.astype(float)}))
    elif data.has("scores") and "calls" in data.scores:
        sc = data.scores[data.scores["calls"].notna()]
        cost = sc["cost_usd"] if "cost_usd" in sc else pd.Series(np.nan, index=sc.index)
        parts.append(pd.DataFrame({"coder": sc["coder"], "calls": sc["calls"].astype(float), "cost": cost.astype(float)}))
    if parts:
        p = pd.concat(parts, ignore_index=True)
        g = p.groupby("coder")
        out["llm_calls"] = g["calls"].sum()
        out["cost_usd"] = g["cost"].apply(lambda c: np.nan if c.isna().any() else float(c.sum()))
    return out


def _uhf_from_latents(data: RunData, threshold: float) -> pd.Series:
    lat = data.latents
    return lat.assign(u=lat["frequency"].astype(float) > threshold).groupby("coder")["u"].mean()


def coder_table(data: RunData) -> pd.DataFrame:
    """The main table: one row per coder, numeric columns (NaN where the artifact is missing)."""
    info = data.coders
    df = info[["type", "hookpoint", "k", "d_sae"]].copy()
    for c in RECON_COLUMNS:
        df[c] = np.nan
    if data.has("recon"):
        rec = data.recon.drop_duplicates("coder", keep="last").set_index("coder")
        for c in RECON_COLUMNS:
            if c in rec:
                df[c] = rec[c].astype(float)
    if data.has("latents"):  # fall back to the mining pass's firing rates for what recon_eval lacks
        lat = data.latents
        if "status" in lat:
            dead = lat.assign(d=lat["status"] == "dead").groupby("coder")["d"].mean()
            df["dead_fraction"] = df["dead_fraction"].fillna(dead)
        if "frequency" in lat:
            for t in (0.01, 0.1):
                df[f"uhf_fraction_{t:g}"] = df[f"uhf_fraction_{t:g}"].fillna(_uhf_from_latents(data, t))
    stats = score_stats(data)
    for scorer in (*LLM_SCORERS, "embedding"):
        s = stats[stats["scorer"] == scorer].set_index("coder") if len(stats) else pd.DataFrame()
        metrics = ("auc",) if scorer == "embedding" else CI_METRICS
        for m in metrics:
            for suffix in ("mean", "ci_low", "ci_high"):
                col = f"{scorer}_{m}_{suffix}"
                df[col] = s[f"{m}_{suffix}"] if len(s) else np.nan
        if scorer != "embedding":
            df[f"{scorer}_freq_weighted_f1"] = s["freq_weighted_f1"] if len(s) else np.nan
    df = df.join(coverage(data)).join(llm_spend(data))
    return df.reset_index()


POWER_NOTE = (
    "One row per coder, scorer and explainer. Headline metric: AUC where the scorer gives probabilities or "
    "similarities, else balanced accuracy (intruder: accuracy). Power: the headline metric with the latents' own "
    "explanations minus the same metric with another latent's explanation of the same coder (the shuffled control; "
    "example-embedding: another latent's reference windows; intruder: minus chance 1/n), paired per latent, with a "
    "bootstrap 95% interval over latents. A scorer whose interval does not clear zero cannot tell a right explanation "
    "from a wrong one on this run, and no claim is judged with it."
)


def scorer_table(data: RunData) -> pd.DataFrame:
    """Per (coder, scorer, explainer): the headline metric, its control and the scorer's power (score_summary.parquet)."""
    cols = ["coder", "scorer", "explainer", "model", "scored", "power_metric", "headline_mean", "headline_ci_low", "headline_ci_high",
            "power_own", "power_control", "power", "power_ci_low", "power_ci_high", "power_latents", "has_power"]
    s = data.all_summary
    if s is None or not len(s) or "power" not in s:
        return pd.DataFrame(columns=cols)
    s = s.copy()
    for c in ("headline_mean", "headline_ci_low", "headline_ci_high"):
        s[c] = [r.get(f"{r['power_metric']}_{c.split('_', 1)[1]}", np.nan) for r in s.to_dict("records")]
    order = {c: i for i, c in enumerate(data.coders.index)}
    s["_o"] = s["coder"].map(order).fillna(len(order))
    return s.sort_values(["_o", "scorer", "explainer"])[cols].reset_index(drop=True)


def scorer_display(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in df.to_dict("records"):
        n = r.get("power_latents") or 0
        verdict = "no control" if not n else ("has power" if r["has_power"] else "no measured power")
        rows.append({
            "coder": r["coder"], "scorer": r["scorer"], "explainer": r["explainer"], "scored": _int(r["scored"]),
            "metric": r["power_metric"],
            "own [95% CI]": f"{_num(r['headline_mean'])} [{_num(r['headline_ci_low'])}, {_num(r['headline_ci_high'])}]",
            "control": _num(r["power_control"]),
            "power [95% CI]": "-" if not n else f"{r['power']:+.3f} [{r['power_ci_low']:+.3f}, {r['power_ci_high']:+.3f}]",
            "latents": _int(n), "verdict": verdict,
        })
    return pd.DataFrame(rows, columns=["coder", "scorer", "explainer", "scored", "metric", "own [95% CI]", "control", "power [95% CI]",
                                       "latents", "verdict"])


RANDOM_MODEL_NOTE = (
    "Each coder trained on the randomly initialised subject model (`-randmodel`, the control of Heap et al. 2025) beside "
    "its trained twin, per scorer: the mean headline metric over scored latents and trained minus random with a bootstrap "
    "95% interval (latents resampled on each side). Where the interval does not clear zero, the scorer rates the "
    "random-model coder as high as the trained one: its scores say little about what training taught the coder."
)


def random_model_table(data: RunData, seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """Trained coder vs its random-model twin, per scorer (headline metric; own explanations only)."""
    from ..subject.model import RANDOM_MODEL_SUFFIX
    from ..scoring.aggregate import headline_metric

    cols = ["trained", "random_model", "scorer", "metric", "trained_mean", "random_mean", "difference", "ci_low", "ci_high",
            "latents_trained", "latents_random", "verdict"]
    if not data.has("scores"):
        return pd.DataFrame(columns=cols)
    sc = data.scores
    rows = []
    for rnd in sorted(c for c in set(sc["coder"]) if str(c).endswith(RANDOM_MODEL_SUFFIX)):
        twin = rnd[: -len(RANDOM_MODEL_SUFFIX)]
        for scorer in sorted(set(sc.loc[sc["coder"] == rnd, "scorer"])):
            s = sc[sc["scorer"] == scorer]
            metric = headline_metric(scorer, s)
            a = s.loc[s["coder"] == twin, metric].dropna().to_numpy(np.float64)
            b = s.loc[s["coder"] == rnd, metric].dropna().to_numpy(np.float64)
            if not (len(a) and len(b)):
                continue
            rng = np.random.default_rng(seed)
            d = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1) - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
            lo, hi = np.quantile(d, [0.025, 0.975])
            verdict = "trained higher" if lo > 0 else "random-model coder rates as high as the trained one"
            rows.append({"trained": twin, "random_model": rnd, "scorer": scorer, "metric": metric, "trained_mean": a.mean(),
                         "random_mean": b.mean(), "difference": a.mean() - b.mean(), "ci_low": lo, "ci_high": hi,
                         "latents_trained": len(a), "latents_random": len(b), "verdict": verdict})
    return pd.DataFrame(rows, columns=cols)


def random_model_display(df: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "trained": df["trained"], "random model": df["random_model"], "scorer": df["scorer"], "metric": df["metric"],
        "trained mean": df["trained_mean"].map(_num), "random mean": df["random_mean"].map(_num),
        "trained - random [95% CI]": [f"{r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]" for r in df.itertuples()],
        "latents": [f"{r.latents_trained} / {r.latents_random}" for r in df.itertuples()], "verdict": df["verdict"],
    })


EXPLANATION_NOTE = (
    "Per coder and explainer: latents explained, distinct explanations (case, punctuation and spacing ignored), "
    "diversity = distinct / explained, and explanations that repeat one of the explainer's few-shot answers. "
    "An explainer that gives many latents the same words describes its prompt, not the latents."
)


def explanation_table(data: RunData) -> pd.DataFrame:
    from ..explain.diversity import COLUMNS, diversity

    if not data.has("explanations"):
        return pd.DataFrame(columns=COLUMNS)
    out = diversity(data.explanations)
    out["diversity"] = out["diversity"].map(lambda v: f"{v:.2f}")
    return out


def usage_table(data: RunData) -> pd.DataFrame:
    """llm_usage.parquet summed per stage, backend and model."""
    cols = ["stage", "backend", "model", "calls", "ok", "cached", "batch", "input_tokens", "output_tokens",
            "cache_read_tokens", "cache_write_tokens", "cost_usd", "latency_s_mean"]
    if not data.has("usage"):
        return pd.DataFrame(columns=cols)
    u = data.usage.copy()
    for c in ("stage", "backend", "model"):
        if c not in u:
            u[c] = "?"
        u[c] = u[c].fillna("?").astype(str)
    rows = []
    for (stage, backend, model), g in u.groupby(["stage", "backend", "model"], sort=True):
        def total(c):
            return float(g[c].fillna(0).sum()) if c in g else np.nan
        rows.append({
            "stage": stage, "backend": backend, "model": model, "calls": len(g),
            "ok": int(g["ok"].fillna(False).astype(bool).sum()) if "ok" in g else np.nan,
            "cached": int(g["cached"].fillna(False).astype(bool).sum()) if "cached" in g else np.nan,
            "batch": int(g["batch"].fillna(False).astype(bool).sum()) if "batch" in g else np.nan,
            **{c: total(c) for c in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")},
            "cost_usd": (np.nan if g["cost_usd"].isna().any() else float(g["cost_usd"].sum())) if "cost_usd" in g else np.nan,
            "latency_s_mean": float(g["latency_s"].mean()) if "latency_s" in g else np.nan,
        })
    return pd.DataFrame(rows, columns=cols)


# -- scores by activation quantile -------------------------------------------------------------------------

def _qlabel(q) -> str:
    if q is None or (isinstance(q, float) and math.isnan(q)) or pd.isna(q):
        return UNIFORM
    s = str(q)
    return str(int(float(s))) if s.replace(".", "", 1).isdigit() else s


def quantile_table(data: RunData) -> pd.DataFrame:
    """Per (coder, scorer, quantile '0'-'9' or 'uniform'): windows, recall (activating windows said to fire), auc_mean."""
    cols = ["coder", "scorer", "quantile", "windows", "failures", "recall", "auc_mean"]
    if data.has("by_quantile"):
        q = data.by_quantile.copy()
        q["quantile"] = q["quantile"].map(_qlabel)
        if "recall" not in q and "accuracy" in q:
            q["recall"] = q["accuracy"]
        for c in cols:
            if c not in q:
                q[c] = np.nan
        return q[cols]
    if data.predictions_path is None:
        return pd.DataFrame(columns=cols)
    p = read_filtered(data.predictions_path, PREDICTIONS, ["coder", "latent", "scorer", "label", "prediction", "quantile"], label=[1],
                      control=["none"], explainer=list(SHOWN_EXPLAINERS))
    if p.empty or "quantile" not in p:
        return pd.DataFrame(columns=cols)
    p["quantile"] = p["quantile"].map(_qlabel)
    rows = []
    for (coder, scorer, qb), g in p.groupby(["coder", "scorer", "quantile"], sort=True):
        valid = g[g["prediction"].notna()]
        rows.append({"coder": coder, "scorer": scorer, "quantile": qb, "windows": len(g), "failures": len(g) - len(valid),
                     "recall": float((valid["prediction"] == 1).mean()) if len(valid) else np.nan, "auc_mean": np.nan})
    return pd.DataFrame(rows, columns=cols)


# -- formatting ------------------------------------------------------------------------------------------------

def _num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or pd.isna(v):
        return "-"
    return f"{v:.{digits}f}"


def _pct(v) -> str:
    return "-" if v is None or pd.isna(v) else f"{100 * v:.1f}%"


def _ci(r, prefix: str) -> str:
    m = r.get(f"{prefix}_mean")
    if m is None or pd.isna(m):
        return "-"
    lo, hi = r.get(f"{prefix}_ci_low"), r.get(f"{prefix}_ci_high")
    return f"{m:.3f} [{_num(lo)}, {_num(hi)}]"


def _int(v) -> str:
    return "-" if v is None or pd.isna(v) else f"{int(v):,}"


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """The per-coder table as the strings shown in Markdown and HTML."""
    rows = []
    for r in df.to_dict("records"):
        cov = "-" if pd.isna(r.get("latents")) else (
            f"{_int(r.get('scored'))} / {_int(r.get('too_rare'))} / {_int(r.get('dead'))} / "
            f"{_int((0 if pd.isna(r.get('explain_failed')) else r['explain_failed']) + (0 if pd.isna(r.get('score_failed')) else r['score_failed']))}"
            f" of {_int(r['latents'])}"
        )
        cost = r.get("cost_usd")
        rows.append({
            "coder": r["coder"], "type": r["type"], "hookpoint": r.get("hookpoint") or "-", "k": _int(r.get("k")),
            "FVU": _num(r["fvu"]), "CE loss +nats": _num(r["ce_loss_increase"]), "L0": _num(r["l0"], 1),
            "dead": _pct(r["dead_fraction"]), "UHF >1%": _pct(r["uhf_fraction_0.01"]), "UHF >10%": _pct(r["uhf_fraction_0.1"]),
            "detection F1 [95% CI]": _ci(r, "detection_f1"), "detection bal.acc [95% CI]": _ci(r, "detection_balanced_accuracy"),
            "fuzzing F1 [95% CI]": _ci(r, "fuzzing_f1"), "fuzzing bal.acc [95% CI]": _ci(r, "fuzzing_balanced_accuracy"),
            "freq-weighted F1 (det / fuzz)": f"{_num(r['detection_freq_weighted_f1'])} / {_num(r['fuzzing_freq_weighted_f1'])}",
            "embedding AUC [95% CI]": _ci(r, "embedding_auc"),
            "scored / too rare / dead / failed": cov,
            "LLM calls": _int(r.get("llm_calls")),
            "cost $": (f"{cost:.4f}" if not pd.isna(cost) else "unknown" if (r.get("llm_calls") or 0) > 0 else "-"),
        })
    return pd.DataFrame(rows)


def usage_display(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for c in ("calls", "ok", "cached", "batch", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        out[c] = out[c].map(_int)
    out["cost_usd"] = out["cost_usd"].map(lambda v: "-" if pd.isna(v) else f"{v:.4f}")
    out["latency_s_mean"] = out["latency_s_mean"].map(lambda v: _num(v, 2))
    return out.astype(str)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of string cells ('|' escaped, newlines flattened)."""
    def cell(v) -> str:
        return str(v).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    cols = list(df.columns)
    lines = ["| " + " | ".join(cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in r) + " |")
    return "\n".join(lines) + "\n"
