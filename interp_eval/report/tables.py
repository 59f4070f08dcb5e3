"""The report's tables: one row per coder (reconstruction, interpretability, coverage, LLM spend), LLM usage.

Every number comes from a stage's artifact, read through the catalog; a missing artifact leaves its
columns empty (NaN). The interpretability figures are the score stage's (`score_summary.parquet`:
mean over latents with a seeded bootstrap 95% interval); only the paper's frequency-weighted F1 is
computed here, with the score stage's own function, when the stage ran without --freq-adjust.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..catalog import CONTROL_NONE, LATENT_SCORES, LLM_USAGE, PREDICTIONS, STATUS_DEAD, STATUS_TOO_RARE, UHF_THRESHOLDS, UNIFORM
from ..llm.usage import billing, spend
from ..scoring.aggregate import auc_only
from ..scoring.controls import EDGE_MARGIN, MIN_POWER_LATENTS, Power
from ..scoring.metrics import frequency_weighted
from .inputs import MODEL_COLUMNS, SHOWN_EXPLAINERS, RunData

LLM_SCORERS = ("detection", "fuzzing")
CI_METRICS = ("f1", "balanced_accuracy")
STAT_METRICS = ("f1", "balanced_accuracy", "auc")  # the metrics of the coder table, each with its interval

RECON_COLUMNS = ("fvu", "ce_loss_increase", "l0", "dead_fraction", "uhf_fraction_0.01", "uhf_fraction_0.1")
TOKEN_COLUMNS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


# -- per-latent values ---------------------------------------------------------------------------------


def scored_latents(data: RunData, scorer: str) -> pd.DataFrame:
    """latent_scores rows of one scorer for latents that got a score (an AUC, for scorers that give only that)."""
    if not data.has("scores"):
        return LATENT_SCORES.empty().to_pandas()
    s = data.scores[data.scores["scorer"] == scorer]
    got = s["auc"].notna() if auc_only(scorer) else s["n"] > s["failures"]
    return s[got].reset_index(drop=True)


def scorer_metric(scorer: str) -> str:
    """The per-latent metric shown and compared for a scorer: F1 where it makes 0/1 calls on windows, else AUC or accuracy."""
    from ..scoring.registry import preferred_metric

    return preferred_metric(scorer, "f1")


def interpretability_scorers(data: RunData) -> list[str]:
    """Scorers with per-latent scores in this run, the paper's (detection, fuzzing) first."""
    if not data.has("scores"):
        return []
    return sorted(set(data.scores["scorer"]), key=lambda s: (s not in ("detection", "fuzzing"), s))


# -- per (coder, scorer) ---------------------------------------------------------------------------------

def score_stats(data: RunData) -> pd.DataFrame:
    """Per (coder, scorer): {metric}_mean/_ci_low/_ci_high/_latents for f1, balanced_accuracy and auc, scored latents
    and the frequency-weighted F1: the summary's, or (a stage run without --freq-adjust) computed as the stage would."""
    stats = [f"{m}_{s}" for m in STAT_METRICS for s in ("mean", "ci_low", "ci_high", "latents")]
    if not data.has("summary"):
        return pd.DataFrame(columns=["coder", "scorer", *stats, "freq_weighted_f1", "scored"])
    rows = []
    for r in data.summary.drop_duplicates(["coder", "scorer"], keep="last").to_dict("records"):
        fw = r["freq_weighted_f1"]
        if pd.isna(fw):
            g = scored_latents(data, r["scorer"])
            g = g[g["coder"] == r["coder"]]
            fw = frequency_weighted(g["f1"].to_numpy(np.float64), g["firing_count"].fillna(0).to_numpy(np.float64),
                                    g["hookpoint"].astype(str).tolist()) if g["firing_count"].notna().any() else math.nan
        rows.append({"coder": r["coder"], "scorer": r["scorer"], **{c: r[c] for c in stats}, "freq_weighted_f1": fw, "scored": r["scored"]})
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
        out["dead"] = lat[lat["status"] == STATUS_DEAD].groupby("coder").size()
        out["too_rare"] = lat[lat["status"] == STATUS_TOO_RARE].groupby("coder").size()
        out[["dead", "too_rare"]] = out[["dead", "too_rare"]].fillna(0)
    if data.has("explanations"):
        ex = data.explanations.drop_duplicates(["coder", "latent"], keep="last")
        ok = ex["explanation"].notna()
        out["explained"] = ex[ok].groupby("coder").size()
        out["explain_failed"] = ex[~ok].groupby("coder").size()
        out[["explained", "explain_failed"]] = out[["explained", "explain_failed"]].fillna(0)
    if data.has("scores"):
        sc = data.scores
        got = (sc["n"] > sc["failures"]) | (sc["scorer"].map(auc_only).astype(bool) & sc["auc"].notna())
        per = sc.assign(got=got).groupby(["coder", "latent"])["got"].any().reset_index()
        out["scored"] = per[per["got"]].groupby("coder").size()
        out["score_failed"] = per[~per["got"]].groupby("coder").size()
        out[["scored", "score_failed"]] = out[["scored", "score_failed"]].fillna(0)
    return out


