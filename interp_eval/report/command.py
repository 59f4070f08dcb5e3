"""`interp-eval report`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..cli_options import config_options, run_option
from .browser import BrowserConfig
from .stage import ReportConfig


@config_options
def report(
    run: Path = run_option("Run directory to report on."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default: RUN/results)."),
    *,
    cfg: ReportConfig,
    browser: BrowserConfig,
) -> None:
    """Tables, the paper's claims judged, plots and an HTML feature browser (RUN/results/report.html)."""
    from dataclasses import replace

    from .stage import run_report_stage

    written = run_report_stage(run, replace(cfg, browser=browser), out)
    html = written.get("html")
    typer.echo(f"wrote {len(written)} files to {html.parent if html else out}; open {html}")
