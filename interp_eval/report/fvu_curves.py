"""Was training long enough? FVU against training tokens per coder (train_metrics.parquet), and whether it flattened.

The per-step FVU of the training batch is noisy, so every number here is smoothed: the trailing mean over
the previous SMOOTH_FRACTION (10%) of the coder's logged steps (at least one step). `fvu_curve_table` reads
the smoothed FVU at 25%, 50%, 75% and 100% of each coder's training tokens (at the last logged step at or
before that share) and its relative change over the last quarter, (FVU@100% - FVU@75%) / FVU@75%. A coder
has *flattened* when that change is above -FLAT_DROP (its smoothed FVU fell by less than 2% over the last
quarter of training; a rise counts as flat too); with fewer than MIN_STEPS logged steps the quarters are
not told apart and the flag is left empty.

The plot draws one line per coder: binary coders solid, continuous ones dashed, coloured by type as the
report's other plots; one panel per hookpoint, with the random-model control's coders (`-randmodel`) in
panels of their own. train_metrics.parquet records no epoch: epoch boundaries are drawn (dotted) from the
epochs of each coder's cfg.json (`metadata.interp_eval.train.epochs`), at equal shares of its logged tokens.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..catalog import TRAIN_METRICS
from ..subject.model import RANDOM_MODEL_SUFFIX
from .inputs import RunData
from .plots import TYPE_COLORS, Plot, _plt, _save, _styles

SMOOTH_FRACTION = 0.10  # the running mean's window, as a share of the coder's logged steps
FLAT_DROP = 0.02  # flattened: the smoothed FVU fell by less than this share over the last quarter
MIN_STEPS = 8  # fewer logged steps: no flattened verdict
QUARTERS = (25, 50, 75, 100)  # percent of the coder's training tokens
LEGEND_LINES = 12  # a panel with more coders gets a legend by type instead of by coder

FVU_CURVE_NOTE = (
    f"Smoothed FVU of the training batch (trailing mean over {SMOOTH_FRACTION:.0%} of each coder's logged steps) at "
    f"25/50/75/100% of its training tokens, and its relative change over the last quarter. Flattened: the smoothed FVU "
    f"fell by less than {FLAT_DROP:.0%} over the last quarter of training (a coder still falling faster might improve "
    f"with more tokens); not judged with fewer than {MIN_STEPS} logged steps."
)


def window(steps: int) -> int:
    """The running mean's window for a coder with `steps` logged steps."""
    return max(1, round(SMOOTH_FRACTION * steps))


def smoothed(fvu: np.ndarray) -> np.ndarray:
    """Trailing running mean over `window(len(fvu))` steps (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], fvu]))
    ends = np.arange(1, len(fvu) + 1)
    starts = np.maximum(0, ends - window(len(fvu)))
    return (sums[ends] - sums[starts]) / (ends - starts)


def is_flat(change: float) -> bool:
    """The one rule: smoothed FVU fell by less than FLAT_DROP (relative) over the last quarter."""
    return change > -FLAT_DROP


def _curves(data: RunData) -> dict[str, pd.DataFrame]:
    """coder -> its steps in order (tokens, fvu, smoothed fvu)."""
    out = {}
    for coder, g in data.train.sort_values(["coder", "step"]).groupby("coder", sort=False):
        g = g.drop_duplicates("step", keep="last")
        out[coder] = pd.DataFrame({"tokens": g["tokens"].to_numpy(np.int64), "fvu": g["fvu"].to_numpy(np.float64),
                                   "smoothed": smoothed(g["fvu"].to_numpy(np.float64))})
    return {c: out[c] for c in data.coders.index if c in out}  # the report's coder order (coder_info lists every trained one)


def fvu_curve_table(data: RunData) -> pd.DataFrame:
    """One row per coder: type, steps, tokens, smoothing window, fvu_25 .. fvu_100 (smoothed), change_last_quarter, flattened."""
    cols = ["coder", "type", "steps", "tokens", "smoothing_steps", *[f"fvu_{q}" for q in QUARTERS], "change_last_quarter", "flattened"]
    if not data.has("train"):
        return pd.DataFrame(columns=cols)
    rows = []
    for coder, c in _curves(data).items():
        total = int(c["tokens"].iloc[-1])
        at = {}
        for q in QUARTERS:
            i = max(0, int(np.searchsorted(c["tokens"].to_numpy(), q / 100 * total, side="right")) - 1)
            at[f"fvu_{q}"] = float(c["smoothed"].iloc[i])
        change = at["fvu_100"] / at["fvu_75"] - 1 if at["fvu_75"] > 0 else np.nan
        enough = len(c) >= MIN_STEPS and not np.isnan(change)
        rows.append({"coder": coder, "type": data.coders["type"].get(coder, "?"), "steps": len(c), "tokens": total,
                     "smoothing_steps": window(len(c)), **at, "change_last_quarter": change,
                     "flattened": is_flat(change) if enough else None})
    return pd.DataFrame(rows, columns=cols)


def fvu_curve_display(df: pd.DataFrame) -> pd.DataFrame:
    """The table as shown in Markdown and HTML."""
    def num(v):
        return "-" if pd.isna(v) else f"{v:.4f}"

    return pd.DataFrame([{
        "coder": r["coder"], "type": r["type"], "steps": f"{r['steps']:,}", "tokens": f"{r['tokens']:,}",
        **{f"FVU @{q}%": num(r[f"fvu_{q}"]) for q in QUARTERS},
        "change, last quarter": "-" if pd.isna(r["change_last_quarter"]) else f"{r['change_last_quarter']:+.1%}",
        "flattened": {True: "yes", False: "no"}.get(r["flattened"], f"too few steps (< {MIN_STEPS})"),
    } for r in df.to_dict("records")], columns=["coder", "type", "steps", "tokens", *[f"FVU @{q}%" for q in QUARTERS],
                                               "change, last quarter", "flattened"])


def _epochs(data: RunData, coder: str) -> int:
    """Passes over the training tokens, from the coder's cfg.json (1 when it does not say)."""
    path = data.rd.coder_dir(coder) / "cfg.json"
    try:
        meta = json.loads(path.read_text()).get("metadata") or {}
        return int(((meta.get("interp_eval") or {}).get("train") or {}).get("epochs") or 1)
    except (OSError, ValueError, AttributeError, TypeError):
        return 1


