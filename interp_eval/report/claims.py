"""The paper's qualitative claims, each judged against this run's numbers.

A claim is checked on matched pairs: a binary and a continuous coder of the same family (BAE vs SAE,
BTC vs TC), hookpoint and k. Each pair (and scorer, where there is one) gives a difference oriented so
that a positive value supports the claim, with a 95% interval where the number is an estimate over
latents or windows. The verdict:

- reproduced: every difference supports the claim and at least one interval excludes zero (a
  difference without an interval, such as FVU, counts by its sign);
- not reproduced: some difference goes against the claim beyond its interval, or none supports it;
- not measurable by these numbers: no matched pair has the numbers, or the differences are mixed or
  within their intervals (the text then says how many latents would resolve a difference that size).

Interpretability claims (2, 3, 5) are judged only with scorers that have measured power on both
coders of a pair: the power interval (own explanations vs the shuffled control, or vs chance) lies
above zero (scoring/controls.py). A comparison by a scorer without power is listed, marked "not
measurable: <scorer> has no measured power on this run", and left out of the verdict. Coders of the
random-model control (`-randmodel`) are not paired with trained ones; they are compared with their
trained twins in the report's scorer table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from ..catalog import UNIFORM
from ..subject.model import RANDOM_MODEL_SUFFIX
from .inputs import SHOWN_EXPLAINERS, RunData
from .tables import interpretability_scorers, quantile_table, scored_latents, scorer_metric

REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE = "reproduced", "not reproduced", "not measurable by these numbers"
N_BOOT = 2000


@dataclass
class Cell:
    """One comparison: `diff` > 0 supports the claim; lo/hi its 95% interval (None: no interval)."""

    comparison: str
    binary: float
    continuous: float
    diff: float
    lo: float | None = None
    hi: float | None = None
    n: int | None = None  # latents (or windows) per side behind the interval, the smaller side

    @property
    def supports(self) -> bool:
        return self.diff > 0 and (self.lo is None or self.lo > 0)

    @property
    def against(self) -> bool:
        return self.diff < 0 and (self.hi is None or self.hi < 0)


@dataclass
class Claim:
    number: int
    claim: str
    verdict: str
    reason: str
    cells: list[Cell] = field(default_factory=list)
    needed: str | None = None
    note: str | None = None
    difference: str = "binary - continuous"  # how `Cell.diff` is taken
    digits: int = 3

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cells"] = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in c.items()} for c in d["cells"]]
        return d


@dataclass
class Pair:
    family: str
    hookpoint: str | None
    k: int | None
    binary: list[str]
    continuous: list[str]

    @property
    def label(self) -> str:
        b, c = ("BAE", "SAE") if self.family == "sae" else ("BTC", "TC")
        where = ", ".join(x for x in (self.hookpoint or "", f"k={self.k}" if self.k is not None else "") if x)
        return f"{b} vs {c}" + (f" ({where})" if where else "")


def matched_pairs(coders: pd.DataFrame) -> list[Pair]:
    """Binary and continuous coders of one family, hookpoint and k (random-model control coders apart)."""
    pairs = []
    info = coders.reset_index()
    info = info[info["family"].notna() & info["binary"].notna() & ~info["coder"].astype(str).str.endswith(RANDOM_MODEL_SUFFIX)]
    for (family, hp, k), g in info.groupby(["family", info["hookpoint"].fillna(""), info["k"].fillna(-1)], sort=True):
        b = g[g["binary"].astype(bool)]["coder"].tolist()
        c = g[~g["binary"].astype(bool)]["coder"].tolist()
        if b and c:
            pairs.append(Pair(family, hp or None, None if k == -1 else int(k), b, c))
    return pairs


def _verdict(cells: list[Cell]) -> str:
    if not cells:
        return NOT_MEASURABLE
    if any(c.against for c in cells) or all(c.diff <= 0 for c in cells):
        return NOT_REPRODUCED
    if all(c.diff > 0 for c in cells) and any(c.supports for c in cells):
        return REPRODUCED
    return NOT_MEASURABLE


def _needed(cells: list[Cell]) -> str | None:
    """How many latents (windows) per coder would make intervals of this width exclude differences of this size."""
    est = []
    for c in cells:
        if c.lo is None or c.hi is None or not c.n or c.diff == 0 or math.isnan(c.lo):
            continue
        half = (c.hi - c.lo) / 2
        if half >= abs(c.diff):
            est.append((math.ceil(c.n * (half / abs(c.diff)) ** 2), c.n))
    if not est:
        return None
    need, have = max(est)
    return f"about {need:,} per coder (this run: {have:,}) for the intervals to exclude differences of the sizes seen"


# -- the power gate ---------------------------------------------------------------------------------------------

INTERPRETABILITY_METRIC = {"auc": "AUC", "f1": "F1", "accuracy": "accuracy"}


def power_gate(data: RunData, scorer: str, coders: list[str]) -> str | None:
    """None when the scorer has measured power on every coder; else the reason it cannot judge them."""
    s = data.all_summary
    if s is None:
        return f"not measurable: {scorer} has no measured power on this run (no score_summary.parquet)"
    rows = s[(s["scorer"] == scorer) & s["coder"].isin(coders) & s["explainer"].isin(SHOWN_EXPLAINERS)]
    for coder in coders:
        r = rows[rows["coder"] == coder]
        if r.empty or not bool(r["has_power"].iloc[0]):
            if r.empty or not r["power_latents"].iloc[0]:
                return f"not measurable: {scorer} has no measured power on this run ({coder}: no control)"
            r = r.iloc[0]
            against = "chance" if scorer == "intruder" else "shuffled"
            return (f"not measurable: {scorer} has no measured power on this run ({coder}: own {r['power_own']:.3f} vs {against} "
                    f"{r['power_control']:.3f}, power {r['power']:+.3f} [{r['power_ci_low']:+.3f}, {r['power_ci_high']:+.3f}])")
    return None


def _gate_text(gated: list[str]) -> str | None:
    return None if not gated else "Left out of the verdict: " + "; ".join(gated) + "."


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _tally(cells: list[Cell], digits: int = 3) -> str:
    """Plain words: how many comparisons go the claimed way, how many beyond their interval, the range of differences."""
    n, up, against = len(cells), sum(c.diff > 0 for c in cells), sum(c.against for c in cells)
    with_ci = [c for c in cells if c.lo is not None]
    out = f"{up} of {n} comparison{'s' if n > 1 else ''} go{'es' if n == 1 else ''} the claimed way"
    if with_ci:
        out += f" ({sum(c.supports for c in with_ci)} with a 95% interval above zero)"
    if against:
        out += f"; {against} go{'es' if against == 1 else ''} against it" + (" beyond the interval" if with_ci else "")
    lo, hi = min(c.diff for c in cells), max(c.diff for c in cells)
    out += f"; difference {lo:+.{digits}f}" if lo == hi else f"; differences {lo:+.{digits}f} to {hi:+.{digits}f}"
    return out


def cells_markdown(claim: Claim) -> str:
    d = claim.digits
    lines = [f"| comparison | binary | continuous | difference ({claim.difference}) | 95% interval | n per side |", "|---|---|---|---|---|---|"]
    for c in claim.cells:
        ci = f"[{_fmt(c.lo, d)}, {_fmt(c.hi, d)}]" if c.lo is not None else "-"
        lines.append(f"| {c.comparison} | {_fmt(c.binary, d)} | {_fmt(c.continuous, d)} | {c.diff:+.{d}f} | {ci} | {c.n if c.n else '-'} |")
    return "\n".join(lines)


def _boot_diff(a: np.ndarray, b: np.ndarray, stat, seed: int) -> tuple[float, float]:
    """95% percentile interval of stat(a*) - stat(b*), resampling each side independently."""
    rng = np.random.default_rng(seed)
    ia = rng.integers(0, len(a), size=(N_BOOT, len(a)))
    ib = rng.integers(0, len(b), size=(N_BOOT, len(b)))
    d = stat(a, ia) - stat(b, ib)
    d = d[~np.isnan(d)]
    if len(d) == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(d, [0.025, 0.975])
    return float(lo), float(hi)


def _mean_stat(v: np.ndarray, idx: np.ndarray) -> np.ndarray:
    return v[idx].mean(axis=1)


def _weighted_stat(vw: np.ndarray, idx: np.ndarray) -> np.ndarray:
    v, w = vw[:, 0][idx], vw[:, 1][idx]
    den = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (v * w).sum(axis=1) / den, np.nan)


def _pair_means(per_coder: pd.Series, p: Pair) -> tuple[float, float] | None:
    """(binary, continuous): the mean of a per-coder figure over each side of a matched pair, or None
    where either side has no value."""
    b, c = per_coder.reindex(p.binary).mean(), per_coder.reindex(p.continuous).mean()
    return None if math.isnan(b) or math.isnan(c) else (float(b), float(c))


def _pair_cells(per_coder: pd.Series, pairs: list[Pair]) -> list[Cell]:
    """One cell per matched pair with a value on both sides: binary, continuous, binary - continuous."""
    cells = []
    for p in pairs:
        means = _pair_means(per_coder, p)
        if means is not None:
            b, c = means
            cells.append(Cell(p.label, b, c, b - c))
    return cells


# -- the five claims ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClaimInputs:
    """What every claim is judged on: the run, its per-coder table (coder_table), the matched pairs and the
    report's settings. Each claim is a function of this alone, so the claims are one table (CLAIMS)."""

    data: RunData
    table: pd.DataFrame
    pairs: list[Pair]
    uhf_threshold: float = 0.01  # firing rate above which a latent is ultra-high-frequency (claim 4)
    top_quantiles: int = 2  # activation deciles counted as "high" (claim 3)
    seed: int = 0  # bootstrap seed


