"""Coders by name from the Hugging Face hub (`hf:OWNER/REPO/SUB`, `saelens:RELEASE/SAE_ID`), resolved from a
hand-made cache in the hub's snapshot layout with HF_HUB_OFFLINE=1: never the network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _snapshot(cache: Path, repo: str) -> Path:
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A hub cache with a SmolLM2 coder (ours, at layers.0.mlp) and a registry entry of sae-lens's written by sae-lens."""
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    from interp_eval.coders.coder import CoderConfig, SparseCoder
    from interp_eval.coders.saelens import save_coder

    base = tmp_path_factory.mktemp("hub")
    cache = base / "hub"
    ours = SparseCoder(CoderConfig("sae", "topk", 576, 64, 4, hookpoint="layers.0.mlp", model_name="smollm2-135m-instruct"), seed=1)
    save_coder(ours, _snapshot(cache, "someone/smol-coders") / "layers.0.mlp")
    torch.manual_seed(0)
    meta = SAEMetadata(model_name="gpt2-small", hook_name="blocks.0.hook_resid_pre")
    StandardSAE(StandardSAEConfig(d_in=768, d_sae=64, metadata=meta)).save_model(
        _snapshot(cache, "jbloom/GPT2-Small-SAEs-Reformatted") / "blocks.0.hook_resid_pre")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "INTERP_EVAL_CACHE": str(base / "ie")}
    return base, env


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "interp_eval.cli", *args], env=env, capture_output=True, text=True, timeout=600)


def _py(env, code):
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


def test_mine_reads_a_coder_by_hf_name_from_the_offline_cache(hub):
    base, env = hub
    run = base / "run"
    r = _cli(env, "mine", "--run", str(run), "--coder", "hf:someone/smol-coders/layers.0.mlp", "--tokens", "1024", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    lat = pd.read_parquet(run / "latents.parquet")
    assert set(lat["coder"]) == {"smol-coders.layers.0.mlp"} and len(lat) == 64


@pytest.mark.parametrize("spec, hint", [
    ("hf:someone/not-cached", "huggingface-cli download someone/not-cached"),
    ("hf:someone/smol-coders/layers.5.mlp", "--include 'layers.5.mlp/*'"),
    ("saelens:gpt2-small-res-jb/blocks.1.hook_resid_pre", "huggingface-cli download jbloom/GPT2-Small-SAEs-Reformatted --include 'blocks.1.hook_resid_pre/*'"),
])
def test_an_uncached_name_is_one_line_exit_2_and_nothing_written(hub, spec, hint):
    base, env = hub
    run = base / "never"
    r = _cli(env, "mine", "--run", str(run), "--coder", spec, "--tokens", "1024", "--device", "cpu")
    err = r.stderr.strip()
    assert r.returncode == 2 and err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert hint in err, err
    assert not run.exists()


def test_a_saelens_registry_name_loads_through_sae_lens_and_encodes_as_it_does(hub):
    base, env = hub
    code = """
import json, torch
from sae_lens import SAE
from interp_eval.coders.hub import resolve_spec
from interp_eval.coders.saelens import load_coder
name, folder = resolve_spec("saelens:gpt2-small-res-jb/blocks.0.hook_resid_pre")
coder = load_coder(folder)
theirs = SAE.from_pretrained("gpt2-small-res-jb", "blocks.0.hook_resid_pre", device="cpu")
x = torch.randn(64, 768, generator=torch.Generator().manual_seed(0))
enc = coder.encode_sparse(x)
dense = torch.zeros(64, 64).scatter_add_(1, enc.indices, enc.values)
print(json.dumps({"name": name, "hookpoint": coder.hookpoint, "model": coder.model_name,
                  "err": float((dense - theirs.encode(x)).abs().max())}))
"""
    r = _py(env, code)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["name"] == "gpt2-small-res-jb.blocks.0.hook_resid_pre"
    assert out["hookpoint"] == "blocks.0.hook_resid_pre" and out["model"] == "gpt2-small"
    assert out["err"] < 1e-5
