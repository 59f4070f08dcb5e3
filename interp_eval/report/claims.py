"""The paper's qualitative claims, each judged against this run's numbers.

A claim is checked on matched pairs: a binary and a continuous coder of the same family (BAE vs SAE,
BTC vs TC), hookpoint and k. Each pair (and scorer, where there is one) gives a difference oriented so
that a positive value supports the claim, with a 95% interval where the number is an estimate over
latents. A difference goes the claimed way, or against it, "beyond its interval" when the interval
excludes zero; a difference without an interval (FVU, firing counts) counts by its sign. The verdict:

- reproduced: every difference is positive and at least one lies beyond its interval;
- not reproduced: some difference goes against the claim beyond its interval (evidence against it);
- not measurable by these numbers: no matched pair has the numbers, or nothing goes against the claim
  beyond its interval and nothing proves it (differences mixed, or within their intervals, or all
  zero); the text then says how many latents would resolve a difference of the size seen.

Which comparisons count. Interpretability claims (2, 3, 5) are judged only with scorers that have
measured power on both coders of a pair: the power interval (own explanations vs the shuffled control,
or vs chance) lies above zero, over at least MIN_POWER_LATENTS (20) paired latents (scoring/controls.py).
No comparison over latents counts with fewer than 20 latents on a side ("too few latents"). A comparison
left out is listed with its reason, e.g. "not measurable: <scorer> has no measured power on this run".
Coders of the random-model control (`-randmodel`) are not paired with trained ones; they are compared
with their trained twins in the report's scorer table.

Borderline. A comparison sits on the edge when the end of its interval that decides its call (the lower
end of a positive difference, the upper end of a negative one) lies within 0.1 x the interval's
half-width of zero (controls.on_edge, the rule of the power calls too), or when the power call of its
scorer sits on the edge. A verdict is marked "(borderline)" when one such call, made the other way (the
interval end across zero; the comparison left out, or counted), would change it: a rerun of the same
command could then give another verdict.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..catalog import UNIFORM
from ..scoring.controls import EDGE_MARGIN, MIN_POWER_LATENTS, Power, on_edge, too_few_latents
from ..subject.model import RANDOM_MODEL_SUFFIX
from .inputs import SHOWN_EXPLAINERS, RunData
from .tables import interpretability_scorers, latent_quantile_recall, scored_latents, scorer_metric

UHF_COUNT_THRESHOLDS = (0.001, 0.01, 0.1)  # firing rates at which claim 4 counts latents (its verdict: at uhf_threshold)
REPRODUCED, NOT_REPRODUCED, NOT_MEASURABLE = "reproduced", "not reproduced", "not measurable by these numbers"
FOR, AGAINST, WITHIN = "for", "against", "within"  # a comparison's call: beyond its interval either way, or not
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
    n: int | None = None  # latents per side behind the interval, the smaller side
    power_edge: bool = False  # the power call of the comparison's scorer sits on the edge of its interval

    @property
    def call(self) -> str:
        """FOR or AGAINST the claim beyond the interval (by the sign, without one), else WITHIN."""
        if self.diff > 0 and (self.lo is None or self.lo > 0):
            return FOR
        if self.diff < 0 and (self.hi is None or self.hi < 0):
            return AGAINST
        return WITHIN

    @property
    def supports(self) -> bool:
        return self.call == FOR

    @property
    def against(self) -> bool:
        return self.call == AGAINST

    @property
    def on_edge(self) -> bool:
        """The interval end that decides the call (lo of a positive difference, hi of a negative one) is on the edge."""
        end = self.lo if self.diff > 0 else self.hi if self.diff < 0 else None
        return on_edge(end, self.lo, self.hi)

    @property
    def other_call(self) -> str:
        """The call were the deciding end on the other side of zero."""
        return WITHIN if self.call != WITHIN else FOR if self.diff > 0 else AGAINST

    @property
    def edge(self) -> str | None:
        """What of the comparison sits on the edge, in words (None: nothing)."""
        marks = [m for m, on in (("interval", self.on_edge), ("scorer power", self.power_edge)) if on]
        return ", ".join(marks) or None


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
    borderline: bool = False  # one call on the edge of its interval, made the other way, would change the verdict

    def to_dict(self) -> dict:
        d = asdict(self)
        d["cells"] = [{**{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in c.items()}, "edge": cell.edge}
                      for c, cell in zip(d["cells"], self.cells)]
        return d


@dataclass
class Pair:
    family: str
    hookpoint: str | None
    k: int | None
    binary: list[str]
    continuous: list[str]
    variant: str = ""  # the binary side's variant (e.g. "nonorm": a BAE trained another way), "" for the plain kind

    @property
    def label(self) -> str:
        b, c = ("BAE", "SAE") if self.family == "sae" else ("BTC", "TC")
        where = ", ".join(x for x in (self.hookpoint or "", f"k={self.k}" if self.k is not None else "") if x)
        return f"{b}{'-' + self.variant if self.variant else ''} vs {c}" + (f" ({where})" if where else "")


def coder_variant(coder: str, k: int | None) -> str:
    """What a coder's name says after its `-k<k>` beyond the seed: `bae-layers.9.mlp-k32-nonorm-s1` -> "nonorm"."""
    from .seeds import seed_group

    base = seed_group(coder)[0]
    m = re.search(rf"-k{k}-(.+)$", base) if k is not None else None
    return m.group(1) if m else ""