def claim_fvu(run: ClaimInputs) -> Claim:
    table, pairs = run.table, run.pairs
    text = "Binary coders reconstruct worse: higher FVU than continuous coders at equal k."
    cells = _pair_cells(table.set_index("coder")["fvu"], pairs)
    if not cells:
        return Claim(1, text, NOT_MEASURABLE, "No matched binary/continuous pair with FVU (recon_eval.parquet from `interp-eval train`).",
                     needed="train a binary and a continuous coder of the same family, hookpoint and k")
    v = _verdict(cells)
    reason = f"FVU on held-out tokens (recon_eval.parquet), binary minus continuous, per matched pair: {_tally(cells)}."
    fvus = [x for c in cells for x in (c.binary, c.continuous)]
    needed = None if v == REPRODUCED else (
        f"coders trained to convergence on many more tokens, as in the paper (FVU here is {min(fvus):.2f}-{max(fvus):.2f}), "
        "ideally over several seeds to see the run-to-run spread")
    return Claim(1, text, v, reason, cells, needed=needed)


def claim_interpretability(run: ClaimInputs) -> Claim:
    data, pairs, seed = run.data, run.pairs, run.seed
    text = ("Binary coders' latents are more interpretable: higher detection and fuzzing F1 (AUC for the embedding scorers, "
            "accuracy for the intruder) than continuous coders (BAE vs SAE, BTC vs TC).")
    cells, gated = [], []
    for scorer in interpretability_scorers(data):
        s = scored_latents(data, scorer)
        m = scorer_metric(scorer)
        if s.empty:
            continue
        for p in pairs:
            a = s[s["coder"].isin(p.binary)][m].dropna().to_numpy(np.float64)
            b = s[s["coder"].isin(p.continuous)][m].dropna().to_numpy(np.float64)
            if not (len(a) and len(b)):
                continue
            if (why := power_gate(data, scorer, [*p.binary, *p.continuous])) is not None:
                gated.append(f"{p.label}, {scorer}: {why}")
                continue
            lo, hi = _boot_diff(a, b, _mean_stat, seed) if min(len(a), len(b)) > 1 else (math.nan, math.nan)
            cells.append(Cell(f"{p.label}, {scorer} ({INTERPRETABILITY_METRIC[m]})", float(a.mean()), float(b.mean()), float(a.mean() - b.mean()),
                              None if math.isnan(lo) else lo, None if math.isnan(hi) else hi, min(len(a), len(b))))
    gate = _gate_text(gated)
    if not cells:
        reason = ("No scorer with measured power has scores of a matched pair." if gated else
                  "No matched pair has interpretability scores (latent_scores.parquet from `interp-eval score`).")
        return Claim(2, text, NOT_MEASURABLE, reason, note=gate,
                     needed="a scorer whose power interval clears zero on both coders (more latents, or a stronger scorer LLM)"
                     if gated else "explain and score latents of a binary and a continuous coder of the same family, hookpoint and k")
    v = _verdict(cells)
    reason = (f"Mean score over scored latents, binary minus continuous, with a bootstrap 95% interval of the difference, "
              f"by scorers with measured power: {_tally(cells)}.")
    return Claim(2, text, v, reason, cells, needed=None if v == REPRODUCED else _needed(cells), note=gate)


