"""`interp-eval explain`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli_options import LLMOptions, config_options, run_option
from ..llm.ask import RERUN_NOTE
from .stage import LLM, ExplainConfig


@config_options
def explain(run: Path = run_option("Run directory with mined latents."), *, cfg: ExplainConfig, llm: LLMOptions) -> None:
    """Explain latents from their explanation windows (never their test windows), with an LLM or a token table."""
    from .stage import run_explain_stage

    dry_run = llm.dry_run
    out = run_explain_stage(run, cfg, llm.config() if cfg.explainer == LLM else None, dry_run=dry_run)
    explainer = cfg.explainer
    if dry_run:
        est = out["dry_run"]
        head = f"dry run: {out['selected']} latents selected, {out['already_done']} already explained"
        if est is None:
            typer.echo(f"{head}; the {explainer} explainer calls no LLM")
            return
        from ..llm import DryRunEstimate

        typer.echo(f"{head}; {DryRunEstimate(**est).describe()}")
        return
    typer.echo(
        f"{explainer}: explained {out['explained']} latents, {out['failed']} failed, {out['already_done']} already done; "
        f"not explained: {out['too_rare']} too rare, {out['dead']} dead"
        + (f", {out['no_windows']} without explanation windows (see explanations.parquet's failure)" if out["no_windows"] else "")
    )
    for r in out["diversity"].itertuples():
        typer.echo(f"  {r.coder}: {r.distinct} distinct explanations of {r.explained} ({r.diversity:.0%}), "
                   f"{r.fewshot_copies} few-shot copies")
    if out["failed"]:
        if explainer == LLM:
            typer.echo(f"{out['failed']} latents without an explanation: re-run the same command to ask them again ({RERUN_NOTE})")
        raise typer.Exit(1)
