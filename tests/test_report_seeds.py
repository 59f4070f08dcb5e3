"""The report's across-seed spread: the grouping of seeds, the spread per group and the within/exceeds verdicts."""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa
import pytest

from interp_eval.artifacts import RunDir, write_table
from interp_eval.catalog import LATENTS, RECON_EVAL, SCORE_SUMMARY
from interp_eval.report import ReportConfig, run_report_stage
from interp_eval.report.inputs import load_run
from interp_eval.report.seeds import EXCEEDS, UNKNOWN, WITHIN, seed_comparisons, seed_group, seed_table, spread_verdict

HP = "layers.9.mlp"
KINDS = {"sae": ("sae", "topk"), "bae": ("sae", "binary"), "tc": ("transcoder", "topk"), "btc": ("transcoder", "binary")}
# coder -> (FVU, CE loss increase, example-embedding AUC)
CODERS = {
    "sae-layers.9.mlp-k32-s1": (0.20, 0.20, 0.60),
    "sae-layers.9.mlp-k32-s2": (0.22, 0.40, 0.62),
    "sae-layers.9.mlp-k32-s3": (0.21, 0.30, 0.64),
    "bae-layers.9.mlp-k32-s1": (0.50, 0.35, 0.61),
    "bae-layers.9.mlp-k32-s2": (0.52, 0.25, 0.63),
    "bae-layers.9.mlp-k32-s3": (0.55, 0.30, 0.65),
    "bae-layers.9.mlp-k32-nonorm-s1": (0.60, 0.31, 0.70),  # a variant with one seed
    "sae-layers.9.mlp-k32-s1-randmodel": (0.90, 2.0, 0.55),
    "sae-layers.9.mlp-k32-s2-randmodel": (0.80, 2.2, 0.57),
    "tc-layers.9.mlp-k32": (0.15, 0.10, 0.66),  # one seed each, no seed suffix
    "btc-layers.9.mlp-k32": (0.45, 0.20, 0.64),
}
# latent frequencies: per seed of the SAE group, how many latents fire on more than 0.1% / 1% / 10% of the tokens
FREQUENCIES = [0.0005, 0.002, 0.02, 0.2]


def write_rows(rd: RunDir, table, rows: list[dict]) -> None:
    """A hand-made table (no run stamp), every catalog column present (None where `rows` leave it out)."""
    write_table(table, rd.path(table), pa.Table.from_pylist([{**dict.fromkeys(table.columns), **r} for r in rows], schema=table.schema))


def kind(coder: str) -> tuple[str, str]:
    return KINDS[coder.split("-")[0]]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rd = RunDir(tmp_path_factory.mktemp("seeds") / "run")
    rd.root.mkdir()
    write_rows(rd, RECON_EVAL, [{"coder": c, "hookpoint": HP, "kind": kind(c)[0], "activation": kind(c)[1], "k": 32, "d_sae": 64,
                                 "eval_tokens": 1024, "fvu": fvu, "ce_loss_increase": ce} for c, (fvu, ce, _) in CODERS.items()])
    lat = []
    for i, c in enumerate(CODERS):
        extra = [0.05] * (i % 3)  # seeds s1, s2, s3 of a group: 0, 1, 2 more latents above 1%
        for j, f in enumerate(FREQUENCIES + extra):
            lat.append({"coder": c, "latent": j, "hookpoint": HP, "binary": kind(c)[1] == "binary", "firing_count": int(f * 1e5),
                        "n_tokens": 100_000, "frequency": f, "max_activation": 1.0, "n_windows": 10, "status": "ok"})
    write_rows(rd, LATENTS, lat)
    summ = []
    for c, (_, _, auc) in CODERS.items():
        summ += [{"coder": c, "scorer": "example-embedding", "explainer": "none", "auc_mean": auc},
                 {"coder": c, "scorer": "embedding", "explainer": "token-table", "auc_mean": auc - 0.1},
                 {"coder": c, "scorer": "embedding", "explainer": "llm", "auc_mean": 0.9},  # its explanations ask an LLM
                 {"coder": c, "scorer": "detection", "explainer": "llm", "f1_mean": 0.8}]
    write_rows(rd, SCORE_SUMMARY, [{**r, "power_metric": "f1" if r["scorer"] == "detection" else "auc"} for r in summ])
    return rd


def test_seed_group_rule():
    assert seed_group("sae-layers.9.mlp-k32-s2") == ("sae-layers.9.mlp-k32", 2)
    assert seed_group("bae-layers.9.mlp-k32-nonorm-s11") == ("bae-layers.9.mlp-k32-nonorm", 11)
    assert seed_group("sae-layers.9.mlp-k32-s1-randmodel") == ("sae-layers.9.mlp-k32-randmodel", 1)
    assert seed_group("sae-layers.9.mlp-k32") == ("sae-layers.9.mlp-k32", None)
    assert seed_group("sae-layers.9.mlp-k32-randmodel") == ("sae-layers.9.mlp-k32-randmodel", None)


def test_spread_verdict():
    assert spread_verdict(0.3, [0.05, 0.02]) == (0.05, EXCEEDS)
    assert spread_verdict(-0.03, [0.05, 0.02]) == (0.05, WITHIN)
    assert spread_verdict(0.05, [0.05, 0.02]) == (0.05, WITHIN)  # exceeding means larger
    assert spread_verdict(0.1 + 0.2 - 0.3, [0.0, 0.0]) == (0.0, WITHIN)  # float noise is no difference
    assert spread_verdict(0.01, [0.05, math.nan]) == (0.05, WITHIN)  # the unknown range can only be larger
    assert spread_verdict(0.1, [0.05, math.nan])[1] == UNKNOWN
    assert spread_verdict(0.0, [math.nan, math.nan])[1] == UNKNOWN