def claim_high_activations(run: ClaimInputs) -> Claim:
    data, pairs, top_quantiles = run.data, run.pairs, run.top_quantiles
    text = "Binarising makes highly-activating features more interpretable: at high activations binary latents score better."
    top = {str(q) for q in range(10 - top_quantiles, 10)}
    handling = (f"Binary coders have no activation order (every activation is 1), so all of a binary latent's activating test "
                f"windows form one 'uniform' bin; its recall (share of activating windows the scorer says fire) is compared with "
                f"the continuous coder's recall on its top {top_quantiles} activation deciles "
                f"({', '.join(sorted(top))}), i.e. binary latents at full activation against continuous latents at their highest.")
    q = quantile_table(data)
    cells, gated = [], []
    for scorer in sorted(set(q["scorer"])) if len(q) else []:
        qs = q[(q["scorer"] == scorer) & q["recall"].notna()]
        for p in pairs:
            def pooled(coders, bins):
                g = qs[qs["coder"].isin(coders) & qs["quantile"].isin(bins)]
                n = (g["windows"].fillna(0) - g["failures"].fillna(0)).clip(lower=0)
                if n.sum() <= 0:
                    return math.nan, 0
                return float((g["recall"] * n).sum() / n.sum()), int(n.sum())
            rb, nb = pooled(p.binary, {UNIFORM} | top)
            rc, nc = pooled(p.continuous, top)
            if nb and nc and (why := power_gate(data, scorer, [*p.binary, *p.continuous])) is not None:
                gated.append(f"{p.label}, {scorer}: {why}")
            elif nb and nc:
                se = math.sqrt(rb * (1 - rb) / nb + rc * (1 - rc) / nc)
                d = rb - rc
                cells.append(Cell(f"{p.label}, {scorer}", rb, rc, d, d - 1.96 * se if se > 0 else None,
                                  d + 1.96 * se if se > 0 else None, min(nb, nc)))
    gate = _gate_text(gated)
    if not cells:
        if gated:
            return Claim(3, text, NOT_MEASURABLE, "No scorer with measured power has recall by activation quantile for a matched pair.",
                         needed="a scorer whose power interval clears zero on both coders", note=" ".join(x for x in (gate, handling) if x))
        return Claim(3, text, NOT_MEASURABLE,
                     "No matched pair has scores by activation quantile (score_by_quantile.parquet or predictions.parquet from `interp-eval score`). " + handling,
                     needed="score a binary and a continuous coder of the same family, hookpoint and k", note=handling)
    handling = " ".join(x for x in (gate, handling) if x)
    v = _verdict(cells)
    reason = (f"Recall on activating test windows, binary (uniform bin) vs continuous (top {top_quantiles} deciles), with a normal-approximation "
              f"95% interval over windows: {_tally(cells)}.")
    needed = None if v == REPRODUCED else (_needed(cells) or "").replace("per coder", "activating test windows per coder") or None
    return Claim(3, text, v, reason, cells, needed=needed, note=handling)


