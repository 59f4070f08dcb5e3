"""`interp-eval export`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli_options import run_option
from .formats import FORMATS


def export(
    out: Path = typer.Argument(..., help="Folder to write (created; existing files of the same names are replaced)."),
    run: Path = run_option("Run directory to export."),
    fmt: str = typer.Option(..., "--format", help=f"Layout to write: {' | '.join(FORMATS)}."),
) -> None:
    """Write a run's coders or results in another tool's layout (sparsify, Neuronpedia, delphi)."""
    from .formats import run_export

    typer.echo(run_export(run, fmt, out).line(fmt))
