"""The report stage: tables, claims, plots and the HTML page, on a hand-built run; the page in headless Chromium."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from run_builders import build_mined_run

from interp_eval.artifacts import RunDir
from interp_eval.errors import UserError
from interp_eval.catalog import CONTEXTS, LATENTS, WINDOWS
from interp_eval.report import ReportConfig, run_report_stage
from interp_eval.report.claims import NOT_MEASURABLE, NOT_REPRODUCED, REPRODUCED, evaluate_claims
from interp_eval.report.inputs import RunData, coder_info, coder_type
from interp_eval.report.tables import coder_table

HP = "layers.9.mlp"
CODERS = {"sae-layers.9.mlp-k8": ("sae", "topk"), "bae-layers.9.mlp-k8": ("sae", "binary"),
          "tc-layers.9.mlp-k8": ("transcoder", "topk"), "btc-layers.9.mlp-k8": ("transcoder", "binary")}
N_LATENTS = 21  # the last is too_rare; the other 20 (the floor for a verdict over latents) are explained and scored
NASTY_TOKEN = '<img src=x onerror="window.pwned=1">&amp;\''
NASTY_EXPLANATION = 'the word "the" </script><script>window.pwned=1</script> & <b>bold</b>'


# -- a hand-built run ---------------------------------------------------------------------------------------

def recon_rows(supports: bool) -> pd.DataFrame:
    rows = []
    for coder, (kind, act) in CODERS.items():
        binary = act == "binary"
        worse = binary == supports  # binary coders reconstruct worse when the numbers support claim 1
        rows.append({"coder": coder, "hookpoint": HP, "kind": kind, "activation": act, "k": 8, "d_sae": N_LATENTS,
                     "eval_tokens": 4096, "fvu": 0.30 if worse else 0.20, "l0": 7.5 if binary else 8.0,
                     "dead_fraction": 0.0, "ce_clean": 3.0, "ce_spliced": 3.4 if worse else 3.2,
                     "ce_loss_increase": 0.4 if worse else 0.2, "accuracy_clean": 0.4, "accuracy_spliced": 0.35,
                     "accuracy_decrease": 0.05, "uhf_fraction_0.01": (2 / N_LATENTS) if worse else 0.0, "uhf_fraction_0.1": 0.0})
    return pd.DataFrame(rows)


HIGH = (0, 1, 2, 3)  # high-frequency latents: they dominate the frequency-weighted F1
COUNTS = {True: 5000, False: 5}
EXTRA_UHF = 4  # one more latent above 1% of the 64,000 mined tokens in binary coders (continuous ones when not `supports`)


def count_of(coder: str, latent: int, supports: bool = True) -> int:
    if latent == EXTRA_UHF and coder.startswith("b") == supports:
        return 1000
    return COUNTS[latent in HIGH]


def set_firing_counts(latents: pd.DataFrame, supports: bool = True) -> pd.DataFrame:
    """Made-up firing counts: the HIGH latents fire 1000x as often as the others."""
    latents = latents.copy()
    latents["firing_count"] = [count_of(c, l, supports) for c, l in zip(latents["coder"], latents["latent"])]
    latents["frequency"] = latents["firing_count"] / latents["n_tokens"]
    return latents


def score_rows(latents: pd.DataFrame, supports: bool, rng: np.random.Generator) -> pd.DataFrame:
    """latent_scores; when `supports`: binary better on the mean over latents, continuous better weighted by firing count."""
    f1s = {  # (binary, high-frequency) -> F1
        True: {(True, True): 0.70, (True, False): 0.99, (False, True): 0.85, (False, False): 0.45},
        False: {(True, True): 0.95, (True, False): 0.50, (False, True): 0.60, (False, False): 0.90},
    }[supports]
    rows = []
    for r in latents[latents["status"] == "ok"].itertuples():
        binary = r.coder.startswith("b")
        for scorer in ("detection", "fuzzing", "embedding"):
            f1 = ba = auc = None
            if scorer == "embedding":  # the same pattern as F1: the claims read AUC for embedding scorers
                auc = float(np.clip(f1s[(binary, r.latent in HIGH)] + rng.normal(0, 0.01), 0, 1))
            else:
                f1 = ba = float(np.clip(f1s[(binary, r.latent in HIGH)] + rng.normal(0, 0.01), 0, 1))
            rows.append({"coder": r.coder, "latent": r.latent, "scorer": scorer, "explainer": "none" if scorer == "embedding" else "llm",
                         "control": "none", "source_latent": r.latent, "model": "fake-model", "prompt_version": "v1",
                         "n": 20, "failures": 0, "n_activating": 10, "n_negative": 10, "accuracy": ba, "balanced_accuracy": ba,
                         "precision": f1, "recall": f1, "f1": f1, "auc": auc, "n_probabilities": 0, "tp": 0, "fp": 0, "tn": 0, "fn": 0,
                         "hookpoint": HP, "binary": binary, "frequency": r.frequency, "firing_count": r.firing_count})
    df = pd.DataFrame(rows)
    return df.astype({"auc": "float64", "f1": "float64", "balanced_accuracy": "float64"})


def power_rows(scores: pd.DataFrame, has_power: bool = True) -> pd.DataFrame:
    """score_summary's power columns per (coder, scorer): a scorer that tells right explanations from wrong ones, or not."""
    rows = []
    for (coder, scorer), g in scores.groupby(["coder", "scorer"]):
        power, lo, hi = (0.2, 0.1, 0.3) if has_power else (0.01, -0.04, 0.06)
        rows.append({"coder": coder, "scorer": scorer, "explainer": "none" if scorer == "embedding" else "llm", "model": "fake-model",
                     "scored": len(g), "power_metric": "auc", "power_own": 0.7, "power_control": 0.7 - power, "power": power,
                     "power_ci_low": lo, "power_ci_high": hi, "power_latents": len(g), "has_power": has_power})
    return pd.DataFrame(rows)