def claim_uhf(run: ClaimInputs) -> Claim:
    data, table, pairs, threshold = run.data, run.table, run.pairs, run.uhf_threshold
    text = f"Binary coders have more ultra-high-frequency latents (firing on more than {threshold:.0%} of tokens)."
    # firing rates over the mining pass (every held-out token mined), not the much smaller reconstruction eval
    if data.has("latents"):
        lat = data.latents
        frac = lat.assign(u=lat["frequency"].astype(float) > threshold).groupby("coder")["u"].mean()
        source = f"latents.parquet, over the {int(lat['n_tokens'].max()):,} mined tokens"
    else:
        frac = table.set_index("coder")[f"uhf_fraction_{threshold:g}"]
        source = "recon_eval.parquet (no mining pass: its evaluation tokens only)"
    d_sae = table.set_index("coder")["d_sae"]
    cells = _pair_cells(frac, pairs)
    if not cells:
        return Claim(4, text, NOT_MEASURABLE, "No matched pair has firing rates (recon_eval.parquet or latents.parquet).",
                     needed="train and evaluate (or mine) a binary and a continuous coder of the same family, hookpoint and k")
    counts = []
    for p in pairs:
        nb = sum(int(round(frac.get(x, 0) * (d_sae.get(x) or 0))) for x in p.binary)
        nc = sum(int(round(frac.get(x, 0) * (d_sae.get(x) or 0))) for x in p.continuous)
        counts.append(f"{p.label}: {nb} vs {nc} latents")
    v = _verdict(cells)
    reason = (f"Fraction of latents firing on more than {threshold:.0%} of tokens ({source}): {_tally(cells, 4)}. Counts (binary vs continuous): {'; '.join(counts)}.")
    if all(c.binary == 0 and c.continuous == 0 for c in cells):
        reason += " Neither kind has any such latent here; short training runs may not have grown them."
    return Claim(4, text, v, reason, cells, digits=4,
                 needed=None if v == REPRODUCED else "longer training (the paper trains on far more tokens) and a firing-rate estimate over more tokens")


