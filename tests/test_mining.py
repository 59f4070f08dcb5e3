"""The mine stage against a brute-force computation on the real packaged model and corpus, at tiny size."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from interp_eval.artifacts import RunDir
from interp_eval.coders.coder import CoderConfig, SparseCoder
from interp_eval.coders.saelens import load_coder, save_coder
from interp_eval.errors import UserError
from interp_eval.mining import CoderState, MineConfig, Sampling, merge, merge_all, run_mine_stage
from interp_eval.mining.selection import select_rows
from interp_eval.subject.corpus import split_tokens
from mining_helpers import DEAD, MINE_KW, MODEL_NAME, brute_force, make_run_coders, make_saelens_sae

NAMES = ["btc1", "sae0", "slsae"]


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    root = tmp_path_factory.mktemp("mine_src")
    make_run_coders(root)
    make_saelens_sae(root / "slsae")
    return root


def _new_run(base: Path, src: Path) -> Path:
    shutil.copytree(src / "coders", base / "coders")
    return base


@pytest.fixture(scope="module")
def mined(tmp_path_factory, src, subject):
    run = _new_run(tmp_path_factory.mktemp("mined"), src)
    summary = run_mine_stage(run, MineConfig(coders=(src / "slsae",), **MINE_KW), subject=subject)
    return run, summary


@pytest.fixture(scope="module")
def tables(mined):
    run, _ = mined
    return {name: pd.read_parquet(run / f"{name}.parquet") for name in ("latents", "windows", "contexts")}


@pytest.fixture(scope="module")
def brute(src, subject):
    folders = {"sae0": src / "coders" / "sae0", "btc1": src / "coders" / "btc1", "slsae": src / "slsae"}
    return {name: brute_force(subject, load_coder(folder)) for name, folder in folders.items()}


def _acts(df: pd.DataFrame) -> np.ndarray:
    return np.stack(df["activations"].to_numpy()) if len(df) else np.zeros((0, MINE_KW["window"]), np.float32)


# ----------------------------------------------------------------------------- counts
def test_latent_counts_and_max_match_brute_force(mined, tables, brute):
    run, summary = mined
    lat = tables["latents"]
    assert sorted(lat["coder"].unique()) == NAMES
    assert summary["tokens"] == 4096 and not summary["skipped"]
    for name in NAMES:
        df = lat[lat["coder"] == name].sort_values("latent")
        bf = brute[name]
        L = bf["acts"].shape[1]
        assert df["latent"].tolist() == list(range(L))  # every latent reported, none dropped
        np.testing.assert_array_equal(df["firing_count"], (bf["acts"] > 0).sum(0))
        np.testing.assert_array_equal(df["max_activation"].to_numpy(), np.maximum(bf["acts"].max(0), 0))
        np.testing.assert_array_equal(df["n_windows"], (bf["window_max"] > 0).sum(0))
        assert (df["n_tokens"] == 4096).all()
        np.testing.assert_allclose(df["frequency"], (bf["acts"] > 0).sum(0) / 4096)
    meta = lat.groupby("coder").first()
    assert meta.loc["slsae", "hookpoint"] == "layers.0.mlp" and not meta.loc["slsae", "binary"]
    assert meta.loc["btc1", "hookpoint"] == "layers.1.mlp" and meta.loc["btc1", "binary"]


def test_too_rare_and_dead_latents_are_reported_not_dropped(mined, tables):
    _, summary = mined
    lat, ctx = tables["latents"], tables["contexts"]
    dead = lat[lat["status"] == "dead"]
    assert set(map(tuple, dead[["coder", "latent"]].values)) >= {("sae0", i) for i in DEAD} | {("slsae", 5)}
    assert set(dead.index) == set(lat.index[lat["firing_count"] == 0])
    rare = lat[lat["status"] == "too_rare"]
    assert len(rare) > 0 and (rare["n_windows"] < MINE_KW["min_examples"]).all() and (rare["firing_count"] > 0).all()
    ok = lat[lat["status"] == "ok"]
    assert (ok["n_windows"] >= MINE_KW["min_examples"]).all()
    for name in NAMES:
        s = summary["coders"][name]
        counts = lat[lat["coder"] == name]["status"].value_counts()
        assert (s["ok"], s["too_rare"], s["dead"]) == tuple(int(counts.get(k, 0)) for k in ("ok", "too_rare", "dead"))
    # dead latents have no windows at all; too-rare ones still get whatever windows exist
    keys = set(map(tuple, ctx[["coder", "latent"]].drop_duplicates().values))
    assert not keys & set(map(tuple, dead[["coder", "latent"]].values))
    for coder, latent, n_win in rare[["coder", "latent", "n_windows"]].values:
        rows = ctx[(ctx["coder"] == coder) & (ctx["latent"] == latent)]
        assert (rows["kind"] == "top").sum() == min(MINE_KW["n_top"], n_win)
        assert rows["split"].isin(["explain", "test"]).sum() > 0


# ----------------------------------------------------------------------------- windows
def test_every_row_holds_the_true_activations(tables, brute):
    ctx = tables["contexts"]
    for name in NAMES:
        df = ctx[ctx["coder"] == name]
        wid, lat = df["window_id"].to_numpy(), df["latent"].to_numpy()
        want = brute[name]["windows"][wid, :, lat]  # [rows, window]: recomputed from the model
        got = _acts(df)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(df["max_activation"].to_numpy(), got.max(1))
        active = df["kind"].isin(["top", "quantile"])
        assert (got[active.to_numpy()].max(1) > 0).all()
        # negatives of every kind (random, neighbour, similar): the latent fires at no token of the window
        assert set(df.loc[~active, "kind"]) == {"random_negative", "neighbour_negative", "similar_negative"}
        assert (brute[name]["window_max"][wid[~active], lat[~active]] == 0).all()


def test_top_windows_are_the_highest(tables, brute):
    ctx = tables["contexts"]
    top = ctx[ctx["kind"] == "top"]
    assert (top["split"] == "display").all() and top["quantile"].isna().all()
    for name in NAMES:
        wmax = brute[name]["window_max"]
        df = top[top["coder"] == name]
        for latent, g in df.groupby("latent"):
            g = g.sort_values("rank")
            want = np.sort(wmax[:, latent])[::-1][: MINE_KW["n_top"]]
            want = want[want > 0]
            np.testing.assert_array_equal(g["max_activation"].to_numpy(), want)
            assert g["rank"].tolist() == list(range(len(g)))


def test_explain_and_test_windows_are_disjoint_and_span_the_quantiles(tables):
    lat, ctx = tables["latents"], tables["contexts"]
    q = ctx[ctx["kind"] == "quantile"]
    assert set(q["split"]) == {"explain", "test"}
    n_win = lat.set_index(["coder", "latent"])["n_windows"]
    full_checked = 0
    for (coder, latent), g in q.groupby(["coder", "latent"]):
        ex = g[g["split"] == "explain"]
        te = g[g["split"] == "test"]
        assert not set(ex["window_id"]) & set(te["window_id"])
        assert ex["window_id"].is_unique and te["window_id"].is_unique
        assert len(ex) + len(te) <= n_win[(coder, latent)]
        if n_win[(coder, latent)] >= MINE_KW["reservoir"]:
            assert (len(ex), len(te)) == (MINE_KW["n_explain"], MINE_KW["n_test"])
        if coder != "btc1" and n_win[(coder, latent)] >= MINE_KW["reservoir"]:
            full_checked += 1
            assert g["quantile"].notna().all() and g["quantile"].between(0, 9).all()
            assert te["quantile"].nunique() == 10  # 10 test windows over 10 deciles
            by_q = g.groupby("quantile")["max_activation"].agg(["min", "max"]).sort_index()
            assert (by_q["max"].to_numpy()[:-1] <= by_q["min"].to_numpy()[1:]).all()  # deciles in order
    assert full_checked > 20


def test_binary_coder_samples_uniformly_without_quantiles(tables, brute):
    ctx = tables["contexts"]
    b = ctx[ctx["coder"] == "btc1"]
    assert b["quantile"].isna().all()
    acts = _acts(b)
    assert set(np.unique(acts)) <= {0.0, 1.0}
    # latents firing in every window: explain + test are 18 of 128 windows; pooled, they spread evenly
    everywhere = np.where((brute["btc1"]["window_max"] > 0).all(0))[0]
    sample = b[b["latent"].isin(everywhere) & (b["kind"] == "quantile")]["window_id"].to_numpy()
    assert len(everywhere) >= 5
    quarters = np.bincount(sample // 32, minlength=4)
    assert quarters.min() > 0.6 * quarters.mean(), quarters


def test_windows_table_holds_each_window_once_with_its_tokens(subject, tables, brute):
    win, ctx = tables["windows"], tables["contexts"]
    assert win["window_id"].is_unique
    assert set(ctx["window_id"]) == set(win["window_id"])
    ids = win["window_id"].to_numpy()
    np.testing.assert_array_equal(np.stack(win["token_ids"].to_numpy()), brute["sae0"]["token_ids"][ids])
    assert (win["context"] == ids // 8).all() and (win["position"] == (ids % 8) * 32).all()
    row = win.iloc[0]
    assert list(row["tokens"]) == [subject.tokenizer.decode([int(t)]) for t in row["token_ids"]]


def test_outputs_are_readable_with_duckdb(mined):
    duckdb = pytest.importorskip("duckdb")
    run, _ = mined
    n = duckdb.sql(f"select count(*) from '{run / 'contexts.parquet'}' where split = 'test'").fetchone()[0]
    assert n > 0


# ----------------------------------------------------------------------------- stage mechanics
def test_rerun_with_same_config_is_skipped(mined, subject, src):
    run, _ = mined
    again = run_mine_stage(run, MineConfig(coders=(src / "slsae",), **MINE_KW), subject=subject)
    assert again["skipped"] and again["coders"]["sae0"]["dead"] == len(DEAD)
    assert RunDir(run).is_complete("mine")
    assert not list((run / "checkpoints").glob("mine-*"))


def test_interrupted_mining_resumes_to_the_same_result(tmp_path, src, subject, tables):
    run = _new_run(tmp_path, src)

    def boom(done: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_mine_stage(run, MineConfig(coders=(src / "slsae",), **MINE_KW), subject=subject, on_batch=boom)
    assert not any((run / f).exists() for f in ("latents.parquet", "windows.parquet", "contexts.parquet"))
    assert not RunDir(run).is_complete("mine")
    assert (run / "checkpoints" / "mine-rank0.pt").exists()
    summary = run_mine_stage(run, MineConfig(coders=(src / "slsae",), **MINE_KW), subject=subject)
    assert summary["resumed_batches"] == 2  # checkpointed every 2 batches
    for name, ref in tables.items():
        got = pd.read_parquet(run / f"{name}.parquet")
        pd.testing.assert_frame_equal(got.drop(columns=["activations"], errors="ignore"), ref.drop(columns=["activations"], errors="ignore"))
    np.testing.assert_array_equal(_acts(pd.read_parquet(run / "contexts.parquet")), _acts(tables["contexts"]))
    assert not (run / "checkpoints" / "mine-rank0.pt").exists()


def test_batch_size_and_prefetch_change_no_row_and_every_second_is_accounted_for(tmp_path, src, subject, tables, mined):
    """Batches of 3 contexts drawn 2 ahead by the prefetch thread (the GPU's way) give the tables of batches of 4
    drawn in the loop; the summary splits the stage's time into parts, with what no timer saw."""
    run = _new_run(tmp_path, src)
    summary = run_mine_stage(run, MineConfig(coders=(src / "slsae",), **{**MINE_KW, "batch_contexts": 3, "prefetch": 2}),
                             subject=subject)
    assert summary["batch_contexts"] == 3
    for name, ref in tables.items():
        got = pd.read_parquet(run / f"{name}.parquet")
        pd.testing.assert_frame_equal(got.drop(columns=["activations"], errors="ignore"),
                                      ref.drop(columns=["activations"], errors="ignore"))
    np.testing.assert_array_equal(_acts(pd.read_parquet(run / "contexts.parquet")), _acts(tables["contexts"]))
    for s in (summary, mined[1]):
        parts = ["set_up_s", "output_tokens_s", "data_s", "forward_s", "encode_s", "bookkeeping_s", "checkpoint_s", "write_s"]
        assert all(s[k] >= 0 for k in parts) and s["data_s"] > 0 and s["write_s"] > 0
        assert 0 <= s["untimed_s"] < 0.2 * s["elapsed_s"]
        assert sum(s[k] for k in parts) + s["untimed_s"] == pytest.approx(s["elapsed_s"])
        assert set(s["writing"]) == {"pool_embeddings_s", "neighbours_s", "rows_s", "windows_s", "latents_s"}
        assert sum(s["writing"].values()) <= s["write_s"]


def test_prefetch_thread_keeps_order_hands_over_errors_and_stops_with_its_caller():
    import threading

    from interp_eval.subject.corpus import prefetched

    assert list(prefetched(iter(range(10)), 3)) == list(range(10)) == list(prefetched(iter(range(10)), 0))

    def broken():
        yield 1
        raise ValueError("corrupt document")

    got = []
    with pytest.raises(ValueError, match="corrupt document"):
        for x in prefetched(broken(), 2):
            got.append(x)
    assert got == [1]
    stream = prefetched(iter(range(10**9)), 2)
    assert next(stream) == 0
    stream.close()
    for t in threading.enumerate():
        if t.name == "prefetch":
            t.join(timeout=2)
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())


