"""Load any coder folder the stages accept: ours or any SAELens folder, or a sparsify hookpoint folder."""

from __future__ import annotations

from pathlib import Path

import torch

from .saelens import LoadedCoder, is_saelens_folder, load_coder
from .sparsify import is_sparsify_folder, load_sparsify


def load_any_coder(folder: str | Path, name: str | None = None, device: str | torch.device = "cpu") -> LoadedCoder:
    """The folder's format decides the loader (a folder with both layouts' weight files loads as SAELens)."""
    folder = Path(folder)
    if is_sparsify_folder(folder) and not is_saelens_folder(folder):
        return load_sparsify(folder, name, device=device)
    return load_coder(folder, name, device=device)


__all__ = ["load_any_coder"]