def fvu_curves(data: RunData, out: Path) -> Plot:
    plot = Plot("fvu_curves", "Training curves: smoothed FVU against training tokens (has it flattened?)",
                note=f"Trailing mean over {SMOOTH_FRACTION:.0%} of each coder's logged steps (faint: per step); binary coders "
                     f"solid, continuous dashed; legend: change over the last quarter of training (flattened: a fall under "
                     f"{FLAT_DROP:.0%}; see fvu_curve.md). Dotted verticals: epoch boundaries (from cfg.json).")
    if not data.has("train"):
        plot.note = f"no {TRAIN_METRICS}"
        return plot
    plt = _plt()
    import matplotlib.lines as mlines

    curves = _curves(data)
    table = fvu_curve_table(data).set_index("coder")
    styles = _styles(data)
    binary = data.coders["binary"].to_dict()
    panels: dict[tuple[str, bool], list[str]] = {}
    for coder in curves:
        hp = data.coders["hookpoint"].get(coder)
        panels.setdefault((str(hp) if isinstance(hp, str) else "-", coder.endswith(RANDOM_MODEL_SUFFIX)), []).append(coder)
    hookpoints = sorted({hp for hp, _ in panels})
    controls = sorted({c for _, c in panels})
    fig, axes = plt.subplots(len(hookpoints), len(controls), figsize=(7 * len(controls), 4 * len(hookpoints)),
                             squeeze=False)
    for (hp, control), coders in panels.items():
        ax = axes[hookpoints.index(hp)][controls.index(control)]
        for coder in coders:
            c, st = curves[coder], styles.get(coder, {"color": None, "label": coder})
            ls = "-" if binary.get(coder) else "--"
            change, flat = table.at[coder, "change_last_quarter"], table.at[coder, "flattened"]
            label = st["label"] + ("" if pd.isna(change) else f": {change:+.1%}") + {True: ", flattened", False: ", still falling"}.get(flat, "")
            ax.plot(c["tokens"], c["fvu"], color=st["color"], lw=0.6, alpha=0.2)
            ax.plot(c["tokens"], c["smoothed"], color=st["color"], ls=ls, lw=1.4, label=label)
            epochs = _epochs(data, coder)
            for e in range(1, epochs):
                ax.axvline(c["tokens"].iloc[-1] * e / epochs, color=st["color"], ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("training tokens")
        ax.set_title(f"{hp}: " + ("random-model control" if control else "trained model"), fontsize=10)
        ax.grid(alpha=0.3, which="both")
        if len(coders) <= LEGEND_LINES:
            ax.legend(fontsize=7)
        else:
            types = sorted({data.coders["type"].get(c, "?") for c in coders})
            ax.legend(handles=[mlines.Line2D([], [], color=TYPE_COLORS.get(t), ls="-" if t in ("BAE", "BTC") else "--", label=t)
                               for t in types], fontsize=7)
    for i, hp in enumerate(hookpoints):
        for j, control in enumerate(controls):
            if (hp, control) not in panels:
                axes[i][j].set_axis_off()
    for row in axes:
        row[0].set_ylabel("FVU (training batch, smoothed, log)")
    plot.path = _save(fig, out / "fvu_curves.png")
    return plot


__all__ = ["FLAT_DROP", "FVU_CURVE_NOTE", "SMOOTH_FRACTION", "fvu_curve_display", "fvu_curve_table", "fvu_curves", "is_flat", "smoothed"]
