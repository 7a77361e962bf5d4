"""Weighted k-NN classifier on frozen features, following the DINO evaluation protocol.

Protocol (Caron et al. 2021, ``eval_knn.py``): L2-normalise train and test features, retrieve the
k train samples with the highest cosine similarity, and let each neighbour vote for its label with
weight ``exp(sim / T)`` (T = 0.07). The predicted class is the one with the largest summed weight.
We report top-1 accuracy for several k at once: one exact search with ``max(k)`` neighbours, then
the weighting for each k on the sorted prefix, so extra k values cost almost nothing.

Deliberate differences from the DINO reference code, none of which change the protocol:

* the number of classes comes from the caller, not from the labels seen (a split that misses a
  class must not shrink the vote vector - a known bug in several re-implementations);
* the test chunk size is bounded by memory and never 0 (DINO uses ``M // 100``, which is 0 for
  fewer than 100 test samples and crashes ``range``);
* the weights are ``exp((sim - max_sim) / T)``: the common per-query factor leaves the argmax
  unchanged but cannot overflow for small T; votes are summed in float64 so near-ties are decided
  by the data, not by summation order;
* ties between classes go to the lowest class index (``argmax``), not to an unstable sort;
* ties between neighbours go to the lowest train index (:func:`knn_neighbours`): neighbours with equal
  similarity are ordered by train index, also across the k-th position (which of several equally
  similar train samples is the k-th neighbour), so the same features give the same neighbours
  whichever backend ran the search and however it orders equal scores.

Several search backends produce the same neighbours (they are exact): ``faiss`` (``IndexFlatIP``,
on GPU when faiss has GPU support and the features live on CUDA), ``torch`` (chunked matmul + topk,
CPU or CUDA) and ``sklearn`` (brute-force ``NearestNeighbors``, for benchmark comparison only).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.eval.base import EvalInputError, EvalResult, check_eval_inputs, top1_accuracy
from ssl_bench.progress import progress

Backend = Literal["auto", "faiss", "torch", "sklearn"]
BACKENDS: tuple[str, ...] = ("auto", "faiss", "torch", "sklearn")

# Upper bound on the number of similarities materialised at once by the torch backend (and on
# class-vote cells in the voting step): 2**24 fp32 values = 64 MiB, whatever N_train is.
DEFAULT_CHUNK_ELEMENTS = 2**24


@dataclass
class KNNProtocol:
    """Everything that defines a k-NN evaluation. Defaults are DINO's.

    ``chunk_size`` is the number of test queries scored per matmul in the torch backend; ``None``
    picks the largest chunk with ``chunk x N_train <= DEFAULT_CHUNK_ELEMENTS``.
    """

    ks: tuple[int, ...] = (10, 20, 100, 200)
    temperature: float = 0.07
    headline_k: int = 20
    backend: Backend = "auto"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        self.ks = _check_ks(self.ks)
        _check_temperature(self.temperature)
        if self.headline_k not in self.ks:
            raise EvalInputError(
                f"headline_k={self.headline_k} is not one of ks={list(self.ks)}; add it to ks or "
                "pick one of them as headline_k"
            )
        _check_backend_name(self.backend)
        _check_chunk_size(self.chunk_size)


# --------------------------------------------------------------------------- validation helpers


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    if not ks:
        raise EvalInputError("ks is empty; pass at least one neighbour count, e.g. ks=(20,)")
    for k in ks:
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise EvalInputError(f"every k must be a positive int, got {k!r} in ks={list(ks)}")
    return tuple(sorted({int(k) for k in ks}))


def _check_temperature(t: float) -> None:
    if not (isinstance(t, (int, float)) and t > 0 and np.isfinite(t)):
        raise EvalInputError(f"temperature must be a finite positive float, got {t!r}; DINO uses 0.07")


def _check_backend_name(backend: str) -> None:
    if backend not in BACKENDS:
        raise EvalInputError(f"unknown k-NN backend {backend!r}; choose one of {list(BACKENDS)}")


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise EvalInputError(f"chunk_size must be a positive int or None (auto), got {chunk_size!r}")


# --------------------------------------------------------------------------- backend selection


def faiss_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


def faiss_gpu_available() -> bool:
    """True when the installed faiss was built with GPU support and sees a GPU."""
    if not faiss_available():
        return False
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """Map ``"auto"`` to a concrete backend for features on ``device``.

    auto: CUDA features -> faiss-gpu if available, else torch on the GPU (copying to a CPU faiss
    index would be slower than a GPU matmul); CPU features -> faiss if importable, else torch.
    """
    _check_backend_name(backend)
    device = torch.device(device)
    if backend == "auto":
        if device.type == "cuda":
            return "faiss" if faiss_gpu_available() else "torch"
        return "faiss" if faiss_available() else "torch"
    if backend == "faiss" and not faiss_available():
        raise EvalInputError(
            "k-NN backend 'faiss' requested but faiss is not installed; `pip install faiss-cpu` "
            "(or faiss-gpu), or use backend='torch'"
        )
    if backend == "sklearn" and importlib.util.find_spec("sklearn") is None:
        raise EvalInputError(
            "k-NN backend 'sklearn' requested but scikit-learn is not installed; "
            "`pip install scikit-learn`, or use backend='torch'"
        )
    return backend


def _auto_chunk(n_train: int, n_test: int, chunk_size: int | None) -> int:
    """Queries per chunk: bounded memory and never 0 (the DINO ``M // 100`` bug)."""
    if chunk_size is None:
        chunk_size = DEFAULT_CHUNK_ELEMENTS // max(n_train, 1)
    return max(1, min(chunk_size, max(n_test, 1)))


# --------------------------------------------------------------------------- exact search backends
# Each returns (sims [M, kmax] float, indices [M, kmax] int64), sorted by decreasing similarity.


def _search_torch(train_n: Tensor, test_n: Tensor, kmax: int, chunk: int) -> tuple[Tensor, Tensor]:
    sims, idx = [], []
    train_t = train_n.t()  # [D, N]
    # ImageNet: 50k queries x 1.28M train items is thousands of chunks, minutes on a GPU: show them
    starts = range(0, test_n.shape[0], chunk)
    for start in progress(starts, desc="k-NN search", total=len(starts), unit="chunk"):
        s = test_n[start : start + chunk] @ train_t  # [m, N]
        v, i = s.topk(kmax, dim=1, largest=True, sorted=True)  # [m, kmax]
        sims.append(v)
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


def _search_faiss(train_n: Tensor, test_n: Tensor, kmax: int) -> tuple[Tensor, Tensor]:
    import faiss

    xb = np.ascontiguousarray(train_n.detach().cpu().numpy(), dtype=np.float32)  # [N, D]
    xq = np.ascontiguousarray(test_n.detach().cpu().numpy(), dtype=np.float32)  # [M, D]
    index = faiss.IndexFlatIP(xb.shape[1])
    if test_n.device.type == "cuda" and faiss_gpu_available():
        res = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(res, test_n.device.index or 0, index)
    index.add(xb)
    sims, idx = index.search(xq, kmax)  # [M, kmax] each
    return torch.from_numpy(sims), torch.from_numpy(idx).long()


def _search_sklearn(train_n: Tensor, test_n: Tensor, kmax: int) -> tuple[Tensor, Tensor]:
    from sklearn.neighbors import NearestNeighbors

    xb = train_n.detach().cpu().numpy()
    xq = test_n.detach().cpu().numpy()
    nn_index = NearestNeighbors(n_neighbors=kmax, algorithm="brute", metric="cosine").fit(xb)
    dist, idx = nn_index.kneighbors(xq, return_distance=True)  # cosine distance = 1 - sim
    return torch.from_numpy(1.0 - dist).float(), torch.from_numpy(idx).long()


def order_ties(sims: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Each row of ``sims`` / ``idx`` [M, k] re-ordered by (similarity desc, train index asc).

    Two stable sorts: by index first, then by similarity. A backend's order among equal
    similarities (a heap in faiss, ``topk`` in torch) is then irrelevant; distinct similarities keep
    their order."""
    by_index = idx.argsort(dim=1, stable=True)  # [M, k]
    sims, idx = sims.gather(1, by_index), idx.gather(1, by_index)
    by_sim = sims.argsort(dim=1, descending=True, stable=True)  # [M, k]
    return sims.gather(1, by_sim), idx.gather(1, by_sim)


def _exact_rows(train_n: Tensor, test_n: Tensor, kmax: int, chunk: int) -> tuple[Tensor, Tensor]:
    """The first ``kmax`` of every train sample for a few queries, by (similarity desc, index asc):
    the full similarity row and a stable sort, for rows whose k-th neighbour is tied."""
    sims, idx = [], []
    train_t = train_n.t()  # [D, N]
    for start in range(0, test_n.shape[0], chunk):
        v, i = (test_n[start : start + chunk] @ train_t).sort(dim=1, descending=True, stable=True)  # [m, N]
        sims.append(v[:, :kmax])
        idx.append(i[:, :kmax])
    return torch.cat(sims), torch.cat(idx)


def knn_neighbours(
    train_n: Tensor,  # [N, D] l2-normalised float32
    test_n: Tensor,  # [M, D] l2-normalised float32, on train_n's device
    kmax: int,
    backend: str,
    chunk_size: int | None = None,
) -> tuple[Tensor, Tensor]:
    """The ``kmax`` nearest train samples of every query: (sims [M, kmax], train indices [M, kmax]),
    ordered by (similarity desc, train index asc), on ``train_n``'s device. ``backend`` is concrete.

    Deterministic ties. The search asks for one neighbour more than needed: when the (kmax+1)-th
    similarity equals the kmax-th, a tie straddles the cut and the backend's choice among the tied
    samples is arbitrary, so that row is recomputed exactly (full similarity row, stable sort:
    lowest train indices first). Every other row is re-ordered by :func:`order_ties`.

    Remaining boundary case: ties are between *bit-equal* float32 similarities as the backend computed
    them. Two train samples whose similarities tie in exact arithmetic but differ in the last bit
    (not exact duplicates, or a BLAS kernel that sums them in another order) are ordered by that last
    bit, which may differ between backends or between machines and thread counts.
    """
    n_train, n_test = train_n.shape[0], test_n.shape[0]
    k_search = min(kmax + 1, n_train)  # one more: is the kmax-th neighbour tied with the next one?
    chunk = _auto_chunk(n_train, n_test, chunk_size)
    if backend == "torch":
        sims, idx = _search_torch(train_n, test_n, k_search, chunk)
    elif backend == "faiss":
        sims, idx = _search_faiss(train_n, test_n, k_search)
    else:
        sims, idx = _search_sklearn(train_n, test_n, k_search)
    sims, idx = sims.to(train_n.device).float(), idx.to(train_n.device).long()  # [M, k_search]
    straddles = sims[:, kmax] == sims[:, kmax - 1] if k_search > kmax else None  # [M] bool
    sims, idx = order_ties(sims[:, :kmax].contiguous(), idx[:, :kmax].contiguous())  # [M, kmax]
    if straddles is not None and bool(straddles.any()):
        rows = straddles.nonzero().flatten()  # [R]
        sims[rows], idx[rows] = _exact_rows(train_n, test_n[rows], kmax, _auto_chunk(n_train, rows.numel(), chunk_size))
    return sims, idx


# --------------------------------------------------------------------------- voting


def weighted_vote(
    sims: Tensor,  # [M, kmax] sorted desc
    neighbor_labels: Tensor,  # [M, kmax] int64
    num_classes: int,
    ks: Sequence[int],
    temperature: float,
    chunk: int | None = None,
) -> dict[int, Tensor]:
    """DINO vote: class score = sum over the first k neighbours of that class of exp(sim / T).

    Computed as exp((sim - max_sim) / T) in float64 (same argmax, no overflow). Every k in ``ks``
    must be <= kmax. Returns {k: predictions [M] int64}.
    """
    m, kmax = sims.shape
    vote_dtype = torch.float32 if sims.device.type == "mps" else torch.float64
    if chunk is None:
        chunk = max(1, DEFAULT_CHUNK_ELEMENTS // max(num_classes, kmax))
    preds = {k: torch.empty(m, dtype=torch.long, device=sims.device) for k in ks}
    for start in range(0, m, chunk):
        s = sims[start : start + chunk].to(vote_dtype)  # [c, kmax]
        lab = neighbor_labels[start : start + chunk]  # [c, kmax]
        w = torch.exp((s - s.max(dim=1, keepdim=True).values) / temperature)  # [c, kmax] in (0, 1]
        for k in ks:
            votes = torch.zeros(s.shape[0], num_classes, dtype=vote_dtype, device=s.device)
            votes.scatter_add_(1, lab[:, :k], w[:, :k])  # [c, C]
            preds[k][start : start + chunk] = votes.argmax(dim=1)
    return preds


def knn_predict(
    train_feats: Tensor,  # [N, D]
    train_labels: Tensor,  # [N] int64
    test_feats: Tensor,  # [M, D]
    num_classes: int,
    ks: Sequence[int] = (10, 20, 100, 200),
    temperature: float = 0.07,
    backend: Backend = "auto",
    chunk_size: int | None = None,
) -> dict[int, Tensor]:
    """Weighted k-NN predictions for every requested k: {k: preds [M] int64 on test_feats.device}.

    k larger than N_train is capped to N_train (the key stays the requested k). Computation runs on
    ``train_feats.device`` (test features are moved there); the faiss/sklearn backends copy to
    numpy, faiss-gpu excepted.
    """
    check_eval_inputs(train_feats, train_labels, test_feats, None, num_classes)
    ks = _check_ks(ks)
    _check_temperature(temperature)
    _check_chunk_size(chunk_size)
    device = train_feats.device
    backend = resolve_backend(backend, device)

    n_train, n_test = train_feats.shape[0], test_feats.shape[0]
    k_eff = {k: min(k, n_train) for k in ks}
    kmax = max(k_eff.values())
    out_device = test_feats.device
    if n_test == 0:
        return {k: torch.empty(0, dtype=torch.long, device=out_device) for k in ks}

    # Same float32 normalised inputs for every backend, so they can only differ in the search.
    train_n = F.normalize(train_feats.detach().float(), dim=1)  # [N, D]
    test_n = F.normalize(test_feats.detach().to(device).float(), dim=1)  # [M, D]

    sims, idx = knn_neighbours(train_n, test_n, kmax, backend, chunk_size)  # [M, kmax] each, ties by index
    neighbor_labels = train_labels.to(device).long()[idx]  # [M, kmax]
    unique_k = sorted(set(k_eff.values()))
    by_k = weighted_vote(sims, neighbor_labels, num_classes, unique_k, temperature)
    return {k: by_k[k_eff[k]].to(out_device) for k in ks}


# --------------------------------------------------------------------------- evaluator


class KNNEvaluator:
    """DINO weighted k-NN evaluator. Metrics: ``knn_top1_k{k}`` for each k, ``knn_top1`` (headline);
    the result's ``predictions`` hold each metric's predicted classes [M] for the paired comparison."""

    name = "knn"

    def __init__(self, protocol: KNNProtocol | None = None, **overrides: Any) -> None:
        if protocol is None:
            protocol = KNNProtocol(**overrides)
        elif overrides:
            raise TypeError("pass either a KNNProtocol or keyword overrides, not both")
        self.protocol = protocol

    def __call__(
        self,
        train_feats: Tensor,  # [N, D]
        train_labels: Tensor,  # [N]
        test_feats: Tensor,  # [M, D]
        test_labels: Tensor,  # [M]
        num_classes: int,
    ) -> EvalResult:
        p = self.protocol
        check_eval_inputs(train_feats, train_labels, test_feats, test_labels, num_classes)
        if test_feats.shape[0] == 0:
            raise EvalInputError("test set is empty (test_feats has 0 rows); check the test split")
        backend_used = resolve_backend(p.backend, train_feats.device)
        preds = knn_predict(
            train_feats, train_labels, test_feats, num_classes,
            ks=p.ks, temperature=p.temperature, backend=backend_used, chunk_size=p.chunk_size,
        )
        metrics = {f"knn_top1_k{k}": top1_accuracy(preds[k], test_labels) for k in p.ks}
        metrics["knn_top1"] = metrics[f"knn_top1_k{p.headline_k}"]
        predictions = {f"knn_top1_k{k}": preds[k].cpu() for k in p.ks}  # [M] int64 each, test-split order
        predictions["knn_top1"] = predictions[f"knn_top1_k{p.headline_k}"]

        n_train = int(train_feats.shape[0])
        protocol: dict[str, Any] = {
            "evaluator": self.name,
            "reference": "DINO eval_knn.py (Caron et al. 2021)",
            "ks": list(p.ks),
            "k_effective": {str(k): min(k, n_train) for k in p.ks},
            "headline_k": p.headline_k,
            "temperature": p.temperature,
            "normalisation": "l2",
            "similarity": "cosine (inner product of l2-normalised float32 features)",
            "vote": "sum of exp(sim / T) per class over the k nearest; argmax, ties -> lowest class",
            "neighbour_ties": "equal similarity -> lowest train index, also at the k-th neighbour",
            "backend": p.backend,
            "backend_used": backend_used,
            "device": train_feats.device.type,
            "chunk_size": p.chunk_size,
            "num_classes": int(num_classes),
            "n_train": n_train,
            "n_test": int(test_feats.shape[0]),
            "dim": int(train_feats.shape[1]),
            "metric_unit": "fraction",
        }
        if backend_used == "faiss":
            protocol["faiss_gpu"] = train_feats.device.type == "cuda" and faiss_gpu_available()
        return EvalResult(metrics=metrics, protocol=protocol, predictions=predictions)
