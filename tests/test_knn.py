"""Weighted k-NN (DINO protocol): backend parity, the vote itself, edge cases, error messages."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ssl_bench.eval.base import EvalInputError, Evaluator
from ssl_bench.eval.knn import (
    KNNEvaluator,
    KNNProtocol,
    faiss_available,
    knn_neighbours,
    knn_predict,
    resolve_backend,
)

BACKENDS = ["torch", "sklearn"] + (["faiss"] if faiss_available() else [])
KS = (1, 5, 10, 20, 100, 200)


def _random_problem(n=600, m=150, d=32, c=7, seed=0):
    """Gaussian float64 features cast to float32: continuous, so no exact similarity ties."""
    rng = np.random.default_rng(seed)
    train = torch.from_numpy(rng.standard_normal((n, d))).float()  # [N, D]
    test = torch.from_numpy(rng.standard_normal((m, d))).float()  # [M, D]
    train_y = torch.from_numpy(rng.integers(0, c, n)).long()  # [N]
    test_y = torch.from_numpy(rng.integers(0, c, m)).long()  # [M]
    return train, train_y, test, test_y, c


def _reference_knn(train, train_y, test, num_classes, k, T):
    """Naive float64 DINO vote, written independently of the implementation under test."""
    a = train.double().numpy()
    b = test.double().numpy()
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    preds = []
    for q in b:
        sims = a @ q  # [N]
        nn = np.argsort(-sims)[: min(k, len(a))]
        votes = np.bincount(train_y.numpy()[nn], weights=np.exp(sims[nn] / T), minlength=num_classes)
        preds.append(int(np.argmax(votes)))
    return torch.tensor(preds)


# --------------------------------------------------------------------------- deterministic ties


def test_tied_neighbours_go_to_the_lowest_train_index_on_every_backend():
    """e0 at train rows 0, 2, 4 and e1 at 1, 3, 5: each query ties three ways at similarity 1 and three
    ways at 0, so the 1st, 2nd and 4th neighbours (ks 1, 2, 4; the search cut is inside a tie) are
    decided only by the tie rule: lowest train index first."""
    e0, e1 = [1.0, 0.0], [0.0, 1.0]
    train = torch.tensor([e0, e1, e0, e1, e0, e1])  # [6, 2]
    train_y = torch.tensor([0, 1, 1, 0, 2, 2])
    test = torch.tensor([e0, e1])  # [2, 2]
    for b in BACKENDS:
        for _ in range(2):  # and again: the same answer
            sims, idx = knn_neighbours(train, test, 4, b)
            assert idx.tolist() == [[0, 2, 4, 1], [1, 3, 5, 0]], b
            assert sims.tolist() == [[1.0, 1.0, 1.0, 0.0]] * 2, b
            preds = knn_predict(train, train_y, test, 3, ks=(1, 2, 4), backend=b)
            # k=1: labels of rows 0 / 1; k=2: {0, 1} tie -> class 0; k=4: {0, 1, 2, 1} / {1, 0, 2, 0}
            assert {k: v.tolist() for k, v in preds.items()} == {1: [0, 1], 2: [0, 0], 4: [1, 0]}, b


def test_duplicated_train_rows_give_the_same_neighbours_on_every_backend():
    """Ten Gaussian vectors, each copied to five scattered train rows with different labels: every
    query's neighbours tie in blocks of five. All backends, twice each, pick the same neighbours: the
    order (similarity desc, train index asc) of an independent numpy lexsort."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((10, 16)).astype(np.float32)  # [10, D]
    rows = rng.permutation(np.repeat(np.arange(10), 5))  # [50] which base vector each train row is
    train = torch.from_numpy(base[rows])  # [50, D]
    train_y = torch.from_numpy(rng.integers(0, 4, 50)).long()
    test = torch.from_numpy(np.vstack([base[:4], rng.standard_normal((8, 16)).astype(np.float32)]))  # [12, D]
    train_n = torch.nn.functional.normalize(train, dim=1)
    test_n = torch.nn.functional.normalize(test, dim=1)
    sims = (test_n @ train_n.t()).numpy()  # [12, 50]
    expected = np.stack([np.lexsort((np.arange(50), -row)) for row in sims])[:, :12]  # [12, 12]
    for b in BACKENDS:
        for _ in range(2):
            _, idx = knn_neighbours(train_n, test_n, 12, b)
            assert np.array_equal(idx.numpy(), expected), b
    preds = {b: knn_predict(train, train_y, test, 4, ks=(1, 3, 7, 12), backend=b) for b in BACKENDS}
    for b in BACKENDS:
        for k in (1, 3, 7, 12):
            assert torch.equal(preds[b][k], preds["torch"][k]), (b, k)
    assert preds["torch"][1].tolist()[:4] == [int(train_y[np.flatnonzero(rows == i)[0]]) for i in range(4)]


