"""`interp-eval mine`: the command-line face of `run_mine_stage` (registered in interp_eval/cli.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli_options import config_options, run_option
from .config import MineConfig


@config_options
def mine(run: Path = run_option("Run directory; every coder in RUN/coders/ is mined (under torchrun write --run-dir)."),
         *, cfg: MineConfig) -> None:
    """Mine firing counts and example windows for every latent: one pass over held-out tokens."""
    from .stage import run_mine_stage

    summary = run_mine_stage(run, cfg)
    if not summary["coders"]:
        return  # a non-zero torchrun rank: rank 0 reports
    head = "already mined (same config): " if summary["skipped"] else ""
    typer.echo(f"{head}{summary['tokens']:,} tokens -> {Path(run) / 'latents.parquet'}, contexts.parquet, windows.parquet")
    if len(summary.get("models", [])) > 1:
        typer.echo(f"subject models, same tokens: {', '.join(summary['models'])}")
    width = max(len(n) for n in summary["coders"])
    typer.echo(f"{'coder':<{width}}  {'latents':>7}  {'ok':>6}  {'too_rare':>8}  {'dead':>6}")
    for name, c in summary["coders"].items():
        typer.echo(f"{name:<{width}}  {c['latents']:>7}  {c['ok']:>6}  {c['too_rare']:>8}  {c['dead']:>6}")
    for name, c in summary["coders"].items():
        if c.get("model_mismatch"):
            typer.echo(f"model mismatch: {name} was trained on {c['trained_on']}, mined on {c['mined_on']} (--allow-model-mismatch)")
    if not summary["skipped"] and summary.get("forward_s"):
        typer.echo(
            f"forward {summary['forward_s']:.1f}s, encoding {summary['encode_s']:.1f}s, bookkeeping "
            f"{summary['bookkeeping_s']:.1f}s (+{100 * summary['overhead']:.0f}% over the forward pass); "
            f"batches drawn {summary['data_s']:.1f}s, set-up {summary['set_up_s']:.1f}s, output tokens "
            f"{summary['output_tokens_s']:.1f}s, checkpoints {summary['checkpoint_s']:.1f}s, writing {summary['write_s']:.1f}s, "
            f"untimed {summary['untimed_s']:.1f}s of {summary['elapsed_s']:.1f}s"
        )
