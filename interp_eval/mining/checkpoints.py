"""Mining checkpoints: where each rank's pass stands, saved atomically so an interrupted pass resumes.

A checkpoint holds the batches done, every coder's state and the time spent per phase. It is
only used with the settings it was made with (the config hash covers the mining config, the batch
size and the rank layout); anything else starts from zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..artifacts import RunDir, atomic_path
from .state import CoderState

log = logging.getLogger(__name__)

VERSION = 2  # 2: lazily compacted top-N and reservoir buffers with their thresholds


def _zero_timing() -> dict[str, float]:
    return {"output_tokens_s": 0.0, "data_s": 0.0, "forward_s": 0.0, "encode_s": 0.0, "bookkeeping_s": 0.0,
            "checkpoint_s": 0.0}


@dataclass
class Progress:
    """A rank's pass so far: batches done, each coder's state, seconds per phase."""

    done: int
    states: dict[str, CoderState]
    timing: dict[str, float] = field(default_factory=_zero_timing)


def checkpoint_path(rd: RunDir, rank: int) -> Path:
    return rd.checkpoints_dir / f"mine-rank{rank}.pt"


def save_checkpoint(path: Path, cfg_hash: str, progress: Progress) -> None:
    blob = {
        "version": VERSION,
        "config_hash": cfg_hash,
        "batches_done": progress.done,
        "timing": dict(progress.timing),
        "states": {name: s.state_dict() for name, s in progress.states.items()},
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)


def load_checkpoint(path: Path, cfg_hash: str, device) -> Progress | None:
    """The saved progress, or None when there is none, it is damaged or it was made with other settings."""
    if not path.exists():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # written atomically, so this means it was damaged afterwards
        log.warning("mining checkpoint %s is unreadable (%s): starting from zero", path, type(exc).__name__)
        return None
    if blob.get("version") != VERSION or blob.get("config_hash") != cfg_hash:
        log.info("mining checkpoint %s was made with other settings: starting from zero", path)
        return None
    states = {name: CoderState.from_state_dict(d, device) for name, d in blob["states"].items()}
    return Progress(int(blob["batches_done"]), states, {**_zero_timing(), **blob.get("timing", {})})


__all__ = ["Progress", "checkpoint_path", "load_checkpoint", "save_checkpoint"]
