"""EleutherAI sparsify compatibility: load sparsify folders as coders, save our coders as sparsify folders.

A sparsify folder holds `cfg.json` (sparsify's SparseCoderConfig fields plus `d_in`) and
`sae.safetensors` (`encoder.weight` [M, d_in], `encoder.bias` [M], `W_dec` [M, d_out], `b_dec` [d_out],
optional `W_skip` [d_out, d_in], and `log_threshold` [M] for the `binary` branch's activations). A
sparsify root holds one such folder per hookpoint (`layers.9.mlp/`) and maybe sparsify's run config
`config.json`, whose `model` names the model the coders were trained on.

Encoding, as sparsify's `SparseCoder.encode` does it (main and the `binary` branch):

| activation  | code                                                                                 |
| topk        | relu(pre), then the top k                                                            |
| groupmax    | relu(pre), then the max of each of k contiguous groups of M / k latents             |
| topk_binary | top k of pre - exp(log_threshold), then 1 where positive (no relu)                   |
| binary      | dense: 1 where pre > exp(log_threshold)                                              |

where pre = encoder(x - b_dec) for SAEs (`transcode` false) and encoder(x) for transcoders. `topk` and
`topk_binary` are exactly our TopK and binary coders, so those folders load into a `SparseCoder` (the
fast k-sparse path); the others (and an SAE with a skip connection, which our SAEs do not have) run
`SparsifyCoder`, a plain dense implementation of the table above. Configs written before sparsify had
`activation` or `transcode` get its defaults (topk, false); fields we do not know are ignored, as
sparsify's own loader does. Weights are read as float32 whatever their stored dtype.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import UserError
from .coder import CoderConfig, SparseCoder
from .saelens import LoadedCoder

SPARSIFY_CFG = "cfg.json"
SPARSIFY_WEIGHTS = "sae.safetensors"
RUN_CONFIG = "config.json"  # sparsify's run config, in a root: its `model` is the coders' model
ACTIVATIONS = ("topk", "groupmax", "topk_binary", "binary")
BINARY = ("topk_binary", "binary")
STE_TEMPERATURE = 2.0  # the binary branch's default ste_temperature
TENSORS = ("encoder.weight", "encoder.bias", "W_dec", "b_dec", "W_skip", "log_threshold")


# --------------------------------------------------------------------------- finding folders
def is_sparsify_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return (folder / SPARSIFY_CFG).is_file() and (folder / SPARSIFY_WEIGHTS).is_file()


def _natural_key(name: str) -> list:
    """layers.2.mlp before layers.10.mlp."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def sparsify_hookpoint_folders(root: str | Path) -> list[Path]:
    """The sparsify folders directly under `root` (one per hookpoint), in natural order; others are ignored."""
    root = Path(root)
    if not root.is_dir():
        return []
    subs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".") and is_sparsify_folder(p)]
    return sorted(subs, key=lambda p: _natural_key(p.name))


def is_sparsify_root(folder: str | Path) -> bool:
    return not is_sparsify_folder(folder) and bool(sparsify_hookpoint_folders(folder))


def sparsify_coder_name(folder: Path) -> str:
    """A hookpoint folder's coder name: `<root>.<hookpoint>` (e.g. `sae-SmolLM2-135M-64x.layers.9.mlp`).

    The same whether the root or the hookpoint folder was given; a path component, so safe in file names.
    """
    folder = Path(folder)
    parent = folder.resolve().parent.name
    return f"{parent}.{folder.name}" if parent else folder.name


