"""Dollar cost of a call from its token usage and a price table (interp_eval/data/prices.json).

The user can point INTERP_EVAL_PRICES (or LLMConfig.prices_path) at a JSON file of the same shape;
its entries are merged over the packaged ones. An unknown model costs None (not 0), with one warning.

A call's bill has four parts, one per kind of token: uncached input, prompt-cache reads, prompt-cache
writes and output (`Bill`); the ledger keeps each part. `cache_min` is the shortest prefix the
provider caches for that model (Anthropic: 1,024 tokens for Sonnet 4.x and Opus 4/4.1, 2,048 for
Haiku 3.x, 4,096 for Opus 4.5 and Haiku 4.5; OpenAI: 1,024); a shorter prefix is billed as uncached
input however it is marked.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from interp_eval.errors import UserError

from .types import COST_PARTS, Usage

log = logging.getLogger("interp_eval.llm.pricing")

PRICES_ENV = "INTERP_EVAL_PRICES"
_DATED_SUFFIX = re.compile(r"^-(\d{8}|\d{4}-\d{2}-\d{2}|latest)$")
_warned: set[str] = set()


@dataclass(frozen=True)
class Price:
    """US dollars per million tokens; cache_min: the shortest prefix the provider caches (None: not known)."""

    input: float
    output: float
    cache_read: float
    cache_write: float
    cache_min: int | None = None


@dataclass(frozen=True)
class Bill:
    """Dollars of one call (or many), per kind of token; batch discounts already applied."""

    input: float = 0.0  # uncached input tokens
    cache_read: float = 0.0
    cache_write: float = 0.0
    output: float = 0.0

    @property
    def total(self) -> float:
        return self.input + self.cache_read + self.cache_write + self.output

    def parts(self) -> dict[str, float]:
        """{part: dollars} over types.COST_PARTS (what LLMResponse.cost_parts holds)."""
        return {k: getattr(self, k) for k in COST_PARTS}


class PriceTable:
    def __init__(self, models: dict[str, Price], batch_discount: float = 0.5):
        self.models = models
        self.batch_discount = batch_discount

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> "PriceTable":
        """The packaged table, with `path` (or $INTERP_EVAL_PRICES) merged over it."""
        raw = json.loads(resources.files("interp_eval").joinpath("data/prices.json").read_text())
        table = cls._parse(raw, "interp_eval/data/prices.json")
        override = path or os.environ.get(PRICES_ENV)
        if override:
            p = Path(override)
            try:
                user = json.loads(p.read_text())
            except FileNotFoundError:
                raise UserError(f"price file {p} (from --prices / {PRICES_ENV}) does not exist: fix the path or unset it") from None
            except json.JSONDecodeError as e:
                raise UserError(f"price file {p} is not valid JSON ({e.msg} at line {e.lineno}): fix it or unset {PRICES_ENV}") from None
            extra = cls._parse(user, str(p))
            table.models.update(extra.models)
            if "batch_discount" in user:
                table.batch_discount = extra.batch_discount
        return table

    @staticmethod
    def _parse(raw: dict, where: str) -> "PriceTable":
        models = {}
        try:
            for name, p in raw.get("models", {}).items():
                models[name] = Price(
                    input=float(p["input"]),
                    output=float(p["output"]),
                    cache_read=float(p.get("cache_read", p["input"])),
                    cache_write=float(p.get("cache_write", p["input"])),
                    cache_min=int(p["cache_min"]) if p.get("cache_min") is not None else None,
                )
            return PriceTable(models, float(raw.get("batch_discount", 0.5)))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise UserError(f"price file {where}: each model needs numeric 'input' and 'output' per million tokens ({e!r})") from None

    def price(self, model: str) -> Price | None:
        """Exact id, then without a 'provider/' prefix, then a known id plus a date suffix."""
        candidates = [model] + ([model.rsplit("/", 1)[1]] if "/" in model else [])
        for m in candidates:
            if m in self.models:
                return self.models[m]
            for known in sorted(self.models, key=len, reverse=True):
                if m.startswith(known) and _DATED_SUFFIX.match(m[len(known):]):
                    return self.models[known]
        return None

    def bill(self, backend: str, model: str, usage: Usage, *, batch: bool = False) -> Bill | None:
        """What `usage` costs on `model`, per kind of token (None when the model's price is unknown)."""
        if backend == "local":
            return Bill()
        p = self.price(model)
        if p is None:
            if model not in _warned:
                _warned.add(model)
                log.warning("no price known for model %r: its cost is recorded as unknown (add it to a file named by %s)", model, PRICES_ENV)
            return None
        f = (self.batch_discount if batch else 1.0) / 1e6
        return Bill(
            input=usage.input_tokens * p.input * f,
            cache_read=usage.cache_read_tokens * p.cache_read * f,
            cache_write=usage.cache_write_tokens * p.cache_write * f,
            output=usage.output_tokens * p.output * f,
        )

    def cost(self, backend: str, model: str, usage: Usage, *, batch: bool = False) -> float | None:
        bill = self.bill(backend, model, usage, batch=batch)
        return None if bill is None else bill.total
