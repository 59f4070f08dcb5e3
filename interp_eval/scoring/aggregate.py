"""From per-window predictions to per-latent scores and per-coder summaries.

Per latent and scorer (`latent_scores.parquet`): the metrics of metrics.py over the windows that got
a prediction; `failures` says how many windows did not (after retries) and were left out, `n` counts
all. `auc` comes from the per-window probability (LLM scorers with token logprobs) or similarity
(embedding scorer); it is null when the backend gave no probabilities (Anthropic), NaN when a class
is missing. The embedding scorer makes no 0/1 prediction: only its auc is filled.

Rows are per (coder, latent, scorer, explainer, control); `control` "shuffled" rows are the
shuffled control (controls.py) and enter only the power columns, never the scores.

Per coder, scorer and explainer (`score_summary.parquet`): for each metric the mean over latents
with a seeded bootstrap 95% interval, and the pooled (micro) value over all windows of the coder;
the scorer's power (headline metric own - control, or - chance, with its interval) and its call
(has power / no measured power / too few latents, and whether it is borderline; controls.py);
coverage (latents in the coder, dead, too rare, explained, explanation failed, scored, scoring
failed); the counts of ultra-high-frequency latents (firing rate above 1% and 10%); and, with
freq_adjust, the frequency-weighted F1 of the paper (per hookpoint sum_i F1_i c_i / sum_i c_i over
scored latents, c_i the firing count, then the mean over hookpoints).

`score_by_quantile.parquet`: the activating windows of each activation quantile (0 lowest - 9
highest; binary coders: one "uniform" bin): how many, failures, recall (= accuracy on these
windows, all of which are positives), mean probability, and the mean over latents of the AUC of
that quantile's windows against the latent's negatives.

`score_by_frequency.parquet` (freq_adjust): latents binned by floor(log10(frequency)).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..catalog import SCORE_KEY, UHF_THRESHOLDS, UNIFORM
from .controls import Power, chance_power, no_power, paired_power
from .metrics import METRICS, NAN, Confusion, bootstrap_mean_ci, frequency_bin, frequency_weighted
from .registry import CONTROL_NONE, CONTROL_SHUFFLED, get_scorer, preferred_metric
from .simulation import simulation_metrics

KEY = list(SCORE_KEY)


def _auc_sorted(pos: np.ndarray, neg_sorted: np.ndarray) -> float:
    """The rank-statistic AUC via binary search (same value as metrics.auc)."""
    if len(pos) == 0 or len(neg_sorted) == 0:
        return NAN
    below = np.searchsorted(neg_sorted, pos, "left")
    upto = np.searchsorted(neg_sorted, pos, "right")
    return float((below + (upto - below) / 2).sum() / (len(pos) * len(neg_sorted)))


def _scores(df: pd.DataFrame) -> pd.Series:
    """The continuous score of each window: probability, else similarity."""
    return df["probability"].where(df["probability"].notna(), df["similarity"])


def latent_scores(predictions: pd.DataFrame, latents: pd.DataFrame, explanations: pd.DataFrame | None = None) -> pd.DataFrame:
    rows = []
    tokenwise = {s: per_token(s) for s in predictions["scorer"].unique()}  # looked up once, not per latent
    for (coder, latent, scorer, explainer, control), g in predictions.groupby(KEY, sort=True):
        valid = g[g["prediction"].notna()]
        conf = Confusion.of(valid["label"].astype(int), valid["prediction"].astype(int))
        has_pred = len(valid) > 0
        metrics = conf.metrics() if has_pred else {m: NAN for m in METRICS if m != "auc"}
        if tokenwise[scorer]:  # the simulation scorer: correlations over the tokens of the windows it predicted
            valid = g[g["simulated"].notna()]
            metrics = {**metrics, **simulation_metrics(valid["simulated"].tolist(), valid["actual"].tolist())}
        s = _scores(g)
        scored = g[s.notna()]
        auc = None
        if len(scored):
            neg = np.sort(s[scored.index][scored["label"] == 0].to_numpy(np.float64))
            auc = _auc_sorted(s[scored.index][scored["label"] == 1].to_numpy(np.float64), neg)
        embedding = g["prediction"].isna().all() and g["similarity"].notna().any()
        rows.append({
            "coder": coder, "latent": int(latent), "scorer": scorer, "explainer": explainer, "control": control,
            "source_latent": int(g["source_latent"].iloc[0]), "model": str(g["model"].iloc[0]),
            "prompt_version": g["prompt_version"].iloc[0],
            "n": len(g), "failures": 0 if embedding else int(len(g) - len(valid)),
            "n_activating": int((g["label"] == 1).sum()), "n_negative": int((g["label"] == 0).sum()),
            **metrics, "auc": auc, "n_probabilities": int(len(scored)),
            "tp": conf.tp, "fp": conf.fp, "tn": conf.tn, "fn": conf.fn,
        })
    cols = ["coder", "latent", "scorer", "explainer", "control", "source_latent", "model", "prompt_version", "n", "failures", "n_activating", "n_negative",
            "accuracy", "balanced_accuracy", "precision", "recall", "f1", "auc", "correlation", "correlation_firing", "n_probabilities",
            "tp", "fp", "tn", "fn"]
    out = pd.DataFrame(rows, columns=cols)
    out["auc"] = out["auc"].astype("float64")
    lat = latents[["coder", "latent", "hookpoint", "binary", "frequency", "firing_count"]]
    out = out.merge(lat, on=["coder", "latent"], how="left")
    if explanations is not None and len(explanations):
        ex = explanations[["coder", "latent", "explainer", "explanation", "explainer_model"]]
        ex = ex.drop_duplicates(["coder", "latent", "explainer"], keep="last").rename(columns={"latent": "source_latent"})
        out = out.merge(ex, on=["coder", "source_latent", "explainer"], how="left")
    return out


def _pooled(preds: pd.DataFrame) -> dict[str, float]:
    valid = preds[preds["prediction"].notna()]
    conf = Confusion.of(valid["label"].astype(int), valid["prediction"].astype(int))
    out = conf.metrics() if len(valid) else {m: NAN for m in METRICS if m != "auc"}
    s = _scores(preds).dropna()
    lab = preds.loc[s.index, "label"]
    out["auc"] = _auc_sorted(s[lab == 1].to_numpy(np.float64), np.sort(s[lab == 0].to_numpy(np.float64))) if len(s) else NAN
    sim = preds[preds["simulated"].notna()] if "simulated" in preds else None
    out.update(simulation_metrics(sim["simulated"].tolist(), sim["actual"].tolist()) if sim is not None  # every token together
               else simulation_metrics([], []))
    return out


def summary(
    scores: pd.DataFrame, predictions: pd.DataFrame, latents: pd.DataFrame, explanations: pd.DataFrame | None,
    *, freq_adjust: bool = False, seed: int = 0, n_boot: int = 1000, chance: dict[str, float | None] | None = None,
) -> pd.DataFrame:
    rows = []
    expl = explanations if explanations is not None else pd.DataFrame(columns=["coder", "latent", "explainer", "parse_ok", "explanation"])
    own_scores = scores[scores["control"] == CONTROL_NONE]
    controls = scores[scores["control"] == CONTROL_SHUFFLED]
    own_preds = predictions[predictions["control"] == CONTROL_NONE]
    for (coder, scorer, explainer), g in own_scores.groupby(["coder", "scorer", "explainer"], sort=True):
        lat = latents[latents["coder"] == coder]
        ex = expl[(expl["coder"] == coder) & (expl["explainer"] == explainer)].drop_duplicates(["coder", "latent"], keep="last")
        ok_expl = ex[ex["explanation"].notna()]
        p = own_preds[(own_preds["coder"] == coder) & (own_preds["scorer"] == scorer) & (own_preds["explainer"] == explainer)]
        only_auc = auc_only(scorer)
        scored = g[g["auc"].notna()] if only_auc else g[g["n"] > g["failures"]]
        weighted = weight_metric(scorer)
        row = {
            "coder": coder, "scorer": scorer, "explainer": explainer, "model": ",".join(sorted(set(g["model"].astype(str)))),
            "latents": len(lat),
            "dead": int((lat["status"] == "dead").sum()) if "status" in lat else 0,
            "too_rare": int((lat["status"] == "too_rare").sum()) if "status" in lat else 0,
            "explained": int(len(ok_expl)), "explain_failed": int(len(ex) - len(ok_expl)),
            "scored": int(len(scored)), "score_failed": int(len(g) - len(scored)),
            "windows": int(g["n"].sum()), "window_failures": int(g["failures"].sum()),
        }
        for m in METRICS:  # a metric the scores lack (rows from before it existed) has no values
            values = g[m].astype(float).to_numpy() if m in g else np.full(len(g), np.nan)
            mean, lo, hi, n = bootstrap_mean_ci(values, n_boot=n_boot, seed=seed)
            row.update({f"{m}_mean": mean, f"{m}_ci_low": lo, f"{m}_ci_high": hi, f"{m}_latents": n})
        for m, v in _pooled(p).items():
            row[f"{m}_pooled"] = v
        ctl = controls[(controls["coder"] == coder) & (controls["scorer"] == scorer) & (controls["explainer"] == explainer)]
        row.update(scorer_power(scorer, g, ctl, (chance or {}).get(scorer), seed=seed, n_boot=n_boot).to_dict())
        row["control_latents"] = int(len(ctl))
        freq = lat["frequency"].astype(float)
        for t in UHF_THRESHOLDS:
            row[f"uhf_over_{t:g}"] = int((freq > t).sum())
        row["freq_weighted_f1"] = (
            frequency_weighted(g["f1"].astype(float), g["firing_count"].astype(float), g["hookpoint"].astype(str))
            if freq_adjust else NAN
        )
        row["freq_weighted_metric"] = weighted
        row["freq_weighted"] = (
            frequency_weighted(g[weighted].astype(float), g["firing_count"].astype(float), g["hookpoint"].astype(str))
            if freq_adjust else NAN
        )
        rows.append(row)
    return pd.DataFrame(rows)


def per_token(scorer: str) -> bool:
    """Scorers whose windows carry per-token predictions (simulation): scored by correlation, not a confusion matrix."""
    try:
        return "correlation" in get_scorer(scorer).metrics
    except Exception:
        return False


def weight_metric(scorer: str) -> str:
    """The metric the frequency-weighted score weights: F1 where the scorer has it, else its first metric."""
    try:
        metrics = get_scorer(scorer).metrics
    except Exception:
        return "f1"
    return "f1" if "f1" in metrics else metrics[0]


def auc_only(scorer: str) -> bool:
    try:
        return get_scorer(scorer).metrics == ("auc",)
    except Exception:  # a scorer from a plugin that is not loaded now
        return False


def headline_metric(scorer: str, own: pd.DataFrame) -> str:
    """AUC where the scorer gave probabilities or similarities, else its declared fallback."""
    has_probs = bool(own["auc"].notna().any()) if "auc" in own else False
    try:
        return get_scorer(scorer).headline(has_probs)
    except Exception:
        return "auc" if has_probs else "balanced_accuracy"


def scorer_power(scorer: str, own: pd.DataFrame, control: pd.DataFrame, chance: float | None, *, seed: int = 0, n_boot: int = 1000):
    """The scorer's power on one coder: own vs shuffled control (paired per latent), or vs its chance level."""
    metric = headline_metric(scorer, own)
    if chance is not None and not (isinstance(chance, float) and math.isnan(chance)):
        return chance_power(own, metric, float(chance), seed=seed, n_boot=n_boot)
    if control.empty:
        return no_power(metric)
    return paired_power(own, control, metric, seed=seed, n_boot=n_boot)


