"""The device code paths against the CPU's: the same tests run on "cpu" and on "cuda" (skipped without a
GPU; bench/device/run.sh runs them on one with INTERP_EVAL_TEST_DEVICE=cuda).

Each compares what a device computes with a CPU reference made another way: the coders' codes with the
dense fp32 encoder on CPU, one training step in fp32 with the same step on CPU, and the whole mine stage
in the device's batching (batch size, prefetch thread) with the CPU stage in its own. On "cpu" the
device side is the CPU's fast paths (the bf16 candidate selection, the GPU's batching run on CPU).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from interp_eval.coders import topk as topk_mod
from interp_eval.coders.coder import CODER_KINDS, CoderConfig, SparseCoder, fvu
from interp_eval.coders.optim import Optimizer
from interp_eval.coders.train import optimizer_step
from interp_eval.mining import MineConfig, run_mine_stage
from interp_eval.mining.config import GPU_BATCH_CONTEXTS, GPU_PREFETCH
from mining_helpers import MINE_KW, make_run_coders

DEVICES = [os.environ.get("INTERP_EVAL_TEST_DEVICE", "cpu")]
if DEVICES[0] == "cpu":
    DEVICES.append("cuda")


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    dev = torch.device(request.param)
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    return dev


def _coder(kind: str, device, m: int = 1024, k: int = 16) -> SparseCoder:
    full, act = CODER_KINDS[kind]
    return SparseCoder(CoderConfig(full, act, 576, m, k), device=device, seed=0)


def _same_coder(coder: SparseCoder, device) -> SparseCoder:
    twin = SparseCoder(coder.cfg, device=device, seed=0)
    twin.load_state_dict(coder.state_dict())
    return twin


@pytest.mark.parametrize("kind", ["sae", "bae", "tc", "btc"])
def test_codes_on_the_device_equal_the_dense_fp32_codes_on_cpu(device, kind, monkeypatch):
    torch.manual_seed(0)
    x = torch.randn(2048, 576) * 3
    ref_coder = _coder(kind, "cpu")
    monkeypatch.setattr(topk_mod, "ENCODE_PRECISION", "fp32")
    with torch.no_grad():
        ref = ref_coder.encode(x, keep_pre=True)
    monkeypatch.setattr(topk_mod, "ENCODE_PRECISION", "auto")
    with torch.no_grad():
        got = _same_coder(ref_coder, device).encode(x.to(device))
    ref_idx = ref.indices.sort(-1).values
    got_idx = got.indices.cpu().sort(-1).values
    differ = (ref_idx != got_idx).any(-1)
    # a row may differ only where the k-th and (k+1)-th pre-activations tie to float rounding
    if differ.any():
        pre = ref.pre[differ].sort(-1, descending=True).values
        k = ref_coder.cfg.k
        assert (pre[:, k - 1] - pre[:, k]).abs().max() < 1e-4, f"{int(differ.sum())} rows select other latents"
    assert differ.float().mean() < 0.01
    order_ref = ref.indices[~differ].argsort(-1)
    order_got = got.indices.cpu()[~differ].argsort(-1)
    torch.testing.assert_close(got.values.cpu()[~differ].gather(1, order_got), ref.values[~differ].gather(1, order_ref),
                               atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", ["sae", "bae", "tc", "btc"])
def test_a_training_step_on_the_device_equals_the_step_on_cpu(device, kind):
    torch.manual_seed(1)
    x = torch.randn(512, 576)
    cpu = _coder(kind, "cpu", m=512, k=8)
    dev = _same_coder(cpu, device)
    for coder, xb in ((cpu, x), (dev, x.to(device))):
        coder.init_from_batch(xb.mean(0), xb.mean(0))
        opt = Optimizer(coder.parameters(), "adam", 1e-3, 100, 0)
        y_hat, _ = coder(xb)
        loss = fvu(xb, y_hat)
        loss.backward()
        optimizer_step(coder, opt)
        coder.loss = float(loss.detach())
    assert dev.loss == pytest.approx(cpu.loss, rel=1e-4)
    for (name, a), (_, b) in zip(cpu.named_parameters(), dev.named_parameters()):
        torch.testing.assert_close(b.detach().cpu(), a.detach(), atol=1e-5, rtol=1e-4, msg=f"{kind}: {name}")


def test_the_mine_stage_in_the_devices_batching_writes_the_cpu_stages_rows(device, subject, tmp_path):
    from interp_eval.subject.model import load_subject_model

    make_run_coders(tmp_path / "src")
    runs = {}
    for name, dev, extra in (("cpu", "cpu", {}),
                             ("device", device.type, {"batch_contexts": GPU_BATCH_CONTEXTS, "prefetch": GPU_PREFETCH})):
        run = tmp_path / name
        shutil.copytree(tmp_path / "src" / "coders", run / "coders")
        # fp32 on the device too: rows are chosen by activation values, which bf16 would change
        model = subject if dev == "cpu" else dataclasses.replace(load_subject_model(device=dev), cuda_bf16=False)
        summary = run_mine_stage(run, MineConfig(**{**MINE_KW, "device": dev, **extra}), subject=model)
        runs[name] = (run, summary)
    assert runs["device"][1]["batch_contexts"] == GPU_BATCH_CONTEXTS
    for table in ("latents", "windows", "contexts"):
        a = pd.read_parquet(runs["cpu"][0] / f"{table}.parquet")
        b = pd.read_parquet(runs["device"][0] / f"{table}.parquet")
        keys = [c for c in ("coder", "latent", "kind", "window_id") if c in a.columns]
        plain = [c for c in a.columns if c != "activations"]
        pd.testing.assert_frame_equal(b[plain], a[plain], check_exact=device.type == "cpu", rtol=1e-4, atol=1e-5,
                                      obj=f"{table} ({', '.join(keys)})")
        if "activations" in a.columns:
            for x, y in zip(a["activations"], b["activations"]):
                torch.testing.assert_close(torch.as_tensor(y), torch.as_tensor(x), atol=1e-4, rtol=1e-4)
