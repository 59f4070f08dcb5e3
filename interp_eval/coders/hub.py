"""Coders by name: `--coder hf:OWNER/REPO[/SUBFOLDER]` and `--coder saelens:RELEASE/SAE_ID`.

Both resolve through the Hugging Face cache (huggingface_hub's own, so `HF_HOME`/`HF_HUB_CACHE` apply): a cached
coder loads offline (`HF_HUB_OFFLINE=1`), an uncached one downloads when the hub can be reached, and otherwise the
command stops in one line naming the download command, before anything is written.

- `hf:OWNER/REPO[/SUBFOLDER]`: a repository (or a folder of it) holding a SAELens folder, a sparsify folder or a
  sparsify root, e.g. `hf:EleutherAI/sae-SmolLM2-135M-64x/layers.9.mlp`. Only that folder is fetched. The coder
  is named `REPO[.SUBFOLDER]` (slashes as dots), as a local sparsify root's coders are `<root>.<hookpoint>`.
- `saelens:RELEASE/SAE_ID`: an entry of sae-lens's pretrained registry (`SAE.from_pretrained(release, sae_id)`),
  e.g. `saelens:gemma-scope-2b-pt-res/layer_12/width_16k/average_l0_82`. sae-lens loads it with its own converter
  for the release's format, and it is saved once as a SAELens folder under the user cache
  (`<cache>/coders/saelens/`), which every later stage reads like any SAELens folder. Named `RELEASE.SAE_ID`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..errors import UserError
from ..paths import cache_dir

HF_PREFIX = "hf:"
SAELENS_PREFIX = "saelens:"


def is_hub_spec(spec: str | Path) -> bool:
    return str(spec).startswith((HF_PREFIX, SAELENS_PREFIX))


def _name(*parts: str) -> str:
    return ".".join(p.strip("/").replace("/", ".") for p in parts if p)


def _download_hint(repo: str, sub: str) -> str:
    include = f" --include '{sub}/*'" if sub else ""
    return f"huggingface-cli download {repo}{include}"


def resolve_hf(spec: str) -> tuple[str, Path]:
    """(coder name, local folder) of `hf:OWNER/REPO[/SUBFOLDER]`, from the cache or the hub."""
    body = spec[len(HF_PREFIX):].strip("/")
    parts = body.split("/")
    if len(parts) < 2 or not all(parts):
        raise UserError(f"--coder {spec}: write hf:OWNER/REPO or hf:OWNER/REPO/SUBFOLDER")
    repo, sub = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import snapshot_download

    patterns = [f"{sub}/*", "config.json"] if sub else None
    try:
        root = Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as exc:  # offline and not cached, unknown repo, no network: all one line
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(
            f"--coder {spec}: not in the Hugging Face cache and not downloadable now ({reason}); "
            f"download it where the hub can be reached: {_download_hint(repo, sub)}"
        ) from None
    folder = root / sub if sub else root
    if not folder.is_dir():
        raise UserError(f"--coder {spec}: the cached {repo} has no folder {sub!r}; download it: {_download_hint(repo, sub)}")
    return _name(parts[1], sub), folder


def _registry():
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def resolve_saelens(spec: str) -> tuple[str, Path]:
    """(coder name, local SAELens folder) of `saelens:RELEASE/SAE_ID`, converted once into the user cache."""
    body = spec[len(SAELENS_PREFIX):]
    release, _, sae_id = body.partition("/")
    if not release or not sae_id:
        raise UserError(f"--coder {spec}: write saelens:RELEASE/SAE_ID (a release of sae-lens's pretrained registry)")
    registry = _registry()
    if release not in registry:
        close = sorted(r for r in registry if release.split("-")[0] in r)[:5]
        raise UserError(f"--coder {spec}: sae-lens has no release {release!r}" + (f" (similar: {', '.join(close)})" if close else ""))
    entry = registry[release]
    if sae_id not in entry.saes_map:
        ids = list(entry.saes_map)
        raise UserError(f"--coder {spec}: release {release} has no SAE {sae_id!r} (it has {len(ids)}, e.g. {', '.join(ids[:3])})")
    name = _name(release, sae_id)
    target = cache_dir() / "coders" / "saelens" / re.sub(r"[^A-Za-z0-9._-]", "_", name)
    if (target / "cfg.json").exists():
        return name, target
    from sae_lens import SAE

    from .saelens import register_architectures

    register_architectures()
    try:
        sae = SAE.from_pretrained(release, sae_id, device="cpu")
    except Exception as exc:
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise UserError(
            f"--coder {spec}: sae-lens could not load it from the Hugging Face cache or the hub ({reason}); "
            f"download it where the hub can be reached: {_download_hint(entry.repo_id, entry.saes_map[sae_id])}"
        ) from None
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    sae.save_model(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)
    return name, target


def resolve_spec(spec: str) -> tuple[str, Path]:
    """(coder name, local folder) of a hub spec."""
    return resolve_hf(spec) if spec.startswith(HF_PREFIX) else resolve_saelens(spec)