def root_model_name(folder: Path) -> str | None:
    """The `model` of the run config next to a hookpoint folder (ROOT/config.json), or None if there is none."""
    path = Path(folder).resolve().parent / RUN_CONFIG
    try:
        model = json.loads(path.read_text()).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    return model if isinstance(model, str) and model else None


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SparsifyConfig:
    """The cfg.json fields that decide how a sparsify coder encodes and decodes."""

    d_in: int
    num_latents: int
    k: int
    activation: str = "topk"
    transcode: bool = False
    skip_connection: bool = False
    normalize_decoder: bool = True
    ste_temperature: float = STE_TEMPERATURE
    tied_decoder: bool = False

    @property
    def binary(self) -> bool:
        return self.activation in BINARY

    @classmethod
    def read(cls, folder: Path) -> "SparsifyConfig":
        """cfg.json of `folder`, checked: a one-line UserError naming the file for anything wrong."""
        path = Path(folder) / SPARSIFY_CFG
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc
        except OSError as exc:
            raise UserError(f"{path}: cannot read ({exc.strerror})") from exc
        if not isinstance(raw, dict):
            raise UserError(f"{path}: expected a JSON object of sparsify's SparseCoderConfig fields plus d_in")

        def integer(key: str, default: int | None = None, minimum: int = 0) -> int:
            value = raw.get(key, default)
            if value is None:
                raise UserError(f"{path}: no {key!r} field (sparsify writes it with every coder)")
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise UserError(f"{path}: {key} must be an integer >= {minimum}, got {value!r}")
            return value

        def flag(key: str, default: bool) -> bool:
            value = raw.get(key, default)
            if not isinstance(value, bool):
                raise UserError(f"{path}: {key} must be true or false, got {value!r}")
            return value

        d_in = integer("d_in", minimum=1)
        num_latents = integer("num_latents", 0) or d_in * integer("expansion_factor", 32, minimum=1)
        k = integer("k", 32, minimum=1)
        activation = raw.get("activation", "topk")
        if activation not in ACTIVATIONS:
            raise UserError(f"{path}: activation {activation!r} is not one sparsify defines ({', '.join(ACTIVATIONS)})")
        temperature = raw.get("ste_temperature", STE_TEMPERATURE)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise UserError(f"{path}: ste_temperature must be a positive number, got {temperature!r}")
        cfg = cls(
            d_in=d_in,
            num_latents=num_latents,
            k=k,
            activation=activation,
            transcode=flag("transcode", False),
            skip_connection=flag("skip_connection", False),
            normalize_decoder=flag("normalize_decoder", True),
            ste_temperature=float(temperature),
            tied_decoder=flag("tied_decoder", False),
        )
        if activation != "binary" and k > num_latents:
            raise UserError(f"{path}: k {k} is larger than the number of latents {num_latents}")
        if activation == "groupmax" and num_latents % k:
            raise UserError(f"{path}: groupmax splits the latents into k groups, but {num_latents} latents do not split into k={k}")
        return cfg


