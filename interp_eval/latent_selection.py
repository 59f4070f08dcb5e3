"""Which latents of a coder a stage works on: all live ones, the first N by index, or a seeded random sample.

One rule for every stage, so `explain --sample N --seed S` and `score --sample N --sample-seed S` pick the same
latents of each coder, and every scorer and its shuffled control see that one sample. The sample is drawn from a
coder's live latents (status ok in latents.parquet): the N whose keys, a hash of (seed, coder name, latent index),
are smallest. It depends on nothing else (not on which latents were explained, nor on the order of rows), so a
later stage that filters the same live set with the same seed gets the same latents, and another training of the
coder whose live set differs a little gets a sample that differs a little.

"The first N" (delphi's `--max_latents`, the authors' choice) takes the lowest indices, which in a trained coder are
no more typical than any other; a seeded sample is what a claim about "a coder's latents" needs.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd


def latent_keys(latents: np.ndarray, seed: int, coder: str) -> np.ndarray:
    """Each latent's own seeded key in [0, 1): a hash of (seed, coder, latent) and of nothing else, so whether a
    latent is sampled depends on the rest of the live set only through its key's rank."""
    out = np.empty(len(latents), dtype=np.float64)
    prefix = f"{seed}\x1f{coder}\x1f".encode()
    for i, lat in enumerate(latents):
        digest = hashlib.blake2b(prefix + str(int(lat)).encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def sample_positions(latents: np.ndarray, size: int, seed: int, coder: str) -> np.ndarray:
    """Sorted positions (into `latents`) of the seeded sample of `size` of them (all if size >= len): the `size`
    with the smallest keys. A smaller sample with the same seed lies inside a larger one (the 20 latents an LLM
    explains are among the 500 an embedding scorer covers), and a live set that differs by one latent gives a
    sample that differs by at most one (two trainings of a coder never agree on every latent's live status)."""
    if size >= len(latents):
        return np.arange(len(latents))
    keys = latent_keys(latents, seed, coder)
    return np.sort(np.argsort(keys, kind="stable")[:size])


def sampled_latents(live: pd.DataFrame, size: int, seed: int) -> set[tuple[str, int]]:
    """{(coder, latent)}: the seeded sample of `size` live latents of each coder (`live`: coder, latent rows)."""
    out: set[tuple[str, int]] = set()
    for coder, g in live.groupby("coder", sort=True):
        lat = np.sort(g["latent"].astype(int).unique())
        out.update((str(coder), int(lat[i])) for i in sample_positions(lat, size, seed, str(coder)))
    return out


def first_latents(df: pd.DataFrame, first: int | tuple[int, ...] | None, by: list[str]) -> pd.DataFrame:
    """Per group of `by`: the first N latents by index, the listed indices, or all (first=None)."""
    picked = []
    for _, g in df.groupby(by, sort=True):
        g = g.sort_values("latent")
        if isinstance(first, int):
            g = g.head(first)
        elif first is not None:
            g = g[g["latent"].isin([int(x) for x in first])]
        picked.append(g)
    return pd.concat(picked, ignore_index=True) if picked else df.iloc[0:0]


def in_sample(df: pd.DataFrame, sample: set[tuple[str, int]]) -> pd.DataFrame:
    """The rows of `df` (coder, latent, ...) whose (coder, latent) is in `sample`."""
    keys = pd.Series(list(zip(df["coder"].astype(str), df["latent"].astype(int))), index=df.index, dtype=object)
    return df[keys.isin(sample)]


def pick(df: pd.DataFrame, by: list[str], first: int | tuple[int, ...] | None = None, sample: int | None = None,
         seed: int = 0, pool: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows of `df` a stage works on, per group of `by`: with `sample`, those in the seeded sample drawn from the
    live latents of `pool` (default: `df` itself); else the first N by index, the listed indices, or all."""
    if sample is None:
        return first_latents(df, first, by)
    chosen = in_sample(df, sampled_latents(df if pool is None else pool, sample, seed))
    return chosen.sort_values([*by, "latent"]).reset_index(drop=True)