def claim_freq_weighted(run: ClaimInputs) -> Claim:
    data, pairs, seed = run.data, run.pairs, run.seed
    text = ("Weighted by firing frequency (sum_i F1_i c_i / sum_i c_i, per hookpoint), continuous coders score slightly better "
            "than binary ones.")
    cells, gated = [], []
    for scorer in interpretability_scorers(data):
        m = scorer_metric(scorer)
        s = scored_latents(data, scorer)
        s = s[s[m].notna() & s["firing_count"].notna()]
        for p in pairs:
            a = s[s["coder"].isin(p.continuous)][[m, "firing_count"]].to_numpy(np.float64)
            b = s[s["coder"].isin(p.binary)][[m, "firing_count"]].to_numpy(np.float64)
            if len(a) and len(b) and (why := power_gate(data, scorer, [*p.binary, *p.continuous])) is not None:
                gated.append(f"{p.label}, {scorer}: {why}")
            elif len(a) and len(b) and a[:, 1].sum() > 0 and b[:, 1].sum() > 0:
                wa = float((a[:, 0] * a[:, 1]).sum() / a[:, 1].sum())
                wb = float((b[:, 0] * b[:, 1]).sum() / b[:, 1].sum())
                lo, hi = _boot_diff(a, b, _weighted_stat, seed) if min(len(a), len(b)) > 1 else (math.nan, math.nan)
                cells.append(Cell(f"{p.label}, {scorer} ({INTERPRETABILITY_METRIC[m]})", wb, wa, wa - wb, None if math.isnan(lo) else lo,
                                  None if math.isnan(hi) else hi, min(len(a), len(b))))
    gate = _gate_text(gated)
    if not cells:
        if gated:
            return Claim(5, text, NOT_MEASURABLE, "No scorer with measured power has scores of a matched pair.", note=gate,
                         needed="a scorer whose power interval clears zero on both coders")
        return Claim(5, text, NOT_MEASURABLE, "No matched pair has scores with firing counts (latent_scores.parquet and latents.parquet).",
                     needed="score latents of a binary and a continuous coder of the same family, hookpoint and k")
    v = _verdict(cells)
    reason = (f"Frequency-weighted score over scored latents (F1; AUC for the embedding scorers), continuous minus binary, with a bootstrap "
              f"95% interval over latents, by scorers with measured power: {_tally(cells)}.")
    note = ("Only scored latents enter the weighting, so ultra-high-frequency latents count only if they were explained and scored; "
            "the paper's reversal (binary better unweighted, continuous better weighted) needs both claims 2 and 5 to hold.")
    note = " ".join(x for x in (gate, note) if x)
    return Claim(5, text, v, reason, cells, needed=None if v == REPRODUCED else _needed(cells), note=note,
                 difference="continuous - binary")