def matched_pairs(coders: pd.DataFrame) -> list[Pair]:
    """Binary and continuous coders of one family, hookpoint and k (random-model control coders apart); each
    variant of a binary kind (a name suffix after -k<k>, such as -nonorm) is its own pair with the plain continuous
    coders, and the seeds of one kind and variant are one side of a pair."""
    pairs = []
    info = coders.reset_index()
    info = info[info["family"].notna() & info["binary"].notna() & ~info["coder"].astype(str).str.endswith(RANDOM_MODEL_SUFFIX)]
    for (family, hp, k), g in info.groupby(["family", info["hookpoint"].fillna(""), info["k"].fillna(-1)], sort=True):
        k = None if k == -1 else int(k)
        variant = {c: coder_variant(c, k) for c in g["coder"]}
        c = [x for x in g[~g["binary"].astype(bool)]["coder"] if not variant[x]]
        binary = g[g["binary"].astype(bool)]["coder"].tolist()
        for v in sorted({variant[x] for x in binary}):
            b = [x for x in binary if variant[x] == v]
            if b and c:
                pairs.append(Pair(family, hp or None, k, b, c, v))
    return pairs


def _verdict_of(calls: list[tuple[float, str]]) -> str:
    """The verdict from each comparison's (difference, call)."""
    if not calls:
        return NOT_MEASURABLE
    if any(call == AGAINST for _, call in calls):
        return NOT_REPRODUCED
    if all(diff > 0 for diff, _ in calls) and any(call == FOR for _, call in calls):
        return REPRODUCED
    return NOT_MEASURABLE


def judge(cells: list[Cell], left_out_on_edge: Sequence[Cell] = ()) -> tuple[str, bool]:
    """The verdict on the counted comparisons, and whether it is borderline: whether one call on the edge, made the other
    way, changes it (a comparison's interval end across zero; a comparison counted by a power call on its edge left out;
    one left out by a power call on its edge counted)."""
    calls = [(c.diff, c.call) for c in cells]
    verdict = _verdict_of(calls)
    variants = [[*calls[:i], (c.diff, c.other_call), *calls[i + 1:]] for i, c in enumerate(cells) if c.on_edge]
    variants += [[*calls[:i], *calls[i + 1:]] for i, c in enumerate(cells) if c.power_edge]
    variants += [[*calls, (c.diff, c.call)] for c in left_out_on_edge]
    return verdict, any(_verdict_of(v) != verdict for v in variants)