def llm_spend(data: RunData) -> pd.DataFrame:
    """Per coder: LLM calls (explain and score, from the ledger) and their cost in USD (NaN when any cost is unknown)."""
    out = pd.DataFrame(index=data.coders.index)
    out["llm_calls"] = np.nan
    out["cost_usd"] = np.nan
    if data.has("usage"):
        per = spend(data.usage, ["coder"]).set_index("coder")
        out["llm_calls"] = per["calls"].astype(float)
        out["cost_usd"] = per["cost_usd"]
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
            df[c] = rec[c].astype(float)
    if data.has("latents"):  # fall back to the mining pass's firing rates for coders without recon_eval rows
        lat = data.latents
        dead = lat.assign(d=lat["status"] == STATUS_DEAD).groupby("coder")["d"].mean()
        df["dead_fraction"] = df["dead_fraction"].fillna(dead)
        for t in UHF_THRESHOLDS:
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
    df = df.join(coverage(data)).join(llm_spend(data)).join(info[list(MODEL_COLUMNS)])
    return df.reset_index()


POWER_NOTE = (
    "One row per coder, scorer and explainer. Headline metric: AUC where the scorer gives probabilities or "
    "similarities, else balanced accuracy (intruder: accuracy). Power: the headline metric with the latents' own "
    "explanations minus the same metric with another latent's explanation of the same coder (the shuffled control; "
    "example-embedding: another latent's reference windows; intruder: minus chance 1/n), paired per latent, with a "
    "bootstrap 95% interval over latents. A scorer whose interval does not clear zero cannot tell a right explanation "
    "from a wrong one on this run, and no claim is judged with it; nor is one paired with its control on fewer than "
    f"{MIN_POWER_LATENTS} latents, whatever its interval (too few latents). A call whose interval's lower end lies within "
    f"{EDGE_MARGIN:g} x the interval's half-width of zero is marked borderline: a rerun could call it the other way."
)


def scorer_table(data: RunData) -> pd.DataFrame:
    """Per (coder, scorer, explainer): the headline metric, its control and the scorer's power (score_summary.parquet)."""
    cols = ["coder", "scorer", "explainer", "model", "scored", "power_metric", "headline_mean", "headline_ci_low", "headline_ci_high",
            "power_own", "power_control", "power", "power_ci_low", "power_ci_high", "power_latents", "has_power", "power_status",
            "power_borderline"]
    if not data.has("all_summary"):
        return pd.DataFrame(columns=cols)
    s = data.all_summary.copy()
    calls = [Power.from_row(r) for r in s.to_dict("records")]  # today's rules, also on files written before them
    s["has_power"] = [p.has_power for p in calls]
    s["power_status"] = [p.status for p in calls]
    s["power_borderline"] = [p.borderline for p in calls]
    for c in ("headline_mean", "headline_ci_low", "headline_ci_high"):
        s[c] = [r[f"{r['power_metric']}_{c.split('_', 1)[1]}"] for r in s.to_dict("records")]
    order = {c: i for i, c in enumerate(data.coders.index)}
    s["_o"] = s["coder"].map(order).fillna(len(order))
    return s.sort_values(["_o", "scorer", "explainer"])[cols].reset_index(drop=True)