def by_quantile(predictions: pd.DataFrame) -> pd.DataFrame:
    rows = []
    if predictions.empty:
        return pd.DataFrame(columns=["coder", "scorer", "explainer", "quantile", "windows", "failures", "recall", "accuracy", "mean_probability", "auc_mean", "auc_latents"])
    p = predictions[predictions["control"] == CONTROL_NONE].copy()
    p["qbin"] = p["quantile"].map(lambda q: UNIFORM if q is None or pd.isna(q) else str(int(q)))
    p["score"] = _scores(p)
    for (coder, scorer, explainer), g in p.groupby(["coder", "scorer", "explainer"], sort=True):
        if not (g["label"] == 0).any() or per_token(scorer):
            continue  # no negatives (the intruder), or no per-window score (simulation): no per-quantile comparison
        pos = g[g["label"] == 1]
        negs = {k: np.sort(v.dropna().to_numpy(np.float64)) for k, v in g[g["label"] == 0].groupby("latent")["score"]}
        for qbin, b in pos.groupby("qbin", sort=True):
            valid = b[b["prediction"].notna()]
            recall = float((valid["prediction"] == 1).mean()) if len(valid) else NAN
            aucs = []
            for latent, lb in b.groupby("latent"):
                s = lb["score"].dropna().to_numpy(np.float64)
                a = _auc_sorted(s, negs.get(latent, np.zeros(0)))
                if not math.isnan(a):
                    aucs.append(a)
            rows.append({
                "coder": coder, "scorer": scorer, "explainer": explainer, "quantile": qbin, "windows": len(b),
                "failures": 0 if auc_only(scorer) else int(len(b) - len(valid)),
                "recall": recall, "accuracy": recall,
                "mean_probability": float(b["probability"].mean()) if b["probability"].notna().any() else NAN,
                "auc_mean": float(np.mean(aucs)) if aucs else NAN, "auc_latents": len(aucs),
            })
    out = pd.DataFrame(rows, columns=["coder", "scorer", "explainer", "quantile", "windows", "failures", "recall", "accuracy",
                                      "mean_probability", "auc_mean", "auc_latents"])
    order = {str(i): i for i in range(10)} | {UNIFORM: 10}
    return out.sort_values(["coder", "scorer", "explainer", "quantile"], key=lambda c: c.map(order) if c.name == "quantile" else c).reset_index(drop=True)


