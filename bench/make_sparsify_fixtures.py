"""Write tests/fixtures/sparsify/: small coders saved by EleutherAI sparsify itself, and sparsify's own encodings.

Runs in sparsify's virtualenv (.venv-bench: eai-sparsify from PyPI, the `main` branch), in two phases,
each a subprocess of this script:

- main phase (the installed eai-sparsify): a TopK SAE, a skip transcoder, a groupmax SAE, and a copy of
  the TopK SAE whose cfg.json lacks `activation` and `transcode` (as configs written by older
  sparsify do); plus our TopK SAE and skip transcoder written by `interp_eval`'s `save_sparsify`.
- binary phase (sparsify's `binary` branch, not on PyPI: `git archive` of the mirror, first on
  PYTHONPATH): a topk_binary SAE and transcoder, a dense `binary` SAE; plus our binary SAE and binary
  skip transcoder written by `save_sparsify`.

- resid phase (the installed eai-sparsify): a TopK SAE at the block output `layers.1`, sparsify's default kind of
  hookpoint, at the packaged model's width (d_in 576, 64 latents, k 8), so the suite can mine it on the real model;
  its own input batch is `inputs_resid.safetensors` (`x` [16, 576]).

Every other coder is built by sparsify's (or our) own SparseCoder with d_in 16, 32 latents, k 4, and all
parameters moved by seeded noise (nonzero biases and b_dec, thresholds that some top-k entries pass
and some do not), saved (sparsify's `save_to_disk`, or ours), loaded back with sparsify's
`load_from_disk` and run on one fixed seeded batch `inputs.safetensors` (`x` [16, 16]). Each
fixture is a sparsify root `<variant>/layers.1.mlp/` next to `<variant>/expected.safetensors`:
`dense` [16, 32], sparsify's `encode` scattered into a dense code, and `decoded` [16, 16], sparsify's
decode of that code plus the skip term (sparsify's forward output). `versions.json` records the
sparsify versions.

    .venv-bench/bin/python bench/make_sparsify_fixtures.py             # every phase, rewrites the folder
    .venv-bench/bin/python bench/make_sparsify_fixtures.py --only-resid  # (re)writes the resid phase's fixture only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path("/work/.mirror/EleutherAI+sparsify/repo")
OUT = ROOT / "tests" / "fixtures" / "sparsify"
HOOKPOINT = "layers.1.mlp"
D_IN, LATENTS, K, ROWS = 16, 32, 4, 16

# variant -> (phase, how it is built): ("sparsify", SparseCoderConfig kwargs) or ("ours", (kind, activation))
VARIANTS: dict[str, tuple[str, str, object]] = {
    "sae_topk": ("main", "sparsify", dict(activation="topk")),
    "tc_skip": ("main", "sparsify", dict(activation="topk", transcode=True, skip_connection=True)),
    "sae_groupmax": ("main", "sparsify", dict(activation="groupmax")),
    "ours_sae": ("main", "ours", ("sae", "topk")),
    "ours_tc": ("main", "ours", ("transcoder", "topk")),
    "sae_topk_binary": ("binary", "sparsify", dict(activation="topk_binary")),
    "tc_topk_binary": ("binary", "sparsify", dict(activation="topk_binary", transcode=True, skip_connection=True)),
    "sae_binary": ("binary", "sparsify", dict(activation="binary")),
    "ours_bae": ("binary", "ours", ("sae", "binary")),
    "ours_btc": ("binary", "ours", ("transcoder", "binary")),
}
OLD_CONFIG = ("sae_topk", "sae_topk_old_cfg")  # copied after the main phase, `activation`/`transcode` removed
RESID = "resid_sae_topk"  # the resid phase's variant, at RESID_HOOKPOINT
RESID_HOOKPOINT, RESID_D_IN, RESID_LATENTS, RESID_K = "layers.1", 576, 64, 8


# --------------------------------------------------------------------------- inside sparsify's environment
def _perturb(named_params, seed: int) -> None:
    """Move every parameter by seeded noise; thresholds to exp(N(log 0.8, 0.5)), so some top-k entries pass them."""
    import math

    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in named_params:
            noise = torch.randn(p.shape, generator=gen)
            if name == "log_threshold":
                p.copy_(math.log(0.8) + 0.5 * noise)
            else:
                p.add_(0.2 * noise)


def _sparsify_coder(kwargs: dict, seed: int):
    import torch
    from sparsify import SparseCoder, SparseCoderConfig

    torch.manual_seed(seed)
    coder = SparseCoder(D_IN, SparseCoderConfig(num_latents=LATENTS, k=K, **kwargs))
    _perturb(coder.named_parameters(), seed)
    return coder


def _our_coder(kind: str, activation: str, seed: int):
    from interp_eval.coders.coder import CoderConfig, SparseCoder

    cfg = CoderConfig(kind, activation, D_IN, LATENTS, K, hookpoint=HOOKPOINT, model_name="fixture-model")
    coder = SparseCoder(cfg, seed=seed)
    _perturb(coder.named_parameters(), seed)
    return coder


def _expected(folder: Path, x):
    """sparsify's own encoding of x (as a dense code) and its decode of it, after loading `folder` with sparsify."""
    import torch
    from sparsify import SparseCoder

    coder = SparseCoder.load_from_disk(folder)
    with torch.no_grad():
        acts, indices, _ = coder.encode(x)
        if indices is None:  # dense `binary`: the code is already dense; decoded as sparsify's forward does
            dense = acts
            decoded = acts @ coder.W_dec + coder.b_dec
        else:
            dense = torch.zeros(x.shape[0], coder.num_latents).scatter_(-1, indices, acts.float())
            decoded = coder.decode(acts, indices)
        if coder.W_skip is not None:
            decoded = decoded + x @ coder.W_skip.mT
    return {"dense": dense.float().contiguous(), "decoded": decoded.float().contiguous()}


