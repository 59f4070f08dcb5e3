"""`interp-eval export`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..cli_options import run_option
from .formats import FORMATS


def export(
    out: Path = typer.Argument(..., help="Folder to write (created; refused if it holds files, unless --overwrite)."),
    run: Path = run_option("Run directory to export."),
    fmt: str = typer.Option(..., "--format", help=f"Layout to write: {' | '.join(FORMATS)}."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Export into a folder that holds files: replace those of the same names, and each exported coder folder whole."),
) -> None:
    """Write a run's coders or results in another tool's layout (sparsify, Neuronpedia, delphi)."""
    from .formats import run_export

    typer.echo(run_export(run, fmt, out, overwrite).line(fmt))