def test_groups_and_spread(run):
    t = seed_table(load_run(run.root)).set_index(["group", "metric"])
    groups = list(dict.fromkeys(g for g, _ in t.index))
    assert sorted(groups) == sorted(["sae-layers.9.mlp-k32", "bae-layers.9.mlp-k32", "bae-layers.9.mlp-k32-nonorm",
                                     "sae-layers.9.mlp-k32-randmodel", "tc-layers.9.mlp-k32", "btc-layers.9.mlp-k32"])
    metrics = list(dict.fromkeys(m for _, m in t.index))
    assert metrics == ["FVU", "CE loss increase", "latents firing > 0.1%", "latents firing > 1%", "latents firing > 10%",
                       "embedding AUC (token-table explanations)", "example-embedding AUC"]  # LLM-free scores only
    fvu = t.loc[("sae-layers.9.mlp-k32", "FVU")]
    assert fvu["seeds"] == fvu["n"] == 3 and fvu["coders"] == "sae-layers.9.mlp-k32-s1, sae-layers.9.mlp-k32-s2, sae-layers.9.mlp-k32-s3"
    assert fvu["mean"] == pytest.approx(0.21) and fvu["min"] == 0.20 and fvu["max"] == 0.22
    assert fvu["range"] == pytest.approx(0.02) and fvu["std"] == pytest.approx(0.01)
    over1 = t.loc[("sae-layers.9.mlp-k32", "latents firing > 1%")]  # 2, 3, 4 latents
    assert (over1["mean"], over1["min"], over1["max"], over1["std"]) == pytest.approx((3, 2, 4, 1))
    assert t.loc[("sae-layers.9.mlp-k32", "latents firing > 10%"), "range"] == 0
    assert t.loc[("sae-layers.9.mlp-k32", "latents firing > 0.1%"), "mean"] == pytest.approx(4)
    assert t.loc[("sae-layers.9.mlp-k32", "example-embedding AUC"), "mean"] == pytest.approx(0.62)
    rnd = t.loc[("sae-layers.9.mlp-k32-randmodel", "FVU")]
    assert rnd["seeds"] == 2 and rnd["mean"] == pytest.approx(0.85) and rnd["range"] == pytest.approx(0.1)
    one = t.loc[("tc-layers.9.mlp-k32", "FVU")]
    assert one["seeds"] == 1 and one["mean"] == 0.15 and math.isnan(one["range"]) and math.isnan(one["std"])


def test_comparisons_against_the_seed_spread(run):
    data = load_run(run.root)
    c = seed_comparisons(data, seed_table(data)).set_index(["binary", "continuous", "metric"]).sort_index()
    pairs = sorted(set((b, s) for b, s, _ in c.index))
    assert pairs == [("bae-layers.9.mlp-k32", "sae-layers.9.mlp-k32"), ("bae-layers.9.mlp-k32-nonorm", "sae-layers.9.mlp-k32"),
                     ("btc-layers.9.mlp-k32", "tc-layers.9.mlp-k32")]  # random-model controls are not paired
    fvu = c.loc[("bae-layers.9.mlp-k32", "sae-layers.9.mlp-k32", "FVU")]
    assert fvu["comparison"] == "BAE vs SAE (layers.9.mlp, k=32)"
    assert fvu["difference"] == pytest.approx(0.52333 - 0.21, abs=1e-4) and fvu["seed_spread"] == pytest.approx(0.05)
    assert fvu["verdict"] == EXCEEDS
    ce = c.loc[("bae-layers.9.mlp-k32", "sae-layers.9.mlp-k32", "CE loss increase")]
    assert ce["difference"] == pytest.approx(0.0, abs=1e-12) and ce["seed_spread"] == pytest.approx(0.2) and ce["verdict"] == WITHIN
    auc = c.loc[("bae-layers.9.mlp-k32", "sae-layers.9.mlp-k32", "example-embedding AUC")]
    assert auc["difference"] == pytest.approx(0.01) and auc["verdict"] == WITHIN
    # one seed of the variant: unknown, unless the difference is within the SAE group's own range
    assert c.loc[("bae-layers.9.mlp-k32-nonorm", "sae-layers.9.mlp-k32", "FVU"), "verdict"] == UNKNOWN
    assert c.loc[("bae-layers.9.mlp-k32-nonorm", "sae-layers.9.mlp-k32", "CE loss increase"), "verdict"] == WITHIN
    assert set(c.loc[("btc-layers.9.mlp-k32", "tc-layers.9.mlp-k32")]["verdict"]) == {UNKNOWN}


def test_report_writes_seed_files_and_page(run, tmp_path):
    written = run_report_stage(run.root, ReportConfig(plots=False), tmp_path / "out")
    spread = pd.read_csv(written["seeds_csv"])
    comp = pd.read_csv(written["seed_comparisons_csv"])
    assert len(spread) == 6 * 7 and set(comp["verdict"]) == {EXCEEDS, WITHIN, UNKNOWN}
    md = written["seeds_md"].read_text()
    assert "| sae-layers.9.mlp-k32 | SAE | 3 | FVU | 0.2100 | 0.2000 - 0.2200 | 0.0200 | 0.0100 |" in md
    assert "| BAE vs SAE (layers.9.mlp, k=32) | bae-layers.9.mlp-k32 | sae-layers.9.mlp-k32 | FVU | 3 / 3 |" in md
    assert "not evidence" in md
    html = written["html"].read_text()
    assert '"id":"seeds"' in html and '"id":"seed_comparisons"' in html and EXCEEDS in html
