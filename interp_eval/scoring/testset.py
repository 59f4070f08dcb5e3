"""The test windows of each latent: which windows, in which order, grouped into prompts, marked how.

Per latent the test set is its `quantile` / `test` windows (activating, label 1; at most
`n_activating`, spread over the activation quantiles, or a seeded uniform sample for binary coders
whose quantile is null) plus its `random_negative` / `test` windows (label 0; at most `n_negative`,
a seeded sample). Explanation windows never enter: only `split == "test"` rows are read, and
`check_disjoint` raises when a test window of a latent is also one of its explanation windows.

The windows are shuffled with a seed derived from (seed, coder, latent) and cut into prompts of
`windows_per_prompt` (the last prompt may be shorter). Detection and fuzzing use the same order.

Fuzzing marks: an activating window marks its truly active tokens (>= 0.3 x the window's max, as the
explainer saw them); a non-activating window marks as many randomly chosen tokens with visible text (seeded per
window) as the latent's activating test windows mark on average (rounded, at least 1).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import UserError
from ..catalog import CONTEXTS, KIND_NEGATIVE, KIND_QUANTILE, SPLIT_TEST
from ..prompting import active_mask, render


@dataclass
class ScoreWindow:
    window_id: int
    label: int  # 1 activating, 0 not
    quantile: int | None
    tokens: list[str]
    activations: np.ndarray  # the latent's activation per token (zeros for a negative)
    fuzz_mask: list[bool] = field(default_factory=list)

    def text(self, marked: bool = False) -> str:
        return render(self.tokens, self.fuzz_mask if marked else None)

    def cut(self, n: int | None) -> "ScoreWindow":
        """The window cut to n tokens (before any marks are set): centred on its highest activation when it has
        one, on its middle otherwise; unchanged when n is None or the window is no longer than n."""
        if n is None or len(self.tokens) <= n:
            return self
        centre = int(np.argmax(self.activations)) if self.label == 1 else len(self.tokens) // 2
        start = min(max(0, centre - n // 2), len(self.tokens) - n)
        return ScoreWindow(self.window_id, self.label, self.quantile, self.tokens[start : start + n],
                           self.activations[start : start + n])


@dataclass
class LatentTests:
    coder: str
    latent: int
    explanation: str
    binary: bool
    windows: list[ScoreWindow]  # shuffled: prompt order

    def prompts(self, windows_per_prompt: int) -> list[list[ScoreWindow]]:
        w = self.windows
        return [w[i : i + windows_per_prompt] for i in range(0, len(w), windows_per_prompt)]


def seed_for(*parts: object) -> int:
    """A stable 64-bit seed from any values (numpy's SeedSequence wants ints)."""
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "little")


def seeded_rng(*parts: object) -> np.random.Generator:
    """A generator seeded from any values: the same values give the same draws, whatever else ran before."""
    return np.random.default_rng(seed_for(*parts))


def check_disjoint(coder: str, latent: int, test_ids: Sequence[int], explain_ids: Sequence[int]) -> None:
    """Raise when a test window of a latent was also shown to its explainer (delphi's leak)."""
    leaked = sorted(set(int(w) for w in test_ids) & set(int(w) for w in explain_ids))
    if leaked:
        raise UserError(
            f"{CONTEXTS}: {coder} latent {latent} has {len(leaked)} test window(s) that are also explanation windows "
            f"(window_id {', '.join(map(str, leaked[:5]))}{' ...' if len(leaked) > 5 else ''}); re-run `interp-eval mine`"
        )


@dataclass
class TestRows:
    """One latent's test rows as arrays (contexts.parquet columns): what select_test_rows chooses from."""

    window_id: np.ndarray
    kind: np.ndarray
    split: np.ndarray
    quantile: np.ndarray  # float, NaN where null
    rank: np.ndarray
    activations: Sequence

    @classmethod
    def of(cls, df: pd.DataFrame) -> "TestRows":
        return cls(df["window_id"].to_numpy(np.int64), df["kind"].to_numpy(object), df["split"].to_numpy(object),
                   pd.to_numeric(df["quantile"], errors="coerce").to_numpy(np.float64), df["rank"].to_numpy(np.int64),
                   df["activations"].to_numpy(object))

    def take(self, idx: np.ndarray) -> "TestRows":
        return TestRows(self.window_id[idx], self.kind[idx], self.split[idx], self.quantile[idx], self.rank[idx], self.activations[idx])

    def __len__(self) -> int:
        return len(self.window_id)


