"""ImageNet-layout folders (``root/<class>/<image>``) decoded and cropped per batch.

Why not torchvision's ``ImageFolder`` + transforms: the methods crop each view from
the *full* image (``crops.py``), so the crop has to happen while decoding, and one
PIL decode plus a PIL resize per image is too slow to feed a GPU. Here, per image:

1. the header gives the full size; every view's box is drawn from a generator
   seeded by (epoch seed, sample index, view) (``crops.view_boxes``), so crops are
   reproducible and identical for any worker count;
2. for a JPEG whose boxes all stay at least the output size when shrunk by
   k = 2, 4 or 8, libjpeg decodes at 1/k resolution in the DCT domain
   (``PIL.Image.draft``), k^2 less inverse-DCT and colour-conversion work;
3. each box is cut and resized, antialiased, with torchvision's tensor kernels
   (``transforms.v2.functional.resized_crop``; on x86 its uint8 path is the SIMD
   one, several times faster than ``PIL.Image.resize``: ``benchmarks/data_speed.py``).

Decoders (all read the header with PIL and DCT-scale with ``PIL.Image.draft``):

* ``torchvision`` (default): full-size JPEG/PNG decodes with ``torchvision.io.decode_image``
  (libjpeg-turbo straight into a tensor); other formats and DCT-scaled decodes with PIL;
* ``pil``: everything with PIL (the same libjpeg-turbo pixels, slower: PIL decodes into
  a 4-byte-per-pixel buffer that is then packed into the tensor);
* ``cuda``: workers only read bytes and draw boxes; the main process decodes the batch
  with nvJPEG (``torchvision.io.decode_jpeg(list, device="cuda")``) and crops on the GPU.

``benchmarks/data_speed.py`` measures them against the standard ImageFolder pipeline.

Unreadable files (truncated, corrupt, vanished) are replaced by the next readable
file of the same class, so labels stay right, and counted in
``FolderSplit.skipped_files`` with a warning on the ``ssl_bench`` logger naming each
file; ``strict=True`` checks every file when the split is built and never substitutes.
"""

from __future__ import annotations

import copy
import io
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import default_collate
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F2

from ssl_bench.errors import SSLBenchError

from .base import Batch, ImageSplit
from .crops import (
    Box,
    CropSpec,
    draft_factor,
    eval_draft_factor,
    eval_resize_size,
    resized_shape,
    view_boxes,
)

log = logging.getLogger("ssl_bench")

DECODERS: tuple[str, ...] = ("pil", "torchvision", "cuda")
DEFAULT_EVAL_RESIZE_RATIO = 256 / 224  # Resize(256) + CenterCrop(224), MAE / MoCo v3 evaluation

_INTERPOLATION = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
#: What a broken file raises in PIL / libjpeg / libpng / torchvision (caught per image).
_UNREADABLE: tuple[type[BaseException], ...] = (
    OSError,  # includes PIL.UnidentifiedImageError, "image file is truncated", missing files
    SyntaxError,  # PIL's parsers for malformed headers
    ValueError,
    RuntimeError,  # torchvision.io decoders
    EOFError,
    struct.error,
    zlib.error,
    Image.DecompressionBombError,
)
_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_EOI = b"\xff\xd9"
_EOI_TAIL = 1024  # bytes at the end of a JPEG searched for its end-of-image marker


class UnreadableImageError(SSLBenchError, OSError):
    """Image files that cannot be decoded (strict mode, or a class with no readable file)."""


