"""Dataset loaders and the batching/sharding contract of ImageSplit."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from ssl_bench.data import datasets as ds
from ssl_bench.data import FolderSplit
from ssl_bench.data.base import (
    DatasetInfo,
    ImageDataset,
    TensorSplit,
    balanced_subset_indices,
    epoch_index_batches,
    suggest_patch_size,
)
from ssl_bench.data.datasets import (
    BUILTIN_DATASETS,
    DatasetLayoutError,
    DatasetNotFoundError,
    load_digits,
    load_fashion_mnist,
    load_imagefolder,
    read_idx,
)

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def digits() -> ImageDataset:
    return load_digits()


def _split(n: int = 23, c: int = 1, size: int = 4) -> TensorSplit:
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, c, size, size).clone()
    return TensorSplit(images, torch.arange(n) % 3)


def _all_ids(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> list[int]:
    # images in _split() carry their own index as pixel value
    return [int(v) for imgs, _ in batches for v in imgs[:, 0, 0, 0]]


# ------------------------------------------------------------------------ digits


def test_digits_shapes_and_dtypes(digits: ImageDataset) -> None:
    info = digits.info
    assert info.name == "digits" and info.num_classes == 10 and info.channels == 1
    assert info.image_size == 8 and info.default_patch_size == 2 and info.num_patches == 16
    assert len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == 360  # 20% of 1797, rounded up by sklearn
    assert isinstance(digits.train, TensorSplit)
    x = digits.train.images
    assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8)
    assert int(x.max()) == 255 and int(x.min()) == 0
    assert digits.train.labels.dtype == torch.int64
    assert set(digits.train.labels.tolist()) == set(range(10))
    assert set(digits.test.labels.tolist()) == set(range(10))
    assert 0.0 < info.mean[0] < 1.0 and 0.0 < info.std[0] < 1.0


def test_digits_split_is_deterministic(digits: ImageDataset) -> None:
    again = load_digits()
    assert torch.equal(again.train.images, digits.train.images)  # type: ignore[attr-defined]
    assert torch.equal(again.test.labels, digits.test.labels)
    assert again.info == digits.info


def test_digits_limits_are_balanced_and_deterministic() -> None:
    a = load_digits(limit_train=50, limit_test=20)
    b = load_digits(limit_train=50, limit_test=20)
    assert len(a.train) == 50 and len(a.test) == 20
    assert torch.equal(a.train.labels, b.train.labels)
    counts = torch.bincount(a.train.labels, minlength=10)
    assert counts.min() == 5 and counts.max() == 5


def test_balanced_subset_small_limit_covers_classes() -> None:
    labels = torch.tensor([0] * 50 + [1] * 5 + [2] * 5)
    idx = balanced_subset_indices(labels, 3, seed=1)
    assert sorted(labels[idx].tolist()) == [0, 1, 2]
    assert torch.equal(idx, torch.sort(idx).values)


def test_builtin_registry_names() -> None:
    assert set(BUILTIN_DATASETS) == {"digits", "fashion-mnist", "cifar10", "cifar100", "stl10", "imagefolder",
                                     "imagenet-1k"}
    assert ds.load_dataset("digits", limit_train=10).info.name == "digits"
    with pytest.raises(KeyError, match="unknown dataset"):
        ds.load_dataset("nope")


@pytest.mark.parametrize("size,patch", [(8, 2), (28, 4), (32, 4), (96, 8), (224, 16)])
def test_suggest_patch_size(size: int, patch: int) -> None:
    assert suggest_patch_size(size) == patch


def test_dataset_info_validates() -> None:
    with pytest.raises(ValueError):
        DatasetInfo("x", 2, 3, 32, (0.5,), (0.5,), 4)
    with pytest.raises(ValueError):
        DatasetInfo("x", 2, 1, 30, (0.5,), (0.5,), 4)


# ---------------------------------------------------------------------- batching


def test_batches_deterministic_given_generator(digits: ImageDataset) -> None:
    def run(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [y for _, y in digits.train.batches(64, shuffle=True, generator=g, drop_last=False)]

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not all(torch.equal(u, v) for u, v in zip(a, c, strict=True))


def test_batches_without_shuffle_keep_order() -> None:
    split = _split(10)
    got = list(split.batches(4, shuffle=False, generator=None, drop_last=False))
    assert [len(y) for _, y in got] == [4, 4, 2]
    assert _all_ids(got) == list(range(10))
    x, y = got[0]
    assert x.dtype == torch.uint8 and x.shape == (4, 1, 4, 4) and y.dtype == torch.int64


def test_drop_last() -> None:
    split = _split(23)
    g = torch.Generator().manual_seed(0)
    kept = list(split.batches(5, shuffle=True, generator=g, drop_last=True))
    assert [len(y) for _, y in kept] == [5, 5, 5, 5]
    assert split.num_batches(5, drop_last=True) == 4
    g = torch.Generator().manual_seed(0)
    full = list(split.batches(5, shuffle=True, generator=g, drop_last=False))
    assert [len(y) for _, y in full] == [5, 5, 5, 5, 3]
    assert sorted(_all_ids(full)) == list(range(23))
    assert split.num_batches(5, drop_last=False) == 5


@pytest.mark.parametrize("n", [23, 24])
def test_ddp_sharding_disjoint_and_covering(n: int) -> None:
    split = _split(n)
    per_rank = []
    for rank in range(2):
        g = torch.Generator().manual_seed(7)  # same state on every rank
        per_rank.append(list(split.batches(4, shuffle=True, generator=g, drop_last=False, rank=rank, world_size=2)))
    # equal number of batches (and batch sizes), so no rank waits in a collective
    assert [len(y) for _, y in per_rank[0]] == [len(y) for _, y in per_rank[1]]
    assert len(per_rank[0]) == split.num_batches(4, drop_last=False, world_size=2)
    ids0, ids1 = _all_ids(per_rank[0]), _all_ids(per_rank[1])
    assert set(ids0) | set(ids1) == set(range(n))  # coverage
    if n % 2 == 0:
        assert not set(ids0) & set(ids1)  # disjoint
    else:
        assert len(ids0) + len(ids1) == n + 1  # exactly one wrap-around pad


def test_ddp_sharding_drop_last_is_disjoint() -> None:
    split = _split(23)
    shards = []
    for rank in range(2):
        g = torch.Generator().manual_seed(3)
        got = list(split.batches(4, shuffle=True, generator=g, drop_last=True, rank=rank, world_size=2))
        assert len(got) == 2 == split.num_batches(4, drop_last=True, world_size=2)
        shards.append(set(_all_ids(got)))
    assert not shards[0] & shards[1]
    assert len(shards[0]) == len(shards[1]) == 8


def test_ddp_shards_are_strided_share_of_one_permutation() -> None:
    g = torch.Generator().manual_seed(5)
    perm = torch.randperm(12, generator=g)
    for rank in range(3):
        g = torch.Generator().manual_seed(5)
        got = torch.cat(epoch_index_batches(12, 2, shuffle=True, generator=g, drop_last=False, rank=rank, world_size=3))
        assert torch.equal(got, perm[rank::3])


def test_sharded_shuffle_requires_generator() -> None:
    with pytest.raises(ValueError, match="generator"):
        list(_split().batches(4, shuffle=True, generator=None, drop_last=False, rank=0, world_size=2))


# ------------------------------------------------------------------ fashion-mnist


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_fake_fmnist(directory: Path, *, gz: bool, n_train: int = 12, n_test: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        if gz:
            with gzip.open(directory / (name + ".gz"), "wb") as f:
                f.write(_idx_bytes(arr))
        else:
            (directory / name).write_bytes(_idx_bytes(arr))
    return arrays


@pytest.fixture
def no_system_fmnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Hide the Debian copy and forbid downloads, so tests see only their own files."""
    fake_system = tmp_path / "no-system-copy"
    monkeypatch.setattr(ds, "FASHION_MNIST_SYSTEM_DIRS", (str(fake_system),))

    def no_download(root: Path) -> None:
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(ds, "_download_fashion_mnist", no_download)
    return fake_system


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_from_idx_dir(tmp_path: Path, no_system_fmnist: Path, gz: bool) -> None:
    arrays = _write_fake_fmnist(tmp_path / "fm", gz=gz)
    data = load_fashion_mnist(str(tmp_path / "fm"))
    assert data.info.name == "fashion-mnist" and data.info.image_size == 28
    assert data.info.channels == 1 and data.info.default_patch_size == 4
    assert len(data.train) == 12 and len(data.test) == 6
    x = data.train.images  # type: ignore[attr-defined]
    assert x.dtype == torch.uint8 and x.shape == (12, 1, 28, 28)
    assert np.array_equal(x[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    assert data.test.labels.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_fashion_mnist_torchvision_layout_and_limits(tmp_path: Path, no_system_fmnist: Path) -> None:
    _write_fake_fmnist(tmp_path / "FashionMNIST" / "raw", gz=False, n_train=30, n_test=20)
    data = load_fashion_mnist(str(tmp_path), limit_train=10, limit_test=5)
    assert len(data.train) == 10 and len(data.test) == 5
    assert sorted(data.train.labels.tolist()) == list(range(10))


def test_fashion_mnist_from_system_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_fake_fmnist(tmp_path / "system", gz=True)
    monkeypatch.setattr(ds, "FASHION_MNIST_SYSTEM_DIRS", (str(tmp_path / "system"),))
    data = load_fashion_mnist(str(tmp_path / "empty"), download=False)
    assert len(data.train) == 12


def test_fashion_mnist_missing_lists_paths(tmp_path: Path, no_system_fmnist: Path) -> None:
    root = tmp_path / "nothing-here"
    with pytest.raises(DatasetNotFoundError) as err:
        load_fashion_mnist(str(root))
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    from ssl_bench.errors import SSLBenchError

    assert isinstance(err.value, SSLBenchError)  # the CLI prints it without a traceback
    assert str(root) in msg and str(root / "FashionMNIST" / "raw") in msg
    assert str(no_system_fmnist) in msg
    assert "network unreachable" in msg
    assert "apt-get install dataset-fashion-mnist" in msg and "--data-root" in msg


def test_fashion_mnist_download_disabled(tmp_path: Path, no_system_fmnist: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="download=False"):
        load_fashion_mnist(str(tmp_path), download=False)


def test_read_idx_rejects_truncated(tmp_path: Path) -> None:
    p = tmp_path / "bad-idx3-ubyte"
    p.write_bytes(_idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8))[:-1])
    with pytest.raises(ValueError, match="expected"):
        read_idx(p)


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_debian_package() -> None:
    data = load_fashion_mnist(None, download=False)
    assert len(data.train) == 60000 and len(data.test) == 10000
    assert data.train.images.shape == (60000, 1, 28, 28)  # type: ignore[attr-defined]
    assert torch.bincount(data.test.labels).tolist() == [1000] * 10
    assert data.info.mean[0] == pytest.approx(0.286, abs=1e-3)
    assert data.info.std[0] == pytest.approx(0.353, abs=1e-3)


