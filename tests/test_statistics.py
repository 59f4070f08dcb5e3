"""The statistical rules of the report: the floor of 20 latents under every power call and every comparison over
latents, "not reproduced" only on evidence against a claim, claim 3's interval over latents, and the marking of
calls that sit on the edge of their interval."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from interp_eval.artifacts import RunDir
from interp_eval.report.claims import (
    NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED, Cell, Claim, claims_markdown, evaluate_claims, judge, power_gate,
)
from interp_eval.report.inputs import RunData, coder_info
from interp_eval.report.tables import coder_table, scorer_display, scorer_table
from interp_eval.scoring.aggregate import format_summary
from interp_eval.scoring.controls import HAS_POWER, NO_POWER, TOO_FEW_LATENTS, Power, on_edge, paired_power

BINARY, CONTINUOUS = "bae-layers.9.mlp-k8", "sae-layers.9.mlp-k8"
CLEAR_POWER = (0.1, 0.3)  # a power interval well above zero, far from its edge


def _latents(n: int) -> pd.DataFrame:
    return pd.DataFrame([{"coder": c, "latent": i, "hookpoint": "layers.9.mlp", "binary": c == BINARY, "firing_count": 100,
                          "n_tokens": 10_000, "frequency": 0.01, "max_activation": 1.0, "n_windows": 300, "status": "ok"}
                         for c in (BINARY, CONTINUOUS) for i in range(n)])


def _scores(f1: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame([{"coder": c, "latent": i, "scorer": "detection", "explainer": "llm", "control": "none", "n": 20, "failures": 0,
                          "f1": float(v), "auc": np.nan, "firing_count": 100, "hookpoint": "layers.9.mlp"}
                         for c, values in f1.items() for i, v in enumerate(values)])


def _summary(latents: dict[str, int], power: dict[str, tuple[float, float]] | None = None) -> pd.DataFrame:
    """score_summary's power columns: `latents` paired latents per coder, the interval `power` (default CLEAR_POWER). Its
    has_power says True even below the floor, as a file written before the floor does: readers recompute the call."""
    rows = []
    for coder, n in latents.items():
        lo, hi = (power or {}).get(coder, CLEAR_POWER)
        rows.append({"coder": coder, "scorer": "detection", "explainer": "llm", "model": "m", "scored": n, "power_metric": "auc",
                     "power_own": 0.7, "power_control": 0.7 - (lo + hi) / 2, "power": (lo + hi) / 2, "power_ci_low": lo,
                     "power_ci_high": hi, "power_latents": n, "has_power": True, "auc_mean": 0.7, "auc_ci_low": 0.6, "auc_ci_high": 0.8,
                     "f1_mean": np.nan, "f1_ci_low": np.nan, "f1_ci_high": np.nan, "balanced_accuracy_mean": np.nan, "f1_pooled": np.nan,
                     "freq_weighted_f1": np.nan, "explained": n, "score_failed": 0, "window_failures": 0, "uhf_over_0.01": 0, "dead": 0,
                     "too_rare": 0})
    return pd.DataFrame(rows)


def _run(tmp_path, n: int, f1: dict[str, np.ndarray] | None = None, power: dict | None = None,
         predictions: pd.DataFrame | None = None, power_latents: dict[str, int] | None = None) -> RunData:
    if predictions is not None:
        predictions.to_parquet(tmp_path / "predictions.parquet")
    data = RunData(rd=RunDir(tmp_path), latents=_latents(n), scores=_scores(f1) if f1 is not None else None,
                   has_predictions=predictions is not None,
                   all_summary=_summary(power_latents or {BINARY: n, CONTINUOUS: n}, power))
    data.coders = coder_info(data)
    return data


def _claims(data: RunData) -> list[Claim]:
    return evaluate_claims(data, coder_table(data))


# -- the floor: no power, and no verdict, from fewer than 20 latents -----------------------------------------------

def test_power_needs_20_latents_even_with_an_interval_above_zero():
    rng = np.random.default_rng(0)
    for n, status in ((19, TOO_FEW_LATENTS), (20, HAS_POWER)):
        own = pd.DataFrame({"latent": range(n), "auc": 0.9 + rng.normal(0, 0.02, n)})
        control = pd.DataFrame({"latent": range(n), "auc": 0.5 + rng.normal(0, 0.02, n)})
        p = paired_power(own, control, "auc")
        assert p.latents == n and p.ci_low > 0.3  # the bootstrap is sure either way
        assert p.status == status and p.has_power == (n == 20) and not p.borderline
        assert p.to_dict()["power_status"] == status and p.to_dict()["has_power"] == (n == 20)
    assert Power("auc", 0.9, 0.5, 0.4, 0.35, 0.45, 19).label == "too few latents (19 < 20)"


def test_the_report_shows_too_few_latents_wherever_it_shows_power(tmp_path):
    data = _run(tmp_path, 20, power_latents={BINARY: 19, CONTINUOUS: 20})
    table = scorer_table(data).set_index("coder")  # scorers.csv: recomputed from the numbers, not the file's has_power
    assert table.at[BINARY, "power_status"] == TOO_FEW_LATENTS and not table.at[BINARY, "has_power"]
    assert table.at[CONTINUOUS, "power_status"] == HAS_POWER and table.at[CONTINUOUS, "has_power"]
    shown = scorer_display(scorer_table(data)).set_index("coder")["verdict"]  # scorers.md and the HTML report
    assert shown[BINARY] == "too few latents (19 < 20)" and shown[CONTINUOUS] == "has power"
    printed = format_summary(data.all_summary)  # the score stage's printed summary
    assert "too few latents (19 < 20)" in printed and "auc: has power" in printed
    why, edge = power_gate(data, "detection", [BINARY, CONTINUOUS])
    assert why.startswith(f"not measurable: detection has too few latents (19 < 20) on this run ({BINARY}:") and not edge
    assert power_gate(data, "detection", [CONTINUOUS]) == (None, False)


def test_a_claim_over_19_latents_a_side_gets_no_verdict_and_says_why(tmp_path):
    f1 = {BINARY: np.linspace(0.8, 0.9, 19), CONTINUOUS: np.linspace(0.4, 0.5, 19)}  # binary far better, tight intervals
    claim = _claims(_run(tmp_path, 19, f1))[1]
    assert claim.verdict == NOT_MEASURABLE and not claim.cells
    assert "detection has too few latents (19 < 20) on this run" in claim.note
    f1 = {BINARY: np.linspace(0.8, 0.9, 20), CONTINUOUS: np.linspace(0.4, 0.5, 20)}
    assert _claims(_run(tmp_path, 20, f1))[1].verdict == REPRODUCED


# -- "not reproduced" only on evidence against ---------------------------------------------------------------------

def test_not_reproduced_needs_a_difference_against_the_claim_beyond_its_interval():
    within = [Cell("a", 0.5, 0.52, -0.02, -0.08, 0.04, 30), Cell("b", 0.5, 0.5, 0.0, -0.05, 0.05, 30)]
    assert judge(within) == (NOT_MEASURABLE, False)  # nothing supports it, nothing against it beyond its interval
    against = [*within, Cell("c", 0.3, 0.5, -0.2, -0.3, -0.1, 30)]
    assert judge(against)[0] == NOT_REPRODUCED
    assert judge([Cell("fvu", 0.2, 0.3, -0.1)])[0] == NOT_REPRODUCED  # no interval: its sign counts
    assert judge([Cell("uhf", 0.0, 0.0, 0.0)])[0] == NOT_MEASURABLE  # no such latent on either side: no evidence


def test_claim_with_all_differences_within_their_intervals_is_not_measurable(tmp_path):
    rng = np.random.default_rng(1)
    spread = rng.uniform(0.2, 0.9, 30)
    claim = _claims(_run(tmp_path, 30, {BINARY: spread - 0.01, CONTINUOUS: spread[::-1]}))[1]
    (cell,) = claim.cells
    assert cell.diff < 0 and cell.lo < 0 < cell.hi and claim.verdict == NOT_MEASURABLE, claim.reason
    claim = _claims(_run(tmp_path, 30, {BINARY: spread - 0.4, CONTINUOUS: spread[::-1]}))[1]
    assert claim.cells[0].hi < 0 and claim.verdict == NOT_REPRODUCED


# -- claim 3: recall per latent, the interval over latents --------------------------------------------------------

def _prediction(coder, latent, window, label, prediction, quantile=None, control="none", explainer="llm") -> dict:
    return {"coder": coder, "latent": latent, "scorer": "detection", "explainer": explainer, "control": control,
            "source_latent": latent, "window_id": window, "label": label, "prediction": prediction, "probability": None,
            "similarity": None, "answer": None, "parse_ok": True, "failure": None, "attempts": 1, "model": "m", "quantile": quantile,
            "prompt_version": "v1", "explanation_sha": "0" * 12, "prompt_index": 0, "position": 1, "windows_per_prompt": 1, "seed": 0}


def recall_predictions(binary_latents: int, continuous_latents: int) -> pd.DataFrame:
    """Windows agree within a latent, latents disagree: a binary latent's 10 activating windows are all called firing (the
    first half of the latents) or none (the rest); every continuous latent has recall 0.5 on its 10 top-decile windows
    (deciles 8 and 9) and its lower deciles are never called. The control rows and another explainer's rows call no
    activating window firing: counted, they would lower every recall."""
    window, rows = itertools.count(), []
    for latent in range(binary_latents):
        fired = int(latent < (binary_latents + 1) // 2)
        rows += [_prediction(BINARY, latent, next(window), 1, fired) for _ in range(10)]
    for latent in range(continuous_latents):
        rows += [_prediction(CONTINUOUS, latent, next(window), 1, int(i % 2 == 0), quantile=8 + i % 2) for i in range(10)]
        rows += [_prediction(CONTINUOUS, latent, next(window), 1, 0, quantile=q) for q in range(8)]
    for coder, n in ((BINARY, binary_latents), (CONTINUOUS, continuous_latents)):
        for latent in range(n):
            rows += [_prediction(coder, latent, next(window), 0, 0) for _ in range(10)]
            rows += [_prediction(coder, latent, next(window), 1, 0, None if coder == BINARY else 9, control="shuffled") for _ in range(10)]
            rows += [_prediction(coder, latent, next(window), 1, 0, None if coder == BINARY else 9, explainer="token-table")
                     for _ in range(10)]
    return pd.DataFrame(rows).astype({"quantile": "Int8", "label": "int8", "prediction": "Int8", "similarity": "float64",
                                      "probability": "float64", "answer": "Int32"})


def test_claim_3_interval_is_over_latents_not_windows(tmp_path):
    data = _run(tmp_path, 25, predictions=recall_predictions(25, 25))
    claim = _claims(data)[2]
    (cell,) = claim.cells
    assert cell.n == 25  # latents a side, not the 250 windows
    assert cell.binary == pytest.approx(13 / 25) and cell.continuous == pytest.approx(0.5)  # own explanations only
    # 250 windows a side would give a normal-approximation interval 2 x 1.96 x sqrt(2 x 0.25 / 250) = 0.18 wide; over 25
    # latents whose recall is 0 or 1 it is about 2 x 1.96 x 0.5 / sqrt(25) = 0.39 wide
    assert cell.hi - cell.lo > 0.3 and cell.lo < 0 < cell.hi
    assert claim.verdict == NOT_MEASURABLE and "resampling latents" in claim.reason


def test_claim_3_needs_20_latents_a_side(tmp_path):
    claim = _claims(_run(tmp_path, 25, predictions=recall_predictions(25, 19)))[2]
    assert claim.verdict == NOT_MEASURABLE and not claim.cells
    assert "BAE vs SAE (layers.9.mlp, k=8), detection: not measurable: too few latents (19 < 20) on a side" in claim.note


# -- calls on the edge of their interval ---------------------------------------------------------------------------

def test_the_edge_is_a_tenth_of_the_half_width():
    assert on_edge(0.004, 0.004, 0.104) and on_edge(-0.004, -0.004, 0.096)  # half-width 0.05: the edge is 0.005
    assert not on_edge(0.006, 0.006, 0.106) and not on_edge(None, None, None) and not on_edge(np.nan, np.nan, 0.1)
    assert Power("auc", 0.7, 0.6, 0.054, 0.004, 0.104, 30).label == "has power (borderline)"
    assert Power("auc", 0.7, 0.6, 0.046, -0.004, 0.096, 30).label == "no measured power (borderline)"
    assert Power("auc", 0.7, 0.6, 0.046, -0.004, 0.096, 30).status == NO_POWER
    assert Power("auc", 0.7, 0.6, 0.1, 0.05, 0.15, 30).label == "has power"
    assert not Power("auc", 0.7, 0.6, 0.054, 0.004, 0.104, 5).borderline  # below the floor the count decides, not the interval


def test_a_verdict_is_borderline_only_where_an_edge_call_could_flip_it():
    edge = Cell("edge", 0.6, 0.55, 0.054, 0.004, 0.104, 30)
    clear = Cell("clear", 0.7, 0.5, 0.2, 0.1, 0.3, 30)
    assert edge.on_edge and edge.edge == "interval" and not clear.on_edge
    assert judge([edge]) == (REPRODUCED, True)  # without it nothing supports the claim
    assert judge([edge, clear]) == (REPRODUCED, False)  # the other comparison carries the verdict either way
    assert judge([Cell("against", 0.5, 0.55, -0.054, -0.104, -0.004, 30)]) == (NOT_REPRODUCED, True)
    assert judge([Cell("within", 0.5, 0.55, -0.046, -0.096, 0.004, 30), clear]) == (NOT_MEASURABLE, True)  # hi could drop below 0
    powered = Cell("power", 0.7, 0.5, 0.2, 0.1, 0.3, 30, power_edge=True)
    assert judge([powered]) == (REPRODUCED, True)  # counted by a borderline power call: left out, nothing would be left
    assert judge([clear], [Cell("left out", 0.3, 0.5, -0.2, -0.3, -0.1, 30)]) == (REPRODUCED, True)  # counted, it goes against


def test_borderline_power_marks_the_tables_the_gate_and_the_claim(tmp_path):
    f1 = {BINARY: np.linspace(0.8, 0.9, 25), CONTINUOUS: np.linspace(0.4, 0.5, 25)}
    data = _run(tmp_path, 25, f1, power={BINARY: (0.004, 0.104)})
    shown = scorer_display(scorer_table(data)).set_index("coder")["verdict"]
    assert shown[BINARY] == "has power (borderline)" and shown[CONTINUOUS] == "has power"
    assert scorer_table(data).set_index("coder").at[BINARY, "power_borderline"]
    assert power_gate(data, "detection", [BINARY, CONTINUOUS]) == (None, True)
    claims = _claims(data)
    claim = claims[1]
    assert claim.verdict == REPRODUCED and claim.borderline and claim.cells[0].edge == "scorer power"
    md = claims_markdown(claims, "pairs")
    assert "| 2 | Binary coders' latents are more interpretable" in md and "| **reproduced (borderline)** |" in md
    assert "| on the edge |" in md and "| scorer power |" in md
    assert claim.to_dict()["borderline"] and claim.to_dict()["cells"][0]["edge"] == "scorer power"

    # a comparison left out by a borderline miss: the verdict (nothing counted) could flip too
    claim = _claims(_run(tmp_path, 25, f1, power={BINARY: (-0.004, 0.096)}))[1]
    assert claim.verdict == NOT_MEASURABLE and claim.borderline and not claim.cells
    assert "detection has no measured power (borderline) on this run" in claim.note
    # far from the edge: no mark anywhere
    claim = _claims(_run(tmp_path, 25, f1))[1]
    assert claim.verdict == REPRODUCED and not claim.borderline and claim.cells[0].edge is None


def _seeded_coders() -> pd.DataFrame:
    names = [f"{k}-layers.9.mlp-k32{v}-s{s}" for k, v in (("sae", ""), ("bae", ""), ("bae", "-nonorm")) for s in (1, 2)]
    rows = [{"coder": n, "type": "BAE" if n.startswith("bae") else "SAE", "family": "sae", "binary": n.startswith("bae"),
             "hookpoint": "layers.9.mlp", "k": 32, "d_sae": 100} for n in names]
    return pd.DataFrame(rows).set_index("coder")


def test_seeds_form_one_side_and_a_variant_its_own_pair():
    from interp_eval.report.claims import matched_pairs

    pairs = {p.label: p for p in matched_pairs(_seeded_coders())}
    assert set(pairs) == {"BAE vs SAE (layers.9.mlp, k=32)", "BAE-nonorm vs SAE (layers.9.mlp, k=32)"}
    plain = pairs["BAE vs SAE (layers.9.mlp, k=32)"]
    assert plain.binary == ["bae-layers.9.mlp-k32-s1", "bae-layers.9.mlp-k32-s2"] and len(plain.continuous) == 2
    assert pairs["BAE-nonorm vs SAE (layers.9.mlp, k=32)"].binary == ["bae-layers.9.mlp-k32-nonorm-s1", "bae-layers.9.mlp-k32-nonorm-s2"]


def test_a_per_coder_difference_over_seeds_has_the_range_of_its_seed_pairings():
    from interp_eval.report.claims import _pair_cells, matched_pairs

    pairs = [p for p in matched_pairs(_seeded_coders()) if not p.variant]
    fvu = pd.Series({"sae-layers.9.mlp-k32-s1": 0.20, "sae-layers.9.mlp-k32-s2": 0.30,
                     "bae-layers.9.mlp-k32-s1": 0.60, "bae-layers.9.mlp-k32-s2": 0.70})
    (cell,) = _pair_cells(fvu, pairs)
    assert cell.diff == pytest.approx(0.4) and (cell.lo, cell.hi, cell.n) == (pytest.approx(0.3), pytest.approx(0.5), 2)
    assert cell.call == "for"
    # one seed pairing reverses the difference: within the seed spread, not evidence
    fvu["bae-layers.9.mlp-k32-s2"] = 0.25
    (cell,) = _pair_cells(fvu, pairs)
    assert cell.diff > 0 and cell.lo < 0 and cell.call == "within"


def test_a_seed_the_scorer_never_scored_does_not_block_the_power_gate(tmp_path):
    """The study's LLM scorers run on seed 1 only; the seed-2 coders of a side have no rows of that scorer. They
    contribute no scores, so they must not make the pair "not measurable" ("no control"): the gate judges the
    coders the scorer scored, and still refuses when it scored none."""
    data = _run(tmp_path, 40)
    unscored = "bae-unscored-seed"
    assert power_gate(data, "detection", [BINARY, unscored, CONTINUOUS]) == (None, False)
    why, _ = power_gate(data, "detection", [unscored])
    assert why.startswith("not measurable: detection scored none of") and unscored in why


def test_a_simulation_scorer_with_power_judges_claim_2_by_its_correlation(tmp_path):
    """A scorer whose headline is Pearson r (simulation) enters the claims like any other with power."""
    corr = {BINARY: np.linspace(0.5, 0.6, 25), CONTINUOUS: np.linspace(0.1, 0.2, 25)}
    data = _run(tmp_path, 25, corr)
    data.scores = data.scores.assign(scorer="simulation").rename(columns={"f1": "correlation"})
    data.all_summary = data.all_summary.assign(scorer="simulation", power_metric="correlation")
    claim = _claims(data)[1]
    assert claim.verdict == REPRODUCED
    assert [c.comparison for c in claim.cells] == ["BAE vs SAE (layers.9.mlp, k=8), simulation (Pearson r)"]
