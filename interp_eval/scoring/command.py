"""`interp-eval score`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli_options import LLMOptions, config_options, run_option
from ..llm.ask import RERUN_NOTE
from .stage import ScoreConfig


@config_options
def score(run: Path = run_option("Run directory with mined and explained latents."), *, cfg: ScoreConfig,
          llm: LLMOptions) -> None:
    """Score latents with each scorer and its control (shuffled explanations, or chance): per-latent metrics, per-coder power."""
    from .aggregate import format_summary
    from .stage import run_score_stage

    dry_run = llm.dry_run
    out = run_score_stage(run, cfg, llm.config(), dry_run=dry_run)
    if dry_run:
        return  # the stage printed its estimate
    import pandas as pd

    typer.echo(format_summary(pd.DataFrame(out["summary"])))
    fails = out["window_failures"]
    if fails["parse"] or fails["llm"]:
        typer.echo(f"windows without a prediction: {fails['parse']} unparseable after retries, {fails['llm']} provider errors "
                   f"(re-run the same command to ask them again: {RERUN_NOTE})")
    if not out["complete"]:
        raise typer.Exit(1)