def test_knn_evaluator_returns_the_predictions_behind_its_accuracies():
    train, train_y, test, test_y, c = _random_problem(n=100, m=30, c=3)
    res = KNNEvaluator(ks=(5, 20))(train, train_y, test, test_y, c)
    assert set(res.predictions) == {"knn_top1", "knn_top1_k5", "knn_top1_k20"}
    for name, preds in res.predictions.items():
        assert preds.dtype == torch.long and preds.shape == (30,)
        assert (preds == test_y).double().mean().item() == res.metrics[name]
    assert torch.equal(res.predictions["knn_top1"], res.predictions["knn_top1_k20"])
    assert "predictions" not in res.to_dict()


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("seed", [0, 1])
def test_backends_agree_for_every_k(seed):
    train, train_y, test, _, c = _random_problem(seed=seed)
    out = {b: knn_predict(train, train_y, test, c, ks=KS, backend=b) for b in BACKENDS}
    for k in KS:
        ref = _reference_knn(train, train_y, test, c, k, 0.07)
        for b in BACKENDS:
            assert out[b][k].dtype == torch.long and out[b][k].shape == (test.shape[0],)
            assert torch.equal(out[b][k], ref), f"backend {b} disagrees with the reference at k={k}"


def test_faiss_backend_is_present_for_parity():
    # faiss-cpu is a declared dependency; if this fails the parity test above silently lost a backend
    assert faiss_available()


def test_torch_chunking_does_not_change_predictions():
    train, train_y, test, _, c = _random_problem(n=300, m=97)
    full = knn_predict(train, train_y, test, c, ks=KS, backend="torch", chunk_size=None)
    for chunk in (1, 7, 96, 10_000):
        part = knn_predict(train, train_y, test, c, ks=KS, backend="torch", chunk_size=chunk)
        assert all(torch.equal(full[k], part[k]) for k in KS)


def test_fewer_than_100_test_samples_works():
    # DINO chunks by M // 100, which is 0 here and crashes range(); we must not.
    train, train_y, test, _, c = _random_problem(n=50, m=3)
    for b in BACKENDS:
        assert knn_predict(train, train_y, test, c, ks=(5,), backend=b)[5].shape == (3,)


# --------------------------------------------------------------------------- the vote itself


def _weighted_vs_majority_example():
    """Query e1. Class 0: three neighbours at cosine 0.5; class 1: two neighbours at cosine 0.9.

    With k=5, T=0.07: class 0 scores 3 * exp(0.5/0.07) = 3 * 1265.1 = 3.8e3,
    class 1 scores 2 * exp(0.9/0.07) = 2 * 3.84e5 = 7.7e5 -> class 1, while a plain majority
    vote (3 vs 2) says class 0. Rows are deliberately not unit norm: only the angle counts.
    """
    s75, s19 = math.sqrt(0.75), math.sqrt(0.19)
    train = torch.tensor(
        [
            [0.5, s75, 0.0],  # class 0, cos 0.5
            [0.5, -s75, 0.0],  # class 0, cos 0.5
            [0.5, 0.0, s75],  # class 0, cos 0.5
            [0.9, s19, 0.0],  # class 1, cos 0.9
            [0.9, 0.0, -s19],  # class 1, cos 0.9
        ]
    ) * torch.tensor([[2.0], [0.3], [5.0], [0.1], [7.0]])
    train_y = torch.tensor([0, 0, 0, 1, 1])
    test = torch.tensor([[3.0, 0.0, 0.0]])
    return train, train_y, test


@pytest.mark.parametrize("backend", BACKENDS)
def test_weighted_vote_differs_from_majority(backend):
    train, train_y, test = _weighted_vs_majority_example()
    votes = {0: 3 * math.exp(0.5 / 0.07), 1: 2 * math.exp(0.9 / 0.07)}
    assert votes[1] > votes[0]  # the hand computation in the docstring
    pred = knn_predict(train, train_y, test, num_classes=2, ks=(5,), temperature=0.07, backend=backend)
    assert pred[5].tolist() == [1]
    # A huge temperature makes the weights ~uniform: the vote degenerates to majority -> class 0.
    pred = knn_predict(train, train_y, test, num_classes=2, ks=(5,), temperature=1e4, backend=backend)
    assert pred[5].tolist() == [0]