def run_resid_phase(out: Path) -> None:
    """sparsify's TopK SAE at the block output, at the real model's width, and its encoding of its own input batch."""
    import torch
    from safetensors.torch import save_file
    from sparsify import SparseCoder, SparseCoderConfig

    x = torch.randn(ROWS, RESID_D_IN, generator=torch.Generator().manual_seed(4321)).contiguous()
    save_file({"x": x}, str(out / "inputs_resid.safetensors"))
    torch.manual_seed(len(VARIANTS))
    coder = SparseCoder(RESID_D_IN, SparseCoderConfig(num_latents=RESID_LATENTS, k=RESID_K, activation="topk"))
    _perturb(coder.named_parameters(), len(VARIANTS))
    folder = out / RESID / RESID_HOOKPOINT
    coder.save_to_disk(folder)
    save_file(_expected(folder, x), str(out / RESID / "expected.safetensors"))
    print(f"resid: {RESID}")


def run_phase(phase: str, out: Path) -> None:
    from safetensors.torch import load_file, save_file

    if phase == "resid":
        return run_resid_phase(out)

    sys.path.insert(0, str(ROOT))  # interp_eval, for save_sparsify
    from interp_eval.coders.sparsify import save_sparsify

    x = load_file(str(out / "inputs.safetensors"))["x"]
    for seed, (variant, (ph, source, spec)) in enumerate(VARIANTS.items()):
        if ph != phase:
            continue
        folder = out / variant / HOOKPOINT
        if source == "sparsify":
            _sparsify_coder(spec, seed).save_to_disk(folder)
        else:
            save_sparsify(_our_coder(*spec, seed=seed), folder)
        save_file(_expected(folder, x), str(out / variant / "expected.safetensors"))
        print(f"{phase}: {variant}")
    if phase == "main":
        src, dst = OLD_CONFIG
        shutil.copytree(out / src, out / dst)
        cfg_path = out / dst / HOOKPOINT / "cfg.json"
        cfg = json.loads(cfg_path.read_text())
        for key in ("activation", "transcode"):
            cfg.pop(key)
        cfg_path.write_text(json.dumps(cfg))
        save_file(_expected(out / dst / HOOKPOINT, x), str(out / dst / "expected.safetensors"))
        print(f"{phase}: {dst}")
    import sparsify

    (out / f"version-{phase}.json").write_text(json.dumps({"version": getattr(sparsify, "__version__", None),
                                                          "path": str(Path(sparsify.__file__).parent)}))