def summary_rows(scores: pd.DataFrame, predictions: pd.DataFrame, latents: pd.DataFrame, explanations: pd.DataFrame) -> pd.DataFrame:
    """score_summary as the score stage writes it (without --freq-adjust), with power_rows' power."""
    from interp_eval.scoring.aggregate import summary

    power = power_rows(scores)
    summ = summary(scores, predictions, latents, explanations).drop(columns=[c for c in power if c.startswith(("power", "has_power"))])
    return summ.merge(power.drop(columns=["model", "scored"]), on=["coder", "scorer", "explainer"])


def quantile_rows(supports: bool) -> pd.DataFrame:
    rows = []
    for coder in CODERS:
        binary = coder.startswith("b")
        for scorer in ("detection", "fuzzing"):
            bins = [("uniform", 400, 0.95 if supports else 0.40)] if binary else [(str(q), 40, 0.3 + 0.04 * q) for q in range(10)]
            for q, windows, rec in bins:
                rows.append({"coder": coder, "scorer": scorer, "explainer": "llm", "quantile": q, "windows": windows, "failures": 0,
                             "recall": rec, "accuracy": rec, "mean_probability": np.nan, "auc_mean": np.nan, "auc_latents": 0})
    return pd.DataFrame(rows)


def prediction_row(coder: str, latent: int, scorer: str, window: int, label: int, pred: int, q, probability: float) -> dict:
    return {"coder": coder, "latent": latent, "scorer": scorer, "explainer": "llm", "control": "none",
            "source_latent": latent, "window_id": window, "label": label, "prediction": pred, "probability": probability,
            "similarity": None, "answer": None, "parse_ok": True, "failure": None, "attempts": 1, "model": "fake-model",
            "quantile": None if q is None or pd.isna(q) else int(q), "prompt_version": "v1", "explanation_sha": "0" * 12,
            "prompt_index": 0, "position": 1, "windows_per_prompt": 1, "seed": 0}


