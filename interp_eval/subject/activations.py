"""Disk caches of each hookpoint's module input and output, so every coder of a hookpoint trains from one model pass.

Layout: <run>/activations/<split>-<key>/<hookpoint>/shard_00000.safetensors (tensors `input`,
`output`, [tokens, d]: an SAE reads its site's side, a transcoder the MLP's input to predict its output) and a `meta.json` per cache written last: a cache without it is unfinished
and is resumed shard by shard.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..artifacts import RunDir, atomic_path, config_hash, write_json
from ..errors import UserError
from ..progress import progress_bar
from .corpus import CorpusConfig, iter_batches, iter_contexts
from .hookpoints import capture, resolve
from .model import SubjectModel

log = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass(frozen=True)
class CacheKey:
    model: str
    corpus: CorpusConfig
    split: str
    n_tokens: int
    dtype: str = "float16"
    shard_tokens: int = 65536
    tensors: str = "input,output"  # the shards' tensor names (caches of older versions held mlp_in, mlp_out)

    def digest(self) -> str:
        return config_hash(asdict(self))


class ActivationCache:
    """The finished cache of one hookpoint: shards of its module's (input, output)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        meta_path = self.folder / "meta.json"
        if not meta_path.exists():
            raise UserError(f"activation cache {self.folder} is unfinished (no meta.json); re-run train to resume it")
        self.meta = json.loads(meta_path.read_text())
        self.shards = [self.folder / s for s in self.meta["shards"]]

    @property
    def n_tokens(self) -> int:
        return int(self.meta["n_tokens"])

    @property
    def d_in(self) -> int:
        return int(self.meta["d_in"])

    @property
    def d_out(self) -> int:
        return int(self.meta["d_out"])

    def load_shard(self, i: int) -> dict[str, torch.Tensor]:
        return load_file(self.shards[i])

    def mean(self, which: str, max_tokens: int = 65536) -> torch.Tensor:
        return self.load_shard(0)[which][:max_tokens].float().mean(0)

    def _groups(self, seed: int, epoch: int, global_batch: int, buffer_shards: int) -> list[tuple[list[int], int]]:
        """The shard groups of one epoch and how many full global batches each yields."""
        order = np.random.default_rng([seed, epoch]).permutation(len(self.shards))
        groups = []
        for g in range(0, len(order), buffer_shards):
            group = [int(i) for i in order[g : g + buffer_shards]]
            groups.append((group, sum(self.meta["shard_sizes"][i] for i in group) // global_batch))
        return groups

    def total_steps(self, batch_size: int, seed: int, epochs: int = 1, world: int = 1, buffer_shards: int = 8) -> int:
        return sum(n for e in range(epochs) for _, n in self._groups(seed, e, batch_size * world, buffer_shards))

    def batches(
        self, batch_size: int, seed: int, epochs: int = 1, start_step: int = 0, rank: int = 0, world: int = 1,
        buffer_shards: int = 8,
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Yield (step, input, output) float32 batches in a seeded shuffled order.

        Shards are visited in a per-epoch permutation, `buffer_shards` at a time, and rows are
        permuted within that buffer. Steps before `start_step` are skipped without loading data,
        which makes resuming exact. Under torchrun each rank takes its slice of every global batch
        (global batch = batch_size * world), so all ranks see disjoint rows.
        """
        step = 0
        global_batch = batch_size * world
        for epoch in range(epochs):
            for g, (group, n_batches) in enumerate(self._groups(seed, epoch, global_batch, buffer_shards)):
                if step + n_batches <= start_step:
                    step += n_batches
                    continue
                loaded = [self.load_shard(i) for i in group]
                xin = torch.cat([s["input"] for s in loaded])
                xout = torch.cat([s["output"] for s in loaded])
                perm = torch.from_numpy(np.random.default_rng([seed, epoch, g]).permutation(xin.shape[0]))
                for b in range(n_batches):
                    if step >= start_step:
                        lo = b * global_batch + rank * batch_size
                        rows = perm[lo : lo + batch_size]
                        yield step, xin[rows].float(), xout[rows].float()
                    step += 1


def cache_root(run_root: Path, key: CacheKey) -> Path:
    return RunDir(run_root).activations_dir / f"{key.split}-{key.digest()}"


def build_activation_caches(
    run_root: Path, subject: SubjectModel, key: CacheKey, hookpoints: list[str], batch_contexts: int = 32,
) -> dict[str, ActivationCache]:
    """Cache the module inputs/outputs at `hookpoints` for `key.n_tokens` tokens of one split (resumable)."""
    if key.dtype not in _DTYPES:
        raise UserError(f"--cache-dtype {key.dtype}: use one of {', '.join(_DTYPES)}")
    for hp in hookpoints:
        resolve(subject, hp)  # validates with a clear error
    root = cache_root(run_root, key)
    folders = {hp: root / hp for hp in hookpoints}
    todo = [hp for hp in hookpoints if not (folders[hp] / "meta.json").exists()]
    if todo:
        _fill(subject, key, {hp: folders[hp] for hp in todo}, batch_contexts)
    return {hp: ActivationCache(folders[hp]) for hp in hookpoints}


def _fill(subject: SubjectModel, key: CacheKey, folders: dict[str, Path], batch_contexts: int) -> None:
    ctx_len = key.corpus.ctx_len
    ctx_per_shard = max(1, key.shard_tokens // ctx_len)
    n_ctx = key.n_tokens // ctx_len
    if n_ctx == 0:
        raise UserError(f"--tokens {key.n_tokens} is less than one context of {ctx_len} tokens")
    n_shards = math.ceil(n_ctx / ctx_per_shard)
    dtype = _DTYPES[key.dtype]
    for f in folders.values():
        f.mkdir(parents=True, exist_ok=True)
    shard_names = [f"shard_{i:05d}.safetensors" for i in range(n_shards)]
    contexts = iter_contexts(key.corpus, subject.tokenizer, key.split, key.n_tokens)
    seen = 0
    dims: dict[str, tuple[int, int]] = {}
    sizes: list[int] = []
    with progress_bar(f"caching activations ({key.split})", total=n_ctx * ctx_len, unit="tok") as bar:
        for i, name in enumerate(shard_names):
            want = min(ctx_per_shard, n_ctx - i * ctx_per_shard)
            shard_ctx = [c for _, c in zip(range(want), contexts)]
            got = len(shard_ctx)
            seen += got
            if got == 0:
                break
            if all((f / name).exists() for f in folders.values()):
                sizes.append(got * ctx_len)
                bar.advance(got * ctx_len)
                continue
            parts: dict[str, dict[str, list[torch.Tensor]]] = {hp: {"input": [], "output": []} for hp in folders}
            for batch in iter_batches(shard_ctx, batch_contexts):
                cap = capture(subject, batch, list(folders))
                for hp in folders:
                    for which, src in (("input", cap.inputs), ("output", cap.outputs)):
                        t = src[hp].reshape(-1, src[hp].shape[-1]).to("cpu", dtype)
                        if not torch.isfinite(t).all():
                            raise UserError(
                                f"activations at {hp} overflow {key.dtype}: re-run with --cache-dtype float32"
                            )
                        parts[hp][which].append(t)
                bar.advance(batch.numel())
            for hp, f in folders.items():
                tensors = {w: torch.cat(v).contiguous() for w, v in parts[hp].items()}
                dims[hp] = (tensors["input"].shape[1], tensors["output"].shape[1])
                with atomic_path(f / name) as tmp:
                    save_file(tensors, str(tmp))
            sizes.append(got * ctx_len)
    if seen < n_ctx:
        total = seen * ctx_len
        if total == 0:
            raise UserError(f"--dataset {key.corpus.dataset}: the {key.split} split is empty (no documents with text)")
        raise UserError(
            f"--dataset {key.corpus.dataset}: the {key.split} split has only {total} tokens, "
            f"{key.n_tokens} asked for (lower --tokens or add data)"
        )
    for hp, f in folders.items():
        if hp not in dims:  # every shard was already on disk
            first = load_file(f / shard_names[0])
            dims[hp] = (first["input"].shape[1], first["output"].shape[1])
        write_json(
            f / "meta.json",
            {
                "hookpoint": hp,
                "model": key.model,
                "split": key.split,
                "n_tokens": sum(sizes),
                "ctx_len": ctx_len,
                "dtype": key.dtype,
                "d_in": dims[hp][0],
                "d_out": dims[hp][1],
                "shards": shard_names[: len(sizes)],
                "shard_sizes": sizes,
                "key": asdict(key),
            },
        )