def test_tiny_temperature_does_not_overflow():
    train, train_y, test = _weighted_vs_majority_example()
    pred = knn_predict(train, train_y, test, num_classes=2, ks=(5,), temperature=1e-3, backend="torch")
    assert pred[5].tolist() == [1]  # exp(0.9/1e-3) overflows float64; max-subtraction keeps it finite


@pytest.mark.parametrize("backend", BACKENDS)
def test_well_separated_clusters_are_perfect(backend):
    g = torch.Generator().manual_seed(0)
    c, d, per_class = 5, 16, 60
    centers = torch.randn(c, d, generator=g) * 10  # [C, D]
    labels = torch.arange(c).repeat_interleave(per_class)  # [C * per_class]
    train = centers[labels] + 0.1 * torch.randn(len(labels), d, generator=g)
    test = centers[labels] + 0.1 * torch.randn(len(labels), d, generator=g)
    res = KNNEvaluator(KNNProtocol(backend=backend))(train, labels, test, labels, c)
    for k in (10, 20, 100, 200):
        assert res.metrics[f"knn_top1_k{k}"] == 1.0
    assert res.metrics["knn_top1"] == 1.0


# --------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("backend", BACKENDS)
def test_k_larger_than_train_set_is_capped_and_recorded(backend):
    train, train_y, test, test_y, c = _random_problem(n=15, m=20, c=3)
    preds = knn_predict(train, train_y, test, c, ks=(10, 15, 20, 100, 200), backend=backend)
    for k in (20, 100, 200):
        assert torch.equal(preds[k], preds[15])
    assert torch.equal(preds[15], _reference_knn(train, train_y, test, c, 15, 0.07))
    res = KNNEvaluator(backend=backend)(train, train_y, test, test_y, c)
    assert res.protocol["k_effective"] == {"10": 10, "20": 15, "100": 15, "200": 15}
    assert set(res.metrics) == {"knn_top1_k10", "knn_top1_k20", "knn_top1_k100", "knn_top1_k200", "knn_top1"}


def test_num_classes_comes_from_the_argument_not_the_test_labels():
    # Test set covers only classes {0, 1} of 10; some of its points sit next to class-9 train points
    # but are labelled 1. Inferring C from the test labels (max + 1 = 2) would break the vote.
    g = torch.Generator().manual_seed(0)
    c, d = 10, 8
    centers = torch.randn(c, d, generator=g) * 10
    train_y = torch.arange(c).repeat_interleave(20)
    train = centers[train_y] + 0.1 * torch.randn(len(train_y), d, generator=g)
    test = torch.cat([centers[[0, 1]], centers[[9]]]) + 0.01
    test_y = torch.tensor([0, 1, 1])
    res = KNNEvaluator(ks=(10, 20), headline_k=20)(train, train_y, test, test_y, c)
    assert res.metrics["knn_top1"] == pytest.approx(2 / 3)
    assert knn_predict(train, train_y, test, c, ks=(10,))[10].tolist() == [0, 1, 9]
    assert res.protocol["num_classes"] == 10


def test_class_missing_from_train_set_is_fine():
    """Train covers classes 1, 4 and 10 of 12 (not 0..2: a vote over the classes seen, re-indexed,
    would predict 0..2), as three clusters along orthogonal directions (cosine similarity ~1 within
    a cluster, ~0 across). Six test points sit on a cluster with its label; three sit on a cluster but
    carry a class the train set never saw (0, 7, 11), so no vote can get them right. The exact
    accuracy is 6/9 at every k, k=200 (all 60 train points) included."""
    g = torch.Generator().manual_seed(0)
    d = 8
    seen = torch.tensor([1, 4, 10])
    centers = 10 * torch.eye(d)[:3]  # [3, D], cluster j holds class seen[j]
    cluster = torch.arange(3).repeat_interleave(20)  # [60]
    train, train_y = centers[cluster] + 0.1 * torch.randn(60, d, generator=g), seen[cluster]  # [60, D], [60]
    on = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])  # the cluster each test point sits on
    test = centers[on] + 0.1 * torch.randn(9, d, generator=g)  # [9, D]
    test_y = torch.tensor([1, 4, 10, 1, 4, 10, 0, 7, 11])
    res = KNNEvaluator()(train, train_y, test, test_y, num_classes=12)
    assert res.metrics == {
        "knn_top1_k10": 6 / 9, "knn_top1_k20": 6 / 9, "knn_top1_k100": 6 / 9, "knn_top1_k200": 6 / 9, "knn_top1": 6 / 9,
    }
    assert res.protocol["k_effective"] == {"10": 10, "20": 20, "100": 60, "200": 60}
    for k, preds in knn_predict(train, train_y, test, 12, ks=(10, 200)).items():
        assert preds.tolist() == [1, 4, 10] * 3, k


