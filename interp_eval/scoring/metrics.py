"""Classification metrics of the score stage, each its textbook definition.

Labels are 1 (activating window) / 0 (non-activating); predictions are 0/1. With TP, FP, TN, FN the
confusion counts:

- accuracy          = (TP + TN) / (TP + FP + TN + FN)
- precision         = TP / (TP + FP)
- recall (TPR)      = TP / (TP + FN)
- specificity (TNR) = TN / (TN + FP)
- balanced_accuracy = (TPR + TNR) / 2
- f1                = 2 TP / (2 TP + FP + FN)   (the harmonic mean of precision and recall written
                      without divisions, so a scorer that never says 1 gets F1 = 0, not NaN)
- auc               = P(score of a random positive > score of a random negative), ties counted 1/2
                      (the Mann-Whitney rank statistic, with mid-ranks for ties)

Empty denominators give NaN, never 0 or 1: precision with no predicted positive, recall with no
positive label, balanced accuracy or AUC when either class is absent, anything over zero windows.
Aggregates (means, bootstrap intervals, the frequency-weighted F1) skip NaN values and say how
many values they used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from ..catalog import METRICS

NAN = float("nan")


def _div(num: float, den: float) -> float:
    return float(num) / float(den) if den else NAN


@dataclass(frozen=True)
class Confusion:
    tp: int = 0
    fp: int = 0
    tn: int = 0
    fn: int = 0

    @classmethod
    def of(cls, labels: Sequence[int], predictions: Sequence[int]) -> "Confusion":
        y = np.asarray(labels, dtype=np.int64)
        p = np.asarray(predictions, dtype=np.int64)
        if y.shape != p.shape:
            raise ValueError(f"labels ({y.shape}) and predictions ({p.shape}) differ in length")
        return cls(
            tp=int(((y == 1) & (p == 1)).sum()), fp=int(((y == 0) & (p == 1)).sum()),
            tn=int(((y == 0) & (p == 0)).sum()), fn=int(((y == 1) & (p == 0)).sum()),
        )

    def __add__(self, other: "Confusion") -> "Confusion":
        return Confusion(self.tp + other.tp, self.fp + other.fp, self.tn + other.tn, self.fn + other.fn)

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        return _div(self.tp + self.tn, self.n)

    @property
    def precision(self) -> float:
        return _div(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _div(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        return _div(self.tn, self.tn + self.fp)

    @property
    def balanced_accuracy(self) -> float:
        tpr, tnr = self.recall, self.specificity
        return NAN if math.isnan(tpr) or math.isnan(tnr) else (tpr + tnr) / 2

    @property
    def f1(self) -> float:
        return _div(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    def metrics(self) -> dict[str, float]:
        return {m: getattr(self, m) for m in ("accuracy", "balanced_accuracy", "precision", "recall", "f1")}

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC by the rank statistic: (R_pos - P (P + 1) / 2) / (P N), mid-ranks for ties; NaN if a class is empty."""
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape:
        raise ValueError(f"labels ({y.shape}) and scores ({s.shape}) differ in length")
    if np.isnan(s).any():
        raise ValueError("auc: scores contain NaN (drop the windows without a score first)")
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        return NAN
    ranks = midranks(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def midranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    sorted_v = v[order]
    ranks = np.empty(len(v), dtype=np.float64)
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def bootstrap_mean_ci(values: Sequence[float], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the non-NaN values; a percentile bootstrap over them (seeded). NaNs if none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    if len(v) == 0:
        return NAN, NAN, NAN, 0
    mean = float(v.mean())
    if len(v) == 1:
        return mean, mean, mean, 1
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return mean, float(lo), float(hi), int(len(v))


def frequency_weighted(scores: Sequence[float], counts: Sequence[float], groups: Sequence[object] | None = None) -> float:
    """The paper's frequency-adjusted score: per group (hookpoint) sum_i s_i c_i / sum_i c_i, then the mean over groups.

    Only latents with a score (not NaN) count, in numerator and denominator. A group whose counts
    sum to 0 is left out of the mean; NaN if no group is left.
    """
    s = np.asarray(scores, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    g = np.asarray(groups if groups is not None else [0] * len(s), dtype=object)
    if not (len(s) == len(c) == len(g)):
        raise ValueError("scores, counts and groups differ in length")
    per_group = []
    for key in dict.fromkeys(g.tolist()):
        keep = (g == key) & ~np.isnan(s)
        den = c[keep].sum()
        if den > 0:
            per_group.append(float((s[keep] * c[keep]).sum() / den))
    return float(np.mean(per_group)) if per_group else NAN


def frequency_bin(frequency: float) -> float:
    """The log10 bin a firing frequency falls in: floor(log10 f) (e.g. -3 for 0.001 <= f < 0.01); NaN for f <= 0."""
    return float(math.floor(math.log10(frequency))) if frequency > 0 else NAN