def test_changed_config_ignores_old_checkpoint_and_invalidates_old_files(tmp_path, src, subject):
    run = _new_run(tmp_path, src)
    kw = {**MINE_KW, "tokens": 2048, "batch_contexts": 2}
    seen: list[int] = []

    def stop_at(n):
        def hook(done):
            seen.append(done)
            if done == n:
                raise KeyboardInterrupt
        return hook

    with pytest.raises(KeyboardInterrupt):
        run_mine_stage(run, MineConfig(**kw), subject=subject, on_batch=stop_at(3))  # checkpoint after batch 2
    seen.clear()
    with pytest.raises(KeyboardInterrupt):
        run_mine_stage(run, MineConfig(**{**kw, "seed": 4}), subject=subject, on_batch=stop_at(1))
    assert seen == [1]  # another seed: the old checkpoint is not used
    summary = run_mine_stage(run, MineConfig(**{**kw, "seed": 4}), subject=subject)
    assert summary["resumed_batches"] == 0 and RunDir(run).is_complete("mine")
    with pytest.raises(KeyboardInterrupt):
        run_mine_stage(run, MineConfig(**kw), subject=subject, on_batch=stop_at(1))
    assert (run / "contexts.parquet").exists() and not RunDir(run).is_complete("mine")  # stale, and marked so


