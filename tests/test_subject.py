"""Subject model, hookpoints and corpus streams on the real packaged model and corpus."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from interp_eval.errors import UserError
from interp_eval.subject.corpus import CorpusConfig, iter_contexts, iter_documents, split_of, split_tokens, take_contexts
from interp_eval.subject.hookpoints import capture, splice_mlp, valid_hookpoints
from interp_eval.subject.model import load_subject_model


def test_packaged_model_knows_paris(subject):
    ids = subject.tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = subject.model.generate(ids, max_new_tokens=2, do_sample=False)
    assert "Paris" in subject.tokenizer.decode(out[0, ids.shape[1]:])
    assert (subject.model.config.num_hidden_layers, subject.d_model) == (30, 576)


def test_hookpoints_are_the_paper_names(subject):
    hps = valid_hookpoints(subject)
    mlps = [h for h in hps if h.endswith(".mlp")]
    assert mlps[0] == "layers.0.mlp" and mlps[-1] == "layers.29.mlp" and len(mlps) == 30
    assert hps[0] == "blocks.0.hook_resid_pre" and hps[-1] in ("layers.29", "blocks.29.hook_resid_post")
    assert {"layers.9", "layers.9.self_attn", "blocks.9.hook_resid_mid", "blocks.9.attn.hook_z"} <= set(hps)


def test_capture_gets_mlp_input_and_output_and_stops_after_the_deepest(subject):
    ids = torch.randint(0, 1000, (2, 16))
    later_called = []
    h = subject.model.model.layers[5].register_forward_hook(lambda *a: later_called.append(1))
    try:
        cap = capture(subject, ids, ["layers.1.mlp", "layers.3.mlp"])
    finally:
        h.remove()
    assert not later_called, "layers after the deepest hookpoint must not run"
    assert cap.inputs["layers.3.mlp"].shape == (2, 16, 576)
    mlp = subject.model.model.layers[3].mlp
    assert torch.allclose(mlp(cap.inputs["layers.3.mlp"]), cap.outputs["layers.3.mlp"], atol=1e-5)


def test_splice_replaces_the_mlp_output(subject):
    ids = torch.randint(0, 1000, (1, 8))
    with torch.no_grad():
        clean = subject.model(ids).logits
        with splice_mlp(subject, "layers.2.mlp", lambda i, o: o):
            same = subject.model(ids).logits
        with splice_mlp(subject, "layers.2.mlp", lambda i, o: torch.zeros_like(o)):
            ablated = subject.model(ids).logits
    assert torch.allclose(clean, same)
    assert not torch.allclose(clean, ablated)


def test_unknown_hookpoint_lists_valid_ones(subject):
    with pytest.raises(UserError, match="valid ones are .*layers.N.mlp"):
        capture(subject, torch.zeros(1, 4, dtype=torch.long), ["layers.30.mlp"])


def test_train_and_heldout_splits_are_disjoint_and_deterministic(subject):
    cfg = CorpusConfig(ctx_len=64)
    a = take_contexts(cfg, subject.tokenizer, "heldout", 64 * 20)
    b = take_contexts(cfg, subject.tokenizer, "heldout", 64 * 20)
    assert torch.equal(a, b) and a.shape == (20, 64)
    train = take_contexts(cfg, subject.tokenizer, "train", 64 * 200)
    held = {tuple(r.tolist()) for r in take_contexts(cfg, subject.tokenizer, "heldout", 64 * 200)}
    assert not held & {tuple(r.tolist()) for r in train}
    assert split_of("some document", 0.3) == split_of("some document", 0.3)


def test_local_txt_jsonl_parquet_datasets(tmp_path, subject):
    docs = [f"Document number {i} talks about topic {i % 7} at some length. " * 20 for i in range(30)]
    (tmp_path / "txt").mkdir()
    for i, d in enumerate(docs):
        (tmp_path / "txt" / f"{i}.txt").write_text(d)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs))
    pq.write_table(pa.table({"text": docs}), tmp_path / "d.parquet")
    seen = []
    for src in ("txt", "d.jsonl", "d.parquet"):
        cfg = CorpusConfig(dataset=str(tmp_path / src), ctx_len=32, heldout_fraction=0.0)
        seen.append(torch.stack(list(iter_contexts(cfg, subject.tokenizer, "train"))))
    assert seen[1].shape[0] > 10
    assert torch.equal(seen[1], seen[2])


def test_empty_or_short_corpus_is_a_clear_error(tmp_path, subject):
    (tmp_path / "empty.txt").write_text("   ")
    with pytest.raises(UserError, match="split is empty"):
        take_contexts(CorpusConfig(dataset=str(tmp_path / "empty.txt")), subject.tokenizer, "train", 1024)
    (tmp_path / "short.txt").write_text("just a few words here")
    with pytest.raises(UserError, match="has only"):
        take_contexts(CorpusConfig(dataset=str(tmp_path / "short.txt"), ctx_len=4, heldout_fraction=0.0), subject.tokenizer, "train", 4096)
    (tmp_path / "bad.jsonl").write_text('{"nottext": 1}\n')
    with pytest.raises(UserError, match="bad.jsonl:1"):
        take_contexts(CorpusConfig(dataset=str(tmp_path / "bad.jsonl")), subject.tokenizer, "train", 64)


def test_split_tokens_counts_what_iter_contexts_yields(tmp_path, subject):
    cfg = CorpusConfig()
    assert split_tokens(cfg, subject.tokenizer, "train") == 827_904  # the packaged train split at ctx 256
    assert split_tokens(cfg, subject.tokenizer, "train", 5_000) == 4_864  # stops at the limit, in whole contexts
    docs = [f"Document {i} says something about topic {i % 5}. " * 30 for i in range(12)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs))
    local = CorpusConfig(dataset=str(tmp_path / "d.jsonl"), ctx_len=32)
    for split in ("train", "heldout"):
        assert split_tokens(local, subject.tokenizer, split) == 32 * len(list(iter_contexts(local, subject.tokenizer, split)))
    assert split_tokens(CorpusConfig(dataset="no-such-org/streamed-dataset"), subject.tokenizer, "train") is None


def test_missing_model_or_dataset_offline_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="not found locally"):
        load_subject_model("no-such-org/no-such-model", device="cpu")
    (tmp_path / "m").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        load_subject_model(str(tmp_path / "m"), device="cpu")
    with pytest.raises(UserError, match="not a local path"):
        list(iter_documents(CorpusConfig(dataset="no-such-org/no-such-dataset")))


_FAULTS_SCRIPT = """
import resource, sys, torch
from interp_eval.subject.allocator import reuse_freed_memory
from interp_eval.subject.hookpoints import capture, valid_hookpoints
from interp_eval.subject.model import load_subject_model
subject = load_subject_model(None, device="cpu")
assert reuse_freed_memory() == (sys.argv[1] == "on")
ids = torch.randint(0, 1000, (128, 64), generator=torch.Generator().manual_seed(0))
faults = []
for _ in range(6):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    capture(subject, ids, ["layers.0.mlp"])
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(min(faults[2:]))
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="glibc's allocator only")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    """The subject model's forward pass, one batch six times: with glibc's defaults each batch faults
    its large temporaries in again; with reuse_freed_memory a batch after the first two reuses freed
    blocks. The batch (8,192 tokens, to layer 0) has temporaries above 32 MiB (the MLP's hidden state,
    48 MiB), the most glibc's adaptive mmap threshold ever rises to, so the default maps them afresh on
    every batch; smaller ones it learns to keep in the heap after a few batches (16 x 64 tokens went
    from 221k faults to 6k by the sixth). This measures the forward itself, not a synthetic
    allocation: a lone 100 MiB block's reuse depended on the heap's layout (which imports ran first)."""
    import os
    import subprocess
    import sys

    def faults(mode: str) -> int:
        env = {**os.environ, "INTERP_EVAL_REUSE_MEMORY": "1" if mode == "on" else "0"}
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT, mode], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        return int(out.stdout.split()[-1])

    off, on = faults("off"), faults("on")
    assert off >= 10_000
    assert on * 20 < off, (on, off)