def default_num_workers() -> int:
    """One DataLoader worker per spare core: ``cores // LOCAL_WORLD_SIZE - 1``, at least 1.

    Each local training process keeps one core for itself (the main loop, pinning,
    the CUDA launches); ``LOCAL_WORLD_SIZE`` is set by torchrun. Cores are those this
    process may run on (``sched_getaffinity``: respects taskset/cgroup cpusets).
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, cores // local - 1)


def _unreadable_jpeg_tail(path: str) -> str | None:
    """Why a JPEG file is truncated (no end-of-image marker near its end), else None.

    ``PIL.Image.verify`` checks nothing for JPEG, and a truncated download keeps a
    valid header; the EOI marker (FF D9) cannot occur inside entropy-coded data (an FF
    byte there is always followed by 00 or a restart marker), so its absence from the
    last KiB is a cheap truncation test.
    """
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - _EOI_TAIL))
        tail = f.read()
    return None if _JPEG_EOI in tail else "truncated JPEG (no end-of-image marker)"


def verify_image(path: str) -> str | None:
    """Header check of one file (``PIL.Image.verify`` plus a JPEG truncation test).

    Returns None when the file looks decodable, else the reason. Cheap (no pixel
    decode), so it can run over all of ImageNet at construction with ``strict=True``.
    """
    try:
        with Image.open(path) as im:
            fmt = im.format
            im.verify()
        if fmt == "JPEG":
            return _unreadable_jpeg_tail(path)
    except _UNREADABLE as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@dataclass
class _Decoded:
    """One sample as a worker produced it."""

    pixels: Tensor | None  # uint8 [V, C, S, S] or [C, S, S]; None when left to the GPU
    file_index: int  # the file actually used (differs from the sample's after a substitution)
    factor: int = 1  # JPEG DCT scaling used
    raw: Tensor | None = None  # uint8 [nbytes] file contents, for the cuda decoder
    boxes: list[Box] = field(default_factory=list)  # crop boxes on the full image, for the cuda decoder
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of files passed over


class _FolderReader:
    """The picklable part of a :class:`FolderSplit` that DataLoader workers run.

    Paths are kept as one numpy bytes array relative to ``root`` (no per-sample
    Python objects), so forked workers do not copy-on-write a million-entry list
    just by touching reference counts.
    """

    def __init__(
        self,
        root: str,
        paths: np.ndarray,
        targets: np.ndarray,
        *,
        image_size: int,
        eval_resize_ratio: float,
        eval_interpolation: str,
        decoder: str,
        strict: bool,
        draft_margin: float | None,
    ) -> None:
        self.root = root
        self.paths = paths  # bytes [N], relative to root
        self.targets = targets  # int64 [N], sorted (ImageFolder scans classes in order)
        num_classes = int(targets.max()) + 1 if targets.size else 0
        self.class_bounds = np.searchsorted(targets, np.arange(num_classes + 1), side="left")
        self.image_size = image_size
        self.eval_shorter = eval_resize_size(image_size, eval_resize_ratio)
        self.eval_interpolation = _INTERPOLATION[eval_interpolation]
        self.decoder = decoder
        self.strict = strict
        self.draft_margin = draft_margin
        self.views: tuple[CropSpec, ...] | None = None

    def with_views(self, views: tuple[CropSpec, ...] | None) -> _FolderReader:
        clone = copy.copy(self)  # shares the arrays
        clone.views = views
        return clone

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    def path(self, file_index: int) -> str:
        return os.path.join(self.root, os.fsdecode(self.paths[file_index]))

    def _candidates(self, file_index: int) -> Iterator[int]:
        """``file_index``, then the following files of its class (wrapping round)."""
        c = int(self.targets[file_index])
        lo, hi = int(self.class_bounds[c]), int(self.class_bounds[c + 1])
        for k in range(hi - lo):
            yield lo + (file_index - lo + k) % (hi - lo)

    # ------------------------------------------------------------------ one image

    def _plan(
        self, height: int, width: int, file_index: int, epoch_seed: int, jpeg: bool
    ) -> tuple[list[Box], int]:
        """Crop boxes on the full image and the DCT scaling factor they allow."""
        margin = self.draft_margin
        if self.views is None:
            return [], eval_draft_factor(height, width, self.eval_shorter, margin) if jpeg and margin else 1
        boxes = view_boxes(height, width, self.views, epoch_seed, file_index)
        return boxes, draft_factor(boxes, [v.size for v in self.views], margin) if jpeg and margin else 1

    def _cut(self, img: Tensor, height: int, width: int, boxes: list[Box], factor: int) -> Tensor:
        """Views ``[V, C, S, S]`` (or the eval crop ``[C, S, S]``) from a decoded ``[C, h, w]``.

        ``img`` may be a 1/``factor`` DCT-scaled decode of the ``height`` x ``width``
        image: a source pixel y lands at y / factor, so boxes are divided by factor
        (rounded to whole pixels, i.e. at most half a decoded pixel off).
        """
        if self.views is None:
            new_h, new_w = resized_shape(height, width, self.eval_shorter)  # from the full size, as Resize does
            img = F2.resize(img, [new_h, new_w], interpolation=self.eval_interpolation, antialias=True)
            return F2.center_crop(img, [self.image_size, self.image_size])  # [C, S, S]
        dec_h, dec_w = img.shape[-2:]
        out = []
        for (top, left, h, w), spec in zip(boxes, self.views, strict=True):
            if factor > 1:
                bottom, right = min(round((top + h) / factor), dec_h), min(round((left + w) / factor), dec_w)
                top, left = round(top / factor), round(left / factor)
                h, w = bottom - top, right - left
            out.append(
                F2.resized_crop(
                    img, top, left, h, w, [spec.size, spec.size],
                    interpolation=_INTERPOLATION[spec.interpolation], antialias=True,
                )
            )
        return torch.stack(out)  # [V, C, S, S]

    def _decode_cpu(self, path: str, file_index: int, epoch_seed: int, libjpeg_via: str) -> tuple[Tensor, int]:
        """Decode one file on the CPU and cut its views; returns ``(pixels, DCT factor)``."""
        with open(path, "rb") as f:
            return self._decode_bytes(f.read(), file_index, epoch_seed, libjpeg_via)

    def _decode_bytes(self, data: bytes, file_index: int, epoch_seed: int, libjpeg_via: str) -> tuple[Tensor, int]:
        """Decode one file's contents on the CPU and cut its views; returns ``(pixels, DCT factor)``.

        The header (PIL) gives the size for the boxes, then the DCT factor is chosen.
        A DCT-scaled decode always goes through PIL (``draft``; torchvision.io has no
        DCT scaling). A full-size JPEG/PNG decode goes through ``libjpeg_via``: "pil",
        or "torchvision" (``torchvision.io.decode_image``: the same libjpeg-turbo decode,
        written straight into a tensor, where PIL decodes into its own 4-byte-per-pixel
        buffer that then has to be packed and copied: measurably slower).
        """
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size  # header only: nothing decoded yet
            boxes, factor = self._plan(height, width, file_index, epoch_seed, jpeg=im.format == "JPEG")
            if factor > 1 and im.draft("RGB", (width // factor, height // factor)) is None:
                factor = 1
            if libjpeg_via == "pil" or factor > 1 or im.format not in ("JPEG", "PNG"):
                im.load()
                rgb = im if im.mode == "RGB" else im.convert("RGB")
                img = F2.pil_to_tensor(rgb)  # [C, h, w] uint8, HWC in memory (the fast resize layout)
                return self._cut(img, height, width, boxes, factor), factor
        img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)  # [C, H, W]
        if img.dtype != torch.uint8:  # 16-bit PNGs decode to uint16
            img = F2.to_dtype(img, torch.uint8, scale=True)
        return self._cut(img, height, width, boxes, 1), 1

    def _prepare_cuda(self, path: str, file_index: int, epoch_seed: int) -> _Decoded:
        """Bytes and boxes for nvJPEG; formats it cannot take are decoded here on the CPU."""
        with open(path, "rb") as f:
            data = f.read()
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            gpu_ok = im.format == "JPEG" and im.mode in ("RGB", "L")  # nvJPEG: no CMYK / PNG
        if not gpu_ok:  # decoded here, from the bytes already read
            pixels, factor = self._decode_bytes(data, file_index, epoch_seed, "pil")
            return _Decoded(pixels, file_index, factor)
        if _JPEG_EOI not in data[-_EOI_TAIL:]:
            raise OSError("truncated JPEG (no end-of-image marker)")
        boxes, _ = self._plan(height, width, file_index, epoch_seed, jpeg=False)
        raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)  # [nbytes]
        return _Decoded(None, file_index, 1, raw=raw, boxes=boxes)

    def load(self, sample_index: int, epoch_seed: int, decoder: str | None = None) -> _Decoded:
        """Decode sample ``sample_index`` (a file index), substituting unreadable files.

        The crop boxes always come from the *sample's* seed, also for a substitute,
        so a substitution does not shift any other sample's crops.
        """
        decoder = decoder or self.decoder
        skipped: list[tuple[str, str]] = []
        for candidate in self._candidates(sample_index):
            path = self.path(candidate)
            try:
                if decoder == "cuda":
                    out = self._prepare_cuda(path, sample_index, epoch_seed)
                    out.file_index = candidate
                else:
                    pixels, factor = self._decode_cpu(path, sample_index, epoch_seed, decoder)
                    out = _Decoded(pixels, candidate, factor)
            except _UNREADABLE as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if self.strict:
                    raise UnreadableImageError(f"cannot decode {path}: {reason}") from exc
                skipped.append((path, reason))
                continue
            out.skipped = skipped
            return out
        c = int(self.targets[sample_index])
        raise UnreadableImageError(
            f"no readable image in class folder {os.path.dirname(self.path(sample_index))} "
            f"(class {c}); first failure: {skipped[0][0]}: {skipped[0][1]}"
        )

    # ---------------------------------------------------------------- one batch

    def __getitems__(self, items: Sequence[tuple[int, int]]) -> tuple[Any, Tensor, dict[str, Any]]:
        """Decode a batch of ``(file index, epoch seed)`` items (runs in a DataLoader worker).

        Returns ``(images, labels int64 [B], info)``: images uint8 ``[B, V, C, S, S]``
        with views or ``[B, C, S, S]`` without; for the cuda decoder a dict of raw
        bytes and boxes instead, finished on the GPU by :meth:`FolderSplit._finish_cuda`.
        ``info`` carries the files skipped and a histogram of DCT factors (1, 2, 4, 8).
        """
        decoded = [self.load(int(i), int(seed)) for i, seed in items]
        labels = torch.as_tensor(self.targets[[d.file_index for d in decoded]], dtype=torch.int64)  # [B]
        info = {
            "skipped": [s for d in decoded for s in d.skipped],
            "draft": [sum(d.factor == k for d in decoded) for k in (1, 2, 4, 8)],
        }
        if self.decoder == "cuda":
            payload = {
                "raw": [d.raw for d in decoded],
                "boxes": [d.boxes for d in decoded],
                "pixels": {b: d.pixels for b, d in enumerate(decoded) if d.pixels is not None},
                "items": [(int(i), int(seed)) for i, seed in items],
            }
            return payload, labels, info
        # default_collate stacks straight into shared memory inside a worker: the batch is not
        # copied again on its way to the main process
        images = default_collate([d.pixels for d in decoded])  # [B, V, C, S, S] / [B, C, S, S]
        return images, labels, info


def _keep_batch(batch: Any) -> Any:
    """``collate_fn``: ``__getitems__`` already returns a whole batch."""
    return batch


class _EpochSampler:
    """A ``batch_sampler`` whose batches are replaced each epoch.

    A DataLoader with persistent workers re-iterates its *same* batch sampler every
    epoch; this one yields whatever :meth:`FolderSplit._load_views` put in it last.
    """

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class _CachedLoader:
    loader: Any  # torch.utils.data.DataLoader
    sampler: _EpochSampler
    busy: bool = False


class FolderSplit(ImageSplit):
    """An ImageNet-layout folder (``root/<class>/<image>``) decoded on the fly.

    For datasets that do not fit in memory. The order still comes from
    :func:`~ssl_bench.data.base.epoch_index_batches`, so shuffling and sharding
    behave exactly like :class:`~ssl_bench.data.base.TensorSplit`.

    * ``batches(views=[CropSpec, ...])``: uint8 ``[B, V, C, S, S]``, each view cut
      from the full image (training). Right after the permutation, one integer is
      drawn from the caller's generator as the epoch's crop seed.
    * ``batches()`` without views: the evaluation decode ``[B, C, S, S]`` (shorter
      side to ``round(image_size * eval_resize_ratio)``, then the centre
      ``image_size`` square; the default ratio 256/224 is MAE / MoCo v3's
      ``Resize(256)`` + ``CenterCrop(224)``).

    ``decoder``: ``torchvision`` (default), ``pil`` or ``cuda`` (nvJPEG on the
    training GPU; needs ``device="cuda"``); see the module docstring. ``num_workers``: None
    for :func:`default_num_workers`. Workers are persistent across epochs (one
    pool per set of views) and batches are pinned when the device is CUDA.
    ``strict``: verify every file now and raise on any unreadable file, at build
    or decode time, instead of substituting it. ``draft_margin``: JPEG DCT scaling
    by k is used when every box shrunk by k keeps ``draft_margin`` x its output size
    (``crops.draft_factor``; 2 trades speed for fidelity, None turns it off).
    """

    def __init__(
        self,
        root: str,
        image_size: int,
        *,
        num_workers: int | None = None,
        decoder: str = "torchvision",
        strict: bool = False,
        eval_resize_ratio: float = DEFAULT_EVAL_RESIZE_RATIO,
        eval_interpolation: str = "bicubic",
        draft_margin: float | None = 1.0,
        indices: Sequence[int] | Tensor | None = None,
        _reader: _FolderReader | None = None,
    ) -> None:
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if decoder == "cuda" and not torch.cuda.is_available():
            raise ValueError("decoder='cuda' needs a CUDA GPU; use decoder='torchvision' or 'pil' on this machine")
        if draft_margin is not None and draft_margin < 1:
            raise ValueError(f"draft_margin must be >= 1 (never upsample a DCT-scaled decode) or None, got {draft_margin}")
        if eval_interpolation not in _INTERPOLATION:
            raise ValueError(f"eval_interpolation must be one of {tuple(_INTERPOLATION)}, got {eval_interpolation!r}")
        self.root = root
        self.image_size = image_size
        self.num_workers = default_num_workers() if num_workers is None else num_workers
        self.decoder = decoder
        self.strict = strict
        self.eval_resize_ratio = eval_resize_ratio
        self.eval_interpolation = eval_interpolation
        self.draft_margin = draft_margin
        self._classes: list[str]
        if _reader is None:
            _reader, self._classes = self._scan(root)
        else:
            self._classes = []
        self._reader = _reader
        n = len(_reader)
        self.indices = torch.arange(n) if indices is None else torch.as_tensor(indices, dtype=torch.long).cpu()
        self._labels = torch.from_numpy(_reader.targets)[self.indices]  # [N] int64
        #: unreadable files met so far (path -> reason); each was replaced by a readable one
        self.unreadable: dict[str, str] = {}
        #: how many samples were decoded at each JPEG DCT scale (1, 2, 4, 8), for benchmarks
        self.draft_counts: dict[int, int] = {1: 0, 2: 0, 4: 0, 8: 0}
        self._loaders: dict[tuple[Any, ...], _CachedLoader] = {}
        if strict and indices is None:
            self._verify_all()

    def _scan(self, root: str) -> tuple[_FolderReader, list[str]]:
        """List ``root/<class>/<image>`` with torchvision's ImageFolder rules."""
        from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

        classes, class_to_idx = find_classes(root)  # FileNotFoundError without class folders
        samples = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS)  # FileNotFoundError when empty
        prefix = os.path.join(os.path.expanduser(root), "")
        rel = [p[len(prefix):] if p.startswith(prefix) else os.path.relpath(p, root) for p, _ in samples]
        paths = np.array([os.fsencode(p) for p in rel], dtype=np.bytes_)
        targets = np.array([t for _, t in samples], dtype=np.int64)
        reader = _FolderReader(
            os.path.expanduser(root), paths, targets,
            image_size=self.image_size, eval_resize_ratio=self.eval_resize_ratio,
            eval_interpolation=self.eval_interpolation, decoder=self.decoder, strict=self.strict,
            draft_margin=self.draft_margin,
        )
        return reader, classes

    def _verify_all(self) -> None:
        """Header-check every file (threads: this is file I/O); raise naming the bad ones."""
        paths = [self._reader.path(i) for i in range(len(self._reader))]
        with ThreadPoolExecutor(max_workers=max(4, self.num_workers + 1)) as pool:
            reasons = list(pool.map(verify_image, paths, chunksize=256))
        bad = [(p, r) for p, r in zip(paths, reasons, strict=True) if r is not None]
        if bad:
            shown = "\n  ".join(f"{p}: {r}" for p, r in bad[:10])
            more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise UnreadableImageError(
                f"{len(bad)} unreadable image file(s) under {self.root}:\n  {shown}{more}\n"
                "Replace or delete them, or build the split with strict=False to substitute "
                "each with the next readable image of its class."
            )

    @property
    def classes(self) -> list[str]:
        return list(self._classes)

    @property
    def skipped_files(self) -> int:
        """How many distinct unreadable files were substituted so far (see ``unreadable``)."""
        return len(self.unreadable)

    def __len__(self) -> int:
        return self.indices.numel()

    @property
    def labels(self) -> Tensor:
        return self._labels

    def subset(self, indices: Sequence[int] | Tensor) -> FolderSplit:
        idx = torch.as_tensor(indices, dtype=torch.long).cpu()
        sub = FolderSplit(
            self.root, self.image_size, num_workers=self.num_workers, decoder=self.decoder, strict=self.strict,
            eval_resize_ratio=self.eval_resize_ratio, eval_interpolation=self.eval_interpolation,
            draft_margin=self.draft_margin, indices=self.indices[idx], _reader=self._reader,
        )
        sub._classes = self._classes
        return sub

    # ------------------------------------------------------------------ loading

    def _load(self, index_batches: list[Tensor], device: torch.device) -> Iterator[Batch]:
        return self._load_views(index_batches, device, None, None)

    def _load_views(
        self,
        index_batches: list[Tensor],
        device: torch.device,
        views: Sequence[CropSpec] | None,
        generator: torch.Generator | None,
    ) -> Iterator[Batch]:
        spec = None if views is None else tuple(views)
        if spec is not None:
            if not spec:
                raise ValueError("views must name at least one CropSpec (or be None for the eval decode)")
            if len({v.size for v in spec}) != 1:
                raise ValueError(f"all views must have one size to stack into [B, V, C, S, S], got {spec}")
            # the epoch's crop seed: drawn after the permutation, same on every rank
            gen_device = generator.device if generator is not None else torch.device("cpu")
            epoch_seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=gen_device).item())
        else:
            epoch_seed = 0
        if self.decoder == "cuda" and device.type != "cuda":
            raise ValueError(f"decoder='cuda' decodes on the GPU; batches(device=...) got {device}")
        items = [[(i, epoch_seed) for i in self.indices[b].tolist()] for b in index_batches]
        return self._iterate(items, device, spec)

    def _loader(self, spec: tuple[CropSpec, ...] | None, pin: bool) -> _CachedLoader:
        """The persistent loader for ``spec``, or a one-off one while it is in use."""
        from torch.utils.data import DataLoader

        key = (spec, pin)
        cached = self._loaders.get(key)
        if cached is not None and not cached.busy:
            return cached
        sampler = _EpochSampler()
        persistent = cached is None and self.num_workers > 0  # a one-off pool is not kept
        loader = DataLoader(
            self._reader.with_views(spec),  # type: ignore[arg-type]  # map-style: __getitems__
            batch_sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=_keep_batch,
            pin_memory=pin,
            persistent_workers=persistent,
        )
        entry = _CachedLoader(loader, sampler)
        if cached is None:
            self._loaders[key] = entry
        return entry

    def _iterate(
        self, items: list[list[tuple[int, int]]], device: torch.device, spec: tuple[CropSpec, ...] | None
    ) -> Iterator[Batch]:
        if not items:
            return
        pin = device.type == "cuda" and self.decoder != "cuda"
        entry = self._loader(spec, pin)
        entry.sampler.batches = items
        entry.busy = True
        try:
            for images, labels, info in entry.loader:
                self._record(info)
                if self.decoder == "cuda":
                    images = self._finish_cuda(images, device, spec)
                yield (
                    images.to(device, non_blocking=True),  # [B, V, C, S, S] or [B, C, S, S] uint8
                    labels.to(device, non_blocking=True),  # [B] int64
                )
        finally:
            entry.busy = False

    def _record(self, info: dict[str, Any]) -> None:
        for k, count in zip((1, 2, 4, 8), info["draft"], strict=True):
            self.draft_counts[k] += int(count)
        for path, reason in info["skipped"]:
            if path not in self.unreadable:
                self.unreadable[path] = reason
                log.warning(
                    "unreadable image %s (%s): replaced by the next readable image of its class; "
                    "%d unreadable file(s) skipped so far in %s",
                    path, reason, len(self.unreadable), self.root,
                )

    def _finish_cuda(self, payload: dict[str, Any], device: torch.device, spec: tuple[CropSpec, ...] | None) -> Tensor:
        """Decode a worker's raw JPEG bytes with nvJPEG and cut the views on ``device``."""
        reader = self._reader.with_views(spec)
        raw: list[Tensor | None] = payload["raw"]
        pos = [b for b, r in enumerate(raw) if r is not None]
        images: list[Tensor | None] = []
        try:
            if pos:
                images = list(decode_jpeg([raw[b] for b in pos], mode=ImageReadMode.RGB, device=device))  # [C, H, W]
        except RuntimeError:  # one bad file fails the whole batch: retry one by one
            images = []
            for b in pos:
                try:
                    images.append(decode_jpeg(raw[b], mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    images.append(None)
        out: list[Tensor | None] = [None] * len(raw)
        for b, px in payload["pixels"].items():
            out[b] = px.to(device, non_blocking=True)
        for b, img in zip(pos, images, strict=True):
            if img is None:  # nvJPEG refused it: the CPU path (with its substitution rule)
                index, seed = payload["items"][b]
                decoded = reader.load(index, seed, decoder="torchvision")
                self._record({"skipped": decoded.skipped, "draft": [0, 0, 0, 0]})
                assert decoded.pixels is not None
                out[b] = decoded.pixels.to(device)
                continue
            height, width = img.shape[-2:]
            out[b] = reader._cut(img, height, width, payload["boxes"][b], 1)
        return torch.stack([o for o in out if o is not None])  # [B, V, C, S, S] or [B, C, S, S]