def prediction_frame(rows: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    return df.astype({"similarity": "float64", "quantile": "Int8", "label": "int8", "prediction": "Int8", "answer": "Int32"})


def predictions_for(run: Path, truth: dict, rng: np.random.Generator, supports: bool = True) -> pd.DataFrame:
    """Scorer answers: 15% of non-activating windows called wrong; activating windows missed 5% of the time in binary
    coders and half the time in continuous ones when `supports` (claim 3: binary latents have the higher recall), else
    the other way round."""
    ctx = pd.read_parquet(run / "contexts.parquet")
    quant = {(c, int(l), int(w)): q for c, l, w, q in zip(ctx["coder"], ctx["latent"], ctx["window_id"], ctx["quantile"])}
    rows = []
    for (coder, latent, window), label in truth.items():
        miss = (0.05 if coder.startswith("b") == supports else 0.5) if label else 0.15
        for scorer in ("detection", "fuzzing"):
            pred = label if rng.random() > miss else 1 - label
            rows.append(prediction_row(coder, latent, scorer, window, label, pred, quant.get((coder, latent, window)),
                                       float(np.clip(0.5 + (pred - 0.5) * 0.8 + rng.normal(0, 0.05), 0, 1))))
    return prediction_frame(rows)


def recall_predictions(latents: pd.DataFrame, supports: bool) -> pd.DataFrame:
    """Predictions whose per-latent recall on activating windows is known: binary latents 1.0 / 0.9 on their 10 windows
    (even / odd latents; 0.5 / 0.4 when not `supports`), continuous latents 1.0 / 0.5 on their top 2 deciles (one window
    each of deciles 0-9, the lower eight never called); 10 negatives each, called right."""
    rows, window = [], itertools.count()
    for r in latents[latents["status"] == "ok"].itertuples():
        binary, even = r.coder.startswith("b"), r.latent % 2 == 0
        fired = ((10 if even else 9) if supports else (5 if even else 4)) if binary else (2 if even else 1)
        activating = [(None, int(i < fired)) for i in range(10)] if binary else [(q, int(q >= 10 - fired)) for q in range(10)]
        for scorer in ("detection", "fuzzing"):
            rows += [prediction_row(r.coder, r.latent, scorer, next(window), 1, pred, q, float(pred)) for q, pred in activating]
            rows += [prediction_row(r.coder, r.latent, scorer, next(window), 0, 0, None, 0.0) for _ in range(10)]
    return prediction_frame(rows)


def add_top_windows_and_nasty_token(run: Path) -> int:
    """Add `top`/`display` rows (copies of the explain windows) and put HTML-like text in one shown window."""
    ctx = pd.read_parquet(run / "contexts.parquet")
    top = ctx[ctx["split"] == "explain"].copy()
    top["kind"], top["split"], top["quantile"] = "top", "display", None
    top = top.sort_values("max_activation", ascending=False)
    top["rank"] = top.groupby(["coder", "latent"]).cumcount().astype("int32")
    ctx = pd.concat([ctx, top], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(ctx, schema=CONTEXTS.schema, preserve_index=False), run / "contexts.parquet")
    nasty = int(top[(top["coder"] == "sae-layers.9.mlp-k8") & (top["latent"] == 0)].sort_values("rank")["window_id"].iloc[0])
    win = pd.read_parquet(run / "windows.parquet")
    i = win.index[win["window_id"] == nasty][0]
    toks = list(win.at[i, "tokens"])
    toks[-1] = NASTY_TOKEN
    win.at[i, "tokens"] = toks
    pq.write_table(pa.Table.from_pandas(win, schema=WINDOWS.schema, preserve_index=False), run / "windows.parquet")
    return nasty


def build_full_run(run: Path, tokenizer, supports: bool = True) -> dict:
    info = build_mined_run(run, tokenizer, coders=tuple(CODERS), n_latents=N_LATENTS, n_explain=8, n_test=10, n_negative=10)
    nasty = add_top_windows_and_nasty_token(run)
    rng = np.random.default_rng(1)
    latents = set_firing_counts(pd.read_parquet(run / "latents.parquet"), supports)
    pq.write_table(pa.Table.from_pandas(latents, schema=LATENTS.schema, preserve_index=False), run / "latents.parquet")
    recon_rows(supports).to_parquet(run / "recon_eval.parquet")
    train = [{"coder": c, "step": s, "tokens": 256 * s, "fvu": 1.0 / (1 + 0.1 * s), "l0": 8.0, "dead_fraction": 0.0,
              "lr": 1e-3, "elapsed_s": 0.1 * s} for c in CODERS for s in range(1, 30)]
    pd.DataFrame(train).to_parquet(run / "train_metrics.parquet")
    ok = latents[latents["status"] == "ok"]
    from run_builders import WORDS

    expl = pd.DataFrame([{
        "coder": r.coder, "latent": r.latent, "explainer": "llm",
        "explanation": NASTY_EXPLANATION if (r.coder, r.latent) == ("sae-layers.9.mlp-k8", 0) else f"the word {WORDS[r.latent]}",
        "explainer_model": "fake-model", "prompt_version": "v1", "n_windows": 8, "parse_ok": True, "failure": None,
        "attempts": 1, "raw_answer": "...", "mine_config": None} for r in ok.itertuples()])
    expl.to_parquet(run / "explanations.parquet")
    # the LLM ledger: one explain call per explanation, ten score calls per coder
    who = [("explain", r.coder, r.latent, None) for r in expl.itertuples()] + [("score", c, 0, "detection") for c in CODERS for _ in range(10)]
    usage = pd.DataFrame([{"stage": st, "backend": "anthropic", "model": "fake-model", "ok": True, "error": None, "cached": False,
                           "batch": False, "attempts": 1, "latency_s": 0.5, "input_tokens": 900, "output_tokens": 30,
                           "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.001, "coder": coder, "latent": latent,
                           "scorer": scorer, "explainer": "llm", "control": None if scorer is None else "none"}
                          for st, coder, latent, scorer in who])
    usage.to_parquet(run / "llm_usage.parquet")
    scores = score_rows(latents, supports, rng)
    scores.to_parquet(run / "latent_scores.parquet")
    predictions = predictions_for(run, info["truth"], rng, supports)
    predictions.to_parquet(run / "predictions.parquet")
    summary_rows(scores, predictions, latents, expl).to_parquet(run / "score_summary.parquet")
    quantile_rows(supports).to_parquet(run / "score_by_quantile.parquet")
    return {"nasty_window": nasty, **info}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from interp_eval.subject.model import packaged_model_dir

    return AutoTokenizer.from_pretrained(packaged_model_dir())


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, tokenizer):
    run = tmp_path_factory.mktemp("report") / "run"
    info = build_full_run(run, tokenizer, supports=True)
    written = run_report_stage(run)
    return run, written, info


