"""Explanation and test windows of every `ok` latent, whatever --n-explain / --n-test are, and `explain` on a
latent that has none.

The defect: the per-bin quotas `n*(q+1)//bins - n*q//bins` put all of a small --n-explain (below the 10
quantiles) in a few upper bins; a latent with fewer sampled windows than bins has empty bins there, the
quota was capped at the bin's size and lost, and the latent was `ok` without a single explanation window
(explain then stopped the whole stage asking for a re-mine that gave the same rows).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from interp_eval.catalog import KINDS, SPLITS
from interp_eval.mining import CoderState, Sampling
from interp_eval.mining.selection import OK, latent_status, select_rows

QUANTILE, EXPLAIN, TEST = KINDS.index("quantile"), SPLITS.index("explain"), SPLITS.index("test")
N_WIN = 40  # windows of the synthetic stream; latent j fires in windows 0..j, so in j + 1 of them


def _state(sampling: Sampling) -> CoderState:
    """40 latents over 40 one-window contexts of 4 tokens; latent j fires (once, at the window's first token)
    in windows 0..j with distinct activations 1 + w / 64."""
    W, L = sampling.window, N_WIN
    values = torch.zeros(N_WIN * W, L)
    w = torch.arange(N_WIN)
    for j in range(L):
        values[w[: j + 1] * W, j] = 1 + w[: j + 1] / 64
    indices = torch.arange(L).expand(N_WIN * W, L).contiguous()
    state = CoderState.empty(L, sampling)
    state.update(values, indices, W, torch.arange(N_WIN), seed=sampling.seed)
    return state


def _even(total: int, bins: int) -> np.ndarray:
    q = np.arange(bins)
    return total * (q + 1) // bins - total * q // bins


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("n_explain,n_test", [(1, 1), (1, 9), (2, 3), (3, 1), (9, 1), (1, 30), (5, 5), (4, 5), (20, 10)])
def test_every_ok_latent_gets_explanation_and_test_windows(n_explain, n_test, binary):
    sampling = Sampling(window=4, n_top=2, n_explain=n_explain, n_test=n_test, n_negative=1, reservoir=N_WIN,
                        negative_pool=1, min_examples=2, seed=3)
    state = _state(sampling)
    assert state.n_windows.tolist() == list(range(1, N_WIN + 1))
    rows = select_rows(state, sampling, binary)
    again = select_rows(state, sampling, binary)
    for name in ("latent", "window_id", "split", "quantile", "rank"):  # seeded: the same rows every time
        np.testing.assert_array_equal(getattr(rows, name), getattr(again, name))
    status = latent_status(state, sampling.min_examples)
    nb = 1 if binary else sampling.n_quantiles
    for j in np.nonzero(status == OK)[0]:
        n = j + 1  # sampled windows (the reservoir holds all of them)
        mine = (rows.latent == j) & (rows.kind == QUANTILE)
        ex, te = mine & (rows.split == EXPLAIN), mine & (rows.split == TEST)
        n_ex, n_te = int(ex.sum()), int(te.sum())
        where = f"latent {j} ({n} windows): {n_ex} explain, {n_te} test"
        assert n_ex >= 1 and n_te >= 1, where
        if n >= n_explain + n_test:
            assert (n_ex, n_te) == (n_explain, n_test), where
        else:  # too few for both: all of them, split in proportion
            assert n_ex + n_te == n, where
        assert not set(rows.window_id[ex]) & set(rows.window_id[te]), where  # disjoint
        assert len(set(rows.window_id[ex])) == n_ex and len(set(rows.window_id[te])) == n_te
        np.testing.assert_array_equal(np.sort(rows.rank[ex]), np.arange(n_ex))
        np.testing.assert_array_equal(np.sort(rows.rank[te]), np.arange(n_te))
        if not binary and n // nb >= -(-n_explain // nb) - (-n_test // nb):
            # every bin holds its even share: the per-bin counts are the plain even split, as before the fix
            np.testing.assert_array_equal(np.bincount(rows.quantile[ex], minlength=nb), _even(n_explain, nb), where)
            np.testing.assert_array_equal(np.bincount(rows.quantile[te], minlength=nb), _even(n_test, nb), where)


def test_small_n_explain_end_to_end_mine_then_token_table_explain(tmp_path, subject):
    """The reported case on the real model: --n-explain below the 10 quantiles and latents with fewer sampled
    windows than quantiles still `ok` (--min-examples 2): mine, then explain every live latent with the token table."""
    import shutil

    from interp_eval.explain.stage import ExplainConfig, read_explanations, run_explain_stage
    from interp_eval.mining import MineConfig, run_mine_stage
    from mining_helpers import MINE_KW, make_run_coders

    src = tmp_path / "src"
    make_run_coders(src)
    run = tmp_path / "run"
    (run / "coders").mkdir(parents=True)
    shutil.copytree(src / "coders" / "sae0", run / "coders" / "sae0")
    kw = {**MINE_KW, "n_explain": 1, "n_test": 2, "min_examples": 2}
    run_mine_stage(run, MineConfig(**kw), subject=subject)
    lat = pd.read_parquet(run / "latents.parquet")
    ctx = pd.read_parquet(run / "contexts.parquet")
    ok = lat[lat["status"] == "ok"]
    assert ((ok["n_windows"] < 10) & (ok["n_windows"] >= 3)).sum() > 0  # the case: fewer sampled windows than bins
    out = run_explain_stage(run, ExplainConfig(explainer="token-table"))  # the report: a UserError here
    assert out["selected"] == len(ok) and out.get("no_windows", 0) == 0
    q = ctx[ctx["kind"] == "quantile"]
    per = q.groupby(["latent", "split"]).size().unstack(fill_value=0).reindex(ok["latent"], fill_value=0)
    n_win = ok.set_index("latent")["n_windows"]  # the reservoir (30) holds all of a latent's windows below 30
    assert (per["explain"] == 1).all() and (per["test"] == n_win.clip(upper=3) - 1).all(), per.join(n_win)
    df = read_explanations(run / "explanations.parquet")
    assert set(df["latent"]) == set(ok["latent"])
    assert (df["n_windows"] == 1).all()


def test_explain_records_a_latent_without_explanation_windows_and_goes_on(mined):
    """A selected latent with no explanation windows (a run mined with --n-explain 0, or before the fix above)
    is one failed row that says what to change, counted apart; the other latents are explained and the stage
    completes (re-running it, or mine with the same settings, cannot give that latent windows)."""
    from interp_eval.artifacts import RunDir
    from interp_eval.explain.stage import ExplainConfig, read_explanations, run_explain_stage

    run, _ = mined
    ctx = pd.read_parquet(run / "contexts.parquet")
    gone = (ctx["coder"] == "sae-x") & (ctx["latent"] == 2) & (ctx["split"] == "explain")
    assert gone.sum() > 0
    ctx[~gone].to_parquet(run / "contexts.parquet")
    out = run_explain_stage(run, ExplainConfig(explainer="token-table"))
    assert out["no_windows"] == 1 and out["failed"] == 0 and out["explained"] == out["selected"] - 1 == 9
    df = read_explanations(run / "explanations.parquet").set_index(["coder", "latent"])
    row = df.loc[("sae-x", 2)]
    assert not row["parse_ok"] and pd.isna(row["explanation"]) and row["n_windows"] == 0
    assert "no explanation windows" in row["failure"] and "--n-explain" in row["failure"]
    assert df.drop(index=("sae-x", 2))["parse_ok"].all()
    assert RunDir(run).is_complete("explain")
    out = run_explain_stage(run, ExplainConfig(explainer="token-table"))  # again: the same, nothing else asked
    assert out["no_windows"] == 1 and out["already_done"] == 9 and out["explained"] == 0
    from typer.testing import CliRunner

    from interp_eval.cli import app

    result = CliRunner().invoke(app, ["explain", "--run", str(run), "--explainer", "token-table"])
    assert result.exit_code == 0, result.output
    assert "0 failed, 9 already done" in result.output and "1 without explanation windows" in result.output
