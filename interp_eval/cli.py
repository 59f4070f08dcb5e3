"""The `interp-eval` command line: one command per stage, plus `reproduce`.

The CLI only parses options and wires stages; every stage is a plain function a notebook can call.
Bad input ends in one line on stderr and exit code 2.
"""

from __future__ import annotations

import errno
import functools
from dataclasses import replace
import logging
import typer

from pathlib import Path
from typing import Optional

from .cli_options import LLMOptions, config_options, run_option
from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
log = logging.getLogger("interp_eval")


def _setup_logging(verbose: bool) -> None:
    """Our own INFO lines (what a stage does, its summaries) and every library's warnings; `-v` adds our
    DEBUG lines (e.g. each retried call) and the libraries' INFO lines (e.g. each HTTP request).

    Libraries are held at WARNING through the root logger rather than by name: the HTTP clients under
    the provider SDKs (httpx, or a fork with another logger name) log every request at INFO.
    """
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False, console=None)],
        force=True,
    )
    logging.getLogger("interp_eval").setLevel(logging.DEBUG if verbose else logging.INFO)


_FS_HINTS = {
    errno.EACCES: "no permission to write there: choose a folder you can write, or change its permissions",
    errno.EPERM: "not permitted: choose a folder you can write",
    errno.EROFS: "the file system is read-only: choose a writable folder",
    errno.ENOSPC: "the disk is full: free some space, then re-run the same command (finished work is kept)",
    errno.EDQUOT: "the disk quota is used up: free some space, then re-run the same command (finished work is kept)",
}


def filesystem_message(exc: OSError) -> str:
    """One line for a file system error: the path, what went wrong and what to do."""
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f) or "a file"
    what = exc.strerror or str(exc)
    hint = _FS_HINTS.get(exc.errno or 0, "check the path and re-run the same command (finished work is kept)")
    return f"{where}: {what}; {hint}"


def stage(fn):
    """Turn UserError (exit 2) and file system errors (exit 1) into a one-line message."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except OSError as exc:
            if not exc.filename and exc.errno not in _FS_HINTS:  # not a file system error (e.g. a network one)
                raise
            logging.getLogger("interp_eval").debug("file system error", exc_info=True)
            typer.echo(f"error: {filesystem_message(exc)}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: finished work is kept; re-run the same command to resume", err=True)
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def main_options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    _setup_logging(verbose)


from .coders.command import train  # noqa: E402
from .explain.command import explain  # noqa: E402
from .export.command import export  # noqa: E402
from .mining.command import mine  # noqa: E402
from .report.command import report  # noqa: E402
from .scoring.command import score  # noqa: E402

app.command()(stage(train))
app.command()(stage(mine))
app.command()(stage(explain))
app.command()(stage(score))
app.command()(stage(report))
app.command()(stage(export))


@app.command()
@stage
@config_options
def reproduce(
    preset: str = typer.Option("demo", "--preset", help="tiny | demo (offline, CPU, < 30 min) | study (offline, CPU, < 3 h: the paper's question with intervals) | paper (GPU + API key)."),
    run: Path = run_option("Run directory."),
    *,
    llm: LLMOptions,
    subject_model: Optional[str] = typer.Option(None, "--subject-model", help="Override the preset's subject model."),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="Override the preset's corpus."),
    device: str = typer.Option("auto", "--device"),
    results: Optional[Path] = typer.Option(None, "--results", help="Also copy tables, plots and the report here."),
    control: bool = typer.Option(True, "--control/--no-control", help="Also train the preset's random-model control coders (<coder>-randmodel, Heap et al. 2025)."),
) -> None:
    """Run every stage for all coder variants of a preset (the paper's comparison)."""
    from .config import get_preset
    from .reproduce import format_plan, plan, run_reproduce

    p = get_preset(preset).with_overrides(model=subject_model, dataset=dataset, control=None if control else False)
    cfg = llm.config() if llm.model is not None else replace(llm.config(), model=p.llm_model)
    if llm.dry_run:
        timing = None
        if p.estimate_time and cfg.resolved()[0] == "local" and device in ("auto", "cpu"):  # an offline preset on this machine
            from .throughput import measure

            typer.echo("measuring this machine's throughputs for the time estimate (about a minute) ...")
            timing = measure(p, cfg)
        typer.echo(format_plan(plan(p, cfg, timing)))
        return
    out = run_reproduce(p, run, cfg, device=device, results=results)
    typer.echo(f"done in {out['total_seconds']:.0f} s; report: {out['written'].get('html', '')}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
