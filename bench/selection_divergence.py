"""Train one SAE twice from one activation cache, the encoder's "auto" selection forced to the bf16 candidates,
then to the dense product; print the first step whose codes differ and why (the row, both codes, and the dense
product's values around the k-th place). Two trainings must not depend on which branch auto times faster.

    python bench/selection_divergence.py RUN/activations/train-<key>/layers.9.mlp
"""
import sys
import tempfile

import torch

import interp_eval.coders.topk as topk
from interp_eval.subject.activations import ActivationCache
from interp_eval.coders.train import TrainConfig, train_coder
torch.set_num_threads(2)
folder = sys.argv[1]
cache = ActivationCache(folder)
cfg = TrainConfig(coder="sae", hookpoint="layers.9.mlp", k=32, expansion=8, tokens=150_000, batch_size=1024, optimizer="signum", checkpoint_every=10**9)
orig = topk.encoder_topk
found = []
def run(choice, ref=None):
    topk.ENCODE_PRECISION = "auto"
    topk.AUTO_CHOICES.clear()
    log = []
    def rec(x, W_t, bias, k):
        key = (x.device.type, x.shape[1], W_t.shape[0], k, torch.get_num_threads())
        c = topk.AUTO_CHOICES.setdefault(key, topk.AutoChoice()); c.candidates = choice
        v, i = orig(x, W_t, bias, k)
        s = len(log)
        log.append((i.clone(), v.clone()))
        if ref is not None and not found and s < len(ref) and (not torch.equal(ref[s][0], i) or not torch.equal(ref[s][1], v)):
            rows = ((ref[s][0] != i).any(1) | (ref[s][1] != v).any(1)).nonzero().squeeze(1)
            r = int(rows[0])
            full = torch.addmm(bias, x[r:r+1], W_t.T)[0]
            top = torch.topk(full, k + 2)
            found.append(s)
            print("first differing call", s, "rows", rows[:10].tolist(), "of", x.shape[0])
            print(" idx cand ", ref[s][0][r].tolist()); print(" idx dense", i[r].tolist())
            print(" val cand ", ref[s][1][r].tolist()); print(" val dense", v[r].tolist())
            print(" dense-product top k-1..k+2", top.values[k-2:].tolist(), top.indices[k-2:].tolist(), flush=True)
        return v, i
    topk.encoder_topk = rec
    import interp_eval.coders.coder as cm
    cm.encoder_topk = rec
    train_coder(tempfile.mkdtemp(), cfg, cache, "m", torch.device("cpu"), resume=False)
    return log
a = run(True)
b = run(False, ref=a)
print("calls", len(a), len(b), "first difference at", found)
