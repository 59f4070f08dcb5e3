"""Tiny random models of every common family, built offline from transformers' config classes (hookpoint and
logit-lens tests)."""

from __future__ import annotations

import torch

from interp_eval.subject.model import SubjectModel

_COMMON = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
               num_key_value_heads=2, head_dim=12, max_position_embeddings=64)

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "gpt2", "gpt_neox")


def tiny_config(family: str):
    import transformers as t

    if family == "gpt2":
        return t.GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0)
    if family == "gpt_neox":
        return t.GPTNeoXConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                               num_attention_heads=4, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
    cls = {"llama": t.LlamaConfig, "mistral": t.MistralConfig, "qwen2": t.Qwen2Config, "qwen3": t.Qwen3Config,
           "gemma2": t.Gemma2Config, "gemma3": t.Gemma3TextConfig}[family]
    return cls(**_COMMON)


def tiny_subject(family: str, tokenizer=None) -> SubjectModel:
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(family), dtype=torch.float32).eval()
    return SubjectModel(name=f"tiny-{family}", model=model, tokenizer=tokenizer, device=torch.device("cpu"))
