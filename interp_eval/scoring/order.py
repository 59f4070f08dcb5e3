"""The order in which a score run asks its LLM prompts: consecutive prompts share the longest prefix.

The offline model (llama.cpp, llm/backends/local_backend.py) keeps the longest common prefix of the
previous prompt in its KV cache and evaluates only the rest. A detection or fuzzing prompt is the
scorer's fixed system prompt and few-shot, then `Explanation: <text>`, then the window. So:
- one scorer's prompts go back to back (another scorer's system prompt in between would make the next
  prompt evaluate its whole fixed prefix again);
- within a scorer, jobs go by explanation text: a latent's own job and the shuffled-control job that
  borrows the same explanation are neighbours, so the explanation is evaluated once for both, and
  identical or similar explanations (a common start) follow each other. Sorted strings are a
  depth-first walk of their prefix tree, the order with the most shared prefix between neighbours;
- a job's prompts (its windows) stay together, in their order.
Hosted providers answer concurrently, so the order changes nothing for them but which jobs finish first.
"""

from __future__ import annotations

from typing import Any, Sequence

from .registry import CONTROL_NONE, Job


def prefix_key(scorer_name: str, job: Job) -> tuple:
    t = job.tests
    return (scorer_name, t.explanation, t.coder, job.explainer, job.control != CONTROL_NONE, t.latent)


def prefix_order(jobs: Sequence[tuple[Any, Job]]) -> list[tuple[Any, Job]]:
    """(scorer, job) pairs in the order that shares the most prompt prefix between consecutive calls."""
    return sorted(jobs, key=lambda sj: prefix_key(sj[0].name, sj[1]))
