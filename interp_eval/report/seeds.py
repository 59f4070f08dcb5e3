"""Across-seed spread: coders that differ only by their seed, and whether binary-vs-continuous differences exceed it.

A difference between coder kinds smaller than the spread between seeds of one kind is not evidence.

Grouping rule (`seed_group`): a coder named `<name>-s<seed>`, or `<name>-s<seed>-randmodel` for the
random-model control, belongs to the group `<name>` (`<name>-randmodel`); any other coder is a group of its
own with one seed. So `sae-layers.9.mlp-k32-s1` and `-s2` form `sae-layers.9.mlp-k32`, and
`bae-layers.9.mlp-k32-nonorm-s1` forms `bae-layers.9.mlp-k32-nonorm`.

Per group and metric: the mean over seeds, min, max, their range (max - min) and the standard deviation
(n - 1), for FVU and CE loss increase (recon_eval.parquet), the latents firing on more than 0.1%, 1% and
10% of the mined tokens (latents.parquet `frequency`) and each LLM-free score's mean over latents
(score_summary.parquet: scorers that call no LLM, e.g. example-embedding, with no explanation or token-table
explanations; each scorer's report metric, AUC for the embedding scorers).

Comparisons: every binary group against every continuous group of a matched pair (claims.matched_pairs: same
family, hookpoint and k; a variant such as `bae-...-nonorm` pairs with the SAE group too; random-model
controls are not paired). The difference of means "exceeds seed spread" when it is larger than the larger of
the two groups' ranges, else it is "within seed spread". A group with one seed has no range: the spread is
then unknown, unless the difference is already within the other group's range (the larger range can only be
larger).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from ..catalog import EXPLAINER_LLM, NO_EXPLAINER
from ..errors import UserError
from ..subject.model import RANDOM_MODEL_SUFFIX
from .claims import matched_pairs
from .inputs import RunData
from .tables import scorer_metric

FIRING_THRESHOLDS = (0.001, 0.01, 0.1)  # share of mined tokens a latent fires on
EXCEEDS, WITHIN, UNKNOWN = "exceeds seed spread", "within seed spread", "seed spread unknown (a group has one seed)"
EPS = 1e-12  # float noise: a difference exceeds the spread only by more than this
FIRING = "latents firing"  # the firing-count metrics' labels: f"{FIRING} > 1%"
_SEED = re.compile(r"^(?P<name>.+)-s(?P<seed>\d+)$")

SEEDS_NOTE = (
    "Coders that differ only by their seed (`<name>-s<seed>`) form a group; per group and metric: the mean over seeds, "
    "their min-max range and standard deviation (a group of one seed has neither). Firing counts: latents firing on "
    "more than that share of the mined tokens (latents.parquet). Scores: LLM-free scorers' mean over latents "
    "(score_summary.parquet)."
)
COMPARISON_NOTE = (
    "A difference between coder kinds smaller than the spread between seeds of one kind is not evidence. Per matched "
    "pair of groups (binary vs continuous, same family, hookpoint and k): the difference of seed means and whether it "
    "exceeds the larger of the two groups' seed ranges."
)


def seed_group(coder: str) -> tuple[str, int | None]:
    """(group, seed) of a coder name: `sae-x-k32-s2` -> ('sae-x-k32', 2), `sae-x-k32-s2-randmodel` ->
    ('sae-x-k32-randmodel', 2), a name without a seed suffix -> (name, None)."""
    control = coder.endswith(RANDOM_MODEL_SUFFIX)
    name = coder[: -len(RANDOM_MODEL_SUFFIX)] if control else coder
    m = _SEED.match(name)
    base, seed = (m["name"], int(m["seed"])) if m else (name, None)
    return base + (RANDOM_MODEL_SUFFIX if control else ""), seed


def _llm_free(scorer: str) -> bool:
    from ..scoring.registry import get_scorer

    try:
        return not get_scorer(scorer).uses_llm
    except UserError:  # a plugin scorer not loaded now: assume it calls an LLM
        return False


def _metric_label(scorer: str, explainer: str, metric: str) -> str:
    label = f"{scorer} {({'auc': 'AUC', 'f1': 'F1'}).get(metric, metric)}"
    return label if explainer == NO_EXPLAINER else f"{label} ({explainer} explanations)"


def coder_metrics(data: RunData) -> pd.DataFrame:
    """One row per coder (index), one column per metric the spread is taken of (NaN where the run lacks it)."""
    out = pd.DataFrame(index=data.coders.index)
    if data.has("recon"):
        rec = data.recon.drop_duplicates("coder", keep="last").set_index("coder")
        out["FVU"] = rec["fvu"]
        out["CE loss increase"] = rec["ce_loss_increase"]
    if data.has("latents"):
        freq = data.latents.groupby("coder")["frequency"]
        for t in FIRING_THRESHOLDS:
            out[f"{FIRING} > {100 * t:g}%"] = freq.apply(lambda f, t=t: float((f.astype(float) > t).sum()))
    if data.has("all_summary"):
        s = data.all_summary.drop_duplicates(["coder", "scorer", "explainer"], keep="last")
        s = s[(s["explainer"] != EXPLAINER_LLM) & s["scorer"].map(_llm_free)]
        for (scorer, explainer), g in s.groupby(["scorer", "explainer"], sort=True):
            metric = scorer_metric(scorer)
            out[_metric_label(scorer, explainer, metric)] = g.set_index("coder")[f"{metric}_mean"]
    return out.astype(float)


def seed_table(data: RunData) -> pd.DataFrame:
    """Long format, one row per (group, metric): type, hookpoint, k, seeds (coders in the group), n (seeds with the
    metric), mean, min, max, range, std (NaN for n < 2) and the group's coders."""
    cols = ["group", "type", "hookpoint", "k", "seeds", "metric", "n", "mean", "min", "max", "range", "std", "coders"]
    metrics = coder_metrics(data)
    groups: dict[str, list[str]] = {}
    for coder in metrics.index:
        groups.setdefault(seed_group(coder)[0], []).append(coder)
    rows = []
    for group, coders in groups.items():
        first = data.coders.loc[coders[0]]
        for metric in metrics.columns:
            v = metrics.loc[coders, metric].dropna()
            if not len(v):
                continue
            several = len(v) > 1
            rows.append({"group": group, "type": first["type"], "hookpoint": first["hookpoint"], "k": first["k"],
                         "seeds": len(coders), "metric": metric, "n": len(v), "mean": v.mean(), "min": v.min(), "max": v.max(),
                         "range": v.max() - v.min() if several else np.nan, "std": v.std(ddof=1) if several else np.nan,
                         "coders": ", ".join(coders)})
    return pd.DataFrame(rows, columns=cols)


