"""`interp-eval train`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli_options import config_options, run_option
from .stage import CoderGrid, TrainStageConfig
from .train import TrainConfig


@config_options
def train(run: Path = run_option("Run directory (created if missing; under torchrun write --run-dir, since torchrun claims --run)."),
          *, grid: CoderGrid, settings: TrainConfig, cfg: TrainStageConfig) -> None:
    """Train sparse coders on a subject model's MLP activations; save SAELens folders."""
    from dataclasses import replace

    from .stage import run_train_stage

    names = run_train_stage(run, replace(cfg, coders=grid.configs(settings)))
    _print_recon(run, names)


def _print_recon(run: Path, names: list[str]) -> None:
    from ..artifacts import RunDir
    from ..catalog import RECON_EVAL

    rd = RunDir(run)
    if not rd.has(RECON_EVAL):
        return
    df = rd.read(RECON_EVAL)
    df = df[df["coder"].isin(names)]
    cols = ["coder", "fvu", "l0", "dead_fraction", "uhf_fraction_0.01", "ce_loss_increase", "accuracy_decrease"]
    typer.echo(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