# -- tables, claims, plots, html ---------------------------------------------------------------------------------

def test_coder_type_from_kind_or_name():
    assert coder_type("sae", "topk", "x") == "SAE"
    assert coder_type("sae", "binary", "x") == "BAE"
    assert coder_type("transcoder", "topk", "x") == "TC"
    assert coder_type("transcoder", "binary", "x") == "BTC"
    assert coder_type(None, None, "btc-layers.3.mlp-k8") == "BTC"
    assert coder_type(None, None, "bae_l9") == "BAE"
    assert coder_type(None, None, "tc-x") == "TC"
    assert coder_type(None, None, "mystery") is None


def test_tables_one_row_per_coder(report_run):
    run, written, _ = report_run
    results = run / "results"
    for name in ("coders.csv", "coders.md", "llm_usage.csv", "llm_usage.md", "claims.md", "report.html"):
        assert (results / name).exists(), name
    df = pd.read_csv(results / "coders.csv")
    assert list(df["coder"]) == ["sae-layers.9.mlp-k8", "bae-layers.9.mlp-k8", "tc-layers.9.mlp-k8", "btc-layers.9.mlp-k8"]
    assert list(df["type"]) == ["SAE", "BAE", "TC", "BTC"]
    row = df.set_index("coder").loc["bae-layers.9.mlp-k8"]
    assert row["fvu"] == pytest.approx(0.30) and row["ce_loss_increase"] == pytest.approx(0.4)
    assert row["k"] == 8 and row["latents"] == N_LATENTS and row["too_rare"] == 1 and row["dead"] == 0
    assert row["scored"] == N_LATENTS - 1 and row["explained"] == N_LATENTS - 1
    scores = pd.read_parquet(run / "latent_scores.parquet")
    det = scores[(scores["coder"] == "bae-layers.9.mlp-k8") & (scores["scorer"] == "detection")]
    assert row["detection_f1_mean"] == pytest.approx(det["f1"].mean())
    assert row["detection_f1_ci_low"] <= row["detection_f1_mean"] <= row["detection_f1_ci_high"]
    fw = (det["f1"] * det["firing_count"]).sum() / det["firing_count"].sum()
    assert row["detection_freq_weighted_f1"] == pytest.approx(fw)
    emb = scores[(scores["coder"] == "bae-layers.9.mlp-k8") & (scores["scorer"] == "embedding")]
    assert row["embedding_auc_mean"] == pytest.approx(emb["auc"].mean())
    assert row["llm_calls"] == (N_LATENTS - 1) + 10  # explain + score calls
    assert row["cost_usd"] == pytest.approx(0.001 * row["llm_calls"])
    md = (results / "coders.md").read_text()
    assert "| coder | type | hookpoint | k | FVU |" in md
    assert f"{N_LATENTS - 1} / 1 / 0 / 0 of {N_LATENTS}" in md
    assert md.count("\n| ") == 5  # header + 4 coders
    usage = pd.read_csv(results / "llm_usage.csv")
    assert dict(zip(usage["stage"], usage["calls"])) == {"explain": len(CODERS) * (N_LATENTS - 1), "score": 40}


