"""The train stage end to end on the real packaged model and corpus, at tiny sizes."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from interp_eval.artifacts import RunDir
from interp_eval.coders.saelens import load_coder
from interp_eval.coders.stage import TrainStageConfig, run_train_stage
from interp_eval.coders.train import TrainConfig, train_coder
from interp_eval.errors import UserError
from interp_eval.subject.activations import ActivationCache

NAMES = [f"{c}-layers.3.mlp-k8" for c in ("sae", "bae", "tc", "btc")]


def _cache(run: Path) -> ActivationCache:
    (folder,) = (run / "activations").glob("train-*/layers.3.mlp")
    return ActivationCache(folder)


def test_four_coders_trained_saved_and_evaluated(tiny_run):
    rd = RunDir(tiny_run)
    recon = pd.read_parquet(tiny_run / "recon_eval.parquet").set_index("coder")
    assert sorted(recon.index) == sorted(NAMES)
    for name in NAMES:
        assert rd.is_complete(f"train:{name}")
        coder = load_coder(rd.coder_dir(name))
        assert coder.hookpoint == "layers.3.mlp" and coder.d_sae == 2 * 576
        row = recon.loc[name]
        assert 0 < row["fvu"] < 1.5 and row["l0"] <= 8 + 1e-9
        assert 0 <= row["dead_fraction"] <= 1 and row["eval_tokens"] == 1024
        assert abs(row["ce_loss_increase"]) < 5 and abs(row["accuracy_decrease"]) < 1
    assert load_coder(rd.coder_dir("bae-layers.3.mlp-k8")).binary
    assert recon.loc["bae-layers.3.mlp-k8", "l0"] <= 8
    metrics = pd.read_parquet(tiny_run / "train_metrics.parquet")
    assert set(metrics["coder"]) == set(NAMES)
    sae = metrics[metrics["coder"] == "sae-layers.3.mlp-k8"].sort_values("step")
    assert len(sae) == 32 and sae["tokens"].iloc[-1] == 8192
    assert sae["fvu"].iloc[-4:].mean() < sae["fvu"].iloc[:4].mean()
    assert not list((tiny_run / "checkpoints").glob("*.pt")), "finished coders leave no checkpoint"


def test_rerun_with_same_config_is_skipped(tiny_run):
    before = (tiny_run / "coders" / NAMES[0] / "sae_weights.safetensors").stat().st_mtime_ns
    manifest_lines = (tiny_run / "manifest.jsonl").read_text().count("\n")
    configs = [TrainConfig(coder="sae", hookpoint="layers.3.mlp", k=8, expansion=2, tokens=8192, batch_size=256, checkpoint_every=8)]
    run_train_stage(tiny_run, TrainStageConfig(coders=tuple(configs), device="cpu", eval_tokens=1024))
    assert (tiny_run / "coders" / NAMES[0] / "sae_weights.safetensors").stat().st_mtime_ns == before
    assert (tiny_run / "manifest.jsonl").read_text().count("\n") == manifest_lines


@pytest.mark.parametrize("coder", ["bae", "tc"])
@pytest.mark.parametrize("optimizer", ["adam", "signum"])
def test_interrupted_training_resumes_to_the_same_weights(tiny_run, tmp_path, coder, optimizer):
    cache = _cache(tiny_run)
    cfg = TrainConfig(coder=coder, hookpoint="layers.3.mlp", k=8, expansion=2, tokens=4096, batch_size=256,
                      checkpoint_every=5, optimizer=optimizer)
    full, full_rows, full_fires = train_coder(tmp_path / "a", cfg, cache, "m", torch.device("cpu"))

    def crash(row):
        if row["step"] == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_coder(tmp_path / "b", cfg, cache, "m", torch.device("cpu"), on_step=crash)
    assert (tmp_path / "b" / "checkpoints" / f"{cfg.coder_name}.pt").exists()
    resumed, rows, fires = train_coder(tmp_path / "b", cfg, cache, "m", torch.device("cpu"))
    assert [r["step"] for r in rows] == list(range(16))
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert torch.equal(full_fires, fires)


def test_metrics_read_in_blocks_as_on_a_gpu_give_the_same_rows_checkpoints_and_resume(tiny_run, tmp_path, monkeypatch):
    from interp_eval.coders import train as train_mod

    cache = _cache(tiny_run)
    cfg = TrainConfig(coder="bae", hookpoint="layers.3.mlp", k=8, expansion=2, tokens=4096, batch_size=256,
                      checkpoint_every=5)
    ref, ref_rows, ref_fires = train_coder(tmp_path / "a", cfg, cache, "m", torch.device("cpu"))
    monkeypatch.setattr(train_mod, "metrics_flush_steps", lambda device: 3)
    seen = []

    def crash(row):
        seen.append(row["step"])
        if row["step"] == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_coder(tmp_path / "b", cfg, cache, "m", torch.device("cpu"), on_step=crash)
    assert seen == list(range(8))  # blocks of 3, one cut short by the checkpoint after step 4
    blob = torch.load(tmp_path / "b" / "checkpoints" / f"{cfg.coder_name}.pt", weights_only=False)
    assert [r["step"] for r in blob["rows"]] == list(range(5))
    resumed, rows, fires = train_coder(tmp_path / "b", cfg, cache, "m", torch.device("cpu"))
    drop = lambda rs: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rs]  # noqa: E731
    assert drop(rows) == drop(ref_rows)
    assert torch.equal(fires, ref_fires)
    assert all(torch.equal(a, b) for a, b in zip(ref.state_dict().values(), resumed.state_dict().values()))


def test_resume_from_a_checkpoint_of_another_shape_is_refused(tiny_run, tmp_path):
    cache = _cache(tiny_run)
    cfg = TrainConfig(coder="sae", hookpoint="layers.3.mlp", k=8, expansion=2, tokens=4096, batch_size=256, checkpoint_every=4)

    def crash(row):
        if row["step"] == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_coder(tmp_path, cfg, cache, "m", torch.device("cpu"), on_step=crash)
    bigger = TrainConfig(coder="sae", hookpoint="layers.3.mlp", k=8, expansion=4, tokens=4096, batch_size=256)
    with pytest.raises(UserError, match="different coder"):
        train_coder(tmp_path, bigger, cache, "m", torch.device("cpu"))
    fresh, rows, _ = train_coder(tmp_path, bigger, cache, "m", torch.device("cpu"), resume=False)
    assert rows[0]["step"] == 0


def test_k_larger_than_latents_is_a_clear_error():
    with pytest.raises(UserError, match="larger than the number of latents"):
        TrainConfig(coder="sae", k=5000, expansion=8).coder_config(576, 576, "m")
    with pytest.raises(UserError, match="--coder"):
        TrainConfig(coder="jumprelu")


def test_torchrun_two_processes_train_one_coder(tmp_path):
    """DistributedDataParallel on CPU with gloo: both ranks step together, rank 0 saves."""
    run = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
        str(Path(__file__).parents[1] / "cli.py"), "train", "--run-dir", str(run), "--coder", "btc",
        "--hookpoint", "layers.1.mlp", "--k", "8", "--expansion", "2", "--tokens", "8192", "--batch-size", "128",
        "--eval-tokens", "512", "--device", "cpu",
    ]
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = pd.read_parquet(run / "train_metrics.parquet")
    assert len(metrics) == 32  # 8192 tokens / (128 per rank x 2 ranks)
    assert metrics["tokens"].iloc[-1] == 8192
    coder = load_coder(run / "coders" / "btc-layers.1.mlp-k8")
    assert coder.binary and coder.site == "input"
    lines = [json.loads(x) for x in (run / "manifest.jsonl").read_text().splitlines()]
    assert [x["stage"] for x in lines] == ["train:btc-layers.1.mlp-k8"]