# ----------------------------------------------------------- torchvision datasets


def test_cifar_offline_error_names_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets as tvd

    def offline(*args: object, **kwargs: object) -> None:
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(DatasetNotFoundError) as err:
        ds.load_cifar10(str(tmp_path))
    assert str(tmp_path) in str(err.value) and "name resolution" in str(err.value)


def test_cifar_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.datasets as tvd

    class FakeCifar:
        def __init__(self, root: str, train: bool, download: bool) -> None:
            n = 20 if train else 10
            self.data = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            self.targets = [i % 10 for i in range(n)]

    monkeypatch.setattr(tvd, "CIFAR10", FakeCifar)
    data = ds.load_cifar10(str(tmp_path), limit_test=5)
    assert data.info.channels == 3 and data.info.image_size == 32 and data.info.default_patch_size == 4
    assert data.train.images.shape == (20, 3, 32, 32)  # type: ignore[attr-defined]
    assert len(data.test) == 5


def test_stl10_and_fashion_mnist_come_from_the_same_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """STL-10 (split="train"/"test", .labels, [N, C, H, W]) and Fashion-MNIST's download
    (train=True/False, .targets, a [N, H, W] tensor) through the one torchvision table."""
    import torchvision.datasets as tvd

    asked: list[dict] = []

    class FakeSTL10:
        def __init__(self, root: str, **kwargs: object) -> None:
            asked.append(kwargs)
            n = 6 if kwargs["split"] == "train" else 4
            self.data = np.arange(n * 3 * 96 * 96, dtype=np.int64).reshape(n, 3, 96, 96) % 256
            self.labels = np.arange(n) % 10

    class FakeFashionMNIST:
        def __init__(self, root: str, **kwargs: object) -> None:
            asked.append(kwargs)
            n = 6 if kwargs["train"] else 4
            self.data = (torch.arange(n * 28 * 28) % 256).to(torch.uint8).view(n, 28, 28)
            self.targets = torch.arange(n) % 10

    monkeypatch.setattr(tvd, "STL10", FakeSTL10)
    monkeypatch.setattr(tvd, "FashionMNIST", FakeFashionMNIST)
    stl = ds.load_dataset("stl10", str(tmp_path))
    assert asked == [{"download": True, "split": "train"}, {"download": True, "split": "test"}]
    assert stl.info == DatasetInfo("stl10", 10, 3, 96, (0.4467, 0.4398, 0.4066), (0.2603, 0.2566, 0.2713), 8)
    x = stl.train.images  # type: ignore[attr-defined]
    assert x.dtype == torch.uint8 and x.shape == (6, 3, 96, 96) and int(x[0, 1, 0, 0]) == (96 * 96) % 256
    assert stl.test.labels.tolist() == [0, 1, 2, 3]
    asked.clear()
    x_tr, y_tr, x_te, y_te = ds._download_fashion_mnist(tmp_path)
    assert asked == [{"download": True, "train": True}, {"download": True, "train": False}]
    assert x_tr.shape == (6, 1, 28, 28) and x_te.shape == (4, 1, 28, 28) and y_te.dtype == torch.int64
    assert torch.equal(x_tr[:, 0], FakeFashionMNIST(".", train=True).data)


