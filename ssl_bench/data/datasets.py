"""Dataset loaders: ``load_X(data_root, **options) -> ImageDataset``.

Every loader accepts ``limit_train`` / ``limit_test`` (int) to take a deterministic,
class-balanced subset (see ``base.balanced_subset_indices``) for tests and quick runs.

Where data comes from:

* ``digits``: scikit-learn's bundled 8x8 digits; always offline, the default.
* ``fashion-mnist``: idx files in ``data_root`` (or its torchvision layout
  ``FashionMNIST/raw``), then Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz``), then torchvision's download.
* ``cifar10`` / ``cifar100`` / ``stl10``: torchvision downloaders, one row each of
  :data:`TORCHVISION_DATASETS` (which also holds Fashion-MNIST's download).
* ``imagefolder``: ``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*``, decoded lazily.

When nothing is found a :class:`DatasetNotFoundError` says what was tried and how to
get the data. The default download directory is ``$SSL_BENCH_DATA`` or
``~/.cache/ssl-bench/data``.
"""

from __future__ import annotations

import gzip
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ssl_bench.errors import SSLBenchError

from .base import (
    DatasetInfo,
    ImageDataset,
    ImageSplit,
    TensorSplit,
    balanced_subset_indices,
    suggest_patch_size,
)
from .folder import DEFAULT_EVAL_RESIZE_RATIO, FolderSplit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
STL10_MEAN = (0.4467, 0.4398, 0.4066)
STL10_STD = (0.2603, 0.2566, 0.2713)

#: Where Debian's ``dataset-fashion-mnist`` puts the four gzipped idx files.
FASHION_MNIST_SYSTEM_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist",)

_IDX_STEMS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class DatasetNotFoundError(SSLBenchError, FileNotFoundError):
    """The data could not be found locally nor downloaded; the message says how to get it.

    An ``SSLBenchError`` so the CLI prints the message instead of a traceback.
    """


class DatasetLayoutError(SSLBenchError, ValueError):
    """Data that was found but cannot be used as it is laid out (class folders that differ between
    train/ and val/, an ImageNet-1k without 1000 classes); the message says what to change."""


def default_data_root() -> Path:
    """Download/cache directory used when no ``data_root`` is given."""
    env = os.environ.get("SSL_BENCH_DATA")
    return Path(env) if env else Path.home() / ".cache" / "ssl-bench" / "data"


def _root(data_root: str | None) -> Path:
    return Path(data_root).expanduser() if data_root else default_data_root()


def _limit(split: ImageSplit, limit: int | None, seed: int) -> ImageSplit:
    if limit is None or limit >= len(split):
        return split
    return split.subset(balanced_subset_indices(split.labels, limit, seed=seed))