@dataclass
class Comparisons:
    """One claim's comparisons: those its verdict counts, and those left out with the reason (the power gate, or fewer
    than MIN_POWER_LATENTS latents on a side). `edge` keeps those a power call on its edge left out."""

    cells: list[Cell] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)
    edge: list[Cell] = field(default_factory=list)

    def add(self, cell: Cell, gate: tuple[str | None, bool] = (None, False)) -> None:
        """Count `cell` unless the gate (power_gate's answer for its scorer) or the floor on latents leaves it out."""
        why, power_edge = gate
        few = too_few_latents(cell.n) if cell.n is not None else None
        if why is None and few is None:
            self.cells.append(replace(cell, power_edge=power_edge))
            return
        self.left_out.append(f"{cell.comparison}: {why or f'not measurable: {few} on a side'}")
        if why is not None and few is None and power_edge:
            self.edge.append(cell)

    def judge(self) -> tuple[str, bool]:
        return judge(self.cells, self.edge)

    @property
    def note(self) -> str | None:
        return None if not self.left_out else "Left out of the verdict: " + "; ".join(self.left_out) + "."


def _needed(cells: list[Cell]) -> str | None:
    """How many latents per coder would make intervals of this width exclude differences of this size."""
    est = []
    for c in cells:
        if c.lo is None or c.hi is None or not c.n or c.diff == 0 or math.isnan(c.lo):
            continue
        half = (c.hi - c.lo) / 2
        if half >= abs(c.diff):
            est.append((max(math.ceil(c.n * (half / abs(c.diff)) ** 2), MIN_POWER_LATENTS), c.n))
    if not est:
        return None
    need, have = max(est)
    return f"about {need:,} per coder (this run: {have:,}) for the intervals to exclude differences of the sizes seen"


# -- the power gate ---------------------------------------------------------------------------------------------

INTERPRETABILITY_METRIC = {"auc": "AUC", "f1": "F1", "accuracy": "accuracy", "correlation": "Pearson r"}


def power_gate(data: RunData, scorer: str, coders: list[str]) -> tuple[str | None, bool]:
    """Why the scorer cannot judge these coders (None when it has measured power on every one it scored; a coder it
    never scored is left out), and whether that call sits on the edge: a borderline "has power" on one of them (counted), or only borderline misses (left out)."""
    s = data.all_summary
    if s is None:
        return f"not measurable: {scorer} has no measured power on this run (no score_summary.parquet)", False
    rows = s[(s["scorer"] == scorer) & s["coder"].isin(coders) & s["explainer"].isin(SHOWN_EXPLAINERS)]
    # a coder the scorer never scored (e.g. a second seed the LLM scorers skip) brings no scores to the comparison
    scored = [c for c in coders if (rows["coder"] == c).any()]
    if not scored:
        return f"not measurable: {scorer} scored none of {', '.join(coders)}", False
    powers = {c: Power.from_row(rows[rows["coder"] == c].iloc[0]) for c in scored}
    missing = [c for c, p in powers.items() if p is None or not p.has_power]
    if not missing:
        return None, any(p.borderline for p in powers.values())
    edge = all(powers[c] is not None and powers[c].borderline for c in missing)
    coder, p = missing[0], powers[missing[0]]
    if p is None or not p.latents:
        return f"not measurable: {scorer} has no measured power on this run ({coder}: no control)", edge
    against = "chance" if scorer == "intruder" else "shuffled"
    return (f"not measurable: {scorer} has {p.label} on this run ({coder}: own {p.own:.3f} vs {against} {p.control:.3f}, "
            f"power {p.power:+.3f} [{p.ci_low:+.3f}, {p.ci_high:+.3f}])"), edge


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
    edge = any(c.edge for c in claim.cells)  # a column only where some comparison sits on the edge
    lines = [f"| comparison | binary | continuous | difference ({claim.difference}) | 95% interval | n per side |"
             + (" on the edge |" if edge else ""), "|---|---|---|---|---|---|" + ("---|" if edge else "")]
    for c in claim.cells:
        ci = f"[{_fmt(c.lo, d)}, {_fmt(c.hi, d)}]" if c.lo is not None else "-"
        lines.append(f"| {c.comparison} | {_fmt(c.binary, d)} | {_fmt(c.continuous, d)} | {c.diff:+.{d}f} | {ci} | {c.n if c.n else '-'} |"
                     + (f" {c.edge or '-'} |" if edge else ""))
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
    """One cell per matched pair with a value on both sides: binary, continuous, binary - continuous (means over the
    seeds of each side). With two or more seeds on each side, the interval is the range of the differences over
    every pairing of a binary seed with a continuous one (n: seeds on the smaller side), so a difference that some
    seed pairing reverses is not counted as beyond its interval; with one seed a side, no interval (the sign counts)."""
    cells = []
    for p in pairs:
        means = _pair_means(per_coder, p)
        if means is not None:
            b, c = means
            vb = per_coder.reindex(p.binary).dropna().to_numpy(np.float64)
            vc = per_coder.reindex(p.continuous).dropna().to_numpy(np.float64)
            if min(len(vb), len(vc)) >= 2:
                d = (vb[:, None] - vc[None, :]).ravel()
                cells.append(Cell(p.label, b, c, b - c, float(d.min()), float(d.max()), min(len(vb), len(vc))))
            else:
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
    v, edge = judge(cells)
    reason = f"FVU on held-out tokens (recon_eval.parquet), binary minus continuous, per matched pair: {_tally(cells)}."
    fvus = [x for c in cells for x in (c.binary, c.continuous)]
    needed = None if v == REPRODUCED else (
        f"coders trained to convergence on many more tokens, as in the paper (FVU here is {min(fvus):.2f}-{max(fvus):.2f}), "
        "ideally over several seeds to see the run-to-run spread")
    return Claim(1, text, v, reason, cells, needed=needed, borderline=edge)


