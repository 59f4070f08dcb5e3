"""The run-directory catalog and the one reader/writer: every read and write is checked against it."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from interp_eval import catalog
from interp_eval.artifacts import RunDir
from interp_eval.catalog import EXPLANATIONS, LLM_USAGE, PREDICTIONS, RECON_EVAL, TABLES
from interp_eval.errors import UserError


def _recon(**over) -> dict:
    row = {c: 0.0 for c in RECON_EVAL.columns}
    row.update({"coder": "sae-x", "hookpoint": "layers.0.mlp", "kind": "sae", "activation": "topk", "k": 8, "d_sae": 16,
                "eval_tokens": 100, **over})
    return row


def test_every_table_has_a_unique_file_a_writer_and_a_meaning():
    names = [t.name for t in TABLES] + [f.name for f in catalog.FOLDERS]
    assert len(names) == len(set(names))
    for t in TABLES:
        assert t.name.endswith(".parquet") and t.stage and t.meaning
        assert set(t.defaults) <= set(t.columns), t.name


def test_read_back_what_was_written(tmp_path):
    rd = RunDir(tmp_path)
    rd.append(RECON_EVAL, [_recon(fvu=0.2)])
    rd.append(RECON_EVAL, [_recon(fvu=0.3), _recon(coder="bae-x", fvu=0.4)], replace=["coder"])
    df = rd.read(RECON_EVAL)
    assert list(df.columns) == RECON_EVAL.columns
    assert dict(zip(df["coder"], df["fvu"])) == {"sae-x": 0.3, "bae-x": 0.4}
    assert list(rd.read(RECON_EVAL, columns=["coder"], where={"coder": ["bae-x"]})["coder"]) == ["bae-x"]


def test_a_missing_column_or_a_wrong_type_is_one_line_naming_the_file_and_the_fix(tmp_path):
    rd = RunDir(tmp_path)
    pd.DataFrame([_recon()]).drop(columns=["fvu"]).to_parquet(rd.path(RECON_EVAL))
    with pytest.raises(UserError, match=r"recon_eval.parquet lacks column\(s\) fvu .*re-run `interp-eval train`") as e:
        rd.read(RECON_EVAL)
    assert "\n" not in str(e.value)
    pd.DataFrame([_recon(fvu="low")]).to_parquet(rd.path(RECON_EVAL))
    with pytest.raises(UserError, match="column fvu is (large_)?string, recon_eval.parquet holds double"):
        rd.read(RECON_EVAL)
    with pytest.raises(UserError, match="not found.*run `interp-eval mine` first"):
        rd.read(catalog.LATENTS)
    rd.path(catalog.LATENTS).write_text("not parquet")
    with pytest.raises(UserError, match="not a readable Parquet file"):
        rd.read(catalog.LATENTS)


def test_a_writer_may_not_add_or_drop_columns(tmp_path):
    rd = RunDir(tmp_path)
    with pytest.raises(UserError, match="column surprise is not in the catalog"):
        rd.write(RECON_EVAL, pd.DataFrame([_recon(surprise=1)]))
    with pytest.raises(UserError, match="lacks column"):
        rd.write(RECON_EVAL, pd.DataFrame([_recon()]).drop(columns=["k"]))
    assert not rd.has(RECON_EVAL)


def test_older_files_read_with_the_documented_defaults(tmp_path):
    rd = RunDir(tmp_path)
    row = {c: None for c in EXPLANATIONS.columns if c not in ("explainer", "mine_config")}
    row.update(coder="sae-x", latent=3, explanation="dogs", parse_ok=True, n_windows=8, attempts=1)
    pq.write_table(pa.Table.from_pylist([row], schema=pa.schema([EXPLANATIONS.schema.field(c) for c in row])), rd.path(EXPLANATIONS))
    df = rd.read(EXPLANATIONS)
    assert df.loc[0, "explainer"] == "llm" and pd.isna(df.loc[0, "mine_config"])
    # a filter on a filled-in column: the default decides for every row
    assert len(rd.read(EXPLANATIONS, where={"explainer": ["llm"]})) == 1
    assert rd.read(EXPLANATIONS, where={"explainer": ["token-table"]}).empty
    # the ledger of an older run: untagged calls
    pq.write_table(pa.table({"stage": ["explain"], "backend": ["local"], "model": ["m"], "ok": [True], "error": [None],
                             "cached": [False], "batch": [False], "attempts": [1], "latency_s": [0.1], "input_tokens": [5],
                             "output_tokens": [1], "cache_read_tokens": [0], "cache_write_tokens": [0], "cost_usd": [0.0]}),
                   rd.path(LLM_USAGE))
    ledger = rd.read(LLM_USAGE)
    assert ledger[["coder", "latent", "scorer"]].isna().all().all()


def test_an_empty_table_reads_with_every_column(tmp_path):
    rd = RunDir(tmp_path)
    pq.write_table(pa.table({}), rd.path(catalog.SCORE_SUMMARY))
    df = rd.read(catalog.SCORE_SUMMARY)
    assert df.empty and list(df.columns) == catalog.SCORE_SUMMARY.columns
    rd.write(PREDICTIONS, PREDICTIONS.empty())
    assert rd.read(PREDICTIONS, columns=["coder", "latent"], where={"control": ["none"]}).empty


def test_a_column_written_all_null_reads_back_with_filters(tmp_path):
    """The ledger's first rows (explain) have no scorer: the column must still be a string column on disk, so a
    later read filtering on it works (the demo died here: 'Array type doesn't match type of values set')."""
    rd = RunDir(tmp_path)
    row = {c: None for c in LLM_USAGE.columns}
    row.update({"stage": "explain", "backend": "local", "model": "m", "ok": True, "cached": False, "batch": False,
                "attempts": 1, "latency_s": 0.1, "input_tokens": 10, "output_tokens": 2, "cache_read_tokens": 0,
                "cache_write_tokens": 0, "cost_usd": 0.0, "coder": "sae-x", "latent": 0, "explainer": "llm"})
    rd.append(LLM_USAGE, [row])
    assert pq.read_schema(rd.path(LLM_USAGE)).field("scorer").type == pa.string()
    assert rd.read(LLM_USAGE, where={"scorer": ["detection"]}).empty
    assert len(rd.read(LLM_USAGE, where={"explainer": ["llm"]})) == 1


def test_a_file_with_a_null_typed_column_still_reads_with_filters(tmp_path):
    """Runs written before the writer cast to the catalog's types hold null-typed columns: they stay readable."""
    rd = RunDir(tmp_path)
    rows = pa.Table.from_pylist([{"stage": "explain", "backend": "local", "model": "m", "ok": True, "error": None, "cached": False,
                                  "batch": False, "attempts": 1, "latency_s": 0.1, "input_tokens": 10, "output_tokens": 2,
                                  "cache_read_tokens": 0, "cache_write_tokens": 0, "cost_usd": 0.0, "coder": "sae-x", "latent": 0,
                                  "explainer": "llm", "scorer": None, "control": None}])
    assert rows.schema.field("scorer").type == pa.null()
    pq.write_table(rows, rd.path(LLM_USAGE))
    assert rd.read(LLM_USAGE, where={"scorer": ["detection"]}).empty
    assert len(rd.read(LLM_USAGE, where={"scorer": [None, "detection"]})) == 1
    assert len(rd.read(LLM_USAGE, where={"coder": ["sae-x"]})) == 1