def _read_tensors(folder: Path, cfg: SparsifyConfig) -> dict[str, torch.Tensor]:
    """sae.safetensors as float32 tensors, each checked against cfg.json's sizes."""
    path = Path(folder) / SPARSIFY_WEIGHTS
    try:
        state = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types for a damaged file
        raise UserError(f"{path}: cannot read the weights ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    unknown = sorted(set(state) - set(TENSORS))
    if unknown:
        raise UserError(f"{path}: unexpected tensor {unknown[0]!r} (a sparsify coder holds {', '.join(TENSORS)})")
    if cfg.tied_decoder and "W_dec" not in state and "encoder.weight" in state:
        state["W_dec"] = state["encoder.weight"]  # a tied decoder is saved once, as the encoder
    m, d_in = cfg.num_latents, cfg.d_in
    dec = state.get("W_dec")
    d_out = dec.shape[1] if dec is not None and dec.dim() == 2 else d_in
    want = {
        "encoder.weight": (m, d_in),
        "encoder.bias": (m,),
        "W_dec": (m, d_out),
        "b_dec": (d_out,),
    }
    if cfg.skip_connection or "W_skip" in state:
        want["W_skip"] = (d_out, d_in)
    if cfg.binary:
        want["log_threshold"] = (m,)
    elif "log_threshold" in state:
        raise UserError(f"{path}: holds log_threshold but {SPARSIFY_CFG} says activation {cfg.activation!r} (a binary coder says topk_binary or binary)")
    for name, shape in want.items():
        if name not in state:
            raise UserError(f"{path}: no {name} tensor, which a sparsify {cfg.activation} coder of this config has")
        if tuple(state[name].shape) != shape:
            raise UserError(
                f"{path}: {name} has shape {list(state[name].shape)} but {SPARSIFY_CFG} (d_in {d_in}, {m} latents) needs "
                f"{list(shape)}: the config and the weights come from different coders"
            )
    if not cfg.transcode and d_out != d_in:
        raise UserError(f"{path}: an SAE reconstructs its input, but W_dec has width {d_out} and d_in is {d_in}")
    return {name: t.float().contiguous() for name, t in state.items()}


# --------------------------------------------------------------------------- the dense reference
class SparsifyCoder(nn.Module):
    """sparsify's encode and decode for every activation, dense and plain (for groupmax, binary, skip SAEs)."""

    def __init__(self, cfg: SparsifyConfig, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(tensors["encoder.weight"], requires_grad=False)  # [M, d_in]
        self.b_enc = nn.Parameter(tensors["encoder.bias"], requires_grad=False)
        self.W_dec = nn.Parameter(tensors["W_dec"], requires_grad=False)  # [M, d_out]
        self.b_dec = nn.Parameter(tensors["b_dec"], requires_grad=False)
        skip, log_threshold = tensors.get("W_skip"), tensors.get("log_threshold")
        self.W_skip = None if skip is None else nn.Parameter(skip, requires_grad=False)
        self.log_threshold = None if log_threshold is None else nn.Parameter(log_threshold, requires_grad=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The dense code [N, M] of x [N, d_in]."""
        cfg = self.cfg
        x = x.to(self.W_enc.dtype)
        if not cfg.transcode:
            x = x - self.b_dec
        pre = F.linear(x, self.W_enc, self.b_enc)
        if cfg.activation == "binary":
            return (pre > self.log_threshold.exp()).to(pre.dtype)
        if cfg.activation == "topk_binary":
            v, idx = torch.topk(pre - self.log_threshold.exp(), cfg.k, dim=-1)
            v = (v > 0).to(pre.dtype)
        elif cfg.activation == "topk":
            v, idx = torch.topk(F.relu(pre), cfg.k, dim=-1)
        else:  # groupmax: the max of each of k contiguous groups
            v, idx = F.relu(pre).unflatten(-1, (cfg.k, -1)).max(dim=-1)
            idx = idx + torch.arange(0, cfg.num_latents, cfg.num_latents // cfg.k, device=idx.device)
        return torch.zeros_like(pre).scatter_(-1, idx, v)

    @torch.no_grad()
    def decode(self, code: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """code @ W_dec + b_dec, plus x @ W_skip^T with a skip connection."""
        y = code.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        if self.W_skip is not None:
            if x is None:
                raise ValueError("a coder with a skip connection needs its input x to decode")
            y = y + x.to(self.W_skip.dtype) @ self.W_skip.T
        return y


# --------------------------------------------------------------------------- load
def _as_ours(cfg: SparsifyConfig, tensors: dict[str, torch.Tensor], hookpoint: str, model: str | None) -> SparseCoder | None:
    """Our SparseCoder with the folder's weights, when it encodes identically (topk, topk_binary); else None."""
    skip = "W_skip" in tensors
    if cfg.activation not in ("topk", "topk_binary") or (skip and not cfg.transcode):
        return None
    ours_cfg = CoderConfig(
        kind="transcoder" if cfg.transcode else "sae",
        activation="binary" if cfg.binary else "topk",
        d_in=cfg.d_in,
        d_sae=cfg.num_latents,
        k=cfg.k,
        d_out=tensors["W_dec"].shape[1],
        skip=skip,
        normalize_decoder=cfg.normalize_decoder,
        hookpoint=hookpoint,
        model_name=model or "",
        **({"temperature": cfg.ste_temperature} if cfg.binary else {}),  # the STE's: binary coders only
    )
    ours = SparseCoder(ours_cfg)
    state = {
        "W_enc_t": tensors["encoder.weight"],
        "b_enc": tensors["encoder.bias"],
        "W_dec": tensors["W_dec"],
        "b_dec": tensors["b_dec"],
    }
    for name in ("W_skip", "log_threshold"):
        if name in tensors:
            state[name] = tensors[name]
    ours.load_state_dict(state)
    return ours.requires_grad_(False)


def load_sparsify(folder: str | Path, name: str | None = None, device: str | torch.device = "cpu") -> LoadedCoder:
    """Load a sparsify hookpoint folder for encoding; its name is its hookpoint, its model the root's `model`."""
    folder = Path(folder)
    if not is_sparsify_folder(folder):
        raise UserError(f"{folder} is not a sparsify coder folder (needs {SPARSIFY_CFG} and {SPARSIFY_WEIGHTS})")
    cfg = SparsifyConfig.read(folder)
    tensors = _read_tensors(folder, cfg)
    model = root_model_name(folder)
    ours = _as_ours(cfg, tensors, folder.name, model)
    module = None if ours is not None else SparsifyCoder(cfg, tensors)
    loaded = LoadedCoder(
        name=name or sparsify_coder_name(folder),
        folder=folder,
        hookpoint=folder.name,
        site="input" if cfg.transcode else "output",
        binary=cfg.binary,
        d_in=cfg.d_in,
        d_sae=cfg.num_latents,
        model_name=model,
        ours=ours,
        dense=module,
        module=module,
        source="sparsify",
        transcoder=bool(cfg.transcode),
    )
    return loaded.to(device)


# --------------------------------------------------------------------------- save
def sparsify_config(coder: SparseCoder) -> dict:
    """cfg.json for `coder` in sparsify's field order: main's fields, plus the binary branch's for binary coders."""
    cfg = coder.cfg
    out: dict = {
        "activation": "topk_binary" if cfg.activation == "binary" else "topk",
        "expansion_factor": max(1, cfg.d_sae // cfg.d_in),  # informational: num_latents decides
        "normalize_decoder": bool(cfg.normalize_decoder and not cfg.decoder_scale),  # a folded scale frees the rows
        "num_latents": cfg.d_sae,
        "k": cfg.k,
        "multi_topk": False,
        "skip_connection": bool(cfg.skip),
        "transcode": cfg.kind == "transcoder",
    }
    if cfg.activation == "binary":
        out.update(ste="sigmoid", ste_temperature=float(cfg.temperature), tied_decoder=False,
                   matryoshka=False, matryoshka_groups=5)
    return out


def save_sparsify(coder: SparseCoder, folder: str | Path) -> None:
    """Write `coder` as a sparsify folder (cfg.json + sae.safetensors), atomically like save_coder.

    sparsify's main branch loads the TopK ones, its `binary` branch the binary ones (activation
    topk_binary, sigmoid STE at our temperature, log_threshold), and both encode them as we do.
    """
    cfg = coder.cfg
    folder = Path(folder)
    if cfg.d_out != cfg.d_in:
        raise UserError(f"{folder}: sparsify's layout needs d_out = d_in, but this coder maps {cfg.d_in} -> {cfg.d_out}")
    as_saved = lambda t: t.detach().float().cpu().contiguous()  # noqa: E731
    state = {
        "encoder.weight": as_saved(coder.W_enc_t),
        "encoder.bias": as_saved(coder.b_enc),
        "W_dec": as_saved(coder.folded_decoder()),
        "b_dec": as_saved(coder.b_dec),
    }
    if coder.W_skip is not None:
        state["W_skip"] = as_saved(coder.W_skip)
    if coder.log_threshold is not None:
        state["log_threshold"] = as_saved(coder.log_threshold)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file(state, str(tmp / SPARSIFY_WEIGHTS), metadata={"format": "pt"})
    (tmp / SPARSIFY_CFG).write_text(json.dumps({**sparsify_config(coder), "d_in": cfg.d_in}) + "\n")
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)


def write_run_config(root: str | Path, coder: SparseCoder) -> Path:
    """ROOT/config.json: the part of sparsify's run config that names the model and hookpoint (load_sparsify reads `model`)."""
    cfg = coder.cfg
    body = {"sae": sparsify_config(coder), "model": cfg.model_name, "hookpoints": [cfg.hookpoint]}
    path = Path(root) / RUN_CONFIG
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(path)
    return path


__all__ = [
    "SparsifyConfig", "SparsifyCoder", "is_sparsify_folder", "is_sparsify_root", "load_sparsify", "save_sparsify",
    "sparsify_coder_name", "sparsify_hookpoint_folders", "write_run_config",
]