def spread_verdict(diff: float, ranges: list[float]) -> tuple[float, str]:
    """(the larger seed range, EXCEEDS | WITHIN | UNKNOWN) of a difference of means between two groups."""
    known = [r for r in ranges if not math.isnan(r)]
    if not known:
        return math.nan, UNKNOWN
    spread = max(known)
    if len(known) == len(ranges):
        return spread, EXCEEDS if abs(diff) > spread + EPS else WITHIN
    return (spread, WITHIN) if abs(diff) <= spread + EPS else (math.nan, UNKNOWN)  # the unknown range can only be larger


def seed_comparisons(data: RunData, spread: pd.DataFrame) -> pd.DataFrame:
    """Per matched pair of groups and metric: both means, difference (binary - continuous), seed spread, verdict."""
    cols = ["comparison", "binary", "continuous", "metric", "binary_mean", "continuous_mean", "difference", "binary_seeds",
            "continuous_seeds", "seed_spread", "verdict"]
    at = spread.set_index(["group", "metric"])
    metrics = list(dict.fromkeys(spread["metric"]))
    rows = []
    for pair in matched_pairs(data.coders):
        b_groups = dict.fromkeys(seed_group(c)[0] for c in pair.binary)
        c_groups = dict.fromkeys(seed_group(c)[0] for c in pair.continuous)
        for bg in b_groups:
            for cg in c_groups:
                for metric in metrics:
                    if (bg, metric) not in at.index or (cg, metric) not in at.index:
                        continue
                    b, c = at.loc[(bg, metric)], at.loc[(cg, metric)]
                    diff = b["mean"] - c["mean"]
                    seed_spread, verdict = spread_verdict(diff, [b["range"], c["range"]])
                    rows.append({"comparison": pair.label, "binary": bg, "continuous": cg, "metric": metric,
                                 "binary_mean": b["mean"], "continuous_mean": c["mean"], "difference": diff,
                                 "binary_seeds": b["n"], "continuous_seeds": c["n"], "seed_spread": seed_spread, "verdict": verdict})
    return pd.DataFrame(rows, columns=cols)


def _num(v, metric: str, sign: str = "") -> str:
    """Firing counts with one decimal (a mean over seeds), every other metric with four."""
    if pd.isna(v):
        return "-"
    return f"{round(v, 9) + 0.0:{sign},.{1 if metric.startswith(FIRING) else 4}f}"  # (+ 0.0: no '-0.0000')


def seed_display(spread: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "group": r["group"], "type": r["type"], "seeds": str(r["n"]) if r["n"] == r["seeds"] else f"{r['n']} of {r['seeds']}",
        "metric": r["metric"], "mean": _num(r["mean"], r["metric"]),
        "min - max": f"{_num(r['min'], r['metric'])} - {_num(r['max'], r['metric'])}" if r["n"] > 1 else "-",
        "range": _num(r["range"], r["metric"]), "sd": _num(r["std"], r["metric"]),
    } for r in spread.to_dict("records")], columns=["group", "type", "seeds", "metric", "mean", "min - max", "range", "sd"])


def comparison_display(comp: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame([{
        "comparison": r["comparison"], "binary group": r["binary"], "continuous group": r["continuous"], "metric": r["metric"],
        "seeds (b / c)": f"{r['binary_seeds']} / {r['continuous_seeds']}", "binary mean": _num(r["binary_mean"], r["metric"]),
        "continuous mean": _num(r["continuous_mean"], r["metric"]), "difference (b - c)": _num(r["difference"], r["metric"], "+"),
        "seed spread": _num(r["seed_spread"], r["metric"]), "verdict": r["verdict"],
    } for r in comp.to_dict("records")], columns=["comparison", "binary group", "continuous group", "metric", "seeds (b / c)",
                                                  "binary mean", "continuous mean", "difference (b - c)", "seed spread", "verdict"])


__all__ = ["COMPARISON_NOTE", "EXCEEDS", "SEEDS_NOTE", "UNKNOWN", "WITHIN", "coder_metrics", "comparison_display",
           "seed_comparisons", "seed_display", "seed_group", "seed_table", "spread_verdict"]