# ------------------------------------------------------------------ image folder


def _make_imagefolder(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(3):
                arr = rng.integers(0, 256, (12, 10 + i, 3), dtype=np.uint8)  # non-square, varying
                Image.fromarray(arr).save(d / f"{i}.png")


def test_imagefolder_loads(tmp_path: Path) -> None:
    _make_imagefolder(tmp_path)
    data = load_imagefolder(str(tmp_path), image_size=8, num_workers=0)
    assert isinstance(data.train, FolderSplit)
    assert data.info.num_classes == 2 and data.info.channels == 3 and data.info.image_size == 8
    assert data.info.mean == ds.IMAGENET_MEAN
    assert len(data.train) == 6 and len(data.test) == 6
    g = torch.Generator().manual_seed(0)
    got = list(data.train.batches(4, shuffle=True, generator=g, drop_last=False))
    assert [tuple(x.shape) for x, _ in got] == [(4, 3, 8, 8), (2, 3, 8, 8)]
    assert all(x.dtype == torch.uint8 and y.dtype == torch.int64 for x, y in got)
    assert sorted(torch.cat([y for _, y in got]).tolist()) == [0, 0, 0, 1, 1, 1]
    # same generator state -> same batches; sharding as for in-memory splits
    g = torch.Generator().manual_seed(0)
    again = list(data.train.batches(4, shuffle=True, generator=g, drop_last=False))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(got, again, strict=True))
    shards = [
        list(data.train.batches(2, shuffle=True, generator=torch.Generator().manual_seed(1), drop_last=False,
                                rank=r, world_size=2))
        for r in range(2)
    ]
    assert len(shards[0]) == len(shards[1]) == 2