CLAIMS: tuple[Callable[[ClaimInputs], Claim], ...] = (
    claim_fvu, claim_interpretability, claim_high_activations, claim_uhf, claim_freq_weighted,
)  # the paper's claims in its order: adding one is one function of this signature and one entry here


def evaluate_claims(data: RunData, table: pd.DataFrame, *, uhf_threshold: float = 0.01, top_quantiles: int = 2, seed: int = 0) -> list[Claim]:
    run = ClaimInputs(data, table, matched_pairs(data.coders), uhf_threshold, top_quantiles, seed)
    return [claim(run) for claim in CLAIMS]


def claims_markdown(claims: list[Claim], pairs_note: str) -> str:
    lines = [
        "# The paper's claims against this run",
        "",
        "Claim under test (PAPER.md): binarising a sparse coder's latents makes highly-activating features more "
        "interpretable, at the cost of higher FVU; binary coders grow more ultra-high-frequency latents; weighted by "
        "firing frequency, continuous coders score slightly better.",
        "",
        pairs_note,
        "",
        "Verdicts: **reproduced** (every matched comparison goes the claimed way and at least one is outside its 95% interval), "
        "**not reproduced** (a comparison goes against the claim beyond its interval, or none supports it), "
        "**not measurable by these numbers** (no matched comparison, or differences mixed or within their intervals).",
        "",
        "| # | claim | verdict |",
        "|---|---|---|",
    ]
    for c in claims:
        lines.append(f"| {c.number} | {c.claim.replace('|', '/')} | **{c.verdict}** |")
    for c in claims:
        lines += ["", f"## {c.number}. {c.claim}", "", f"**{c.verdict}.** {c.reason}"]
        if c.cells:
            lines += ["", cells_markdown(c)]
        if c.note:
            lines += ["", c.note]
        if c.needed:
            lines += ["", f"What would settle it: {c.needed}."]
    return "\n".join(lines) + "\n"


def pairs_note(data: RunData) -> str:
    pairs = matched_pairs(data.coders)
    if not pairs:
        return ("Matched pairs: none. A comparison needs a binary and a continuous coder of the same family (SAE/BAE or TC/BTC), "
                "hookpoint and k.")
    return "Matched pairs (same family, hookpoint and k): " + "; ".join(
        f"{p.label}: {', '.join(p.binary)} vs {', '.join(p.continuous)}" for p in pairs) + "."
