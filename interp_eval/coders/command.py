"""`interp-eval train`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from ..errors import UserError

RunOpt = typer.Option(..., "--run", "--run-dir", "-r", help="Run directory (created if missing; under torchrun write --run-dir, since torchrun claims --run).")
ModelOpt = typer.Option(None, "--model", help="Subject model: the packaged default, a HF id or a local folder (random:<model>[:seed] is its randomly initialised copy).")
DatasetOpt = typer.Option("bbc-news", "--dataset", help="Corpus: the packaged BBC News, local .txt/.jsonl/.parquet files or folder, or a HF dataset name.")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N.")


def train(
    run: Path = RunOpt,
    coder: List[str] = typer.Option(["sae"], "--coder", help="sae, bae (binary SAE), tc (skip transcoder), btc (binary skip transcoder); repeat for several."),
    hookpoint: List[str] = typer.Option(["layers.9.mlp"], "--hookpoint", help="MLP hookpoint(s), e.g. layers.9.mlp."),
    k: List[int] = typer.Option([32], "--k", help="Active latents per token (repeat for several)."),
    expansion: int = typer.Option(8, help="Latents = expansion x d_model (paper: 64)."),
    tokens: int = typer.Option(300_000, help="Training tokens."),
    batch_size: int = typer.Option(1024, help="Tokens per step (per process under torchrun)."),
    epochs: int = typer.Option(1),
    optimizer: str = typer.Option("adam", help="adam (warm-up + linear decay) or signum (schedule-free; the paper's)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate; default: the paper's rule base/sqrt(M/2^14)."),
    seed: int = typer.Option(1),
    temperature: float = typer.Option(1.0, help="Binary coders: straight-through sigmoid temperature T."),
    normalize_decoder: Optional[bool] = typer.Option(None, "--normalize-decoder/--no-normalize-decoder", help="Unit-norm decoder rows (default: SAEs yes, transcoders no)."),
    skip: Optional[bool] = typer.Option(None, "--skip/--no-skip", help="Transcoder skip connection (default on)."),
    auxk_alpha: float = typer.Option(0.0, help="AuxK dead-latent loss weight (paper: off)."),
    name: Optional[str] = typer.Option(None, help="Coder folder name (one coder only)."),
    model: Optional[str] = ModelOpt,
    dataset: str = DatasetOpt,
    ctx_len: int = typer.Option(256, help="Tokens per context."),
    device: str = DeviceOpt,
    eval_tokens: int = typer.Option(16384, help="Held-out tokens for the reconstruction eval."),
    cache_dtype: str = typer.Option("float16", help="Activation cache dtype: float16, bfloat16, float32."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from a checkpoint if one exists."),
    force: bool = typer.Option(False, help="Retrain even if the coder is already complete."),
    control: Optional[str] = typer.Option(None, "--control", help="random-model: train on a randomly initialised copy of --model (same architecture, tokenizer, tokens, settings; Heap et al. 2025); coders are named <name>-randmodel."),
) -> None:
    """Train sparse coders on a subject model's MLP activations; save SAELens folders."""
    from .stage import run_train_stage
    from .train import TrainConfig
    from ..subject.corpus import CorpusConfig

    combos = [(c, h, kk) for c in coder for h in hookpoint for kk in k]
    if name and len(combos) > 1:
        raise UserError("--name names one coder; drop it when training several")
    configs = [
        TrainConfig(
            coder=c, hookpoint=h, k=kk, expansion=expansion, tokens=tokens, batch_size=batch_size, epochs=epochs,
            optimizer=optimizer, lr=lr, seed=seed, temperature=temperature, normalize_decoder=normalize_decoder,
            skip=skip, auxk_alpha=auxk_alpha, name=name,
        )
        for c, h, kk in combos
    ]
    names = run_train_stage(
        run, configs, model=model, corpus=CorpusConfig(dataset=dataset, ctx_len=ctx_len), device=device,
        eval_tokens=eval_tokens, cache_dtype=cache_dtype, resume=resume, force=force, control=control,
    )
    _print_recon(run, names)


def _print_recon(run: Path, names: list[str]) -> None:
    from ..artifacts import read_parquet
    from .stage import RECON_EVAL

    path = Path(run) / RECON_EVAL
    if not path.exists():
        return
    df = read_parquet(path, RECON_EVAL)
    df = df[df["coder"].isin(names)]
    cols = ["coder", "fvu", "l0", "dead_fraction", "uhf_fraction_0.01", "ce_loss_increase", "accuracy_decrease"]
    typer.echo(df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