def test_result_is_json_serialisable_and_complete():
    train, train_y, test, test_y, c = _random_problem(n=100, m=30, c=3)
    ev = KNNEvaluator()
    assert isinstance(ev, Evaluator) and ev.name == "knn"
    res = ev(train.double(), train_y, test.double(), test_y, c)  # float64 input is accepted
    assert res.metrics["knn_top1"] == res.metrics["knn_top1_k20"]
    assert all(isinstance(v, float) for v in res.metrics.values())
    rec = json.loads(json.dumps(res.to_dict()))["protocol"]
    for key in ("evaluator", "ks", "temperature", "backend", "backend_used", "normalisation",
                "headline_k", "k_effective", "num_classes", "n_train", "n_test", "dim"):
        assert key in rec
    assert rec["temperature"] == 0.07 and rec["ks"] == [10, 20, 100, 200]


def test_auto_backend_resolution():
    expected = "faiss" if faiss_available() else "torch"
    assert resolve_backend("auto", "cpu") == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    train, train_y, test, _, c = _random_problem()
    cpu = knn_predict(train, train_y, test, c, ks=KS, backend="torch")
    for b in ("auto", "torch"):
        gpu = knn_predict(train.cuda(), train_y.cuda(), test.cuda(), c, ks=KS, backend=b)
        for k in KS:
            assert gpu[k].device.type == "cuda"
            assert torch.equal(gpu[k].cpu(), cpu[k])


# --------------------------------------------------------------------------- errors


def test_error_mismatched_dims():
    train, train_y, test, test_y, c = _random_problem(n=20, m=5)
    with pytest.raises(ValueError, match=r"feature dims differ.*D=32.*D=31.*same backbone"):
        KNNEvaluator()(train, train_y, test[:, :31], test_y, c)


def test_error_empty_train_set():
    _, _, test, test_y, c = _random_problem(n=20, m=5)
    with pytest.raises(ValueError, match="train set is empty"):
        knn_predict(torch.empty(0, 32), torch.empty(0, dtype=torch.long), test, c)


def test_error_labels_out_of_range():
    train, train_y, test, test_y, _ = _random_problem(n=20, m=5, c=7)
    with pytest.raises(ValueError, match=r"train_labels.*outside \[0, num_classes=3\).*max=6"):
        knn_predict(train, train_y, test, num_classes=3)
    with pytest.raises(ValueError, match="test_labels"):
        KNNEvaluator()(train, train_y % 3, test, test_y + 10, 3)
    with pytest.raises(ValueError, match="min=-1"):
        knn_predict(train, train_y - 1, test, num_classes=7)


def test_error_label_count_and_dtype():
    train, train_y, test, test_y, c = _random_problem(n=20, m=5)
    with pytest.raises(ValueError, match=r"train_labels must have shape \[20\]"):
        knn_predict(train, train_y[:-1], test, c)
    with pytest.raises(ValueError, match="integer"):
        knn_predict(train, train_y.float(), test, c)


def test_error_nan_features():
    train, train_y, test, _, c = _random_problem(n=20, m=5)
    test[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        knn_predict(train, train_y, test, c)


def test_error_bad_protocol():
    with pytest.raises(ValueError, match="headline_k=20 is not one of"):
        KNNProtocol(ks=(10,))
    with pytest.raises(ValueError, match="unknown k-NN backend"):
        KNNProtocol(backend="annoy")
    with pytest.raises(ValueError, match="temperature"):
        KNNProtocol(temperature=0)
    with pytest.raises(ValueError, match="positive int"):
        KNNProtocol(ks=(0, 20))
    with pytest.raises(ValueError, match="num_classes"):
        knn_predict(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), torch.randn(1, 2), 0)
    with pytest.raises(EvalInputError, match="test set is empty"):
        KNNEvaluator()(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), torch.randn(0, 2),
                       torch.zeros(0, dtype=torch.long), 1)