def test_torchrun_two_processes_equal_one_process(tmp_path, src, tables):
    """gloo on CPU: each rank mines every other batch; the merged result is the single-process one."""
    run = _new_run(tmp_path, src)
    helper = Path(__file__).parent / "mining_helpers.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
           str(helper), str(run), str(src / "slsae")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "rank 1 of 2" in out.stderr
    lat = pd.read_parquet(run / "latents.parquet")
    pd.testing.assert_frame_equal(lat, tables["latents"])
    got = pd.read_parquet(run / "contexts.parquet")
    ref = tables["contexts"]
    pd.testing.assert_frame_equal(got.drop(columns=["activations"]), ref.drop(columns=["activations"]))
    np.testing.assert_array_equal(_acts(got), _acts(ref))
    pd.testing.assert_frame_equal(pd.read_parquet(run / "windows.parquet"), tables["windows"])
    entries = [json.loads(x) for x in (run / "manifest.jsonl").read_text().splitlines()]
    assert [e["stage"] for e in entries] == ["mine"]


# ----------------------------------------------------------------------------- bad input
def _coder(tmp_path: Path, **kw) -> Path:
    cfg = dict(kind="sae", activation="topk", d_in=576, d_sae=16, k=4, hookpoint="layers.0.mlp", model_name=MODEL_NAME)
    cfg.update(kw)
    folder = tmp_path / "run" / "coders" / "c"
    save_coder(SparseCoder(CoderConfig(**cfg), seed=0), folder)
    return folder


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(d_in=64), "d_in 64 does not match"),
        (dict(hookpoint="layers.99.mlp"), "unknown hookpoint 'layers.99.mlp' for smollm2-135m-instruct: valid ones are .*layers.N.mlp"),
        (dict(model_name="gpt2"), "trained on model 'gpt2'"),
    ],
)
def test_mismatched_coder_is_a_user_error(tmp_path, subject, change, message):
    _coder(tmp_path, **change)
    with pytest.raises(UserError, match=message):
        run_mine_stage(tmp_path / "run", MineConfig(tokens=512, device="cpu"), subject=subject)


