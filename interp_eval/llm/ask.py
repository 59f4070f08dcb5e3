"""Asking until an answer parses: the corrective-retry loop of every stage that reads an LLM's answers.

An answer that came back but does not parse (no explanation line, not a list of 0/1 digits, a copied
few-shot answer...) is asked again with the rejected answer and a corrective user turn appended: a
new conversation, so a new cache key, and the response cache cannot replay the bad answer. Provider
errors are not retried here (the client already retried them); their request keeps its failed answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from .types import LLMRequest, LLMResponse


async def ask_until_parsed(
    llm,
    requests: Sequence[LLMRequest],
    parse: Callable[[int, str | None], Any],
    retry: Callable[[int, LLMRequest, str | None], LLMRequest],
    max_retries: int,
    desc: str,
    batch_state: Path | None = None,
) -> list[list[LLMResponse]]:
    """Every request's answers, first to last, after up to `max_retries` corrective turns.

    parse(i, text): request i's answer parsed, None when it does not parse (then it is asked again).
    retry(i, request, text): `request` (the last one sent for i) with the rejected answer `text` and a
    corrective turn appended. batch_state: the batch API's state file of the first answers (with the
    provider's batch API); retry round r uses `<stem>-retry<r><suffix>` beside it.
    """
    first = await llm.complete_many(list(requests), desc=desc, batch_state_path=batch_state)
    history = [[r] for r in first]
    current = list(requests)
    for attempt in range(1, max_retries + 1):
        redo = [i for i, h in enumerate(history) if h[-1].ok and parse(i, h[-1].text) is None]
        if not redo:
            break
        retries = [retry(i, current[i], history[i][-1].text) for i in redo]
        state = None if batch_state is None else batch_state.with_name(f"{batch_state.stem}-retry{attempt}{batch_state.suffix}")
        answers = await llm.complete_many(retries, desc=f"{desc} (retry)", progress=False, batch_state_path=state)
        for i, req, ans in zip(redo, retries, answers):
            current[i] = req
            history[i].append(ans)
    return history


__all__ = ["ask_until_parsed"]
