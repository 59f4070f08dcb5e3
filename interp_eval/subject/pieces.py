"""Carry a large file to a machine that cannot download it, in pieces that each fit one transfer.

A GPU machine that reaches no network gets only what one transfer carries (64 MiB on the device
machines here, for the whole working tree); the packaged subject model's GGUF is 98 MB. `split` cuts
the file into numbered pieces, one folder each (`OUT/1/`, `OUT/2/`, ...), and writes beside every
piece the same manifest: the file's name, size and sha256, and each piece's. On the far machine,
`gather` is run once per transfer: it checks each piece it finds against the manifest and copies it
into a stash folder that outlives the transfer. Once every piece is stashed, `join` concatenates them
and checks the whole file's sha256, so a torn or mixed-up piece is named, never silently used.

    split(Path("model.gguf"), Path(".gpu/model"), max_bytes=30 * 2**20)   # here
    gather(Path(".gpu/model"), Path("/tmp/stash"))                          # there, once per transfer
    join(Path("/tmp/stash"), Path("/tmp/model.gguf"))                       # there, when nothing is missing

bench/device_model.py wraps these for the subject model (and converts the joined GGUF).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError

MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class Manifest:
    file: str
    size: int
    sha256: str
    pieces: list[dict]  # each {"name", "size", "sha256"}, in order

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        try:
            d = json.loads(path.read_text())
            return cls(d["file"], int(d["size"]), d["sha256"], list(d["pieces"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}: not a readable pieces manifest ({e})") from None

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"file": self.file, "size": self.size, "sha256": self.sha256, "pieces": self.pieces},
                                   indent=1))


def split(file: Path, out: Path, max_bytes: int) -> list[Path]:
    """Cut `file` into pieces of at most `max_bytes`, piece k in `out/k/` with the manifest; returns the folders."""
    if max_bytes <= 0:
        raise UserError(f"pieces of {max_bytes} bytes: the size must be positive")
    if not file.is_file():
        raise UserError(f"{file}: no such file to split")
    size = file.stat().st_size
    n = max(1, math.ceil(size / max_bytes))
    pieces, folders = [], []
    with open(file, "rb") as src:
        for k in range(1, n + 1):
            folder = out / str(k)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{file.name}.{k}-of-{n}"
            h, left = hashlib.sha256(), max_bytes
            with open(folder / name, "wb") as dst:
                while left and (chunk := src.read(min(_CHUNK, left))):
                    dst.write(chunk)
                    h.update(chunk)
                    left -= len(chunk)
            pieces.append({"name": name, "size": (folder / name).stat().st_size, "sha256": h.hexdigest()})
            folders.append(folder)
    manifest = Manifest(file.name, size, sha256_of(file), pieces)
    for folder in folders:
        manifest.write(folder / MANIFEST)
    return folders


def _manifests(src: Path) -> list[Path]:
    return sorted(src.rglob(MANIFEST)) if src.is_dir() else []


def gather(src: Path, stash: Path) -> list[str]:
    """Copy every piece found under `src` into `stash`, each checked against its manifest; returns the
    pieces still missing from the stash (empty: ready to join)."""
    found = _manifests(src)
    if not found and not (stash / MANIFEST).exists():
        raise UserError(f"{src}: no pieces manifest found (carry a folder written by split)")
    stash.mkdir(parents=True, exist_ok=True)
    for mpath in found:
        manifest = Manifest.read(mpath)
        if (stash / MANIFEST).exists():
            held = Manifest.read(stash / MANIFEST)
            if held.sha256 != manifest.sha256:
                raise UserError(f"{mpath}: its pieces are of another file than the ones stashed in {stash} "
                                f"({manifest.file} {manifest.sha256[:12]} vs {held.file} {held.sha256[:12]})")
        else:
            manifest.write(stash / MANIFEST)
        for piece in manifest.pieces:
            here = mpath.parent / piece["name"]
            if not here.exists() or _holds(stash / piece["name"], piece):
                continue
            if sha256_of(here) != piece["sha256"]:
                raise UserError(f"{here}: its sha256 does not match the manifest (a torn or altered piece)")
            tmp = stash / (piece["name"] + ".tmp")
            shutil.copyfile(here, tmp)
            os.replace(tmp, stash / piece["name"])
    return missing(stash)


def _holds(path: Path, piece: dict) -> bool:
    return path.exists() and path.stat().st_size == piece["size"] and sha256_of(path) == piece["sha256"]


def missing(stash: Path) -> list[str]:
    """The pieces of the stashed manifest not (or not intact) in `stash`."""
    manifest = Manifest.read(stash / MANIFEST)
    return [p["name"] for p in manifest.pieces if not _holds(stash / p["name"], p)]


def join(stash: Path, dest: Path) -> Path:
    """Concatenate the stashed pieces into `dest` (written whole, then renamed) and check its sha256."""
    manifest = Manifest.read(stash / MANIFEST)
    lacking = missing(stash)
    if lacking:
        raise UserError(f"{stash}: cannot join {manifest.file}: {len(lacking)} of {len(manifest.pieces)} pieces missing "
                        f"({', '.join(lacking)})")
    tmp = dest.with_name(dest.name + ".tmp")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as out:
        for p in manifest.pieces:
            with open(stash / p["name"], "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
    if tmp.stat().st_size != manifest.size or sha256_of(tmp) != manifest.sha256:
        tmp.unlink()
        raise UserError(f"{dest}: the joined file does not match the manifest's sha256 {manifest.sha256[:12]}")
    os.replace(tmp, dest)
    return dest


__all__ = ["MANIFEST", "Manifest", "gather", "join", "missing", "sha256_of", "split"]