def _boot_cell(label: str, a: np.ndarray, b: np.ndarray, seed: int) -> Cell:
    """a.mean() vs b.mean() (one value a latent on each side), with a bootstrap interval resampling latents on each side."""
    lo, hi = _boot_diff(a, b, _mean_stat, seed) if min(len(a), len(b)) > 1 else (math.nan, math.nan)
    return Cell(label, float(a.mean()), float(b.mean()), float(a.mean() - b.mean()), None if math.isnan(lo) else lo,
                None if math.isnan(hi) else hi, min(len(a), len(b)))


GATED_NEEDED = f"a scorer whose power interval clears zero on both coders, over at least {MIN_POWER_LATENTS} latents each"


def claim_interpretability(run: ClaimInputs) -> Claim:
    data, pairs, seed = run.data, run.pairs, run.seed
    text = ("Binary coders' latents are more interpretable: higher detection and fuzzing F1 (AUC for the embedding scorers, "
            "accuracy for the intruder) than continuous coders (BAE vs SAE, BTC vs TC).")
    comp = Comparisons()
    for scorer in interpretability_scorers(data):
        s = scored_latents(data, scorer)
        m = scorer_metric(scorer)
        if s.empty:
            continue
        for p in pairs:
            a = s[s["coder"].isin(p.binary)][m].dropna().to_numpy(np.float64)
            b = s[s["coder"].isin(p.continuous)][m].dropna().to_numpy(np.float64)
            if len(a) and len(b):
                comp.add(_boot_cell(f"{p.label}, {scorer} ({INTERPRETABILITY_METRIC.get(m, m)})", a, b, seed),
                         power_gate(data, scorer, [*p.binary, *p.continuous]))
    cells = comp.cells
    if not cells:
        reason = (f"No comparison by a scorer with measured power, over at least {MIN_POWER_LATENTS} latents a side." if comp.left_out else
                  "No matched pair has interpretability scores (latent_scores.parquet from `interp-eval score`).")
        return Claim(2, text, NOT_MEASURABLE, reason, note=comp.note, borderline=comp.judge()[1],
                     needed=f"{GATED_NEEDED} (more latents, or a stronger scorer LLM)"
                     if comp.left_out else "explain and score latents of a binary and a continuous coder of the same family, hookpoint and k")
    v, edge = comp.judge()
    reason = (f"Mean score over scored latents, binary minus continuous, with a bootstrap 95% interval of the difference, "
              f"by scorers with measured power: {_tally(cells)}.")
    return Claim(2, text, v, reason, cells, needed=None if v == REPRODUCED else _needed(cells), note=comp.note, borderline=edge)


def _latent_recalls(recall: pd.DataFrame, coders: list[str], bins: set[str]) -> np.ndarray:
    """Per latent of `coders` with activating test windows in `bins`: the share of them the scorer said fire."""
    g = recall[recall["coder"].isin(coders) & recall["quantile"].isin(bins)].groupby(["coder", "latent"])[["windows", "fired"]].sum()
    g = g[g["windows"] > 0]
    return (g["fired"] / g["windows"]).to_numpy(np.float64)