def test_claims_file_marks_supported_claims(report_run):
    run, _, _ = report_run
    text = (run / "results" / "claims.md").read_text()
    for n in range(1, 6):
        assert re.search(rf"^\| {n} \| .* \| \*\*reproduced\*\* \|$", text, re.M), (n, text)
    assert "uniform" in text and "top 2 activation deciles" in text


def _data(tmp_path, recon=None, latents=None, scores=None, predictions=None, has_power=True) -> RunData:
    if predictions is not None:
        predictions.to_parquet(tmp_path / "predictions.parquet")
    data = RunData(rd=RunDir(tmp_path), recon=recon, latents=latents, scores=scores, has_predictions=predictions is not None,
                   all_summary=power_rows(scores, has_power) if scores is not None else None)
    data.coders = coder_info(data)
    return data


def _latents(supports: bool = True) -> pd.DataFrame:
    rows = []
    for coder in CODERS:
        for latent in range(N_LATENTS):
            count = count_of(coder, latent, supports)
            rows.append({"coder": coder, "latent": latent, "hookpoint": HP, "binary": coder.startswith("b"),
                         "firing_count": count, "n_tokens": 64000, "frequency": count / 64000, "max_activation": 1.0,
                         "n_windows": 300, "status": "ok" if latent < N_LATENTS - 1 else "too_rare"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("supports", [True, False])
def test_claim_verdicts_follow_made_up_numbers(tmp_path, supports):
    lat = _latents(supports)
    data = _data(tmp_path, recon_rows(supports), lat, score_rows(lat, supports, np.random.default_rng(0)),
                 recall_predictions(lat, supports))
    claims = evaluate_claims(data, coder_table(data))
    verdicts = [c.verdict for c in claims]
    assert verdicts == [REPRODUCED if supports else NOT_REPRODUCED] * 5, [(c.verdict, c.reason) for c in claims]
    if supports:
        assert [c.comparison for c in claims[0].cells] == ["BAE vs SAE (layers.9.mlp, k=8)", "BTC vs TC (layers.9.mlp, k=8)"]
        assert claims[0].cells[0].diff == pytest.approx(0.1) and "2 of 2 comparisons go the claimed way" in claims[0].reason
        recall = claims[2].cells[0]  # the mean over latents of each latent's recall, n: latents a side
        assert recall.binary == pytest.approx(0.95) and recall.continuous == pytest.approx(0.75) and recall.n == N_LATENTS - 1


def test_interpretability_claims_need_a_scorer_with_power(tmp_path):
    lat = _latents()
    data = _data(tmp_path, recon_rows(True), lat, score_rows(lat, True, np.random.default_rng(0)), recall_predictions(lat, True),
                 has_power=False)
    claims = evaluate_claims(data, coder_table(data))
    assert [c.verdict for c in claims] == [REPRODUCED, NOT_MEASURABLE, NOT_MEASURABLE, REPRODUCED, NOT_MEASURABLE]
    for c in (claims[1], claims[2], claims[4]):
        assert not c.cells and "not measurable: detection has no measured power on this run" in c.note
        assert "own 0.700 vs shuffled 0.690" in c.note


def test_claims_not_measurable(tmp_path):
    lat = _latents()
    # no binary coder at all: nothing to compare
    only_sae = recon_rows(True)
    only_sae = only_sae[only_sae["coder"] == "sae-layers.9.mlp-k8"]
    data = _data(tmp_path, only_sae, lat[lat["coder"] == "sae-layers.9.mlp-k8"])
    assert [c.verdict for c in evaluate_claims(data, coder_table(data))] == [NOT_MEASURABLE] * 5
    # scores within noise: binary a hair better on detection, a hair worse on fuzzing
    scores = score_rows(lat, True, np.random.default_rng(0))
    shift = np.where(scores["coder"].str.startswith("b"), np.where(scores["scorer"] == "detection", 0.02, -0.02), 0.0)
    scores["f1"] = 0.3 + 0.06 * scores["latent"] + shift
    data = _data(tmp_path, recon_rows(True), lat, scores)
    claim2 = evaluate_claims(data, coder_table(data))[1]
    assert claim2.verdict == NOT_MEASURABLE, claim2.reason
    assert claim2.needed and "per coder" in claim2.needed
    assert evaluate_claims(data, coder_table(data))[2].verdict == NOT_MEASURABLE  # no quantile scores


def test_plots_written(report_run):
    run, written, _ = report_run
    for name in ("score_vs_frequency", "score_distributions", "score_by_quantile", "fvu_curves"):
        path = written[f"plot_{name}"]
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot_fvu_vs_k" not in written  # one k per type: skipped with a note
    html = written["html"].read_text()
    assert "every coder type was trained at a single k" in html


def _page_data(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S)
    assert m, "no data block"
    return json.loads(m.group(1))


def test_html_embeds_escaped_data(report_run):
    run, written, info = report_run
    html = written["html"].read_text()
    # the JSON block never closes its own <script> and holds no raw '<' or '&' from the run's text
    block = re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1)
    assert "<" not in block and "&" not in block
    data = _page_data(html)
    assert data["browser"]["windows"][str(info["nasty_window"])][-1] == NASTY_TOKEN
    lat = {(l["coder"], l["latent"]): l for l in data["browser"]["latents"]}
    assert lat[("sae-layers.9.mlp-k8", 0)]["explanation"] == NASTY_EXPLANATION
    assert len(lat) == len(CODERS) * N_LATENTS  # the explained ones + the too-rare one per coder
    l0 = lat[("bae-layers.9.mlp-k8", 1)]
    assert l0["top"] and l0["sampled"] and set(l0["decisions"]) == {"detection", "fuzzing"}
    det = l0["decisions"]["detection"]
    assert len(l0["tests"]["window"]) == len(l0["tests"]["label"]) == len(det["prediction"]) == 20 and "similarity" not in det
    assert len([p for p in data["plots"] if p["src"]]) == 4
    assert written["html"].stat().st_size < 5_000_000


def test_browser_cap_and_missing_later_stages(tmp_path, tokenizer):
    run = tmp_path / "run"
    build_mined_run(run, tokenizer, coders=("sae-x", "bae-x"), n_latents=4)
    cfg = ReportConfig(plots=False)
    cfg.browser.extra_latents = 2
    written = run_report_stage(run, cfg, tmp_path / "out")
    assert set(written) == {"coders_csv", "coders_md", "claims_md", "claims_csv", "seeds_csv", "seed_comparisons_csv", "seeds_md", "html"}  # one seed each
    data = _page_data(written["html"].read_text())
    assert len(data["browser"]["latents"]) == 4  # nothing explained: 2 others per coder
    assert any("latent_scores.parquet not found" in n for n in data["notes"])
    assert any("2 of 4" in n for n in data["notes"])
    assert "not measurable" in (tmp_path / "out" / "claims.md").read_text()
    assert RunDir(run).is_complete("report")


def test_recon_only_run_with_several_k(tmp_path):
    rows = []
    for k in (8, 16, 32):
        rec = recon_rows(True).assign(k=k)
        rec["coder"] = rec["coder"].str.replace("-k8", f"-k{k}")
        rec["fvu"] = rec["fvu"] * 8 / k
        rows.append(rec)
    run = tmp_path / "run"
    run.mkdir()
    pd.concat(rows).to_parquet(run / "recon_eval.parquet")
    written = run_report_stage(run)
    assert written["plot_fvu_vs_k"].exists() and "plot_fvu_curves" not in written
    df = pd.read_csv(run / "results" / "coders.csv")
    assert len(df) == 12 and list(df["k"][:3]) == [8, 16, 32] and set(df["type"]) == {"SAE", "BAE", "TC", "BTC"}
    claims = (run / "results" / "claims.md").read_text()
    verdicts = re.findall(r"^\| \d \| .* \| \*\*(.*)\*\* \|$", claims, re.M)
    assert verdicts == [REPRODUCED, NOT_MEASURABLE, NOT_MEASURABLE, REPRODUCED, NOT_MEASURABLE]  # FVU, UHF from recon_eval
    data = _page_data(written["html"].read_text())
    assert data["browser"]["latents"] == [] and any("latents.parquet not found" in n for n in data["notes"])


def test_empty_run_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="neither recon_eval.parquet nor latents.parquet"):
        run_report_stage(tmp_path)
    with pytest.raises(UserError, match="no such run directory"):
        run_report_stage(tmp_path / "missing")


