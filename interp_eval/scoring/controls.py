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
latents. A scorer has power on a run when the interval's lower end is above zero; only then may a
claim be judged with it (report/claims.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

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
    def has_power(self) -> bool:
        return bool(self.latents > 0 and self.ci_low > 0)

    def to_dict(self) -> dict:
        return {
            "power_metric": self.metric, "power_own": self.own, "power_control": self.control, "power": self.power,
            "power_ci_low": self.ci_low, "power_ci_high": self.ci_high, "power_latents": self.latents,
            "has_power": self.has_power,
        }


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
