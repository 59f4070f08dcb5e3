"""The LLM ledger: one record per call, tagged with who asked; every view of LLM spend is a grouping of it.

A run's ledger is `llm_usage.parquet` (catalog.LLM_USAGE). The stages that ask an LLM (explain, score)
append one row per answer they got, first answers and corrective retries alike, tagged (`CallTag`)
with the coder, latent, explainer, scorer and control the answer was for. The report's usage table
(per stage and model), its per-coder spend and latent_scores' per-latent calls and dollars are all
`spend(ledger, by=...)` over those rows. The ledger is a history: a latent asked again (a retry after
a provider error, a new explanation) keeps the rows of both times; answers from the response cache
cost 0 and are counted as cache hits.

`UsageTracker` is the client's in-memory record of the same calls, for the summary a stage returns.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Sequence

from .types import LLMResponse

if TYPE_CHECKING:
    import pandas as pd

_TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


@dataclass(frozen=True)
class CallTag:
    """Who asked for a call: the ledger columns that tie it to a latent's explanation or score."""

    coder: str
    latent: int
    explainer: str | None = None
    scorer: str | None = None  # None for the explain stage
    control: str | None = None  # "none" or "shuffled" for score calls


def ledger_rows(tag: CallTag, responses: Sequence[LLMResponse]) -> list[dict[str, Any]]:
    """The ledger rows of one job's answers (first answer, then each corrective retry)."""
    return [{**r.to_row(), **asdict(tag)} for r in responses]


def spend(ledger: "pd.DataFrame", by: Sequence[str]) -> "pd.DataFrame":
    """Per group of `by`: calls, ok, cached, batch, the four token counts, cost_usd (NaN as soon as one call's
    price is unknown, so a total is never silently too low) and latency_s_mean."""
    import numpy as np
    import pandas as pd

    cols = [*by, "calls", "ok", "cached", "batch", *_TOKENS, "cost_usd", "latency_s_mean"]
    if ledger.empty:
        return pd.DataFrame(columns=cols)
    flags = ledger.assign(**{c: ledger[c].fillna(False).astype(bool) for c in ("ok", "cached", "batch")})
    out = flags.groupby(list(by), sort=True).agg(
        calls=("ok", "size"), ok=("ok", "sum"), cached=("cached", "sum"), batch=("batch", "sum"),
        **{t: (t, "sum") for t in _TOKENS},
        cost_usd=("cost_usd", lambda c: np.nan if c.isna().any() else float(c.sum())),
        latency_s_mean=("latency_s", "mean"),
    ).reset_index()
    return out[cols]


class UsageTracker:
    """Add every LLMResponse; read `rows()` (one flat dict per call) or `summary()` (per stage).

    Per stage: calls (every request answered or failed), cache_hits (served from the response cache,
    no network, cost 0), failures, batch_calls, the four token counts (cache hits included: the usage
    recorded when they were first paid for), cost_usd (None as soon as one paid call had an unknown
    price, so a total is never silently too low) and cost_unknown_calls.
    """

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, response: LLMResponse) -> None:
        with self._lock:
            self._rows.append(response.to_row())

    def rows(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._rows]

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for r in self.rows():
            s = out.setdefault(r["stage"], {
                "calls": 0, "cache_hits": 0, "failures": 0, "batch_calls": 0,
                **{k: 0 for k in _TOKENS}, "cost_usd": 0.0, "cost_unknown_calls": 0,
            })
            s["calls"] += 1
            s["cache_hits"] += int(r["cached"])
            s["failures"] += int(not r["ok"])
            s["batch_calls"] += int(r["batch"])
            for k in _TOKENS:
                s[k] += r[k]
            if r["cost_usd"] is None:
                s["cost_unknown_calls"] += 1
            elif s["cost_usd"] is not None:
                s["cost_usd"] += r["cost_usd"]
        for s in out.values():
            if s["cost_unknown_calls"]:
                s["cost_usd"] = None
        return out

    def total(self) -> dict[str, Any]:
        """The summary over all stages together."""
        stages = self.summary().values()
        total: dict[str, Any] = {k: sum(s[k] for s in stages) for k in ("calls", "cache_hits", "failures", "batch_calls", *_TOKENS, "cost_unknown_calls")}
        costs = [s["cost_usd"] for s in stages]
        total["cost_usd"] = None if any(c is None for c in costs) else float(sum(costs))
        return total

    def to_dict(self) -> dict[str, Any]:
        return {"stages": self.summary(), "total": self.total()}


_COSTS = ("input_cost_usd", "cache_read_cost_usd", "cache_write_cost_usd", "output_cost_usd")
BILLING_COLUMNS = ("calls", "failed", "response_cache", "batch", "input_tokens", "cache_read_tokens", "cache_write_tokens",
                   "output_tokens", *_COSTS, "cost_usd", "latency_s_mean")


def billing(ledger: "pd.DataFrame", by: Sequence[str]) -> "pd.DataFrame":
    """What the provider billed, per group of `by` (the report's llm_usage table).

    calls (every answer and failure), failed, response_cache (answers replayed from the response cache: no
    call, $0), batch; then, over the calls actually sent: input_tokens (uncached input), cache_read_tokens and
    cache_write_tokens (the provider's prompt cache), output_tokens, the dollars of each kind of token
    (`<part>_cost_usd`) and in all (cost_usd). A dollar figure is NaN as soon as one of its calls had an unknown
    price (or, for the parts, came from a ledger written before they were recorded); latency_s_mean is over the
    calls sent.
    """
    import numpy as np
    import pandas as pd

    cols = [*by, *BILLING_COLUMNS]
    if ledger.empty:
        return pd.DataFrame(columns=cols)
    df = ledger.assign(**{c: ledger[c].fillna(False).astype(bool) for c in ("ok", "cached", "batch")})
    for c in _COSTS:  # rows from before the parts were recorded: a free call's parts are known to be 0
        if c not in df:
            df[c] = np.nan
        df[c] = df[c].where(df[c].notna() | (df["cost_usd"] != 0), 0.0)
    sent = ~df["cached"]
    for t in _TOKENS:
        df[t] = df[t].where(sent, 0)
    df["latency_sent"] = df["latency_s"].where(sent)

    def total(c: "pd.Series") -> float:
        return np.nan if c.isna().any() else float(c.sum())

    out = df.groupby(list(by), sort=True).agg(
        calls=("ok", "size"), failed=("ok", lambda ok: int((~ok).sum())), response_cache=("cached", "sum"), batch=("batch", "sum"),
        input_tokens=("input_tokens", "sum"), cache_read_tokens=("cache_read_tokens", "sum"),
        cache_write_tokens=("cache_write_tokens", "sum"), output_tokens=("output_tokens", "sum"),
        **{c: (c, total) for c in (*_COSTS, "cost_usd")}, latency_s_mean=("latency_sent", "mean"),
    ).reset_index()
    return out[cols]
