"""`interp-eval mine`: the command-line face of `run_mine_stage` (registered in interp_eval/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def mine(
    run: Path = typer.Option(..., "--run", "--run-dir", "-r", help="Run directory; every coder in RUN/coders/ is mined (under torchrun write --run-dir)."),
    tokens: int = typer.Option(200_000, help="Held-out tokens to mine (paper: 10M; the packaged corpus holds ~311k)."),
    coder: List[Path] = typer.Option([], "--coder", help="Extra SAELens coder folder to mine too (repeatable), e.g. one saved by sae-lens."),
    model: Optional[str] = typer.Option(None, "--model", help="Subject model: the packaged default, a HF id or a local folder; coders of its random-model control (random:<model>:<seed>) are mined in the same pass."),
    dataset: str = typer.Option("bbc-news", "--dataset", help="Corpus (its held-out split is mined): packaged BBC News, local files or folder, or a HF dataset."),
    ctx_len: int = typer.Option(256, help="Tokens per context (as in training)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N."),
    window: int = typer.Option(32, help="Tokens per example window (windows never cross a context)."),
    n_top: int = typer.Option(20, help="Top windows per latent, by max activation (feature browser only)."),
    n_explain: int = typer.Option(40, help="Explanation windows per latent, over 10 activation quantiles."),
    n_test: int = typer.Option(50, help="Activating test windows per latent (disjoint from the explanation ones)."),
    n_negative: int = typer.Option(50, help="Non-activating test windows per latent."),
    reservoir: int = typer.Option(200, help="Uniform sample of activating windows per latent that explain/test windows are drawn from."),
    negative_pool: int = typer.Option(500, help="Random windows (codes kept) that non-activating windows are drawn from."),
    min_examples: int = typer.Option(200, help="Latents with fewer activating windows are marked too_rare (paper: 200)."),
    seed: int = typer.Option(0, help="Sampling seed."),
    batch_contexts: int = typer.Option(32, help="Contexts per forward pass (per process under torchrun)."),
    checkpoint_every: int = typer.Option(100, help="Save the mining state every N batches (resume point)."),
    force: bool = typer.Option(False, help="Mine again even if this config is already complete."),
) -> None:
    """Mine firing counts and example windows for every latent: one pass over held-out tokens."""
    from ..subject.corpus import CorpusConfig
    from .stage import run_mine_stage

    summary = run_mine_stage(
        run, tokens=tokens, extra_coders=coder, model=model, corpus=CorpusConfig(dataset=dataset, ctx_len=ctx_len),
        device=device, window=window, n_top=n_top, n_explain=n_explain, n_test=n_test, n_negative=n_negative,
        reservoir=reservoir, negative_pool=negative_pool, min_examples=min_examples, seed=seed,
        batch_contexts=batch_contexts, checkpoint_every=checkpoint_every, force=force,
    )
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
    if not summary["skipped"] and summary.get("forward_s"):
        typer.echo(
            f"forward {summary['forward_s']:.1f}s, encoding {summary['encode_s']:.1f}s, bookkeeping "
            f"{summary['bookkeeping_s']:.1f}s (+{100 * summary['overhead']:.0f}% over the forward pass)"
        )
