"""Finding the coders a pass encodes with, and checking they fit its subject model.

A run's coders are the SAELens folders under RUN/coders/ plus any extra folders given; each must
encode the subject model, or its random-model control `random:<model>:<seed>` (rebuilt from the
subject's config, see subject/model.py), at a hookpoint the model has, with the model's width.
`group_by_subject` groups them by that model so one pass over the tokens feeds them all. With
`--allow-model-mismatch` a coder of another trained model (a base-model coder on the instruct subject)
encodes the subject's activations instead, with a warning; `coder_models` says which, for the records.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from ..artifacts import RunDir
from ..errors import UserError
from ..subject.hookpoints import canonical, resolve_site, site_dim
from ..subject.model import RandomModelSpec, SubjectModel, parse_random_spec, random_subject_model
from .hub import is_hub_spec, resolve_spec
from .saelens import SAE_CFG, SAE_WEIGHTS, LoadedCoder, is_saelens_folder
from .sparsify import SPARSIFY_WEIGHTS, is_sparsify_folder, sparsify_coder_name, sparsify_hookpoint_folders

log = logging.getLogger(__name__)


def _extra_coders(path: str | Path) -> list[tuple[str, Path]]:
    """(name, folder) of the coders one --coder PATH names: a SAELens folder (named after it), a sparsify
    hookpoint folder, or a sparsify root (one coder per hookpoint folder; each named `<root>.<hookpoint>`); or one
    of these by name from the Hugging Face hub (`hf:OWNER/REPO[/SUBFOLDER]`, `saelens:RELEASE/SAE_ID`, coders/hub.py)."""
    name = None
    if is_hub_spec(path):
        name, folder = resolve_spec(str(path))
    else:
        folder = Path(path).expanduser()
    if not folder.exists():
        raise UserError(f"--coder {path}: no such folder")
    if is_saelens_folder(folder):
        return [(name or folder.name, folder)]
    if is_sparsify_folder(folder):
        return [(name or sparsify_coder_name(folder), folder)]
    hookpoints = sparsify_hookpoint_folders(folder)
    if not hookpoints:
        raise UserError(
            f"--coder {path}: not a coder folder (a SAELens folder holds {SAE_CFG} and {SAE_WEIGHTS}, a sparsify folder "
            f"{SAE_CFG} and {SPARSIFY_WEIGHTS}, a sparsify root one sparsify folder per hookpoint)"
        )
    return [(f"{name}.{sub.name}" if name else sparsify_coder_name(sub), sub) for sub in hookpoints]


def coder_folders(rd: RunDir, extra: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """(name, folder) of every coder of the run plus those of the `extra` paths (SAELens folders, sparsify
    folders or roots, see `_extra_coders`); names must be unique."""
    found: list[tuple[str, Path]] = []
    if rd.coders_dir.is_dir():
        for folder in sorted(p for p in rd.coders_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not is_saelens_folder(folder):
                raise UserError(
                    f"{folder} is not a SAELens coder folder (needs {SAE_CFG} and {SAE_WEIGHTS}): "
                    "remove it or re-run `interp-eval train`"
                )
            found.append((folder.name, folder))
    for path in extra:
        found.extend(_extra_coders(path))
    if not found:
        raise UserError(
            f"no coders to mine: {rd.coders_dir} holds none and no --coder PATH was given "
            "(run `interp-eval train` first or pass a SAELens or sparsify folder with --coder)"
        )
    names = [n for n, _ in found]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(
            f"two coders are both named {dup[0]!r} (a coder's name is its folder's, a sparsify coder's "
            "<root>.<hookpoint>): rename one folder"
        )
    return found


def _same_model(a: str, b: str) -> bool:
    norm = lambda s: s.strip().rstrip("/").split("/")[-1].lower()  # noqa: E731
    return norm(a) == norm(b)


@dataclass
class SubjectGroup:
    """The coders that encode one subject model's activations, and the hookpoints they read."""

    seed: int | None  # None: the --model subject itself; else its random-model control with this seed
    coders: list[LoadedCoder]
    hookpoints: list[str]  # in execution order; the forward pass stops after the last
    mismatched: frozenset[str] = frozenset()  # coders trained on another model, run on this one (--allow-model-mismatch)

    def model_name(self, subject: SubjectModel) -> str:
        return subject.name if self.seed is None else RandomModelSpec(base=subject.name, seed=self.seed).name

    def model(self, subject: SubjectModel) -> SubjectModel:
        return subject if self.seed is None else random_subject_model(subject, self.seed)