def test_command_writes_report(report_run, tmp_path):
    import typer
    from typer.testing import CliRunner

    from interp_eval.report.command import report

    app = typer.Typer()
    app.command()(report)
    app.command("other")(lambda: None)  # two commands: `report` is then a subcommand, as in the real CLI
    run, _, _ = report_run
    res = CliRunner().invoke(app, ["report", "--run", str(run), "--out", str(tmp_path / "o"), "--no-plots"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o" / "report.html").exists() and "open" in res.output


# -- the page in a real browser ------------------------------------------------------------------------------------
#
# Chromium is driven through the DevTools protocol over a pipe (--remote-debugging-pipe: NUL-terminated JSON on
# file descriptors 3 and 4), so the test needs no extra package: it sees every console message and uncaught
# exception as an event, clicks and types like a user, and takes a screenshot of the viewport.

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars", "--mute-audio",
                  "--remote-debugging-pipe"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Page:
    """One headless Chromium tab, driven over the DevTools pipe."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000):
        to_chrome_r, to_chrome_w = os.pipe()
        from_chrome_r, from_chrome_w = os.pipe()

        def wire_fds():  # in the child: Chromium reads commands on fd 3 and writes answers on fd 4
            os.dup2(to_chrome_r, 3)
            os.dup2(from_chrome_w, 4)

        self.proc = subprocess.Popen(
            [_chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            pass_fds=(3, 4), preexec_fn=wire_fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(profile)})
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.w, self.r, self.buf, self.next_id, self.events = to_chrome_w, from_chrome_r, b"", 0, []
        self.session = None
        target = next(t for t in self.send("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")

    def _message(self, timeout: float) -> dict:
        import select

        while b"\0" not in self.buf:
            if not select.select([self.r], [], [], timeout)[0]:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            m = self._message(timeout)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def js(self, expression: str):
        r = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def goto(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.body && document.body.getAttribute('data-ready') === '1'")

    def wait_for(self, expression: str, timeout: float = 30) -> None:
        import time

        end = time.time() + timeout
        while not self.js(expression):
            if time.time() > end:
                raise TimeoutError(f"waited for {expression}")
            time.sleep(0.05)

    def problems(self) -> list[str]:
        """Console messages, uncaught exceptions and browser log errors (failed loads) seen so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.consoleAPICalled":
                out.append(f"console.{p.get('type')}: " + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", [])))
            elif e.get("method") == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                out.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
                out.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        return out

    def screenshot(self, path: Path) -> Path:
        import base64

        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"]))
        return path

    def close(self) -> None:
        self.session = None  # Browser.close goes to the browser, not the tab
        try:
            self.send("Browser.close", timeout=10)
        except (OSError, EOFError, TimeoutError, RuntimeError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.w)
        os.close(self.r)


@pytest.fixture
def page(tmp_path):
    if _chromium() is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium): the browser test needs it")
    p = Page(tmp_path / "profile")
    yield p
    p.close()


def test_page_in_headless_chromium(report_run, page, tmp_path):
    run, written, info = report_run
    url = written["html"].resolve().as_uri()
    # a latent named in the URL opens on load
    page.goto(url + "#coder=bae-layers.9.mlp-k8&latent=1")
    assert page.problems() == []
    assert page.js("document.body.getAttribute('data-errors')") == "0"
    detail = "document.getElementById('latent-detail')"
    assert page.js(f"[{detail}.dataset.coder, {detail}.dataset.latent]") == ["bae-layers.9.mlp-k8", "1"]
    assert page.js("document.getElementById('detail-explanation').textContent") == "the word of"
    assert page.js(f"{detail}.querySelectorAll('.window').length") >= 10
    shaded = page.js(f"Array.from({detail}.querySelectorAll('.tok[data-act]')).map(t => t.textContent.trim().toLowerCase())")
    assert shaded and set(shaded) == {"of"}
    assert page.js(f"Array.from({detail}.querySelectorAll('details[data-scorer]')).map(d => d.dataset.scorer)") == ["detection", "fuzzing"]
    decisions = page.js(f"Array.from({detail}.querySelectorAll('tr[data-label]')).map(r => [r.dataset.label, r.dataset.prediction])")
    assert len(decisions) == 2 * 20 and {d[0] for d in decisions} == {"0", "1"}
    assert page.js("document.querySelectorAll('.claim.reproduced').length") == 5
    assert page.js("document.querySelectorAll('#plots img').length") == 4
    assert page.js("document.querySelectorAll('#latent-table tbody tr').length") == len(CODERS) * N_LATENTS
    page.screenshot(tmp_path / "report.png")
    # clicking a row opens that latent and puts it in the URL
    page.js("document.querySelector('#latent-table tbody tr[data-coder=\"tc-layers.9.mlp-k8\"][data-latent=\"2\"]').click()")
    assert page.js(f"{detail}.dataset.coder + '/' + {detail}.dataset.latent") == "tc-layers.9.mlp-k8/2"
    assert page.js("location.hash") == "#coder=tc-layers.9.mlp-k8&latent=2"
    # sorting by detection F1 (descending on first click) and filtering by text
    page.js("document.querySelector('#latent-table th[data-key=det_f1]').click()")
    f1 = page.js("Array.from(document.querySelectorAll('#latent-table tbody tr td:nth-child(7)')).map(td => td.textContent)")
    nums = [float(v) for v in f1 if v != "-"]
    assert nums == sorted(nums, reverse=True) and f1[-1] == "-"
    page.js("const f = document.getElementById('filter'); f.value = 'word to'; f.dispatchEvent(new Event('input'))")
    assert page.js("document.querySelectorAll('#latent-table tbody tr').length") == len(CODERS)
    # text from the run stays text: a hash change opens the latent with HTML-like explanation and token
    page.send("Page.navigate", {"url": url + "#coder=sae-layers.9.mlp-k8&latent=0"})
    page.wait_for(f"{detail}.dataset.coder === 'sae-layers.9.mlp-k8' && {detail}.dataset.latent === '0'")
    assert page.js("document.getElementById('detail-explanation').textContent") == NASTY_EXPLANATION
    assert NASTY_TOKEN.replace("\n", "") in page.js(f"{detail}.textContent")
    assert page.js(f"{detail}.querySelectorAll('img, b, script').length") == 0
    assert page.js("typeof window.pwned") == "undefined"
    assert page.problems() == []
    keep = os.environ.get("INTERP_EVAL_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / "report.png", Path(keep) / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 20_000


def test_random_model_coders_are_compared_with_their_trained_twins(tmp_path):
    from interp_eval.report.tables import random_model_table

    rng = np.random.default_rng(0)
    rows = []
    for coder, mean in (("sae-x", 0.8), ("sae-x-randmodel", 0.55), ("bae-x", 0.7), ("bae-x-randmodel", 0.7)):
        for latent in range(30):
            rows.append({"coder": coder, "latent": latent, "scorer": "example-embedding", "auc": mean + rng.normal(0, 0.05)})
    data = RunData(rd=RunDir(tmp_path), scores=pd.DataFrame(rows))
    t = random_model_table(data).set_index("trained")
    assert list(t.index) == ["bae-x", "sae-x"] and (t["metric"] == "auc").all()
    assert t.at["sae-x", "verdict"] == "trained higher" and t.at["sae-x", "ci_low"] > 0.15
    assert t.at["bae-x", "verdict"] == "random-model coder rates as high as the trained one"
    assert t.at["bae-x", "ci_low"] < 0 < t.at["bae-x", "ci_high"]
