"""`interp-eval score`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..llm import options as o
from .registry import scorer_names


def _scorer_help() -> str:
    return "Scorer (repeatable): " + ", ".join(scorer_names()) + "."


def score(
    run: Path = typer.Option(..., "--run", "--run-dir", "-r", help="Run directory with mined and explained latents."),
    model: Optional[str] = o.ModelOpt,
    base_url: Optional[str] = o.BaseUrlOpt,
    backend: Optional[str] = o.BackendOpt,
    scorer: List[str] = typer.Option(["detection", "fuzzing"], "--scorer", help=_scorer_help()),
    coder: Optional[List[str]] = typer.Option(None, "--coder", help="Only these coders (repeatable)."),
    latents: Optional[int] = typer.Option(None, "--latents", help="Score the first N explained latents of each coder (default: all explained)."),
    windows_per_prompt: Optional[int] = typer.Option(None, "--windows-per-prompt", help="Test windows per LLM prompt (default: 5, the paper's, for hosted models; 1 for the offline model, chosen by measured power)."),
    n_activating: int = typer.Option(50, "--n-activating", help="Activating test windows per latent (at most)."),
    n_negative: int = typer.Option(50, "--n-negative", help="Non-activating test windows per latent (at most)."),
    freq_adjust: bool = typer.Option(False, "--freq-adjust", help="Also report the frequency-weighted F1 and scores by firing-frequency bin."),
    seed: int = typer.Option(0, "--seed", help="Seed of window order, subsampling, fuzzing marks and bootstrap intervals."),
    max_retries: int = typer.Option(2, "--max-retries", help="Corrective re-asks after an answer that is not a list of 0/1 digits."),
    control_latents: Optional[int] = typer.Option(None, "--control-latents", help="Latents per coder scored again with another latent's explanation (the shuffled control; default: all, 0: none)."),
    explainer: Optional[List[str]] = typer.Option(None, "--explainer", help="Only these explainers' explanations (default: every explainer in explanations.parquet)."),
    intruder_windows: int = typer.Option(5, "--intruder-windows", help="Windows per intruder prompt (chance 1/n)."),
    intruder_trials: int = typer.Option(4, "--intruder-trials", help="Intruder prompts per latent."),
    window_tokens: Optional[int] = typer.Option(None, "--window-tokens", help="LLM scorers: cut each test window to N tokens around its highest activation; 0: whole windows (default: 16 for the offline model, chosen by measured power; whole windows for hosted models)."),
    concurrency: int = o.ConcurrencyOpt,
    rpm: Optional[float] = o.RpmOpt,
    tpm: Optional[float] = o.TpmOpt,
    batch: bool = o.BatchOpt,
    dry_run: bool = o.DryRunOpt,
    llm_cache: Optional[str] = o.CacheOpt,
) -> None:
    """Score latents with each scorer and its control (shuffled explanations, or chance): per-latent metrics, per-coder power."""
    from .aggregate import format_summary
    from .stage import run_score_stage

    llm_cfg = o.llm_config(model, base_url, backend, concurrency, rpm, tpm, batch, llm_cache)
    out = run_score_stage(
        run, llm_cfg, scorers=tuple(scorer), coders=tuple(coder) if coder else None, latents=latents,
        windows_per_prompt=windows_per_prompt, n_activating=n_activating, n_negative=n_negative, seed=seed,
        freq_adjust=freq_adjust, max_retries=max_retries, dry_run=dry_run, control_latents=control_latents,
        explainers=tuple(explainer) if explainer else None, intruder_windows=intruder_windows, intruder_trials=intruder_trials,
        window_tokens=window_tokens,
    )
    if dry_run:
        return  # the stage printed its estimate
    import pandas as pd

    typer.echo(format_summary(pd.DataFrame(out["summary"])))
    fails = out["window_failures"]
    if fails["parse"] or fails["llm"]:
        typer.echo(f"windows without a prediction: {fails['parse']} unparseable after retries, {fails['llm']} provider errors"
                   + (" (re-run the same command to retry the provider errors)" if fails["llm"] else ""))
    if not out["complete"]:
        raise typer.Exit(1)