def claim_high_activations(run: ClaimInputs) -> Claim:
    data, pairs, top_quantiles, seed = run.data, run.pairs, run.top_quantiles, run.seed
    text = "Binarising makes highly-activating features more interpretable: at high activations binary latents score better."
    top = {str(q) for q in range(10 - top_quantiles, 10)}
    handling = (f"Binary coders have no activation order (every activation is 1), so all of a binary latent's activating test "
                f"windows form one 'uniform' bin; its recall (share of activating windows the scorer says fire) is compared with "
                f"the continuous latent's recall on its top {top_quantiles} activation deciles "
                f"({', '.join(sorted(top))}), i.e. binary latents at full activation against continuous latents at their highest.")
    recall = latent_quantile_recall(data)
    comp = Comparisons()
    for scorer in sorted(set(recall["scorer"])):
        r = recall[recall["scorer"] == scorer]
        for p in pairs:
            a = _latent_recalls(r, p.binary, {UNIFORM} | top)
            b = _latent_recalls(r, p.continuous, top)
            if len(a) and len(b):
                comp.add(_boot_cell(f"{p.label}, {scorer}", a, b, seed), power_gate(data, scorer, [*p.binary, *p.continuous]))
    cells = comp.cells
    note = " ".join(x for x in (comp.note, handling) if x)
    if not cells:
        if comp.left_out:
            return Claim(3, text, NOT_MEASURABLE,
                         f"No scorer with measured power has recall by activation quantile for a matched pair, over at least "
                         f"{MIN_POWER_LATENTS} latents a side.", needed=GATED_NEEDED, note=note, borderline=comp.judge()[1])
        return Claim(3, text, NOT_MEASURABLE,
                     "No matched pair has 0/1 decisions on activating test windows by activation quantile (predictions.parquet from "
                     "`interp-eval score` with detection or fuzzing).",
                     needed="score a binary and a continuous coder of the same family, hookpoint and k", note=handling)
    v, edge = comp.judge()
    reason = (f"Mean over latents of each latent's recall on its activating test windows, binary (uniform bin) minus continuous "
              f"(top {top_quantiles} deciles), with a bootstrap 95% interval resampling latents on each side: {_tally(cells)}.")
    return Claim(3, text, v, reason, cells, needed=None if v == REPRODUCED else _needed(cells), note=note, borderline=edge)


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
    def count(coders: list[str], rate: pd.Series) -> str:  # latents above the threshold, the mean over seeds
        n = [rate.get(x, 0) * (d_sae.get(x) or 0) for x in coders]
        return f"{np.mean(n):,.0f}" + (f" ({min(n):,.0f}-{max(n):,.0f} over {len(n)} seeds)" if len(n) > 1 else "")

    counts = []
    for t in UHF_COUNT_THRESHOLDS if data.has("latents") else (threshold,):
        rate = frac if t == threshold else data.latents.assign(u=data.latents["frequency"].astype(float) > t).groupby("coder")["u"].mean()
        counts.append(f"above {t:.1%}: " + "; ".join(f"{p.label} {count(p.binary, rate)} vs {count(p.continuous, rate)}" for p in pairs))
    v, edge = judge(cells)
    reason = (f"Fraction of latents firing on more than {threshold:.0%} of tokens ({source}): {_tally(cells, 4)}. "
              f"Latents per coder (binary vs continuous), {' | '.join(counts)}.")
    if all(c.binary == 0 and c.continuous == 0 for c in cells):
        reason += " Neither kind has any such latent here; short training runs may not have grown them."
    return Claim(4, text, v, reason, cells, digits=4, borderline=edge,
                 needed=None if v == REPRODUCED else "longer training (the paper trains on far more tokens) and a firing-rate estimate over more tokens")


