"""Asking until an answer parses: the corrective-retry loop of every stage that reads an LLM's answers.

An answer that came back but does not parse (no explanation line, not a list of 0/1 digits, a copied
few-shot answer...) is asked again with the rejected answer and a corrective user turn appended: a
new conversation, so a new cache key, and the response cache cannot replay the bad answer.

One run asks each question at most 1 + max_retries times. What an earlier run already got for the
conversation (its first answer and corrective turns) is replayed from the response cache first, free
and not counted: so re-running a stage continues a question that never parsed with new corrective
turns, while a question that parsed costs nothing. Provider errors are not retried here (the client
already retried them) and are never cached, so a re-run asks them again too.

`ask_each` hands each question's answers to the caller as soon as that question is settled: one slow
call holds up only its own question. With a provider batch API, questions go in rounds instead (all
first answers in one batch, then one batch per corrective round), settling after each round.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .types import LLMRequest, LLMResponse

log = logging.getLogger("interp_eval.llm.ask")

RERUN_NOTE = ("a provider error is sent again, an unparseable answer gets new corrective turns after its cached ones; "
              "answers already paid for come from the response cache")  # what re-running a stage does, for its messages
QUESTIONS_PER_SLOT = 4  # questions in progress per concurrency slot: enough to keep every slot busy, few enough to bound memory


@dataclass(frozen=True)
class Question:
    """One request and how to read its answers.

    parse(text): the parsed answer, None when it does not parse (then it is asked again).
    retry(request, text): `request` (the last one sent) with the rejected answer `text` and a corrective turn appended.
    about: whatever the caller needs to file the answers (a latent, a prompt...).
    """

    request: LLMRequest
    parse: Callable[[str | None], Any]
    retry: Callable[[LLMRequest, str | None], LLMRequest]
    about: Any = None

    def settled(self, answer: LLMResponse) -> bool:
        """No more asking after this answer: it parses, or it is a provider error."""
        return not answer.ok or self.parse(answer.text) is not None


Settled = Callable[[Question, list[LLMResponse]], None]


async def ask_each(llm, questions: Iterable[Question], max_retries: int, settled: Settled, *, desc: str,
                   batch_state: Path | None = None) -> None:
    """Ask every question; call `settled(question, answers)` (answers first to last) as each one is done.

    `questions` may be a generator: only a few per concurrency slot are in progress at once. `settled`
    must not await; an exception from it (or a refused API key) cancels the questions in progress.
    batch_state: the batch API's state file of the first round; corrective round r uses
    `<stem>-retry<r><suffix>` beside it.
    """
    counts = {"questions": 0, "answers": 0, "cached": 0, "failed": 0}

    def done(q: Question, answers: list[LLMResponse]) -> None:
        counts["questions"] += 1
        counts["answers"] += len(answers)
        counts["cached"] += sum(a.cached for a in answers)
        counts["failed"] += not answers[-1].ok
        settled(q, answers)

    if llm.uses_batch:
        await _in_rounds(llm, list(questions), max_retries, done, desc, batch_state)
    else:
        await _one_by_one(llm, questions, max_retries, done)
    log.info("%s: %d questions, %d answers (%d from the cache), %d provider errors",
             desc, counts["questions"], counts["answers"], counts["cached"], counts["failed"])


def _replay(llm, q: Question) -> tuple[list[LLMResponse], LLMRequest]:
    """The answers the response cache holds for q's conversation (an earlier run's), and the next request to send."""
    answers: list[LLMResponse] = []
    request = q.request
    while (hit := llm.cached_response(request)) is not None:
        answers.append(hit)
        if q.settled(hit):
            break
        request = q.retry(request, hit.text)
    return answers, request


async def _ask(llm, q: Question, max_retries: int) -> list[LLMResponse]:
    """One question, first answer to last."""
    answers, request = _replay(llm, q)
    if answers and q.settled(answers[-1]):
        return answers
    for n in range(max_retries + 1):
        answer = await llm.complete(request)
        answers.append(answer)
        if q.settled(answer) or n == max_retries:
            break
        request = q.retry(request, answer.text)
    return answers


async def _one_by_one(llm, questions: Iterable[Question], max_retries: int, settled: Settled) -> None:
    source = iter(questions)
    in_progress: dict[asyncio.Future, Question] = {}

    def refill() -> None:
        for q in itertools.islice(source, QUESTIONS_PER_SLOT * llm.concurrency - len(in_progress)):
            in_progress[asyncio.ensure_future(_ask(llm, q, max_retries))] = q

    try:
        refill()
        while in_progress:
            finished, _ = await asyncio.wait(in_progress, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                settled(in_progress.pop(task), task.result())
            refill()
    finally:
        for task in in_progress:
            task.cancel()
        await asyncio.gather(*in_progress, return_exceptions=True)


async def _in_rounds(llm, questions: Sequence[Question], max_retries: int, settled: Settled, desc: str,
                     batch_state: Path | None) -> None:
    history, current, active = [], [], []
    for i, q in enumerate(questions):
        answers, request = _replay(llm, q)
        history.append(answers)
        current.append(request)
        if answers and q.settled(answers[-1]):
            settled(q, answers)
        else:
            active.append(i)
    for n in range(max_retries + 1):
        if not active:
            break
        state = batch_state if batch_state is None or n == 0 else batch_state.with_name(f"{batch_state.stem}-retry{n}{batch_state.suffix}")
        answers = await llm.complete_many([current[i] for i in active], desc=desc if n == 0 else f"{desc} (retry {n})",
                                          batch_state_path=state)
        still = []
        for i, answer in zip(active, answers):
            q = questions[i]
            history[i].append(answer)
            if q.settled(answer) or n == max_retries:
                settled(q, history[i])
            else:
                current[i] = q.retry(current[i], answer.text)
                still.append(i)
        active = still


__all__ = ["RERUN_NOTE", "Question", "ask_each"]