def by_frequency(scores: pd.DataFrame) -> pd.DataFrame:
    s = scores[scores["control"] == CONTROL_NONE].copy()
    s["log10_frequency_bin"] = s["frequency"].astype(float).map(frequency_bin)
    rows = []
    for (coder, scorer, explainer, b), g in s.groupby(["coder", "scorer", "explainer", "log10_frequency_bin"], sort=True):
        rows.append({
            "coder": coder, "scorer": scorer, "explainer": explainer, "log10_frequency_bin": b, "frequency_low": 10.0 ** b, "frequency_high": 10.0 ** (b + 1),
            "latents": len(g), "firing_count": int(g["firing_count"].sum()),
            **{f"{m}_mean": float(g[m].astype(float).mean()) if m in g and g[m].notna().any() else NAN
               for m in ("f1", "balanced_accuracy", "accuracy", "auc", "correlation")},
        })
    return pd.DataFrame(rows, columns=["coder", "scorer", "explainer", "log10_frequency_bin", "frequency_low", "frequency_high", "latents", "firing_count",
                                       "f1_mean", "balanced_accuracy_mean", "accuracy_mean", "auc_mean", "correlation_mean"])


def format_summary(df: pd.DataFrame) -> str:
    """The per-coder table printed at the end of the stage."""
    if df.empty:
        return "(nothing scored)"

    def ci(r, m):
        v = r[f"{m}_mean"]
        return "-" if pd.isna(v) else f"{v:.3f} [{r[f'{m}_ci_low']:.3f}, {r[f'{m}_ci_high']:.3f}]"

    def num(v):
        return "-" if pd.isna(v) else f"{v:.3f}"

    def reports(scorer: str, metric: str) -> bool:  # F1 of the all-positive trials of intruder or steering says nothing
        return preferred_metric(scorer, metric) == metric

    def headline(r):
        m = r["power_metric"]
        return "-" if not isinstance(m, str) or f"{m}_mean" not in r else f"{m} {ci(r, m)}"

    def power(r):
        if not r["power_latents"]:
            return "no control"
        return f"{r['power']:+.3f} [{r['power_ci_low']:+.3f}, {r['power_ci_high']:+.3f}] {r['power_metric']}: {Power.from_row(r).label}"

    table = pd.DataFrame({
        "coder": df["coder"], "scorer": df["scorer"], "explainer": df["explainer"],
        "scored": [f"{r.scored}/{r.explained}" for r in df.itertuples()],
        "fail (win)": [f"{r.score_failed} ({r.window_failures})" for r in df.itertuples()],
        "headline mean [95% CI]": [headline(r) for _, r in df.iterrows()],
        "F1 mean [95% CI]": [ci(r, "f1") if reports(r["scorer"], "f1") else "-" for _, r in df.iterrows()],
        "bal.acc mean": [num(r["balanced_accuracy_mean"]) if reports(r["scorer"], "balanced_accuracy") else "-"
                         for _, r in df.iterrows()],
        "AUC mean": [num(v) for v in df["auc_mean"]],
        "power vs control [95% CI]": [power(r) for _, r in df.iterrows()],
        "F1 pooled": [num(r["f1_pooled"]) if reports(r["scorer"], "f1") else "-" for _, r in df.iterrows()],
        "F1 freq-wtd": [num(v) for v in df["freq_weighted_f1"]],
        "uhf>1%": df["uhf_over_0.01"],
        "dead/rare": [f"{r.dead}/{r.too_rare}" for r in df.itertuples()],
    })
    return table.to_string(index=False)
