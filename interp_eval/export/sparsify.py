"""`interp-eval export --format sparsify`: each of a run's coders as a sparsify root.

OUT/<coder>/<hookpoint>/ holds cfg.json and sae.safetensors (coders/sparsify.py, `save_sparsify`), and
OUT/<coder>/config.json the model and hookpoint, so `sparsify.SparseCoder.load_many(OUT/<coder>,
local=True)` loads it (TopK coders with sparsify's main branch, binary ones with its `binary` branch)
and `interp-eval mine --coder OUT/<coder>` reads it back. Only the coders the run trained (RUN/coders/)
are exported; a coder without a sparsify equivalent is left out with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..artifacts import RunDir
from ..coders.saelens import is_saelens_folder, load_coder
from ..coders.sparsify import SPARSIFY_CFG, SPARSIFY_WEIGHTS, save_sparsify, write_run_config
from ..errors import UserError
from .formats import ExportSummary


def export(rd: RunDir, out: Path) -> ExportSummary:
    folders = sorted(p for p in rd.coders_dir.iterdir() if p.is_dir() and is_saelens_folder(p)) if rd.coders_dir.is_dir() else []
    if not folders:
        raise UserError(f"--run {rd.root}: no coders to export ({rd.coders_dir} holds none; run `interp-eval train` first)")
    summary = ExportSummary(out=Path(out))
    for folder in folders:
        coder = load_coder(folder, device="cpu").ours
        if coder is None:
            summary.skipped.append(f"{folder.name}: not an interp-eval coder (a SAELens folder of another architecture)")
            continue
        cfg = coder.cfg
        if cfg.d_out != cfg.d_in:
            summary.skipped.append(f"{folder.name}: maps {cfg.d_in} -> {cfg.d_out} dimensions; sparsify's layout needs equal ones")
            continue
        root = summary.out / folder.name
        hookpoint = cfg.hookpoint or "coder"
        tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")  # the coder root is written whole, then swapped in
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        save_sparsify(coder, tmp / hookpoint)
        run_config = write_run_config(tmp, coder).name if cfg.model_name else None
        if root.exists():  # --overwrite: an earlier export's stale hookpoint folders go with it
            shutil.rmtree(root)
        tmp.rename(root)
        summary.files += [Path(folder.name, hookpoint, SPARSIFY_CFG), Path(folder.name, hookpoint, SPARSIFY_WEIGHTS)]
        if run_config:
            summary.files.append(Path(folder.name, run_config))
    return summary