def _channel_stats(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std in [0, 1] space of uint8 ``[N, C, H, W]`` images."""
    x = images.transpose(0, 1).reshape(images.shape[1], -1).double() / 255.0  # [C, N*H*W]
    mean = x.mean(dim=1)
    std = x.std(dim=1).clamp_min(1e-3)  # a constant fake image must not divide by zero
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def _finish(
    info: DatasetInfo,
    train: ImageSplit,
    test: ImageSplit,
    limit_train: int | None,
    limit_test: int | None,
    seed: int,
) -> ImageDataset:
    return ImageDataset(
        info=info,
        train=_limit(train, limit_train, seed),
        test=_limit(test, limit_test, seed + 1),
    )


# --------------------------------------------------------------------------- digits


def load_digits(
    data_root: str | None = None,
    *,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """scikit-learn's 1797 8x8 handwritten digits (bundled: works offline).

    Pixel values 0..16 are rescaled to uint8 0..255; a fixed stratified split
    (``train_test_split(random_state=split_seed)``) keeps results comparable.
    ``data_root`` is ignored.
    """
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    del data_root
    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # [N, 8, 8]
    targets = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(targets)), test_size=test_fraction, random_state=split_seed, stratify=targets
    )
    x = torch.from_numpy(images).unsqueeze(1)  # [N, 1, 8, 8]
    y = torch.from_numpy(targets)
    tr, te = torch.from_numpy(np.sort(idx_train)), torch.from_numpy(np.sort(idx_test))
    mean, std = _channel_stats(x[tr])
    info = DatasetInfo("digits", 10, 1, 8, mean, std, default_patch_size=2)
    return _finish(info, TensorSplit(x[tr], y[tr]), TensorSplit(x[te], y[te]), limit_train, limit_test, seed)


# --------------------------------------------------------------------- fashion-mnist


def read_idx(path: str | Path) -> np.ndarray:
    """Read an idx file (the MNIST format), gzipped or not, as a uint8 array.

    Header: two zero bytes, a type byte (0x08 = uint8), a rank byte, then one
    big-endian uint32 per dimension.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: not an idx file (bad magic)")
    if data[2] != 0x08:
        raise ValueError(f"{path}: only uint8 idx files are supported (type byte {data[2]:#x})")
    ndim = data[3]
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    offset = 4 + 4 * ndim
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - offset != expected:
        raise ValueError(f"{path}: expected {expected} bytes of data for shape {dims}, found {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def _find_idx_file(directory: Path, stem: str) -> Path | None:
    # accept the usual name, the dotted variant (``train-images.idx3-ubyte``), gz or not
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = directory / name
        if p.is_file():
            return p
    return None


def _idx_dir_files(directory: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST idx files in ``directory``, or None if any is missing."""
    if not directory.is_dir():
        return None
    found = {key: _find_idx_file(directory, stem) for key, stem in _IDX_STEMS.items()}
    if any(p is None for p in found.values()):
        return None
    return {k: p for k, p in found.items() if p is not None}


def _fashion_from_idx(files: dict[str, Path]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        imgs, labs = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if imgs.ndim != 3 or labs.ndim != 1 or imgs.shape[0] != labs.shape[0]:
            raise ValueError(f"inconsistent idx shapes for {split}: {imgs.shape} vs {labs.shape}")
    return (
        torch.from_numpy(arrays["train_images"].copy()).unsqueeze(1),  # [N, 1, 28, 28]
        torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        torch.from_numpy(arrays["test_images"].copy()).unsqueeze(1),
        torch.from_numpy(arrays["test_labels"].astype(np.int64)),
    )


def _download_fashion_mnist(root: Path) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """torchvision's downloader (the table's entry); separate so tests can replace it."""
    return TORCHVISION_DATASETS["fashion-mnist"].read(root, download=True)


def load_fashion_mnist(
    data_root: str | None = None,
    *,
    download: bool = True,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """Fashion-MNIST (28x28 grey, 10 classes, 60k/10k), looked up in this order:

    1. ``data_root`` itself holding the idx files (gz or plain), or its torchvision
       layout ``data_root/FashionMNIST/raw``;
    2. Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``);
    3. without ``data_root``: an earlier download in ``default_data_root()/FashionMNIST/raw``;
    4. torchvision's download into ``data_root`` (default ``default_data_root()``).
    """
    tried: list[str] = []
    candidates: list[Path] = []
    if data_root:
        root = Path(data_root).expanduser()
        candidates += [root, root / "FashionMNIST" / "raw", root / "fashion-mnist"]
    candidates += [Path(d) for d in FASHION_MNIST_SYSTEM_DIRS]
    if not data_root:  # an earlier torchvision download into the default cache
        candidates.append(default_data_root() / "FashionMNIST" / "raw")
    tensors = None
    for directory in candidates:
        files = _idx_dir_files(directory)
        tried.append(f"{directory} (idx files{'' if files else ' not found'})")
        if files:
            tensors = _fashion_from_idx(files)
            break
    if tensors is None:
        dl_root = _root(data_root)
        if download:
            try:
                tensors = _download_fashion_mnist(dl_root)
            except Exception as exc:  # offline, blocked, corrupt: all end the same way
                tried.append(f"torchvision download into {dl_root} (failed: {type(exc).__name__}: {exc})")
        else:
            tried.append(f"torchvision download into {dl_root} (skipped: download=False)")
    if tensors is None:
        raise DatasetNotFoundError(
            "Fashion-MNIST not found. Tried:\n  - "
            + "\n  - ".join(tried)
            + "\nTo get it: `apt-get install dataset-fashion-mnist` (Debian, installs "
            "/usr/share/datasets/fashion-mnist), or pass --data-root pointing at a folder "
            "with train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz], or run once with "
            "internet access so torchvision can download it."
        )
    return TORCHVISION_DATASETS["fashion-mnist"].dataset(tensors, limit_train, limit_test, seed)


# ------------------------------------------------------------- torchvision datasets


@dataclass(frozen=True)
class TorchvisionDataset:
    """A dataset that torchvision downloads, held in memory as uint8 ``[N, C, H, W]``; called like
    every loader: ``spec(data_root, download=..., limit_train=..., limit_test=..., seed=...)``.

    One row of :data:`TORCHVISION_DATASETS` per dataset: what differs between them is only the
    torchvision class, how its two splits are asked for (``train=True`` / ``split="train"``), the
    attribute holding the labels and the layout of ``.data``.
    """

    name: str
    torchvision_class: str  # in torchvision.datasets
    num_classes: int
    channels: int
    image_size: int
    patch_size: int
    split_kwargs: tuple[tuple[tuple[str, Any], ...], tuple[tuple[str, Any], ...]]  # train, test constructor keywords
    labels_attr: str  # "targets" or "labels"
    layout: str  # of ``.data``: "NHWC" (CIFAR), "NCHW" (STL-10), "NHW" (grey, Fashion-MNIST)
    mean: tuple[float, ...] | None = None  # None: measured on the training images
    std: tuple[float, ...] | None = None

    def read(self, root: Path, download: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(train images uint8 [N, C, H, W], train labels int64 [N], test images, test labels)
        through torchvision; its errors (offline, missing files) propagate."""
        import torchvision.datasets as tvd

        cls = getattr(tvd, self.torchvision_class)
        out: list[Tensor] = []
        for kwargs in self.split_kwargs:
            ds = cls(str(root), download=download, **dict(kwargs))
            out += [self._images(ds.data), torch.as_tensor(getattr(ds, self.labels_attr), dtype=torch.int64)]
        x_tr, y_tr, x_te, y_te = out
        return x_tr, y_tr, x_te, y_te

    def _images(self, data: Any) -> Tensor:
        x = torch.as_tensor(np.asarray(data, dtype=np.uint8))
        if self.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)  # [N, H, W, C] -> [N, C, H, W]
        elif self.layout == "NHW":
            x = x.unsqueeze(1)  # [N, H, W] -> [N, 1, H, W]
        return x.contiguous()

    def __call__(
        self,
        data_root: str | None = None,
        *,
        download: bool = True,
        limit_train: int | None = None,
        limit_test: int | None = None,
        seed: int = 0,
    ) -> ImageDataset:
        root = _root(data_root)
        try:
            tensors = self.read(root, download)
        except Exception as exc:  # offline, blocked, corrupt: all end the same way
            raise DatasetNotFoundError(
                f"{self.name}: could not load or download into {root} "
                f"({type(exc).__name__}: {exc}). Download needs internet access; otherwise put "
                f"torchvision's {self.name} files under that directory (--data-root) yourself."
            ) from exc
        return self.dataset(tensors, limit_train, limit_test, seed)

    def dataset(
        self, tensors: tuple[Tensor, Tensor, Tensor, Tensor], limit_train: int | None, limit_test: int | None, seed: int
    ) -> ImageDataset:
        """The dataset of ``read``'s tensors (or the same tensors from elsewhere, e.g. idx files)."""
        x_tr, y_tr, x_te, y_te = tensors
        mean, std = (self.mean, self.std) if self.mean and self.std else _channel_stats(x_tr)
        info = DatasetInfo(self.name, self.num_classes, self.channels, self.image_size, mean, std, self.patch_size)
        return _finish(info, TensorSplit(x_tr, y_tr), TensorSplit(x_te, y_te), limit_train, limit_test, seed)


