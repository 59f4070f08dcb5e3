"""`interp-eval explain`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..llm import options as o


def _count(value: Optional[str], option: str) -> Optional[int]:
    """`all` (or nothing) -> None (every live latent); a positive integer otherwise."""
    if value is None or value.strip().lower() == "all":
        return None
    if not value.strip().isdigit() or int(value) < 1:
        from ..errors import UserError

        raise UserError(f"{option} {value}: give a positive number of latents or 'all'")
    return int(value)


def explain(
    run: Path = typer.Option(..., "--run", "--run-dir", "-r", help="Run directory with mined latents."),
    explainer: str = typer.Option("llm", "--explainer", help="llm (an LLM reads the windows) or token-table (no LLM: the most frequent marked tokens with counts)."),
    model: Optional[str] = o.ModelOpt,
    base_url: Optional[str] = o.BaseUrlOpt,
    backend: Optional[str] = o.BackendOpt,
    latents: Optional[str] = typer.Option(None, "--latents", help="Explain the first N live latents of each coder, or 'all' (the default)."),
    sample: Optional[int] = typer.Option(None, "--sample", help="Or a seeded random sample of N live latents."),
    seed: int = typer.Option(0, "--seed"),
    coder: Optional[List[str]] = typer.Option(None, "--coder", help="Only these coders (repeatable)."),
    show_activations: bool = typer.Option(False, "--show-activations", help="Continuous coders: list 0-10 activations of marked tokens."),
    max_retries: int = typer.Option(2, "--max-retries", help="Re-asks after an unparseable answer or a copied few-shot answer."),
    concurrency: int = o.ConcurrencyOpt,
    rpm: Optional[float] = o.RpmOpt,
    tpm: Optional[float] = o.TpmOpt,
    batch: bool = o.BatchOpt,
    dry_run: bool = o.DryRunOpt,
    llm_cache: Optional[str] = o.CacheOpt,
) -> None:
    """Explain latents from their explanation windows (never their test windows), with an LLM or a token table."""
    from .stage import LLM, ExplainConfig, run_explain_stage

    n_latents = _count(latents, "--latents")
    if n_latents is not None and sample is not None:
        from ..errors import UserError

        raise UserError("give --latents or --sample, not both")
    cfg = ExplainConfig(explainer=explainer, latents=n_latents, sample=sample, seed=seed,
                        coders=tuple(coder) if coder else None, show_activations=show_activations, max_retries=max_retries)
    llm_cfg = o.llm_config(model, base_url, backend, concurrency, rpm, tpm, batch, llm_cache) if explainer == LLM else None
    out = run_explain_stage(run, llm_cfg, cfg, dry_run=dry_run)
    if dry_run:
        est = out["dry_run"]
        head = f"dry run: {out['selected']} latents selected, {out['already_done']} already explained"
        if est is None:
            typer.echo(f"{head}; the {explainer} explainer calls no LLM")
            return
        cost = "unknown" if est["cost_usd"] is None else f"${est['cost_usd']:.2f}"
        typer.echo(
            f"{head}; {est['to_send']} calls to send ({est['cached']} cached), ~{est['input_tokens']:,} input and "
            f"~{est['output_tokens']:,} output tokens, about {cost} on {est['model']}"
        )
        return
    typer.echo(
        f"{explainer}: explained {out['explained']} latents, {out['failed']} failed, {out['already_done']} already done; "
        f"not explained: {out['too_rare']} too rare, {out['dead']} dead"
    )
    for r in out["diversity"].itertuples():
        typer.echo(f"  {r.coder}: {r.distinct} distinct explanations of {r.explained} ({r.diversity:.0%}), "
                   f"{r.fewshot_copies} few-shot copies")
    if out["failed"]:
        raise typer.Exit(1)
