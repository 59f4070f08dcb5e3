"""Controls and instrument power: what makes a score evidence.

- Shuffled control (scorers with `control = "shuffled"`): a seeded sample of the scored latents of
  each coder (and explainer) is scored again, each latent with another latent's explanation (or,
  for example-embedding, another latent's reference windows). Who gets whose is a seeded
  derangement of the sample: no latent ever gets its own. A sample of one latent borrows from the
  next latent of the coder. Control rows carry `control = "shuffled"` and the `source_latent` they
  were scored with; they never enter the scores.
- Chance control (`control = "chance"`, the intruder): the metric is compared with its chance level.

Power = mean over latents of (headline metric with the latent's own explanation - the same metric
under the control), paired per latent, with a seeded percentile-bootstrap 95% interval over
latents. A scorer has power on a run when at least MIN_POWER_LATENTS latents are paired and the
interval's lower end is above zero; only then may a claim be judged with it (report/claims.py).
Below the floor the call is "too few latents", whatever the bootstrap says: a percentile interval
over a handful of latents is too narrow to trust.

A call sits on the edge of its interval (`on_edge`) when the interval's deciding end lies within
EDGE_MARGIN x its half-width of zero: the same command on a rerun (other LLM answers, another
sample) could call it the other way. Such calls are marked "(borderline)", never hidden; the
report's claims use the same rule for their comparisons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from .metrics import NAN, bootstrap_mean_ci
from .testset import seed_for


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly random permutation of range(n) with no fixed point (n >= 2), by rejection."""
    if n < 2:
        raise ValueError("a derangement needs at least 2 items")
    while True:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return p


def shuffled_sources(latents: Sequence[int], cap: int | None, seed: int, *parts: object) -> dict[int, int]:
    """{latent: source latent} for the control sample of one coder's scored latents.

    The sample: all latents, or a seeded `cap` of them; then a seeded derangement inside the sample.
    With one latent in the sample it borrows from another scored latent; with one latent in all,
    there is no control (an empty dict).
    """
    lat = sorted(int(x) for x in latents)
    if len(lat) < 2 or cap == 0:
        return {}
    rng = np.random.default_rng(seed_for(seed, "control", *parts))
    sample = lat if cap is None or cap >= len(lat) else sorted(rng.choice(lat, size=cap, replace=False).tolist())
    if len(sample) == 1:
        others = [x for x in lat if x != sample[0]]
        return {sample[0]: int(others[int(rng.integers(len(others)))])}
    perm = derangement(len(sample), rng)
    return {sample[i]: sample[int(perm[i])] for i in range(len(sample))}


MIN_POWER_LATENTS = 20  # fewer paired latents: no power, and no verdict from a comparison over latents
EDGE_MARGIN = 0.1  # a deciding end closer to zero than this share of its interval's half-width is on the edge
HAS_POWER, NO_POWER, TOO_FEW_LATENTS = "has power", "no measured power", "too few latents"  # score_summary.power_status


def too_few_latents(n: int) -> str | None:
    """The words for a sample below the floor on latents, e.g. "too few latents (5 < 20)"; None at or above it."""
    return f"{TOO_FEW_LATENTS} ({n} < {MIN_POWER_LATENTS})" if n < MIN_POWER_LATENTS else None


def on_edge(end: float | None, lo: float | None, hi: float | None) -> bool:
    """Whether a call made by an interval's deciding end (`end`: lo or hi) sits on the edge: |end| < EDGE_MARGIN x the
    interval's half-width, so a shift of a tenth of the half-width could move that end across zero."""
    if end is None or lo is None or hi is None or any(math.isnan(x) for x in (end, lo, hi)):
        return False
    return abs(end) < EDGE_MARGIN * (hi - lo) / 2


@dataclass(frozen=True)
class Power:
    metric: str
    own: float  # mean of the metric over the paired latents, own explanations
    control: float  # the same latents under the control (or the chance level)
    power: float
    ci_low: float
    ci_high: float
    latents: int

    @property
    def status(self) -> str:
        """HAS_POWER, NO_POWER or TOO_FEW_LATENTS (below MIN_POWER_LATENTS paired latents, whatever the interval)."""
        if too_few_latents(self.latents):
            return TOO_FEW_LATENTS
        return HAS_POWER if self.ci_low > 0 else NO_POWER

    @property
    def has_power(self) -> bool:
        return self.status == HAS_POWER

    @property
    def borderline(self) -> bool:
        """The power call sits on the edge of its interval (its deciding end, the lower one, near zero)."""
        return self.status != TOO_FEW_LATENTS and on_edge(self.ci_low, self.ci_low, self.ci_high)

    @property
    def label(self) -> str:
        """The call in words: "has power", "no measured power (borderline)", "too few latents (5 < 20)"."""
        if self.status == TOO_FEW_LATENTS:
            return too_few_latents(self.latents)
        return self.status + (" (borderline)" if self.borderline else "")

    def to_dict(self) -> dict:
        return {
            "power_metric": self.metric, "power_own": self.own, "power_control": self.control, "power": self.power,
            "power_ci_low": self.ci_low, "power_ci_high": self.ci_high, "power_latents": self.latents,
            "has_power": self.has_power, "power_status": self.status, "power_borderline": self.borderline,
        }

    @classmethod
    def from_row(cls, row: Mapping) -> "Power":
        """The power of a score_summary row, so a reader applies today's rules to the numbers of any file."""
        n = row["power_latents"]
        return cls(row["power_metric"], row["power_own"], row["power_control"], row["power"], row["power_ci_low"],
                   row["power_ci_high"], 0 if pd.isna(n) else int(n))


def paired_power(own: pd.DataFrame, control: pd.DataFrame, metric: str, *, seed: int = 0, n_boot: int = 1000) -> Power:
    """Power from per-latent scores (columns latent, <metric>): own minus control over latents in both."""
    a = own[["latent", metric]].dropna()
    b = control[["latent", metric]].dropna()
    m = a.merge(b, on="latent", suffixes=("_own", "_ctl"))
    diff = (m[f"{metric}_own"] - m[f"{metric}_ctl"]).to_numpy(np.float64)
    mean, lo, hi, n = bootstrap_mean_ci(diff, n_boot=n_boot, seed=seed)
    own_mean = float(m[f"{metric}_own"].mean()) if n else NAN
    ctl_mean = float(m[f"{metric}_ctl"].mean()) if n else NAN
    return Power(metric, own_mean, ctl_mean, mean, lo, hi, n)


def chance_power(own: pd.DataFrame, metric: str, chance: float, *, seed: int = 0, n_boot: int = 1000) -> Power:
    """Power against a chance level: the per-latent metric minus `chance`, bootstrapped over latents."""
    v = own[metric].dropna().to_numpy(np.float64)
    mean, lo, hi, n = bootstrap_mean_ci(v - chance, n_boot=n_boot, seed=seed)
    return Power(metric, float(v.mean()) if n else NAN, chance, mean, lo, hi, n)


def no_power(metric: str) -> Power:
    return Power(metric, NAN, NAN, NAN, NAN, NAN, 0)