# --------------------------------------------------------------------------- the driver
def _record_resid(out: Path) -> None:
    """versions.json's entry for the resid phase: the installed sparsify that wrote it."""
    import sparsify

    path = out / "versions.json"
    versions = json.loads(path.read_text()) if path.exists() else {}
    versions["resid"] = {"package": f"eai-sparsify {getattr(sparsify, '__version__', None)} (PyPI)",
                         "source_sha256_16": _source_hash(Path(sparsify.__file__).parent),
                         "command": ".venv-bench/bin/python bench/make_sparsify_fixtures.py --only-resid"}
    path.write_text(json.dumps(versions, indent=2) + "\n")


def _source_hash(package_dir: Path) -> str:
    """sha256 of the package's sparse_coder.py, fused_encoder.py and config.py: what encodes and saves."""
    h = hashlib.sha256()
    for name in ("sparse_coder.py", "fused_encoder.py", "config.py"):
        h.update((package_dir / name).read_bytes())
    return h.hexdigest()[:16]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--phase", choices=["main", "binary", "resid"], help=argparse.SUPPRESS)
    p.add_argument("--only-resid", action="store_true", help="write the resid phase's fixture only, leaving the others")
    p.add_argument("--mirror", type=Path, default=MIRROR, help="bare git mirror of EleutherAI/sparsify (for the binary branch)")
    a = p.parse_args()
    if a.phase:
        run_phase(a.phase, a.out)
        return
    env = {**os.environ, "SPARSIFY_DISABLE_TRITON": "1"}
    if a.only_resid:
        shutil.rmtree(a.out / RESID, ignore_errors=True)
        subprocess.run([sys.executable, __file__, "--phase", "resid", "--out", str(a.out)], check=True, env=env)
        _record_resid(a.out)
        return
    import torch
    from safetensors.torch import save_file

    out = a.out
    readme = (out / "README.md").read_text() if (out / "README.md").exists() else None
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    if readme is not None:
        (out / "README.md").write_text(readme)
    save_file({"x": torch.randn(ROWS, D_IN, generator=torch.Generator().manual_seed(1234)).contiguous()},
              str(out / "inputs.safetensors"))
    subprocess.run([sys.executable, __file__, "--phase", "main", "--out", str(out)], check=True, env=env)
    subprocess.run([sys.executable, __file__, "--phase", "resid", "--out", str(out)], check=True, env=env)
    binary_commit = subprocess.run(["git", "-C", str(a.mirror), "rev-parse", "binary"], check=True,
                                   capture_output=True, text=True).stdout.strip()
    main_commit = subprocess.run(["git", "-C", str(a.mirror), "rev-parse", "main"], check=True,
                                 capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tree:
        archive = subprocess.run(["git", "-C", str(a.mirror), "archive", binary_commit], check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", tree], input=archive.stdout, check=True)
        binary_hash = _source_hash(Path(tree) / "sparsify")
        benv = {**env, "PYTHONPATH": os.pathsep.join([tree, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        subprocess.run([sys.executable, __file__, "--phase", "binary", "--out", str(out)], check=True, env=benv)
    phases = {ph: json.loads((out / f"version-{ph}.json").read_text()) for ph in ("main", "binary")}
    for ph in phases:
        (out / f"version-{ph}.json").unlink()
    versions = {
        "main": {"package": f"eai-sparsify {phases['main']['version']} (PyPI)",
                 "source_sha256_16": _source_hash(Path(phases["main"]["path"])),
                 "mirror_main_commit": main_commit},
        "binary": {"commit": binary_commit, "source_sha256_16": binary_hash},
        "torch": torch.__version__,
        "command": ".venv-bench/bin/python bench/make_sparsify_fixtures.py",
    }
    (out / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
    _record_resid(out)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total / 1024:.0f} KiB): {json.dumps(versions)}")


if __name__ == "__main__":
    main()
