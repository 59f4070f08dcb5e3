"""Metrics of the score stage against hand-computed values."""

import math

import numpy as np
import pandas as pd
import pytest

from interp_eval.scoring import aggregate
from interp_eval.scoring.metrics import Confusion, auc, bootstrap_mean_ci, frequency_bin, frequency_weighted, midranks


def test_confusion_metrics_by_hand():
    c = Confusion.of([1, 1, 1, 0, 0, 0, 0], [1, 0, 1, 1, 0, 0, 0])
    assert (c.tp, c.fn, c.fp, c.tn) == (2, 1, 1, 3)
    assert c.accuracy == pytest.approx(5 / 7)
    assert c.precision == pytest.approx(2 / 3)
    assert c.recall == pytest.approx(2 / 3)
    assert c.specificity == pytest.approx(3 / 4)
    assert c.balanced_accuracy == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert c.f1 == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))  # harmonic mean of P and R
    assert (Confusion.of([1, 0], [1, 1]) + Confusion.of([0], [0])).to_dict() == {"tp": 1, "fp": 1, "tn": 1, "fn": 0}


def test_empty_denominators_are_nan():
    never_one = Confusion.of([1, 1, 0, 0], [0, 0, 0, 0])
    assert never_one.recall == 0 and never_one.f1 == 0 and never_one.balanced_accuracy == 0.5
    assert math.isnan(never_one.precision)  # no predicted positive
    only_neg = Confusion.of([0, 0, 0], [0, 1, 0])
    assert math.isnan(only_neg.recall) and math.isnan(only_neg.balanced_accuracy)
    assert only_neg.f1 == 0 and only_neg.accuracy == pytest.approx(2 / 3)
    empty = Confusion.of([], [])
    assert all(math.isnan(v) for v in empty.metrics().values())
    assert math.isnan(auc([1, 1], [0.2, 0.3])) and math.isnan(auc([], []))


def test_auc_rank_statistic_with_ties():
    # pairs (pos, neg): (.8,.5)=1 (.8,.2)=1 (.5,.5)=1/2 (.5,.2)=1 -> 3.5 / 4
    assert auc([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.2]) == pytest.approx(0.875)
    assert auc([1, 0], [0.3, 0.3]) == 0.5
    assert auc([0, 1], [0.9, 0.1]) == 0.0
    np.testing.assert_array_equal(midranks([3, 1, 3, 2]), [3.5, 1, 3.5, 2])
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = rng.integers(0, 5, 300).astype(float)  # many ties
    pos, neg = s[y == 1], s[y == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (len(pos) * len(neg))
    assert auc(y, s) == pytest.approx(brute)
    assert aggregate._auc_sorted(pos, np.sort(neg)) == pytest.approx(brute)


def test_bootstrap_is_seeded_and_skips_nan():
    v = [0.2, 0.4, float("nan"), 0.9, 0.5]
    a = bootstrap_mean_ci(v, seed=3)
    assert a == bootstrap_mean_ci(v, seed=3)
    mean, lo, hi, n = a
    assert n == 4 and mean == pytest.approx(0.5) and lo <= mean <= hi and 0.2 <= lo and hi <= 0.9
    assert bootstrap_mean_ci([0.7]) == (0.7, 0.7, 0.7, 1)
    assert all(math.isnan(x) for x in bootstrap_mean_ci([float("nan")])[:3])


def test_frequency_weighted_f1_two_hookpoints():
    f1 = [1.0, 0.5, float("nan"), 0.2, 0.8]
    counts = [10, 30, 1000, 100, 300]
    hooks = ["layers.0.mlp", "layers.0.mlp", "layers.0.mlp", "layers.9.mlp", "layers.9.mlp"]
    a = (1.0 * 10 + 0.5 * 30) / 40  # the unscored latent (NaN) counts in neither sum
    b = (0.2 * 100 + 0.8 * 300) / 400
    assert frequency_weighted(f1, counts, hooks) == pytest.approx((a + b) / 2)
    assert frequency_weighted(f1[:3], counts[:3]) == pytest.approx(a)  # one hookpoint: its own value
    assert math.isnan(frequency_weighted([float("nan")], [5]))


def test_summary_frequency_weighted_matches_formula():
    scores = pd.DataFrame({
        "coder": "c", "scorer": "detection", "explainer": "llm", "control": "none", "latent": range(5), "model": "m",
        "f1": [1.0, 0.5, 0.0, 0.2, 0.8], "firing_count": [10, 30, 60, 100, 300],
        "hookpoint": ["h0", "h0", "h0", "h1", "h1"], "n": 10, "failures": 0,
        "accuracy": 0.5, "balanced_accuracy": 0.5, "precision": 0.5, "recall": 0.5, "auc": np.nan,
    })
    latents = pd.DataFrame({"coder": "c", "latent": range(7), "frequency": [0.2, 0.05, 0.001, 0.02, 0.0, 0.0, 0.3],
                            "status": ["ok"] * 4 + ["dead", "dead", "too_rare"]})
    preds = pd.DataFrame({"coder": "c", "scorer": "detection", "explainer": "llm", "control": "none", "label": [1, 0],
                          "prediction": [1.0, 0.0],
                          "probability": np.nan, "similarity": np.nan})
    s = aggregate.summary(scores, preds, latents, None, freq_adjust=True).iloc[0]
    h0 = (1.0 * 10 + 0.5 * 30 + 0.0 * 60) / 100
    h1 = (0.2 * 100 + 0.8 * 300) / 400
    assert s["freq_weighted_f1"] == pytest.approx((h0 + h1) / 2)
    assert s["f1_mean"] == pytest.approx(0.5)
    assert (s["dead"], s["too_rare"], s["uhf_over_0.01"], s["uhf_over_0.1"]) == (2, 1, 4, 2)
    off = aggregate.summary(scores, preds, latents, None, freq_adjust=False).iloc[0]
    assert math.isnan(off["freq_weighted_f1"])


def test_frequency_bins():
    assert frequency_bin(0.001) == -3 and frequency_bin(0.0099) == -3 and frequency_bin(0.5) == -1
    assert math.isnan(frequency_bin(0.0))
