"""The two k-sparse products every coder's forward and backward are built from, without an [N, M] tensor.

A code holds k (latent, weight) pairs a row, so the dense [N, M] products of a coder are only ever
needed at N * k places: `scatter_rows` accumulates rows into the selected latents (the gradients of
the encoder and the decoder), `gather_dots` reads a product at the selected latents (the gradient of
the decoded values, and the fp32 rescoring of the encoder's candidates in `topk.py`). They live
apart from both users so that `coder.py` and `topk.py` import them one way.
"""

from __future__ import annotations

import warnings

import torch

SPARSE_T_MM = "csr"  # how scatter_rows() accumulates on CPU: "csr" (sparse CSR @ dense) or "index_add"
_CHUNK_ELEMENTS = 1 << 22  # temporaries of at most this many elements (16 MiB fp32) in chunked loops on CPU
# on a GPU, where each chunk costs its launches and memory is plentiful: a training batch of 4,096 x k 32 x
# d 576 (75M elements) is one chunk, not 18 (about 190 fewer ops a training step)
_CHUNK_ELEMENTS_GPU = 1 << 28


def chunk_elements(device: torch.device) -> int:
    """Largest temporary (elements) of the chunked loops on `device`."""
    return _CHUNK_ELEMENTS if device.type == "cpu" else _CHUNK_ELEMENTS_GPU


def scatter_rows(indices: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor, m: int) -> torch.Tensor:
    """out[M, d] with out[indices[n, j]] += weights[n, j] * rows[n]: G^T @ rows for the sparse [N, M]
    matrix G holding k weights a row (the gradient of a dense [N, M] product, without forming G)."""
    n, k = indices.shape
    d = rows.shape[1]
    weights = weights.to(rows.dtype)
    if SPARSE_T_MM == "csr" and rows.device.type == "cpu":
        flat = indices.reshape(-1)
        order = torch.argsort(flat, stable=True)
        crow = torch.zeros(m + 1, dtype=torch.int64)
        torch.cumsum(torch.bincount(flat, minlength=m), 0, out=crow[1:])
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            g_t = torch.sparse_csr_tensor(crow, order // k, weights.reshape(-1)[order], (m, n), check_invariants=False)
            return g_t @ rows
    out = torch.zeros(m, d, dtype=rows.dtype, device=rows.device)
    step = max(1, chunk_elements(rows.device) // (k * d))
    for i in range(0, n, step):
        src = (weights[i : i + step, :, None] * rows[i : i + step, None, :]).reshape(-1, d)
        out.index_add_(0, indices[i : i + step].reshape(-1), src)
    return out


def gather_dots(indices: torch.Tensor, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[N, k] with out[n, j] = table[indices[n, j]] . rows[n]: the [N, M] product rows @ table^T read
    only at the k selected columns of each row. On CPU (fp32, fp64) a sampled product (`sampled_dots`),
    elsewhere an embedding bag's per-sample-weight gradient. Either way each entry is one dot product
    computed the same way whatever else the row selects (topk.py's canonical codes rely on it)."""
    n, k = indices.shape
    if (rows.device.type == "cpu" and rows.dtype in (torch.float32, torch.float64) and table.dtype == rows.dtype
            and table.is_contiguous()):
        try:
            return sampled_dots(indices, table, rows)
        except (AttributeError, RuntimeError, NotImplementedError):  # sampled_addmm gone or changed
            pass
    flat = indices.reshape(-1)
    try:
        offsets = torch.arange(0, n * k, k, device=flat.device)
        bag_of = torch.arange(n * k, device=flat.device) // k
        op = torch.ops.aten._embedding_bag_per_sample_weights_backward
        return op(rows.contiguous(), table, flat, offsets, bag_of, 0, -1).view(n, k)
    except (AttributeError, RuntimeError, NotImplementedError):  # that private kernel gone
        return gather_dots_chunked(indices, table, rows)


def sampled_dots(indices: torch.Tensor, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """gather_dots as torch.sparse.sampled_addmm: the product rows @ table^T sampled at a CSR pattern
    holding the k indices of each row. Its CPU kernel takes each entry as one vectorised dot product of
    two contiguous rows (table^T's transpose is table itself: no copy), 1.3-3x faster here than the
    embedding-bag kernel, which calls BLAS once per entry (README, "Tuned constants (measured)")."""
    n, k = indices.shape
    crow = torch.arange(0, n * k + 1, k, device=indices.device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(crow, indices.reshape(-1), torch.zeros(n * k, dtype=rows.dtype),
                                          (n, table.shape[0]), check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, rows.contiguous(), table.T, beta=0.0).values().view(n, k)


def gather_dots_chunked(indices: torch.Tensor, table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """gather_dots with public ops: gathered rows times rows[n], a bounded block at a time."""
    n, k = indices.shape
    d = rows.shape[1]
    flat = indices.reshape(-1)
    out = torch.empty(n, k, dtype=rows.dtype, device=rows.device)
    step = max(1, chunk_elements(rows.device) // (k * d))
    for i in range(0, n, step):
        picked = table.index_select(0, flat[i * k : (i + step) * k]).view(-1, k, d)
        torch.bmm(picked, rows[i : i + step, :, None], out=out[i : i + step, :, None])
    return out