def test_imagefolder_limit_and_workers(tmp_path: Path) -> None:
    _make_imagefolder(tmp_path)
    data = load_imagefolder(str(tmp_path), image_size=8, num_workers=1, limit_train=2)
    assert len(data.train) == 2 and sorted(data.train.labels.tolist()) == [0, 1]
    (x, y), = list(data.train.batches(2, shuffle=False, generator=None, drop_last=False))
    assert x.shape == (2, 3, 8, 8) and y.tolist() == data.train.labels.tolist()


def test_imagenet1k_insists_on_1000_classes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _make_imagefolder(tmp_path)
    with pytest.raises(DatasetLayoutError, match=r"2 class folders, ImageNet-1k has 1000.*--dataset imagefolder"):
        ds.load_imagenet1k(str(tmp_path), image_size=8, num_workers=0)
    with pytest.raises(DatasetNotFoundError, match="imagenet-1k needs --data-root"):
        ds.load_imagenet1k(None)
    monkeypatch.setattr(ds, "IMAGENET1K_CLASSES", 2)  # stand-in for a 1000-folder tree
    data = ds.load_imagenet1k(str(tmp_path), image_size=8, num_workers=0, limit_train=4)
    assert data.info.name == "imagenet-1k" and data.info.num_classes == 2
    assert len(data.train) == 4 and data.info.mean == ds.IMAGENET_MEAN


def test_imagefolder_missing_val(tmp_path: Path) -> None:
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="val"):
        load_imagefolder(str(tmp_path))
    with pytest.raises(DatasetNotFoundError):
        load_imagefolder(None)


def test_a_val_class_missing_from_train_is_named(tmp_path: Path) -> None:
    _make_imagefolder(tmp_path)
    (tmp_path / "val" / "dog").rename(tmp_path / "val" / "bird")  # val: bird, cat; train: cat, dog
    with pytest.raises(DatasetLayoutError) as info:
        load_imagefolder(str(tmp_path), image_size=8, num_workers=0)
    msg = str(info.value)
    assert "\n" not in msg
    assert "val/ has 1 class folder(s) that train/ lacks (bird)" in msg
    assert "train/ has 1 class folder(s) that val/ lacks (dog)" in msg


@pytest.mark.parametrize("dataset", ["imagenet-1k", "imagefolder"])
def test_bad_folder_data_is_one_cli_line_with_exit_2(tmp_path: Path, capsys, dataset: str) -> None:
    """Was a ValueError traceback with exit 1."""
    from ssl_bench.cli import main

    _make_imagefolder(tmp_path / "data")
    if dataset == "imagefolder":
        (tmp_path / "data" / "val" / "dog").rename(tmp_path / "data" / "val" / "fox")
    rc = main(["run", "mae", "--dataset", dataset, "--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "runs"),
               "--results", str(tmp_path / "results.db")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("ssl-bench: error: ")]
    expected = "has 2 class folders, ImageNet-1k has 1000" if dataset == "imagenet-1k" else "val/ has 1 class folder(s) that train/ lacks (fox)"
    assert len(lines) == 1 and expected in lines[0]
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results.db").exists()
