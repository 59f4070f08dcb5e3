"""The `mine` stage: one streaming pass over held-out tokens; firing counts and sampled windows per latent.

See `interp_eval/catalog.py` for the files it writes and `stage.run_mine_stage` for the entry point.
"""

from ..catalog import CONTEXTS, LATENTS, WINDOWS
from .config import MineConfig, Sampling
from .stage import run_mine_stage
from .state import CoderState, merge, merge_all

__all__ = ["run_mine_stage", "MineConfig", "CoderState", "Sampling", "merge", "merge_all", "LATENTS", "WINDOWS", "CONTEXTS"]