def scorer_display(df: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in df.to_dict("records"):
        n = r["power_latents"]
        verdict = "no control" if not n else Power.from_row(r).label
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


USAGE_NOTE = ("Tokens and dollars of the calls sent (answers replayed from the response cache cost nothing and are "
              "counted apart). Input is billed in three parts: uncached input, prompt-cache reads of the fixed "
              "prefix (Anthropic: 0.1x the input price) and prompt-cache writes (1.25x); the dollar columns are "
              "the price each part implies for the model (batch calls at the batch discount).")


def usage_table(data: RunData) -> pd.DataFrame:
    """The LLM ledger's bill per stage, backend and model (llm/usage.py billing; token counts as floats)."""
    ledger = data.usage if data.usage is not None else LLM_USAGE.empty().to_pandas()
    return billing(ledger, ["stage", "backend", "model"]).astype({t: float for t in TOKEN_COLUMNS})


# -- scores by activation quantile -------------------------------------------------------------------------

def quantile_table(data: RunData) -> pd.DataFrame:
    """Per (coder, scorer, quantile '0'-'9' or 'uniform'): windows, recall (activating windows said to fire), auc_mean
    (score_by_quantile.parquet, the score stage's)."""
    cols = ["coder", "scorer", "quantile", "windows", "failures", "recall", "auc_mean"]
    return data.by_quantile[cols] if data.has("by_quantile") else pd.DataFrame(columns=cols)


def latent_quantile_recall(data: RunData) -> pd.DataFrame:
    """Per (coder, latent, scorer, quantile '0'-'9' or 'uniform'): the latent's activating test windows with a 0/1 decision
    (`windows`) and how many of them the scorer said fire (`fired`), from predictions.parquet: own explanations of the
    shown explainers, never control rows. As in score_by_quantile, scorers without negatives (the intruder) or without
    0/1 decisions (the embedding scorers) have no rows."""
    cols = ["coder", "latent", "scorer", "quantile", "windows", "fired"]
    if not data.has_predictions:
        return pd.DataFrame(columns=cols)
    p = data.rd.read(PREDICTIONS, columns=["coder", "latent", "scorer", "label", "prediction", "quantile"],
                     where={"control": [CONTROL_NONE], "explainer": list(SHOWN_EXPLAINERS)})
    if p.empty:
        return pd.DataFrame(columns=cols)
    has_negatives = p.groupby(["coder", "scorer"])["label"].transform("min") == 0
    p = p[has_negatives & (p["label"] == 1) & p["prediction"].notna()]
    p = p.assign(quantile=[UNIFORM if pd.isna(q) else str(int(q)) for q in p["quantile"]], fired=(p["prediction"] == 1).astype(int))
    out = p.groupby(["coder", "latent", "scorer", "quantile"], sort=True)["fired"].agg(windows="size", fired="sum")
    return out.reset_index()[cols]


# -- formatting ------------------------------------------------------------------------------------------------

def _num(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or pd.isna(v):
        return "-"
    return f"{v:.{digits}f}"


def _pct(v) -> str:
    return "-" if v is None or pd.isna(v) else f"{100 * v:.1f}%"


def _ci(r, prefix: str) -> str:
    m = r[f"{prefix}_mean"]
    if pd.isna(m):
        return "-"
    lo, hi = r[f"{prefix}_ci_low"], r[f"{prefix}_ci_high"]
    return f"{m:.3f} [{_num(lo)}, {_num(hi)}]"


def _int(v) -> str:
    return "-" if v is None or pd.isna(v) else f"{int(v):,}"


def _model(r) -> str:
    if r["model_mismatch"]:
        return f"{r['trained_on']} -> {r['mined_on']} (mismatch)"
    return next((v for v in (r["mined_on"], r["trained_on"]) if isinstance(v, str) and v), "-")


def display_table(df: pd.DataFrame) -> pd.DataFrame:
    """The per-coder table as the strings shown in Markdown and HTML; with a model column (trained on -> mined on)
    when a coder was mined on a model it was not trained on (--allow-model-mismatch)."""
    mismatch = bool(df["model_mismatch"].any()) if len(df) else False
    rows = []
    for r in df.to_dict("records"):
        cov = "-" if pd.isna(r["latents"]) else (
            f"{_int(r['scored'])} / {_int(r['too_rare'])} / {_int(r['dead'])} / "
            f"{_int((0 if pd.isna(r['explain_failed']) else r['explain_failed']) + (0 if pd.isna(r['score_failed']) else r['score_failed']))}"
            f" of {_int(r['latents'])}"
        )
        cost = r["cost_usd"]
        rows.append({
            "coder": r["coder"], "type": r["type"], "hookpoint": r["hookpoint"] or "-",
            **({"model (trained on -> mined on)": _model(r)} if mismatch else {}), "k": _int(r["k"]),
            "FVU": _num(r["fvu"]), "CE loss +nats": _num(r["ce_loss_increase"]), "L0": _num(r["l0"], 1),
            "dead": _pct(r["dead_fraction"]), "UHF >1%": _pct(r["uhf_fraction_0.01"]), "UHF >10%": _pct(r["uhf_fraction_0.1"]),
            "detection F1 [95% CI]": _ci(r, "detection_f1"), "detection bal.acc [95% CI]": _ci(r, "detection_balanced_accuracy"),
            "fuzzing F1 [95% CI]": _ci(r, "fuzzing_f1"), "fuzzing bal.acc [95% CI]": _ci(r, "fuzzing_balanced_accuracy"),
            "freq-weighted F1 (det / fuzz)": f"{_num(r['detection_freq_weighted_f1'])} / {_num(r['fuzzing_freq_weighted_f1'])}",
            "embedding AUC [95% CI]": _ci(r, "embedding_auc"),
            "scored / too rare / dead / failed": cov,
            "LLM calls": _int(r["llm_calls"]),
            "cost $": (f"{cost:.4f}" if not pd.isna(cost) else "unknown" if (r["llm_calls"] or 0) > 0 else "-"),
        })
    return pd.DataFrame(rows)


_USAGE_SHOWN = {
    "stage": "stage", "backend": "backend", "model": "model", "calls": "calls", "failed": "failed",
    "response_cache": "from response cache", "batch": "batch", "input_tokens": "uncached input tok",
    "cache_read_tokens": "cache read tok", "cache_write_tokens": "cache write tok", "output_tokens": "output tok",
    "input_cost_usd": "uncached input $", "cache_read_cost_usd": "cache read $", "cache_write_cost_usd": "cache write $",
    "output_cost_usd": "output $", "cost_usd": "total $", "latency_s_mean": "s a call",
}


def usage_display(df: pd.DataFrame) -> pd.DataFrame:
    """The usage table as shown in Markdown and HTML: tokens by kind, each kind's dollars, the total."""
    out = df.copy()
    for c in ("calls", "failed", "response_cache", "batch", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        out[c] = out[c].map(_int)
    for c in ("input_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd", "output_cost_usd", "cost_usd"):
        out[c] = out[c].map(lambda v: "-" if pd.isna(v) else f"{v:.4f}")
    out["latency_s_mean"] = out["latency_s_mean"].map(lambda v: _num(v, 2))
    return out[list(_USAGE_SHOWN)].rename(columns=_USAGE_SHOWN).astype(str)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of string cells ('|' escaped, newlines flattened)."""
    def cell(v) -> str:
        return str(v).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    cols = list(df.columns)
    lines = ["| " + " | ".join(cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in r) + " |")
    return "\n".join(lines) + "\n"
