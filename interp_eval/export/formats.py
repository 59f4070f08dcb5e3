"""The export formats and the one entry point that runs one."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from ..artifacts import RunDir
from ..errors import UserError

# format name -> module under interp_eval.export (imported only when that format is asked for)
FORMATS: dict[str, str] = {
    "sparsify": "sparsify",
    "neuronpedia": "neuronpedia",
    "delphi": "delphi",
}


@dataclass
class ExportSummary:
    """What an export wrote: the files (relative to its folder) and one line per thing left out, with why."""

    out: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def line(self, fmt: str) -> str:
        left = f"; left out {len(self.skipped)}: {'; '.join(self.skipped[:3])}{' ...' if len(self.skipped) > 3 else ''}" if self.skipped else ""
        return f"exported {len(self.files)} files in {fmt} layout to {self.out}{left}"


def run_export(run: Path, fmt: str, out: Path, overwrite: bool = False) -> ExportSummary:
    """Export `run` in `fmt`'s layout into `out`: a new or empty folder, or with `overwrite` one whose files of the
    same names (and, for sparsify, whole coder folders) are replaced."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    rd = RunDir(run)
    if not rd.root.is_dir():
        raise UserError(f"--run {run}: no such run directory")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} is a file: export writes a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"{out} is not empty: choose an empty folder, or pass --overwrite to replace what this export writes there")
    out.mkdir(parents=True, exist_ok=True)
    module = importlib.import_module(f".{FORMATS[fmt]}", __package__)
    return module.export(rd, Path(out))
