"""Reconstruction evaluation on held-out tokens, with the coder spliced into the model.

Per coder: FVU (over the whole eval set), L0, dead and ultra-high-frequency latent fractions, CE
loss increase in nats (spliced - clean) and next-token top-1 accuracy decrease (clean - spliced).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..subject.hookpoints import resolve_site, splice_input, splice_output
from ..subject.model import SubjectModel
from ..progress import progress_bar
from .coder import SparseCoder

UHF_THRESHOLDS = (0.01, 0.1)


@dataclass
class _Stats:
    d_sae: int
    sq_err: float = 0.0
    sum_y: torch.Tensor | None = None
    sum_y2: float = 0.0
    n: int = 0
    l0_sum: float = 0.0
    fires: torch.Tensor = field(default=None)  # type: ignore[assignment]
    nll: float = 0.0
    correct: int = 0
    n_pred: int = 0

    def __post_init__(self):
        self.fires = torch.zeros(self.d_sae, dtype=torch.long)

    def add_recon(self, y: torch.Tensor, y_hat: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> None:
        y, y_hat = y.double(), y_hat.double()
        self.sq_err += float((y - y_hat).pow(2).sum())
        s = y.sum(0).cpu()
        self.sum_y = s if self.sum_y is None else self.sum_y + s
        self.sum_y2 += float(y.pow(2).sum())
        self.n += y.shape[0]
        active = values > 0
        self.l0_sum += float(active.sum())
        self.fires += torch.bincount(indices[active].cpu(), minlength=self.d_sae)

    def fvu(self) -> float:
        total = self.sum_y2 - float(self.sum_y.pow(2).sum()) / self.n
        return self.sq_err / total


@torch.no_grad()
def _nll_and_correct(subject: SubjectModel, input_ids: torch.Tensor, chunk: int = 2048) -> tuple[float, int, int]:
    """Summed next-token NLL, correct top-1 count and prediction count; logits made a chunk at a time."""
    with subject.autocast:
        hidden = subject.model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state
    head = subject.model.get_output_embeddings()
    h = hidden[:, :-1].reshape(-1, hidden.shape[-1])
    targets = input_ids[:, 1:].reshape(-1)
    nll, correct = 0.0, 0
    for i in range(0, h.shape[0], chunk):
        logits = head(h[i : i + chunk]).float()
        t = targets[i : i + chunk]
        nll += float(F.cross_entropy(logits, t, reduction="sum"))
        correct += int((logits.argmax(-1) == t).sum())
    return nll, correct, int(targets.numel())


@torch.no_grad()
def evaluate_reconstruction(
    subject: SubjectModel, hookpoint: str, coders: dict[str, SparseCoder], contexts: torch.Tensor, batch_contexts: int = 16,
) -> list[dict]:
    """One row per coder: the reconstruction metrics on `contexts` ([n, ctx] held-out token ids)."""
    clean = _Stats(d_sae=1)
    stats = {name: _Stats(d_sae=c.cfg.d_sae) for name, c in coders.items()}
    batches = [contexts[i : i + batch_contexts].to(subject.device) for i in range(0, len(contexts), batch_contexts)]
    with progress_bar(f"recon eval {hookpoint}", total=len(batches) * (1 + len(coders))) as bar:
        for ids in batches:
            nll, correct, n = _nll_and_correct(subject, ids)
            clean.nll += nll
            clean.correct += correct
            clean.n_pred += n
            bar.advance(1)
            for name, coder in coders.items():
                st = stats[name]

                def recon(x, shape, coder=coder, st=st, target=None):
                    x = x.reshape(-1, x.shape[-1]).float()
                    y = x if target is None else target.reshape(-1, target.shape[-1]).float()
                    code = coder.encode(x)
                    y_hat = coder.decode(code, x)
                    st.add_recon(y, y_hat, code.values, code.indices)
                    return y_hat.reshape(shape)

                site = resolve_site(subject, hookpoint, coder.cfg.site if coder.cfg.kind == "sae" else None)
                if coder.cfg.kind == "transcoder":  # reads the MLP input, replaces its output
                    splice = splice_output(subject, site.module, lambda i, o, r=recon: r(i, o.shape, target=o))
                elif site.side == "output":
                    splice = splice_output(subject, site.module, lambda i, o, r=recon: r(o, o.shape))
                else:
                    splice = splice_input(subject, site.module, lambda i, r=recon: r(i, i.shape))
                with splice:
                    nll, correct, n = _nll_and_correct(subject, ids)
                st.nll += nll
                st.correct += correct
                st.n_pred += n
                bar.advance(1)
    ce_clean = clean.nll / clean.n_pred
    acc_clean = clean.correct / clean.n_pred
    rows = []
    for name, st in stats.items():
        freq = st.fires.double() / st.n
        row = {
            "coder": name,
            "hookpoint": hookpoint,
            "kind": coders[name].cfg.kind,
            "activation": coders[name].cfg.activation,
            "k": coders[name].cfg.k,
            "d_sae": coders[name].cfg.d_sae,
            "eval_tokens": st.n,
            "fvu": st.fvu(),
            "l0": st.l0_sum / st.n,
            "dead_fraction": float((st.fires == 0).double().mean()),
            "ce_clean": ce_clean,
            "ce_spliced": st.nll / st.n_pred,
            "ce_loss_increase": st.nll / st.n_pred - ce_clean,
            "accuracy_clean": acc_clean,
            "accuracy_spliced": st.correct / st.n_pred,
            "accuracy_decrease": acc_clean - st.correct / st.n_pred,
        }
        for thr in UHF_THRESHOLDS:
            row[f"uhf_fraction_{thr:g}"] = float((freq > thr).double().mean())
        rows.append(row)
    return rows