@pytest.mark.parametrize("damage", ["bad_json", "no_weights", "garbage_weights"])
def test_corrupt_coder_folder_is_a_user_error(tmp_path, subject, damage):
    folder = _coder(tmp_path)
    if damage == "bad_json":
        (folder / "cfg.json").write_text("{not json")
    elif damage == "no_weights":
        (folder / "sae_weights.safetensors").unlink()
    else:
        (folder / "sae_weights.safetensors").write_bytes(b"\x00" * 100)
    with pytest.raises(UserError, match=str(folder)):
        run_mine_stage(tmp_path / "run", MineConfig(tokens=512, device="cpu"), subject=subject)


def test_missing_or_no_coders_are_user_errors(tmp_path, subject):
    with pytest.raises(UserError, match="no coders to mine"):
        run_mine_stage(tmp_path / "empty", MineConfig(tokens=512, device="cpu"), subject=subject)
    with pytest.raises(UserError, match="no such folder"):
        run_mine_stage(tmp_path / "empty", MineConfig(coders=(tmp_path / "nope",), tokens=512), subject=subject)


def test_empty_corpus_and_too_few_tokens_are_user_errors(tmp_path, subject):
    _coder(tmp_path)
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir()
    (corpus_dir / "empty.txt").write_text("   \n")
    with pytest.raises(UserError, match="held-out split is empty"):
        run_mine_stage(tmp_path / "run", MineConfig(tokens=512, dataset=str(corpus_dir), device="cpu"), subject=subject)
    with pytest.raises(UserError, match="less than one context"):
        run_mine_stage(tmp_path / "run", MineConfig(tokens=100, device="cpu"), subject=subject)
    with pytest.raises(UserError, match="--reservoir"):
        run_mine_stage(tmp_path / "run", MineConfig(tokens=512, reservoir=50, device="cpu"), subject=subject)
    assert not (tmp_path / "run" / "latents.parquet").exists()