_TRAIN_TEST = ((("train", True),), (("train", False),))

#: Every torchvision dataset ssl-bench loads. Statistics: the usual per-channel mean/std of each
#: training set (CIFAR-10 as in kuangliu/pytorch-cifar, CIFAR-100 and STL-10 likewise).
TORCHVISION_DATASETS: dict[str, TorchvisionDataset] = {
    spec.name: spec
    for spec in (
        # CIFAR-10 / CIFAR-100 (fine labels): 32x32 RGB, 50k/10k
        TorchvisionDataset("cifar10", "CIFAR10", 10, 3, 32, 4, _TRAIN_TEST, "targets", "NHWC", CIFAR10_MEAN, CIFAR10_STD),
        TorchvisionDataset("cifar100", "CIFAR100", 100, 3, 32, 4, _TRAIN_TEST, "targets", "NHWC", CIFAR100_MEAN, CIFAR100_STD),
        # STL-10's labelled splits: 96x96 RGB, 5k/8k; patch 8 gives a 12x12 grid (144 tokens), 16 a cheaper 6x6
        TorchvisionDataset(
            "stl10", "STL10", 10, 3, 96, 8, ((("split", "train"),), (("split", "test"),)), "labels", "NCHW",
            STL10_MEAN, STL10_STD,
        ),
        # Fashion-MNIST: 28x28 grey, 60k/10k; the download only (load_fashion_mnist looks for local copies first)
        TorchvisionDataset("fashion-mnist", "FashionMNIST", 10, 1, 28, 4, _TRAIN_TEST, "targets", "NHW"),
    )
}
load_cifar10 = TORCHVISION_DATASETS["cifar10"]
load_cifar100 = TORCHVISION_DATASETS["cifar100"]
load_stl10 = TORCHVISION_DATASETS["stl10"]


