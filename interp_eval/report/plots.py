"""The report's figures (PNG, matplotlib's Agg backend): one function per figure, each skipped with a note when its data is missing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..artifacts import atomic_path
from .inputs import RunData
from ..catalog import RECON_EVAL, UNIFORM
from .tables import interpretability_scorers, quantile_table, scored_latents, scorer_metric

TYPE_COLORS = {"SAE": "#1f77b4", "BAE": "#ff7f0e", "TC": "#2ca02c", "BTC": "#d62728"}
DPI = 100


@dataclass
class Plot:
    name: str
    title: str
    path: Path | None = None
    note: str | None = None  # why it was skipped, or a caveat


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _styles(data: RunData) -> dict[str, dict]:
    """A colour per coder (by type, shaded when several coders share a type) and a marker per type."""
    styles = {}
    markers = {"SAE": "o", "BAE": "s", "TC": "^", "BTC": "D"}
    fallback = iter(_plt().get_cmap("tab10").colors)
    by_type: dict[str, list[str]] = {}
    for coder, t in data.coders["type"].items():
        by_type.setdefault(t, []).append(coder)
    for t, coders in by_type.items():
        base = TYPE_COLORS.get(t)
        for i, coder in enumerate(coders):
            if base is None:
                color = next(fallback, "#555555")
            else:
                import matplotlib.colors as mc

                rgb = np.array(mc.to_rgb(base))
                shade = 0.55 * i / max(1, len(coders) - 1) if len(coders) > 1 else 0.0
                color = tuple(rgb + (1 - rgb) * shade)
            styles[coder] = {"color": color, "marker": markers.get(t, "o"), "label": f"{coder} ({t})"}
    return styles


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return path


def score_vs_frequency(data: RunData, out: Path) -> Plot:
    plot = Plot("score_vs_frequency", "Interpretability (each scorer's per-latent metric) against firing rate, per latent")
    plt = _plt()
    panels = [(s, scorer_metric(s), scored_latents(data, s)) for s in interpretability_scorers(data)]
    panels = [(s, m, d[(d["frequency"].astype(float) > 0) & d[m].notna()]) for s, m, d in panels]
    panels = [(s, m, d) for s, m, d in panels if len(d)]
    if not panels:
        plot.note = "no scored latents with a firing rate (latent_scores.parquet)"
        return plot
    styles = _styles(data)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False, sharey=True)
    for ax, (scorer, metric, d) in zip(axes[0], panels):
        for coder, g in d.groupby("coder", sort=False):
            st = styles.get(coder, {"color": None, "marker": "o", "label": coder})
            ax.scatter(g["frequency"].astype(float), g[metric].astype(float), s=14, alpha=0.7, **st)
        ax.set_xscale("log")
        ax.set_xlabel("firing rate (fraction of tokens, log)")
        ax.set_title(f"{scorer} ({metric.upper() if metric == 'auc' else metric})")
        ax.axvline(0.01, color="grey", lw=0.8, ls=":")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("per-latent score")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle("Per-latent scores against firing rate (dotted: 1% ultra-high-frequency line)", fontsize=10)
    plot.path = _save(fig, out / "score_vs_frequency.png")
    return plot


def score_distributions(data: RunData, out: Path) -> Plot:
    plot = Plot("score_distributions", "Distribution of per-latent scores, per coder")
    plt = _plt()
    panels = []
    for scorer in interpretability_scorers(data):
        metric = scorer_metric(scorer)
        d = scored_latents(data, scorer)
        d = d[d[metric].notna()]
        if len(d):
            panels.append((scorer, metric, d))
    if not panels:
        plot.note = "no per-latent scores (latent_scores.parquet)"
        return plot
    styles = _styles(data)
    coders = [c for c in data.coders.index if any(c in set(d["coder"]) for _, _, d in panels)]
    fig, axes = plt.subplots(1, len(panels), figsize=(max(4, 1.1 * len(coders) + 1.5) * len(panels), 4), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, (scorer, metric, d) in zip(axes[0], panels):
        vals = [d[d["coder"] == c][metric].astype(float).to_numpy() for c in coders]
        ax.boxplot([v if len(v) else [np.nan] for v in vals], showfliers=False)
        for i, (c, v) in enumerate(zip(coders, vals), start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(v)), v, s=8, alpha=0.6, color=styles.get(c, {}).get("color"))
        ax.set_xticks(range(1, len(coders) + 1), [f"{c}\n({data.coders.at[c, 'type']})" for c in coders], fontsize=7, rotation=20)
        ax.set_ylabel(metric.upper() if metric == "auc" else metric)
        ax.set_title(scorer)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(axis="y", alpha=0.3)
    plot.path = _save(fig, out / "score_distributions.png")
    return plot


def score_by_quantile(data: RunData, out: Path) -> Plot:
    plot = Plot("score_by_quantile", "Recall on activating windows by activation decile",
                note="Binary coders have a single 'uniform' bin (all activations are 1): drawn as a dashed horizontal line.")
    plt = _plt()
    q = quantile_table(data)
    q = q[q["recall"].notna()] if len(q) else q
    if q.empty:
        plot.note = "no scores by activation quantile (score_by_quantile.parquet or predictions.parquet)"
        return plot
    styles = _styles(data)
    scorers = sorted(set(q["scorer"]), key=lambda s: (s not in ("detection", "fuzzing"), s))
    fig, axes = plt.subplots(1, len(scorers), figsize=(6 * len(scorers), 4), squeeze=False, sharey=True)
    for ax, scorer in zip(axes[0], scorers):
        for coder, g in q[q["scorer"] == scorer].groupby("coder", sort=False):
            st = styles.get(coder, {"color": None, "marker": "o", "label": coder})
            num = g[g["quantile"] != UNIFORM]
            if len(num):
                x = num["quantile"].astype(int)
                ax.plot(x, num["recall"].astype(float), marker=st["marker"], color=st["color"], label=st["label"])
            uni = g[g["quantile"] == UNIFORM]
            if len(uni):
                ax.axhline(float(uni["recall"].iloc[0]), color=st["color"], ls="--", label=f"{st['label']}: uniform bin")
        ax.set_xticks(range(10))
        ax.set_xlabel("activation decile (0 lowest, 9 highest)")
        ax.set_title(scorer)
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("recall (activating windows said to fire)")
    axes[0][-1].legend(fontsize=7, loc="best")
    plot.path = _save(fig, out / "score_by_quantile.png")
    return plot


def fvu_vs_k(data: RunData, out: Path) -> Plot:
    plot = Plot("fvu_vs_k", "FVU against k")
    plt = _plt()
    if not data.has("recon"):
        plot.note = f"no {RECON_EVAL}"
        return plot
    rec = data.recon.drop_duplicates("coder", keep="last").copy()
    rec["type"] = rec["coder"].map(data.coders["type"])
    groups = [(key, g) for key, g in rec.groupby(["type", "hookpoint"], sort=True) if g["k"].nunique() >= 2]
    if not groups:
        plot.note = "skipped: every coder type was trained at a single k (train several k, e.g. 16/32/64/128, for this plot)"
        return plot
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = sorted({int(k) for _, g in groups for k in g["k"]})
    for (t, hp), g in groups:
        g = g.groupby("k", as_index=False)["fvu"].mean().sort_values("k")
        ax.plot(g["k"], g["fvu"], marker="o", color=TYPE_COLORS.get(t), ls="-" if t in ("BAE", "BTC") else "--", label=f"{t} {hp}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("k")
    ax.set_ylabel("FVU")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    plot.path = _save(fig, out / "fvu_vs_k.png")
    return plot


PLOTS = (score_vs_frequency, score_distributions, score_by_quantile, fvu_vs_k)  # and fvu_curves.py's training curves


def make_plots(data: RunData, out: Path) -> list[Plot]:
    out.mkdir(parents=True, exist_ok=True)
    return [fn(data, out) for fn in PLOTS]


__all__ = ["Plot", "make_plots", *[f.__name__ for f in PLOTS]]