@dataclass(frozen=True)
class CoderModel:
    """The model a coder records it was trained on, the model a pass encodes with it, and whether they differ."""

    trained_on: str | None  # the coder's metadata.model_name (None: it records none)
    mined_on: str  # the subject model, or its random-model control
    model_mismatch: bool  # trained_on names another model, allowed by --allow-model-mismatch


def coder_models(groups: list[SubjectGroup], subject: SubjectModel) -> dict[str, CoderModel]:
    """{coder name: CoderModel} of every coder of `groups` (from `group_by_subject`)."""
    return {c.name: CoderModel(c.model_name, g.model_name(subject), c.name in g.mismatched) for g in groups for c in g.coders}


def _random_spec(model_name: str) -> RandomModelSpec | None:
    try:
        return parse_random_spec(model_name)
    except UserError:  # e.g. random:random:..., which no subject matches
        return None


def group_by_subject(coders: list[LoadedCoder], subject: SubjectModel, allow_model_mismatch: bool = False) -> list[SubjectGroup]:
    """Coders grouped by the model they encode: `subject` first, then its random-model controls by seed.

    A coder's model must be `subject` or `random:<subject>:<seed>`; any other is refused, since its
    activations cannot come from this pass. With `allow_model_mismatch`, a coder of another trained model
    (e.g. the base model of an instruct subject) encodes the subject's activations instead, with a warning,
    and is listed in its group's `mismatched`; its width and hookpoint must still fit, and a random-model
    control's coder still matches only its own base.
    """
    subject_is_random = parse_random_spec(subject.name) is not None
    by_seed: dict[int | None, list[LoadedCoder]] = {}  # None: the subject itself
    mismatched: set[str] = set()
    for c in coders:
        name = str(c.model_name or "")
        spec = _random_spec(name)
        mismatch = False
        if not name or _same_model(name, subject.name):
            seed = None
        elif spec is not None and not subject_is_random and _same_model(spec.base, subject.name):
            seed = spec.seed
        elif spec is None and allow_model_mismatch:
            seed, mismatch = None, True
        else:
            hint = "" if spec else ", or --allow-model-mismatch to run it on the subject model anyway,"
            raise UserError(
                f"coder {c.folder} was trained on model {name!r} but the subject model is {subject.name!r}: "
                f"pass --model {spec.base if spec else name}{hint} or leave this coder out"
            )
        _check_coder(c, subject)  # a random copy has the subject's architecture
        if mismatch:
            log.warning("coder %s was trained on %s but runs on the subject model %s (--allow-model-mismatch)",
                        c.name, name, subject.name)
            mismatched.add(c.name)
        by_seed.setdefault(seed, []).append(c)
    return [
        SubjectGroup(seed, by_seed[seed], sorted({c.hookpoint for c in by_seed[seed]}, key=lambda h: resolve_site(subject, h).order),
                     frozenset(c.name for c in by_seed[seed] if c.name in mismatched))
        for seed in sorted(by_seed, key=lambda s: -1 if s is None else s)
    ]


def _check_coder(coder: LoadedCoder, subject: SubjectModel) -> None:
    """The coder's hookpoint exists in `subject` and its width fits. Its hookpoint becomes our name for the site and
    its `site` the side it really reads (blocks.N.hook_mlp_out -> layers.N.mlp, output; blocks.N.hook_resid_pre ->
    layers.N, input), so coders named in either scheme share their capture."""
    where = f"coder {coder.folder}"
    try:
        coder.hookpoint, site = canonical(subject, coder.hookpoint, coder.site)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    coder.site = site.side
    width = site_dim(subject, site)
    if coder.d_in != width:
        raise UserError(
            f"{where}: d_in {coder.d_in} does not match the width {width} of {coder.hookpoint} ({site.kind}) in {subject.name}"
        )


def fingerprint(folder: Path) -> str:
    """A short hash of a coder folder's config and weight file (size and time): it changes when the coder is retrained."""
    h = hashlib.sha256((folder / SAE_CFG).read_bytes())
    weights = folder / SAE_WEIGHTS
    st = (weights if weights.exists() else folder / SPARSIFY_WEIGHTS).stat()  # a sparsify folder's: sae.safetensors
    h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


__all__ = ["CoderModel", "SubjectGroup", "coder_folders", "coder_models", "fingerprint", "group_by_subject"]
