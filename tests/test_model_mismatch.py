"""--allow-model-mismatch: a coder of the base model (HuggingFaceTB/SmolLM2-135M) run on the packaged instruct subject.

Refused without the flag (one line naming it, exit 2 through the CLI); with it the coder is mined on the subject
with a warning, and the mismatch is in run.json, the manifest, latents.parquet, the explain log and the report.
Width, hookpoint and a random-model control's base must still fit.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pandas as pd
import pytest

from interp_eval.artifacts import RunDir
from interp_eval.catalog import LATENTS
from interp_eval.coders.coder import CoderConfig, SparseCoder
from interp_eval.coders.saelens import save_coder
from interp_eval.errors import UserError
from interp_eval.mining import MineConfig, run_mine_stage
from mining_helpers import MODEL_NAME

BASE = "HuggingFaceTB/SmolLM2-135M"
MINE = dict(tokens=1024, n_top=2, n_explain=10, n_test=10, n_negative=2, reservoir=20, negative_pool=8, min_examples=20)
KW = dict(device="cpu", **MINE)
OPTS = ["--device", "cpu", *(f"--{k.replace('_', '-')}={v}" for k, v in MINE.items())]


def _coder(run: Path, name: str, **kw) -> Path:
    cfg = dict(kind="sae", activation="topk", d_in=576, d_sae=16, k=4, hookpoint="layers.0.mlp", model_name=BASE) | kw
    save_coder(SparseCoder(CoderConfig(**cfg), seed=0), run / "coders" / name)
    return run / "coders" / name


def _mine_cli(run: Path, *flags: str):
    """`interp-eval mine` as the CLI runs it, less the CLI's logging set-up (which would take the log from caplog)."""
    import typer
    from typer.testing import CliRunner

    from interp_eval.cli import stage
    from interp_eval.mining.command import mine

    app = typer.Typer()
    app.command()(stage(mine))
    return CliRunner().invoke(app, ["--run", str(run), *OPTS, *flags])


@pytest.fixture
def own_subject(monkeypatch, subject):
    """The CLI's model load gives the session's already loaded subject model."""
    monkeypatch.setattr("interp_eval.mining.stage.load_subject_model", lambda *a, **k: subject)
    return subject


def test_base_model_coder_is_refused_without_the_flag(tmp_path, own_subject):
    run = tmp_path / "run"
    _coder(run, "base")
    res = _mine_cli(run)
    assert res.exit_code == 2, res.output
    error = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "--allow-model-mismatch" in error[0] and BASE in error[0] and own_subject.name in error[0]
    assert not (run / "latents.parquet").exists() and not (run / "manifest.jsonl").exists()


def test_flag_mines_it_on_the_subject_with_a_warning_and_records_it_everywhere(tmp_path, own_subject, caplog):
    from interp_eval.explain.stage import ExplainConfig, run_explain_stage
    from interp_eval.report import ReportConfig, run_report_stage

    run = tmp_path / "run"
    _coder(run, "base")
    _coder(run, "own", model_name=MODEL_NAME)
    with caplog.at_level(logging.WARNING):
        res = _mine_cli(run, "--allow-model-mismatch")
    assert res.exit_code == 0, res.output
    assert f"model mismatch: base was trained on {BASE}, mined on {own_subject.name}" in res.output
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "--allow-model-mismatch" in r.getMessage()]
    assert len(warned) == 1 and "base" in warned[0] and BASE in warned[0] and own_subject.name in warned[0]
    assert "\n" not in warned[0]

    rd = RunDir(run)
    lat = rd.read(LATENTS).groupby("coder").first()
    assert lat.loc["base", "trained_on"] == BASE and lat.loc["base", "mined_on"] == own_subject.name
    assert bool(lat.loc["base", "model_mismatch"]) and not bool(lat.loc["own", "model_mismatch"])
    assert lat.loc["own", "trained_on"] == MODEL_NAME and lat.loc["own", "mined_on"] == own_subject.name
    record = json.loads((run / "run.json").read_text())["stages"]["mine"]
    assert record["allow_model_mismatch"] is True and record["model_mismatch"] == {"base": BASE}
    assert rd.stage_entry("mine")["model_mismatch"] == {"base": BASE}

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        run_explain_stage(run, ExplainConfig(explainer="token-table"))
    assert any(r.getMessage().startswith(f"explain: coder base was trained on {BASE}") for r in caplog.records)

    written = run_report_stage(run, ReportConfig(plots=False))
    md = written["coders_md"].read_text()
    assert f"**Warning:** coder base was trained on {BASE} but mined on {own_subject.name}" in md
    assert "| model (trained on -> mined on) |" in md and f"| {BASE} -> {own_subject.name} (mismatch) |" in md
    table = pd.read_csv(written["coders_csv"]).set_index("coder")
    assert table.loc["base", "trained_on"] == BASE and bool(table.loc["base", "model_mismatch"])
    assert not bool(table.loc["own", "model_mismatch"])
    page = written["html"].read_text()
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page, re.S).group(1))
    assert len(data["warnings"]) == 1 and BASE in data["warnings"][0]
    coders = next(t for t in data["tables"] if t["id"] == "coders")
    assert "model (trained on -> mined on)" in coders["columns"]
    _warning_shows_in_the_browser(written["html"], tmp_path)


def _warning_shows_in_the_browser(html: Path, tmp_path: Path) -> None:
    from test_report import Page, _chromium

    if _chromium() is None:
        return  # test_report's browser test says so
    page = Page(tmp_path / "profile")
    try:
        page.goto(html.resolve().as_uri())
        assert page.problems() == [] and page.js("document.body.getAttribute('data-errors')") == "0"
        shown = page.js("Array.from(document.querySelectorAll('#warnings li')).map(li => li.textContent)")
        assert len(shown) == 1 and BASE in shown[0]
    finally:
        page.close()


def test_the_flag_is_part_of_the_mining_config(tmp_path, subject):
    """Mining made without the flag is not reused by a run with it, nor the other way round."""
    run = tmp_path / "run"
    _coder(run, "own", model_name=MODEL_NAME)
    assert not run_mine_stage(run, MineConfig(**KW), subject=subject)["skipped"]
    assert not run_mine_stage(run, MineConfig(allow_model_mismatch=True, **KW), subject=subject)["skipped"]
    assert run_mine_stage(run, MineConfig(allow_model_mismatch=True, **KW), subject=subject)["skipped"]
    assert not run_mine_stage(run, MineConfig(**KW), subject=subject)["skipped"]
    assert "allow_model_mismatch" not in json.loads((run / "run.json").read_text())["stages"]["mine"]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(d_in=64), "d_in 64 does not match"),
        (dict(hookpoint="layers.99.mlp"), "unknown hookpoint 'layers.99.mlp'"),
        (dict(model_name="random:gpt2:0"), "trained on model 'random:gpt2:0'"),  # a control matches only its own base
    ],
)
def test_only_the_model_name_may_differ(tmp_path, subject, change, message):
    _coder(tmp_path / "run", "c", **change)
    with pytest.raises(UserError, match=message) as exc:
        run_mine_stage(tmp_path / "run", MineConfig(allow_model_mismatch=True, **KW), subject=subject)
    assert "\n" not in str(exc.value) and "--allow-model-mismatch" not in str(exc.value)
