"""interp-eval: train binary and continuous sparse coders, then mine, explain and score their latents.

Importing the package is light: it does not import sae-lens. To load interp-eval's binary and
transcoder folders with `sae_lens.SAE.load_from_disk` yourself, call `register_architectures()` once;
interp-eval's own loaders register them when they need sae-lens.
"""

__version__ = "0.1.0"


def register_architectures() -> None:
    """Register interp-eval's architectures (binary_topk, *_transcoder) with sae-lens' class registry."""
    from .coders.saelens import register_architectures as register

    register()