# --------------------------------------------------------------------- image folder


def load_imagefolder(
    data_root: str | None = None,
    *,
    image_size: int = 224,
    num_workers: int | None = None,
    limit_train: int | None = None,
    limit_test: int | None = None,
    seed: int = 0,
    decoder: str = "torchvision",
    strict: bool = False,
    eval_resize_ratio: float = DEFAULT_EVAL_RESIZE_RATIO,
    eval_interpolation: str = "bicubic",
    draft_margin: float | None = 1.0,
) -> ImageDataset:
    """ImageNet-layout folders ``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*``.

    Images are decoded lazily (``folder.FolderSplit``), so the dataset never has to
    fit in memory. Without crop views a batch is the evaluation decode: shorter side
    to ``round(image_size * eval_resize_ratio)`` (default 256/224: ``Resize(256)``),
    then the centre ``image_size`` square; training asks for views cut from the full
    image (``batches(views=[CropSpec(...)])``). ``decoder``: torchvision | pil | cuda;
    ``num_workers`` None: one per spare core; ``strict``: check every file up front
    and raise on unreadable ones instead of substituting them; ``draft_margin``: when
    JPEG DCT scaling may be used (None: never). Uses ImageNet's mean/std.
    """
    if not data_root:
        raise DatasetNotFoundError("imagefolder needs --data-root pointing at a folder with train/ and val/")
    root = Path(data_root).expanduser()
    missing = [str(root / s) for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        raise DatasetNotFoundError(
            f"imagefolder: missing {', '.join(missing)}; expected ROOT/train/<class>/*.jpg "
            f"and ROOT/val/<class>/*.jpg under {root}"
        )
    try:
        options: dict[str, Any] = dict(
            num_workers=num_workers, decoder=decoder, strict=strict,
            eval_resize_ratio=eval_resize_ratio, eval_interpolation=eval_interpolation,
            draft_margin=draft_margin,
        )
        train = FolderSplit(str(root / "train"), image_size, **options)
        test = FolderSplit(str(root / "val"), image_size, **options)
    except FileNotFoundError as exc:  # ImageFolder: no class folders / no images
        raise DatasetNotFoundError(f"imagefolder: {exc}") from exc
    if train.classes != test.classes:
        raise DatasetLayoutError(_class_mismatch(root, train.classes, test.classes))
    info = DatasetInfo(
        f"imagefolder:{root.name}",
        len(train.classes),
        3,
        image_size,
        IMAGENET_MEAN,
        IMAGENET_STD,
        default_patch_size=suggest_patch_size(image_size),
    )
    return _finish(info, train, test, limit_train, limit_test, seed)


def _class_mismatch(root: Path, train: list[str], val: list[str]) -> str:
    """Why train/ and val/ cannot be used together: a label is a class folder's place in the
    sorted list of folders, so the two lists must be the same or every label after a gap is wrong."""

    def named(names: list[str]) -> str:
        return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")

    only_val = sorted(set(val) - set(train))
    only_train = sorted(set(train) - set(val))
    parts = [f"val/ has {len(only_val)} class folder(s) that train/ lacks ({named(only_val)})"] if only_val else []
    parts += [f"train/ has {len(only_train)} class folder(s) that val/ lacks ({named(only_train)})"] if only_train else []
    return (
        f"imagefolder: {root}: {'; '.join(parts)}. Labels follow the sorted class folders, so train/ and val/ "
        "must hold the same ones: add the missing folders or remove the extra ones"
    )


IMAGENET1K_CLASSES = 1000


def load_imagenet1k(data_root: str | None = None, **options: Any) -> ImageDataset:
    """ImageNet-1k in the ImageNet folder layout, recorded as ``imagenet-1k``.

    The same loader as ``imagefolder``, but the runs it produces are named after
    the paper's dataset, so ``ssl-bench leaderboard --layout table4`` compares
    them with Table 4 without a "settings differ" note. It insists on exactly
    1000 class folders so a subset (ImageNet-100, a debug slice) cannot pass for
    the real thing: use ``imagefolder`` for those.
    """
    if not data_root:
        raise DatasetNotFoundError(
            "imagenet-1k needs --data-root pointing at ImageNet with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG"
        )
    data = load_imagefolder(data_root, **options)  # same options (image_size, num_workers, decoder, ...)
    found = data.info.num_classes
    if found != IMAGENET1K_CLASSES:
        raise DatasetLayoutError(
            f"imagenet-1k: {data_root} has {found} class folders, ImageNet-1k has {IMAGENET1K_CLASSES}; "
            "for another folder dataset use --dataset imagefolder"
        )
    return replace(data, info=replace(data.info, name="imagenet-1k"))


load_imagenet1k.__signature__ = inspect.signature(load_imagefolder)  # type: ignore[attr-defined]  # its options


BUILTIN_DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "digits": load_digits,
    "fashion-mnist": load_fashion_mnist,
    "cifar10": load_cifar10,
    "cifar100": load_cifar100,
    "stl10": load_stl10,
    "imagefolder": load_imagefolder,
    "imagenet-1k": load_imagenet1k,
}


def load_dataset(name: str, data_root: str | None = None, **options: Any) -> ImageDataset:
    """Look up ``name`` in :data:`BUILTIN_DATASETS` and load it."""
    try:
        loader = BUILTIN_DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; choose from {sorted(BUILTIN_DATASETS)}") from None
    return loader(data_root, **options)