def _spread_over_quantiles(act: np.ndarray, rows: TestRows, n: int) -> np.ndarray:
    """n of the activating rows, round-robin over quantiles (lowest rank first), so every quantile keeps its
    share; a last, partial round takes quantiles evenly spaced over the range (n = 5 of 10 deciles: 0, 2, 4, 7, 9),
    not the lowest ones."""
    act = act[np.lexsort((rows.rank[act], rows.quantile[act]))]
    q = rows.quantile[act]
    turn = np.zeros(len(act), np.int64)
    for value in np.unique(q):
        at = np.flatnonzero(q == value)
        turn[at] = np.arange(len(at))
    order = np.lexsort((q, turn))
    act, turn = act[order], turn[order]
    keep: list[np.ndarray] = []
    room = n
    for t in np.unique(turn):
        group = act[turn == t]
        if len(group) > room:
            group = group[np.round(np.linspace(0, len(group) - 1, room)).astype(np.int64)]
        keep.append(group)
        room -= len(group)
        if room <= 0:
            break
    return np.concatenate(keep) if keep else act[:0]


def select_test_rows(rows: TestRows, n_activating: int, n_negative: int, seed: int, coder: str, latent: int,
                     negative_kind: str = KIND_NEGATIVE) -> TestRows:
    """The test rows of one latent (activating first, then negatives of `negative_kind`), capped as documented above."""
    test = rows.split == SPLIT_TEST
    act = np.flatnonzero((rows.kind == KIND_QUANTILE) & test)
    neg = np.flatnonzero((rows.kind == negative_kind) & test)
    if len(act) > n_activating:
        q = rows.quantile[act]
        if not np.isnan(q).any():
            act = _spread_over_quantiles(act, rows, n_activating)
        else:
            pick = seeded_rng(seed, coder, latent, "activating").choice(len(act), size=n_activating, replace=False)
            act = act[np.sort(pick)]
    if len(neg) > n_negative:
        pick = seeded_rng(seed, coder, latent, "negative").choice(len(neg), size=n_negative, replace=False)
        neg = neg[np.sort(pick)]
    out = rows.take(np.concatenate([act, neg]))
    assert (out.split == SPLIT_TEST).all(), f"{coder} latent {latent}: non-test rows selected for scoring"
    return out


def build_latent_tests(
    coder: str, latent: int, explanation: str, binary: bool, rows: TestRows | pd.DataFrame, explain_ids: Sequence[int],
    tokens_of: dict[int, list[str]], *, n_activating: int, n_negative: int, seed: int, marks: bool = True,
    window_tokens: int | None = None, negative_kind: str = KIND_NEGATIVE,
) -> LatentTests:
    """Select, check, (mark) and shuffle one latent's test windows; `marks=False` leaves fuzz marks for mark_fuzz later;
    `window_tokens` cuts every window to that many tokens (ScoreWindow.cut) before it is marked."""
    if isinstance(rows, pd.DataFrame):
        rows = TestRows.of(rows)
    sel = select_test_rows(rows, n_activating, n_negative, seed, coder, latent, negative_kind)
    check_disjoint(coder, latent, sel.window_id.tolist(), explain_ids)
    windows: list[ScoreWindow] = []
    for wid, kind, q, acts in zip(sel.window_id.tolist(), sel.kind, sel.quantile.tolist(), sel.activations):
        if wid not in tokens_of:
            raise UserError(f"windows.parquet has no window_id {wid} (referenced by {CONTEXTS}, {coder} latent {latent}): re-run `interp-eval mine`")
        label = 1 if kind == KIND_QUANTILE else 0
        a = np.asarray(acts, dtype=np.float32)
        if label == 0 and (a > 0).any():
            raise UserError(f"{CONTEXTS}: {coder} latent {latent}: {kind} window {wid} has activations > 0")
        quantile = None if q != q else int(q)
        windows.append(ScoreWindow(wid, label, quantile, tokens_of[wid], a).cut(window_tokens))
    if marks:
        mark_fuzz(windows, seed, coder, latent)
    order = seeded_rng(seed, coder, latent, "order").permutation(len(windows))
    return LatentTests(coder, latent, explanation, binary, [windows[i] for i in order])


def mark_fuzz(windows: list[ScoreWindow], seed: int, coder: str, latent: int) -> None:
    """Set fuzz_mask on every window: true activity for activating ones, k random tokens for the others."""
    counts = []
    for w in windows:
        if w.label == 1:
            w.fuzz_mask = active_mask(w.activations.tolist())
            counts.append(sum(w.fuzz_mask))
    k = max(1, int(round(float(np.mean(counts))))) if counts else 1
    for w in windows:
        if w.label == 0:
            mask = [False] * len(w.tokens)
            # only tokens with visible text: a marked line break would show as an empty <<>>
            visible = [i for i, t in enumerate(w.tokens) if t.strip()] or list(range(len(w.tokens)))
            if visible:
                for i in seeded_rng(seed, coder, latent, w.window_id, "fuzz").choice(visible, size=min(k, len(visible)), replace=False):
                    mask[int(i)] = True
            w.fuzz_mask = mask