def test_tokens_beyond_the_held_out_split_mine_all_of_it_and_record_the_true_count(tmp_path, subject, caplog):
    """mine does not refuse --tokens beyond the held-out split: it mines the whole split, warns, and every record of
    the run (latents.parquet's n_tokens, the manifest line, the summary) holds the tokens actually mined."""
    _coder(tmp_path)
    corpus = tmp_path / "corpus.jsonl"
    docs = [f"Report {i}: the council met on day {i} to discuss topic {i % 9} at some length. " * 12 for i in range(40)]
    corpus.write_text("\n".join(json.dumps({"text": d}) for d in docs))
    cfg = MineConfig(**{**MINE_KW, "tokens": 1_000_000, "dataset": str(corpus)})
    have = split_tokens(cfg.corpus, subject.tokenizer, "heldout")
    assert 0 < have < cfg.tokens
    run = tmp_path / "run"
    summary = run_mine_stage(run, cfg, subject=subject)
    assert summary["tokens"] == have
    assert set(pd.read_parquet(run / "latents.parquet")["n_tokens"]) == {have}
    assert RunDir(run).stage_entry("mine")["tokens"] == have
    assert f"has only {have} tokens; mined those" in caplog.text


# ----------------------------------------------------------------------------- the state alone
def _synthetic_batches(n_batches=6, ctx=64, per_batch=3, L=40, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _ in range(n_batches):
        n = per_batch * ctx
        idx = torch.stack([torch.randperm(L, generator=g)[:k] for _ in range(n)])
        val = torch.rand(n, k, generator=g) * (torch.rand(n, k, generator=g) < 0.5)
        yield val, idx


def _feed(state, batches, ctx=64, per_batch=3, first=0, window=16):
    from interp_eval.mining.windows import WindowLayout

    layout = WindowLayout(ctx, window)
    for b, (val, idx) in enumerate(batches):
        state.update(val, idx, ctx, layout.batch_window_ids((first + b) * per_batch, per_batch), seed=1)
    return state


def _same(a: CoderState, b: CoderState, sampling: Sampling) -> None:
    for name in ("n_tokens", "firing_count", "max_act", "n_windows"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    ra, rb = select_rows(a, sampling, False), select_rows(b, sampling, False)
    for name in ("latent", "window_id", "kind", "split", "quantile", "rank", "activations", "max_activation"):
        np.testing.assert_array_equal(getattr(ra, name), getattr(rb, name), err_msg=name)


def test_merge_of_shards_equals_one_pass():
    sampling = Sampling(window=16, n_top=4, n_explain=4, n_test=6, n_negative=5, reservoir=12, negative_pool=8, seed=1)
    batches = list(_synthetic_batches())
    whole = _feed(CoderState.empty(40, sampling), batches)
    even = CoderState.empty(40, sampling)
    odd = CoderState.empty(40, sampling)
    for b, batch in enumerate(batches):
        _feed(even if b % 2 == 0 else odd, [batch], first=b)
    _same(whole, merge(even, odd), sampling)
    _same(whole, merge(odd, even), sampling)
    thirds = [CoderState.empty(40, sampling) for _ in range(3)]
    for b, batch in enumerate(batches):
        _feed(thirds[b % 3], [batch], first=b)
    _same(whole, merge_all(thirds), sampling)
    # a merged state is a working state: more batches into it and into the single pass agree
    more = list(_synthetic_batches(seed=5, n_batches=3))
    _same(_feed(whole, more, first=len(batches)), _feed(merge(even, odd), more, first=len(batches)), sampling)


def test_reservoir_is_a_uniform_sample():
    """One latent firing in every window of 4000: its reservoir picks windows evenly over the stream."""
    from interp_eval.mining.state import EMPTY_LOW, best_keys

    sampling = Sampling(window=4, n_top=2, n_explain=40, n_test=50, n_negative=1, reservoir=200, negative_pool=1, seed=0)
    totals = np.zeros(10)
    for seed in range(5):
        s = CoderState.empty(1, sampling)
        for b in range(40):
            ids = torch.arange(b * 100, (b + 1) * 100)
            vals = torch.rand(400, 1, generator=torch.Generator().manual_seed(b))
            s.update(vals, torch.zeros(400, 1, dtype=torch.long), 4, ids, seed=seed)
        assert int(s.n_windows[0]) == 4000
        kept = s.res_win[0][best_keys(s.res_key, 200, largest=False, empty=EMPTY_LOW)[0] != EMPTY_LOW].numpy()
        assert len(np.unique(kept)) == 200 == len(kept)
        totals += np.bincount(kept // 400, minlength=10)
    expected = totals.sum() / 10
    chi2 = ((totals - expected) ** 2 / expected).sum()
    assert chi2 < 27.9, totals  # 9 degrees of freedom, p = 0.001


# ----------------------------------------------------------------------------- command line
def _cli_app():
    import typer

    from interp_eval.cli import stage
    from interp_eval.mining.command import mine

    app = typer.Typer()
    app.command()(stage(mine))
    return app


def test_mine_command_reports_and_turns_bad_input_into_exit_2(mined, src, tmp_path):
    from typer.testing import CliRunner

    run, _ = mined
    opts = [f"--{k.replace('_', '-')}={v}" for k, v in MINE_KW.items()]
    res = CliRunner().invoke(_cli_app(), ["--run", str(run), "--coder", str(src / "slsae"), *opts])
    assert res.exit_code == 0, res.output
    assert "already mined" in res.output and "too_rare" in res.output and "sae0" in res.output
    res = CliRunner().invoke(_cli_app(), ["--run", str(tmp_path / "none"), "--tokens", "512", "--device", "cpu"])
    assert res.exit_code == 2 and "no coders to mine" in res.output


@pytest.mark.parametrize("largest", [True, False])
def test_insert_keeps_the_best_keys_of_each_row(largest):
    """Rounds of candidates into the lazily compacted buffers of the top-N and the reservoir: rows with
    room take every candidate, overflowing rows compact to their `keep` best and raise their threshold.
    After every round each row holds the `keep` best keys it was ever offered (checked against sorting
    all of them, including those its threshold filtered out), and the returned writes are exactly the
    candidates that went in."""
    from interp_eval.mining.state import EMPTY_LOW, EMPTY_TOP, _insert

    empty = EMPTY_TOP if largest else EMPTY_LOW
    g = torch.Generator().manual_seed(3)
    L, keep, C, per_round = 30, 6, 9, 60
    pool = (torch.randperm(100_000, generator=g) + (1 << 33)).tolist()
    keys = torch.full((L, C), empty, dtype=torch.long)
    thr = torch.full((L,), empty, dtype=torch.long)
    offered: list[list[int]] = [[] for _ in range(L)]
    compacted = 0
    for _ in range(15):
        rows = torch.randint(0, L, (per_round,), generator=g).sort().values
        cand = torch.tensor([pool.pop() for _ in range(per_round)])
        for r, k in zip(rows.tolist(), cand.tolist()):
            offered[r].append(k)
        ok = cand > thr[rows] if largest else cand < thr[rows]
        rows, cand = rows[ok], cand[ok]
        before = thr.clone()
        r, slots, c = _insert(keys, thr, rows, cand, keep, largest=largest, empty=empty)
        compacted += int((thr != before).sum())
        assert torch.equal(keys[r, slots], cand[c]) and len(set(c.tolist())) == len(c)
        for row in range(L):
            held = set(keys[row][keys[row] != empty].tolist())
            best = sorted(offered[row], reverse=largest)[:keep]
            assert set(best) <= held, row
            assert len(held) <= C
    assert compacted > L  # the overflow path ran, repeatedly


@pytest.mark.parametrize("slow_threads", ["one", "all"])
def test_bookkeeping_threads_keep_the_faster_setting(slow_threads):
    """After the first batch, one trial each of 1 thread and all threads; the faster one is kept."""
    import time

    from interp_eval.mining.stage import BookkeepingThreads

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        bt = BookkeepingThreads(torch.device("cpu"))
        seen = []
        for _ in range(6):
            with bt():
                n = torch.get_num_threads()
                seen.append(n)
                time.sleep(0.05 if (n == 1) == (slow_threads == "one") else 0.001)
        assert bt.choice == (2 if slow_threads == "one" else 1)
        assert seen[:3] == [2, 1, 2] and set(seen[3:]) == {bt.choice}
        assert torch.get_num_threads() == 2  # restored after each batch
    finally:
        torch.set_num_threads(previous)


def test_tokens_after_the_last_whole_window_count_but_sit_in_no_window():
    """Contexts of 20 tokens cut into windows of 8 leave 4 tokens per context in no window: they count
    towards firing counts and max activations, never towards windows or their activations."""
    sampling = Sampling(window=8, n_top=3, n_explain=1, n_test=1, n_negative=1, reservoir=4, negative_pool=6, seed=0)
    ctx, n_ctx, L = 20, 3, 4
    pos = torch.arange(n_ctx * ctx) % ctx
    values = torch.zeros(n_ctx * ctx, 2)
    indices = torch.zeros(n_ctx * ctx, 2, dtype=torch.long)
    values[:, 0] = torch.where(pos >= 16, 5.0, 0.0)  # latent 0 fires in the tails only, above all else
    indices[:, 1] = 1
    values[:, 1] = torch.where(pos % 5 == 0, 1.0 + pos / 100, 0.0)  # latent 1 at positions 0, 5, 10, 15
    state = CoderState.empty(L, sampling)
    state.update(values, indices, ctx, torch.arange(n_ctx * 2), seed=0)
    assert state.firing_count.tolist() == [12, 12, 0, 0] and state.max_act[0] == 5.0
    assert state.n_windows.tolist() == [0, 6, 0, 0]
    from interp_eval.catalog import KINDS

    rows = select_rows(state, sampling, binary=False)
    assert not ((rows.latent == 0) & (rows.kind != KINDS.index("random_negative"))).any()  # no activating window
    top = (rows.latent == 1) & (rows.kind == KINDS.index("top"))
    expected = np.zeros(8, np.float32)
    expected[[0, 5]] = [1.0, 1.05]  # window 0 of a context: positions 0 and 5
    assert top.sum() == 3
    for acts, wid in zip(rows.activations[top], rows.window_id[top]):
        want = expected if wid % 2 == 0 else np.array([0, 0, 1.1, 0, 0, 0, 0, 1.15], np.float32)
        np.testing.assert_allclose(acts, want)
