"""Write tests/fixtures/saelens/: one small coder of every SAELens architecture, saved by sae-lens itself, and
sae-lens's own encodings of one fixed batch.

Each coder is built by sae-lens's own class (d_in 16, 32 latents, k 4 where the architecture has one), every
parameter moved by seeded noise (nonzero biases and b_dec, positive thresholds that some pre-activations pass and
some do not), saved with sae-lens (`save_model`; the BatchTopK and Matryoshka training SAEs with
`save_inference_model`, which turns their batch top-k into the JumpReLU threshold they use at inference), loaded
back with `SAE.load_from_disk` and run on `inputs.safetensors` (`x` [16, 16]). Each fixture is a folder
`<architecture>/` holding the SAELens files and `expected.safetensors` (`dense` [16, 32]: sae-lens's `encode`).
`versions.json` records the sae-lens version.

    .venv/bin/python bench/make_saelens_fixtures.py      # rewrites the folder
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "saelens"
D_IN, LATENTS, K, ROWS = 16, 32, 4, 16
MODEL = "smollm2-135m-instruct"
SAE_HOOK = "blocks.1.hook_mlp_out"
TC_HOOKS = ("blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out")


def _builders():
    import sae_lens as sl
    from sae_lens.saes.sae import SAEMetadata

    sae_meta = lambda: SAEMetadata(model_name=MODEL, hook_name=SAE_HOOK)  # noqa: E731
    tc = dict(d_in=D_IN, d_sae=LATENTS, d_out=D_IN, apply_b_dec_to_input=False)  # sae-lens's transcoders refuse it
    tc_meta = lambda: SAEMetadata(model_name=MODEL, hook_name=TC_HOOKS[0], hook_name_out=TC_HOOKS[1])  # noqa: E731
    common = dict(d_in=D_IN, d_sae=LATENTS)
    return {
        "standard": lambda: sl.StandardSAE(sl.StandardSAEConfig(**common, metadata=sae_meta())),
        "gated": lambda: sl.GatedSAE(sl.GatedSAEConfig(**common, metadata=sae_meta())),
        "jumprelu": lambda: sl.JumpReLUSAE(sl.JumpReLUSAEConfig(**common, metadata=sae_meta())),
        "topk": lambda: sl.TopKSAE(sl.TopKSAEConfig(**common, k=K, metadata=sae_meta())),
        "batchtopk": lambda: sl.BatchTopKTrainingSAE(sl.BatchTopKTrainingSAEConfig(**common, k=K, metadata=sae_meta())),
        "matryoshka_batchtopk": lambda: sl.MatryoshkaBatchTopKTrainingSAE(
            sl.MatryoshkaBatchTopKTrainingSAEConfig(**common, k=K, matryoshka_widths=[8, 16, LATENTS], metadata=sae_meta())),
        "transcoder": lambda: sl.Transcoder(sl.TranscoderConfig(**tc, metadata=tc_meta())),
        "skip_transcoder": lambda: sl.SkipTranscoder(sl.SkipTranscoderConfig(**tc, metadata=tc_meta())),
        "jumprelu_transcoder": lambda: sl.JumpReLUTranscoder(sl.JumpReLUTranscoderConfig(**tc, metadata=tc_meta())),
    }


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "threshold" in name:  # positive, about where the pre-activations sit
                p.copy_(0.3 + 0.3 * noise.abs())
            elif name.startswith("log_threshold"):
                p.copy_((0.3 + 0.3 * noise.abs()).log())
            elif p.ndim == 1:
                p.add_(0.2 * noise)
            else:
                p.add_(0.1 * noise)
        for name, b in module.named_buffers():
            if "threshold" in name:  # BatchTopK's running threshold, its JumpReLU threshold at inference
                b.fill_(0.15)


def main() -> None:
    from safetensors.torch import save_file
    import sae_lens
    from sae_lens import SAE

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    x = torch.randn(ROWS, D_IN, generator=torch.Generator().manual_seed(0))
    save_file({"x": x}, str(OUT / "inputs.safetensors"))
    for i, (arch, build) in enumerate(_builders().items()):
        torch.manual_seed(i)
        sae = build()
        _perturb(sae, seed=100 + i)
        folder = OUT / arch
        (sae.save_inference_model if hasattr(sae, "save_inference_model") else sae.save_model)(folder)
        loaded = SAE.load_from_disk(folder)
        with torch.no_grad():
            dense = loaded.encode(x).float()
        save_file({"dense": dense.contiguous()}, str(folder / "expected.safetensors"))
        cfg = json.loads((folder / "cfg.json").read_text())
        print(f"{arch}: saved as {cfg.get('architecture')}, {int((dense != 0).sum(1).float().mean())} active latents a row on average")
    (OUT / "versions.json").write_text(json.dumps({"sae-lens": sae_lens.__version__}, indent=2) + "\n")


if __name__ == "__main__":
    main()
