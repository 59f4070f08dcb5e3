"""The runner of the scorers without an LLM: rows computed in blocks of jobs, written as they finish."""

from __future__ import annotations

from dataclasses import dataclass

from ..artifacts import RunDir
from ..progress import progress_bar
from .config import ScoreConfig
from .embedding import WindowEmbeddings
from .registry import Job, LocalScorer
from .rows import ROW_DEFAULTS, base_row, predictions_table


@dataclass
class LocalContext:
    embeddings: WindowEmbeddings


def run_local(rd: RunDir, scorer: LocalScorer, jobs: list[Job], context: LocalContext, versions: dict[str, str],
               cfg: ScoreConfig) -> None:
    model = scorer.model("")
    step = max(1, cfg.chunk) * 64
    with progress_bar(scorer.label, total=len(jobs), unit="jobs") as bar:
        for start in range(0, len(jobs), step):
            part = jobs[start : start + step]
            rows = []
            for job, windows in zip(part, scorer.score(part, context)):
                base = base_row(job, scorer.label, model, versions[scorer.label], None, cfg)
                rows += [{**ROW_DEFAULTS, **base, **w} for w in windows]
            predictions_table(rd).add(rows)
            context.embeddings.save()
            bar.advance(len(part))
