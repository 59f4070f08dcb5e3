"""The `score` stage: registered scorers (detection, fuzzing, embedding, example-embedding, intruder, plugins),
each with its control and measured power; per-latent and per-coder metrics.

    from interp_eval.scoring import run_score_stage
    run_score_stage("runs/demo", LLMConfig(model="claude"), scorers=("detection", "fuzzing"), freq_adjust=True)
"""

from .aggregate import format_summary
from .metrics import Confusion, auc, bootstrap_mean_ci, frequency_weighted
from .registry import LLMScorer, LocalScorer, Scorer, get_scorer, register_scorer, scorer_names
from .stage import ScoreConfig, run_score_stage

__all__ = [
    "Confusion",
    "LLMScorer",
    "LocalScorer",
    "ScoreConfig",
    "Scorer",
    "auc",
    "bootstrap_mean_ci",
    "format_summary",
    "frequency_weighted",
    "get_scorer",
    "register_scorer",
    "run_score_stage",
    "scorer_names",
]
