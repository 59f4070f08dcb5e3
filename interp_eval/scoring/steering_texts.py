"""The steering scorer's continuations: each steering prompt continued by the subject model with and without a
latent's decoder direction (subject/steering.py), made once per latent and kept in steering.parquet.

The coders are the very folders the mining run read (its manifest line records each folder and its fingerprint);
a coder retrained since, or gone (unless the run directory moved with it in its own coders/), is refused rather than
steered, since its decoder rows would not be the ones the latent's windows and explanation came from. Each coder runs on the model it was mined on (the subject, or the
subject's random-model control).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..artifacts import RunDir
from ..catalog import STEERING
from ..coders.discover import fingerprint, group_by_subject
from ..coders.load import load_any_coder
from ..errors import UserError
from ..progress import progress_bar
from ..prompting import load_prompt
from ..subject.logit_lens import written_site
from ..subject.model import load_subject_model
from ..subject.steering import continue_prompts, encode_prompts, site_norm

log = logging.getLogger(__name__)

PROMPTS_TEMPLATE = "steering_prompts"
LATENTS_PER_BATCH = 8  # latents generated together (x the prompts): one batch of the subject model's generate


@dataclass(frozen=True)
class Continuation:
    prompt: str
    steered: list[str]  # one string per token
    clean: list[str]


def steering_prompts(n: int) -> list[str]:
    """The first `n` neutral openings of the template (one a line)."""
    lines = [line.strip() for line in load_prompt(PROMPTS_TEMPLATE).text.splitlines() if line.strip()]
    if n > len(lines):
        raise UserError(f"--steering-prompts {n}: the template {PROMPTS_TEMPLATE}.txt holds {len(lines)} openings")
    return lines[:n]


def _mined_coders(rd: RunDir) -> tuple[dict, str, str]:
    """The mining run's coder folders, subject model name and config hash (a UserError when it recorded none)."""
    entry = rd.stage_entry("mine") or {}
    folders = entry.get("coder_folders")
    if entry.get("status") != "complete" or not folders:
        raise UserError("steering needs the coder folders the mining run read, which this run's manifest does not record "
                        "(mined by an earlier interp-eval): re-run `interp-eval mine --force`")
    return folders, entry.get("model"), entry["config_hash"]


def continuations(rd: RunDir, keys: set[tuple[str, int]], n_prompts: int, new_tokens: int, scale: float,
                  device: str = "auto") -> dict[tuple[str, int], list[Continuation]]:
    """Per (coder, latent) of `keys`: its continuations, from steering.parquet where they were made with the same
    settings and mining run, else generated now (and appended there)."""
    prompts = steering_prompts(n_prompts)
    folders, model_name, mine_hash = _mined_coders(rd)
    have = _kept(rd, keys, prompts, new_tokens, scale, mine_hash)
    missing = sorted(k for k in keys if k not in have)
    if missing:
        rows = _generate(rd, missing, prompts, new_tokens, scale, folders, model_name, mine_hash, device)
        rd.append(STEERING, rows, replace=("coder", "latent"))
        have.update(_as_continuations(pd.DataFrame(rows)))
    return {k: have[k] for k in keys}


def _kept(rd: RunDir, keys, prompts, new_tokens, scale, mine_hash) -> dict[tuple[str, int], list[Continuation]]:
    if not rd.has(STEERING) or not keys:
        return {}
    old = rd.read(STEERING, where={"coder": sorted({c for c, _ in keys})})
    old = old[(old["mine_config"] == mine_hash) & (old["new_tokens"] == new_tokens) & (old["scale"] == scale)]
    found = _as_continuations(old)
    return {k: v for k, v in found.items() if k in keys and [c.prompt for c in v] == prompts}


def _as_continuations(df: pd.DataFrame) -> dict[tuple[str, int], list[Continuation]]:
    out: dict[tuple[str, int], list[Continuation]] = {}
    for (coder, latent), g in df.sort_values("prompt_index").groupby(["coder", "latent"], sort=False):
        out[(coder, int(latent))] = [Continuation(p, list(s), list(c)) for p, s, c in zip(g["prompt"], g["steered"], g["clean"])]
    return out


def _coder_folder(rd: RunDir, name: str, recorded: dict) -> Path:
    folder = Path(recorded["folder"])
    if not folder.is_dir():  # a run directory moved with its own coders
        folder = rd.coder_dir(name)
    if not folder.is_dir() or fingerprint(folder) != recorded["fingerprint"]:
        raise UserError(f"coder {name}: its folder {recorded['folder']} is gone or was retrained since mining, so its latents' "
                        "windows are not this coder's: re-run `interp-eval mine --force` before steering")
    return folder


def _generate(rd, missing, prompts, new_tokens, scale, folders, model_name, mine_hash, device) -> list[dict]:
    by_coder: dict[str, list[int]] = {}
    for coder, latent in missing:
        by_coder.setdefault(coder, []).append(latent)
    unknown = sorted(set(by_coder) - set(folders))
    if unknown:
        raise UserError(f"steering: coder {', '.join(unknown)} is not among the mining run's coders")
    subject = load_subject_model(model_name, device)
    coders = [load_any_coder(_coder_folder(rd, name, folders[name]), name, device=subject.device) for name in sorted(by_coder)]
    vocab_of = {}
    rows: list[dict] = []
    total = sum(len(v) for v in by_coder.values())
    log.info("steering: %d latents x %d prompts, %d new tokens each, scale %g", total, len(prompts), new_tokens, scale)
    with progress_bar("steer", total=total, unit="latents") as bar:
        for group in group_by_subject(coders, subject, allow_model_mismatch=True):
            model = group.model(subject)
            ids = encode_prompts(model, prompts)
            # every continuation comes from a batch of one shape (LATENTS_PER_BATCH copies of the openings, short chunks
            # padded with zero vectors), so a row's arithmetic is the same in each and a steered continuation differs
            # from its clean one only through its vector (a zero vector gives the clean text exactly)
            clean = continue_prompts(model, ids * LATENTS_PER_BATCH, new_tokens)[: len(prompts)]
            decode = vocab_of.setdefault(id(model), _decoder(model))
            for c in group.coders:
                site = written_site(model, c.hookpoint, c.site, c.transcoder, c.out_hookpoint)
                norm = site_norm(model, site, ids)
                rows_w = c.decoder().float()
                lats = sorted(by_coder[c.name])
                for lo in range(0, len(lats), LATENTS_PER_BATCH):
                    chunk = lats[lo : lo + LATENTS_PER_BATCH]
                    w = rows_w.new_zeros(LATENTS_PER_BATCH, rows_w.shape[1])
                    w[: len(chunk)] = rows_w[chunk]
                    unit = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
                    vectors = (scale * norm * unit).repeat_interleave(len(prompts), dim=0)
                    steered = continue_prompts(model, ids * LATENTS_PER_BATCH, new_tokens, site, vectors)
                    for j, latent in enumerate(chunk):
                        for i, prompt in enumerate(prompts):
                            rows.append({"coder": c.name, "latent": int(latent), "prompt_index": i, "prompt": prompt,
                                         "steered": decode(steered[j * len(prompts) + i]), "clean": decode(clean[i]),
                                         "scale": float(scale), "site_norm": norm, "new_tokens": new_tokens,
                                         "mine_config": mine_hash})
                    bar.advance(len(chunk))
    return rows


def _decoder(model):
    tok = model.tokenizer

    def decode(ids: list[int]) -> list[str]:
        return tok.batch_decode([[i] for i in ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)

    return decode


__all__ = ["Continuation", "continuations", "steering_prompts"]
