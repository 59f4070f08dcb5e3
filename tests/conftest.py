"""Shared fixtures: the real packaged subject model and corpus, at tiny sizes.

Each stage's own fixtures live in tests/<stage>_fixtures.py (or the test module) and are imported
here so every test module sees them.
"""

from __future__ import annotations

import os

# no hub look-ups (the machines are offline) and no live progress bars in test logs
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("INTERP_EVAL_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def subject():
    """The packaged subject model (SmolLM2-135M-Instruct), loaded once per test session."""
    from interp_eval.subject.model import load_subject_model

    return load_subject_model(device="cpu")


@pytest.fixture
def mined(tmp_path, subject):
    """A hand-built mined run (run_builders: latent i of every coder fires on one word) and its ground truth."""
    from run_builders import build_mined_run

    info = build_mined_run(tmp_path / "run", subject.tokenizer, n_latents=6)
    return tmp_path / "run", info


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """A run directory with the four coder kinds trained at tiny size on the real model and corpus."""
    from interp_eval.coders.stage import TrainStageConfig, run_train_stage
    from interp_eval.coders.train import TrainConfig

    run = tmp_path_factory.mktemp("tiny_run")
    configs = [
        TrainConfig(coder=c, hookpoint="layers.3.mlp", k=8, expansion=2, tokens=8192, batch_size=256, checkpoint_every=8)
        for c in ("sae", "bae", "tc", "btc")
    ]
    run_train_stage(run, TrainStageConfig(coders=tuple(configs), device="cpu", eval_tokens=1024))
    return run