def claim_freq_weighted(run: ClaimInputs) -> Claim:
    data, pairs, seed = run.data, run.pairs, run.seed
    text = ("Weighted by firing frequency (sum_i F1_i c_i / sum_i c_i, per hookpoint), continuous coders score slightly better "
            "than binary ones.")
    comp = Comparisons()
    for scorer in interpretability_scorers(data):
        m = scorer_metric(scorer)
        s = scored_latents(data, scorer)
        s = s[s[m].notna() & s["firing_count"].notna()]
        for p in pairs:
            a = s[s["coder"].isin(p.continuous)][[m, "firing_count"]].to_numpy(np.float64)
            b = s[s["coder"].isin(p.binary)][[m, "firing_count"]].to_numpy(np.float64)
            if len(a) and len(b) and a[:, 1].sum() > 0 and b[:, 1].sum() > 0:
                wa = float((a[:, 0] * a[:, 1]).sum() / a[:, 1].sum())
                wb = float((b[:, 0] * b[:, 1]).sum() / b[:, 1].sum())
                lo, hi = _boot_diff(a, b, _weighted_stat, seed) if min(len(a), len(b)) > 1 else (math.nan, math.nan)
                comp.add(Cell(f"{p.label}, {scorer} ({INTERPRETABILITY_METRIC.get(m, m)})", wb, wa, wa - wb, None if math.isnan(lo) else lo,
                              None if math.isnan(hi) else hi, min(len(a), len(b))),
                         power_gate(data, scorer, [*p.binary, *p.continuous]))
    cells = comp.cells
    if not cells:
        if comp.left_out:
            return Claim(5, text, NOT_MEASURABLE, f"No comparison by a scorer with measured power, over at least {MIN_POWER_LATENTS} "
                         "latents a side.", note=comp.note, needed=GATED_NEEDED, borderline=comp.judge()[1])
        return Claim(5, text, NOT_MEASURABLE, "No matched pair has scores with firing counts (latent_scores.parquet and latents.parquet).",
                     needed="score latents of a binary and a continuous coder of the same family, hookpoint and k")
    v, edge = comp.judge()
    reason = (f"Frequency-weighted score over scored latents (F1; AUC for the embedding scorers), continuous minus binary, with a bootstrap "
              f"95% interval over latents, by scorers with measured power: {_tally(cells)}.")
    note = ("Only scored latents enter the weighting, so ultra-high-frequency latents count only if they were explained and scored; "
            "the paper's reversal (binary better unweighted, continuous better weighted) needs both claims 2 and 5 to hold.")
    note = " ".join(x for x in (comp.note, note) if x)
    return Claim(5, text, v, reason, cells, needed=None if v == REPRODUCED else _needed(cells), note=note,
                 difference="continuous - binary", borderline=edge)


CLAIMS: tuple[Callable[[ClaimInputs], Claim], ...] = (
    claim_fvu, claim_interpretability, claim_high_activations, claim_uhf, claim_freq_weighted,
)  # the paper's claims in its order: adding one is one function of this signature and one entry here


def evaluate_claims(data: RunData, table: pd.DataFrame, *, uhf_threshold: float = 0.01, top_quantiles: int = 2, seed: int = 0) -> list[Claim]:
    run = ClaimInputs(data, table, matched_pairs(data.coders), uhf_threshold, top_quantiles, seed)
    return [claim(run) for claim in CLAIMS]


def _verdict_text(c: Claim) -> str:
    return c.verdict + (" (borderline)" if c.borderline else "")


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
        "**not reproduced** (a comparison goes against the claim beyond its interval: evidence against it), "
        "**not measurable by these numbers** (no matched comparison, or nothing against the claim beyond its interval and "
        "nothing proving it: differences mixed, or within their intervals). A difference without an interval (FVU, firing "
        f"counts) counts by its sign. Comparisons over latents count only with scorers that have measured power and with at "
        f"least {MIN_POWER_LATENTS} latents a side. **(borderline)**: a comparison's interval end, or a scorer's power call, "
        f"lies within {EDGE_MARGIN:g} x its interval's half-width of zero, and made the other way it would change the verdict; "
        "a rerun could give another.",
        "",
        "| # | claim | verdict |",
        "|---|---|---|",
    ]
    for c in claims:
        lines.append(f"| {c.number} | {c.claim.replace('|', '/')} | **{_verdict_text(c)}** |")
    for c in claims:
        lines += ["", f"## {c.number}. {c.claim}", "", f"**{_verdict_text(c)}.** {c.reason}"]
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
