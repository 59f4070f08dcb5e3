"""The report's training curves: the smoothing, the FVU at each quarter of training, the flattened flag, files and page."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from interp_eval.artifacts import RunDir, write_table
from interp_eval.catalog import RECON_EVAL, TRAIN_METRICS
from interp_eval.report import ReportConfig, run_report_stage
from interp_eval.report.fvu_curves import FLAT_DROP, _epochs, fvu_curve_table, is_flat, smoothed
from interp_eval.report.inputs import load_run

HP = "layers.9.mlp"
STEPS = 200
BATCH = 256


def write_rows(rd: RunDir, table, rows: list[dict]) -> None:
    """A hand-made table (no run stamp), every catalog column present (None where `rows` leave it out)."""
    write_table(table, rd.path(table), pa.Table.from_pylist([{**dict.fromkeys(table.columns), **r} for r in rows], schema=table.schema))


def train_rows(coder: str, fvu) -> list[dict]:
    return [{"coder": coder, "step": s, "tokens": BATCH * (s + 1), "fvu": float(f), "l0": 8.0, "dead_fraction": 0.0,
             "lr": 1e-3, "elapsed_s": 0.1 * s} for s, f in enumerate(fvu)]


def step_curve(last_quarter: float) -> np.ndarray:
    """FVU 1.0 for the first 3/4 of the steps, then `last_quarter`: the smoothed FVU at 75% and 100% are exactly 1.0
    and `last_quarter` (the trailing window, 10% of the steps, never straddles the step)."""
    return np.where(np.arange(STEPS) < 3 * STEPS // 4, 1.0, last_quarter)


CURVES = {
    "sae-layers.9.mlp-k8": 0.2 + 0.8 * np.exp(-np.arange(STEPS) / 10),  # flat long before the end
    "bae-layers.9.mlp-k8": np.linspace(1.0, 0.5, STEPS),  # still falling: -20% over the last quarter
    "tc-layers.9.mlp-k8": step_curve(1 - FLAT_DROP / 2),  # fell by 1%: flattened
    "btc-layers.9.mlp-k8": step_curve(1 - 1.5 * FLAT_DROP),  # fell by 3%: not flattened
    "sae-layers.9.mlp-k8-randmodel": np.linspace(1.0, 0.9, STEPS),
    "bae-layers.9.mlp-k8-short": np.array([1.0, 0.9, 0.8, 0.7]),  # too few steps to judge
}
KINDS = {"sae": ("sae", "topk"), "bae": ("sae", "binary"), "tc": ("transcoder", "topk"), "btc": ("transcoder", "binary")}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    rd = RunDir(tmp_path_factory.mktemp("fvu") / "run")
    rd.root.mkdir()
    write_rows(rd, TRAIN_METRICS, [row for coder, fvu in CURVES.items() for row in train_rows(coder, fvu)])
    write_rows(rd, RECON_EVAL, [{"coder": c, "hookpoint": HP, "kind": KINDS[c.split("-")[0]][0], "activation": KINDS[c.split("-")[0]][1],
                                 "k": 8, "d_sae": 64, "eval_tokens": 1024, "fvu": float(f[-1]), "ce_loss_increase": 0.1}
                                for c, f in CURVES.items()])
    folder = rd.coder_dir("sae-layers.9.mlp-k8")
    folder.mkdir(parents=True)
    (folder / "cfg.json").write_text(json.dumps({"metadata": {"interp_eval": {"train": {"epochs": 2}}}}))
    return rd


def test_smoothing_is_a_trailing_mean_over_a_tenth_of_the_steps():
    x = np.arange(40, dtype=float)  # window: 4 steps
    s = smoothed(x)
    assert s[:4].tolist() == [0.0, 0.5, 1.0, 1.5]  # fewer steps at the start
    assert s[10] == pytest.approx(np.mean(x[7:11])) and s[-1] == pytest.approx(np.mean(x[-4:]))
    assert smoothed(np.array([3.0, 5.0])).tolist() == [3.0, 5.0]  # at least one step


def test_flattened_flag_on_constructed_curves(run):
    t = fvu_curve_table(load_run(run.root)).set_index("coder")
    assert t["steps"].to_dict() == {c: len(f) for c, f in CURVES.items()}
    assert t.at["tc-layers.9.mlp-k8", "fvu_75"] == pytest.approx(1.0)
    assert t.at["tc-layers.9.mlp-k8", "fvu_100"] == pytest.approx(1 - FLAT_DROP / 2)
    assert t.at["tc-layers.9.mlp-k8", "change_last_quarter"] == pytest.approx(-FLAT_DROP / 2)
    assert t.at["btc-layers.9.mlp-k8", "change_last_quarter"] == pytest.approx(-1.5 * FLAT_DROP)
    # the linear curve: smoothed value at q% = mean of the 20 steps up to the last one with tokens <= q% of the total
    lin = CURVES["bae-layers.9.mlp-k8"]
    for q in (25, 50, 75, 100):
        last = q * STEPS // 100 - 1
        assert t.at["bae-layers.9.mlp-k8", f"fvu_{q}"] == pytest.approx(lin[last - 19: last + 1].mean())
    assert t.at["bae-layers.9.mlp-k8", "change_last_quarter"] < -0.15
    flags = t["flattened"].to_dict()
    assert flags == {"sae-layers.9.mlp-k8": True, "bae-layers.9.mlp-k8": False, "tc-layers.9.mlp-k8": True,
                     "btc-layers.9.mlp-k8": False, "sae-layers.9.mlp-k8-randmodel": False, "bae-layers.9.mlp-k8-short": None}
    assert is_flat(-FLAT_DROP + 1e-9) and not is_flat(-FLAT_DROP) and is_flat(0.05)  # a rise is flat too


def test_epochs_come_from_the_coders_cfg_json(run):
    data = load_run(run.root)
    assert _epochs(data, "sae-layers.9.mlp-k8") == 2 and _epochs(data, "bae-layers.9.mlp-k8") == 1


def test_report_writes_the_table_the_plot_and_the_page(run, tmp_path):
    written = run_report_stage(run.root, ReportConfig(), tmp_path / "out")
    csv = pd.read_csv(written["fvu_curve_csv"]).set_index("coder")
    assert len(csv) == len(CURVES) and not csv.at["bae-layers.9.mlp-k8", "flattened"]
    md = written["fvu_curve_md"].read_text()
    assert "| btc-layers.9.mlp-k8 | BTC | 200 | 51,200 |" in md and "| -3.0% | no |" in md and "too few steps" in md
    assert written["plot_fvu_curves"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plot_training_curves" not in written
    html = written["html"].read_text()
    assert '"id":"fvu_curve"' in html and '"name":"fvu_curves"' in html
