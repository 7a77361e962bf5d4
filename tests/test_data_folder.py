"""FolderSplit: crops from the full image, decoders, reproducibility, broken files.

Small JPEG folders are generated under ``tmp_path``; everything here runs on the CPU
except the nvJPEG test, which skips without CUDA.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F2

from ssl_bench.data import FolderSplit as PackageFolderSplit
from ssl_bench.data import TensorSplit
from ssl_bench.data.crops import (
    CropSpec,
    crop_box,
    draft_factor,
    eval_resize_size,
    resized_shape,
    view_boxes,
)
from ssl_bench.data.datasets import load_imagefolder
from ssl_bench.data.folder import FolderSplit, UnreadableImageError, default_num_workers, verify_image

MAE_VIEW = CropSpec(32, scale=(0.2, 1.0))  # bicubic
MOCO_VIEWS = (
    CropSpec(32, scale=(0.08, 1.0), interpolation="bilinear"),
    CropSpec(32, scale=(0.08, 1.0), interpolation="bilinear"),
)


def _smooth_image(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A smooth random field plus mild noise: photo-like, not trivially compressible."""
    coarse = rng.integers(0, 256, (max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8)
    img = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.float32)
    img = img + rng.normal(0.0, 4.0, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _make_folder(root: Path, classes: int = 3, per_class: int = 8, seed: int = 0,
                 sizes: tuple[int, int] = (120, 260)) -> Path:
    """``root/c<k>/<i>.jpg`` with varied sizes and aspect ratios (JPEG quality 90)."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"c{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            w = int(rng.integers(*sizes))
            h = int(w * rng.uniform(0.6, 1.4))
            _smooth_image(rng, h, w).save(d / f"{i:03d}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_folder(tmp_path_factory.mktemp("jpegs"))


def _epoch(split: FolderSplit, seed: int = 0, **kw: object) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return list(split.batches(5, shuffle=True, generator=g, **kw))  # type: ignore[arg-type]


def _same(a: list[tuple[torch.Tensor, torch.Tensor]], b: list[tuple[torch.Tensor, torch.Tensor]]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) and torch.equal(l, m) for (x, l), (y, m) in zip(a, b))


# ------------------------------------------------------------------- crop boxes


@pytest.mark.parametrize("scale,ratio", [((0.2, 1.0), (3 / 4, 4 / 3)), ((0.08, 1.0), (3 / 4, 4 / 3)),
                                         ((1.0, 1.0), (1.0, 1.0)), ((0.9, 1.0), (0.2, 0.25)),
                                         ((0.9, 1.0), (4.0, 5.0))])
def test_crop_box_matches_torchvision_get_params(scale: tuple[float, float], ratio: tuple[float, float]) -> None:
    fallbacks = 0
    for seed in range(200):
        for h, w in [(375, 500), (500, 333), (64, 64), (10, 200), (224, 224), (1, 7)]:
            torch.manual_seed(seed)
            ref = T.RandomResizedCrop.get_params(torch.zeros(1, h, w), list(scale), list(ratio))
            got = crop_box(h, w, scale, ratio, torch.Generator().manual_seed(seed))
            assert got == tuple(ref), (seed, h, w)
            fallbacks += got[:2] == ((h - got[2]) // 2, (w - got[3]) // 2)
    assert fallbacks > 0  # the centre-crop fallback was exercised


def test_center_cropspec_is_the_largest_centre_square() -> None:
    spec = CropSpec.center(64)
    assert spec == CropSpec(64, scale=(1, 1), ratio=(1, 1))
    g = torch.Generator().manual_seed(0)
    assert crop_box(300, 500, spec.scale, spec.ratio, g) == (0, 100, 300, 300)
    assert crop_box(501, 200, spec.scale, spec.ratio, g) == (150, 0, 200, 200)
    assert crop_box(128, 128, spec.scale, spec.ratio, g) == (0, 0, 128, 128)


def test_cropspec_validates() -> None:
    with pytest.raises(ValueError, match="interpolation"):
        CropSpec(32, (0.2, 1.0), interpolation="nearest")
    with pytest.raises(ValueError, match="scale"):
        CropSpec(32, (0.0, 1.0))
    with pytest.raises(ValueError, match="ratio"):
        CropSpec(32, (0.2, 1.0), ratio=(2.0, 1.0))
    with pytest.raises(ValueError, match="size"):
        CropSpec(0, (0.2, 1.0))
    assert hash(CropSpec(32, [0.2, 1])) == hash(CropSpec(32, (0.2, 1.0)))  # type: ignore[arg-type]


def test_draft_factor_keeps_every_box_at_least_its_output_size() -> None:
    assert draft_factor([(0, 0, 256, 300)], [32]) == 8
    assert draft_factor([(0, 0, 256, 300), (0, 0, 100, 300)], [32, 32]) == 2  # the smaller box decides
    assert draft_factor([(0, 0, 63, 300)], [32]) == 1
    assert draft_factor([(0, 0, 256, 300)], [32], margin=2.0) == 4
    assert eval_resize_size(224, 256 / 224) == 256 and eval_resize_size(256, 256 / 224) == 293
    assert resized_shape(375, 500, 256) == (256, 341) and resized_shape(500, 375, 256) == (341, 256)


def test_view_boxes_differ_across_views_samples_and_epochs() -> None:
    a = view_boxes(375, 500, MOCO_VIEWS, epoch_seed=1, index=3)
    assert a == view_boxes(375, 500, MOCO_VIEWS, epoch_seed=1, index=3)
    assert a[0] != a[1]  # same spec twice: two different crops
    assert a != view_boxes(375, 500, MOCO_VIEWS, epoch_seed=1, index=4)
    assert a != view_boxes(375, 500, MOCO_VIEWS, epoch_seed=2, index=3)


# ------------------------------------------------------------------------ views


def test_the_package_exports_the_folder_split() -> None:
    assert PackageFolderSplit is FolderSplit


def test_views_shape_dtype_and_labels(folder: Path) -> None:
    split = FolderSplit(str(folder), 32, num_workers=0)
    got = _epoch(split, views=MOCO_VIEWS)
    assert [tuple(x.shape) for x, _ in got] == [(5, 2, 3, 32, 32)] * 4 + [(4, 2, 3, 32, 32)]
    assert all(x.dtype == torch.uint8 and y.dtype == torch.int64 for x, y in got)
    one = _epoch(split, views=[MAE_VIEW])
    assert tuple(one[0][0].shape) == (5, 1, 3, 32, 32)
    # labels follow the same permutation as for in-memory splits
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(split), generator=g)
    assert torch.equal(torch.cat([y for _, y in got]), split.labels[perm])
    # the two MoCo views of a sample are different crops
    x = torch.cat([x for x, _ in got])
    assert (x[:, 0].float() - x[:, 1].float()).abs().mean() > 5
    with pytest.raises(ValueError, match="one size"):
        _epoch(split, views=[CropSpec(32, (0.2, 1.0)), CropSpec(16, (0.2, 1.0))])


def test_views_reproducible_and_independent_of_workers(folder: Path) -> None:
    serial = FolderSplit(str(folder), 32, num_workers=0)
    parallel = FolderSplit(str(folder), 32, num_workers=2)
    ref = _epoch(serial, views=MOCO_VIEWS)
    assert _same(ref, _epoch(serial, views=MOCO_VIEWS))
    assert _same(ref, _epoch(parallel, views=MOCO_VIEWS))
    assert _same(ref, _epoch(parallel, views=MOCO_VIEWS))  # persistent workers, second epoch
    other = _epoch(serial, seed=1, views=MOCO_VIEWS)
    assert not torch.equal(ref[0][0], other[0][0])  # another epoch: other order and crops


def test_crop_seed_is_drawn_after_the_permutation(folder: Path) -> None:
    split = FolderSplit(str(folder), 32, num_workers=0)
    g = torch.Generator().manual_seed(0)
    list(split.batches(5, shuffle=True, generator=g, views=[MAE_VIEW]))
    h = torch.Generator().manual_seed(0)
    torch.randperm(len(split), generator=h)
    torch.randint(0, 2**62, (1,), generator=h)
    assert torch.equal(g.get_state(), h.get_state())
    g = torch.Generator().manual_seed(0)
    list(split.batches(5, shuffle=True, generator=g))  # no views: no extra draw
    h = torch.Generator().manual_seed(0)
    torch.randperm(len(split), generator=h)
    assert torch.equal(g.get_state(), h.get_state())


@pytest.mark.parametrize("views", [None, [MAE_VIEW], MOCO_VIEWS])
def test_skip_never_decodes_the_skipped_batches_and_yields_the_tail(folder: Path, monkeypatch, views) -> None:
    """A training run resumed inside an epoch asks for the epoch without its first batches: they
    are not decoded, the rest are exactly the unskipped epoch's, and the generator ends in the
    same state (the crop seed is still drawn after the permutation)."""
    from ssl_bench.data import folder as folder_module

    decoded: list[int] = []
    real_load = folder_module._FolderReader.load

    def counting_load(self, sample_index: int, epoch_seed: int, decoder: str | None = None):
        decoded.append(sample_index)
        return real_load(self, sample_index, epoch_seed, decoder)

    monkeypatch.setattr(folder_module._FolderReader, "load", counting_load)
    split = FolderSplit(str(folder), 32, num_workers=0)  # 24 images: batches of 5, 5, 5, 5, 4
    g_full = torch.Generator().manual_seed(3)
    full = list(split.batches(5, shuffle=True, generator=g_full, views=views))
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(3)).tolist()
    assert decoded == order
    decoded.clear()
    g_skip = torch.Generator().manual_seed(3)
    tail = list(split.batches(5, shuffle=True, generator=g_skip, views=views, skip=2))
    assert decoded == order[10:]  # the 10 images of the 2 skipped batches were never decoded
    assert _same(tail, full[2:])
    assert torch.equal(g_skip.get_state(), g_full.get_state())
    assert list(split.batches(5, shuffle=True, generator=torch.Generator(), views=views, skip=5)) == []
    with pytest.raises(ValueError, match="skip must be >= 0"):
        split.batches(5, skip=-1)


def test_skip_on_an_in_memory_split_and_a_rank_shard() -> None:
    images = torch.arange(23, dtype=torch.uint8).view(23, 1, 1, 1).expand(23, 1, 4, 4).clone()
    split = TensorSplit(images, torch.arange(23) % 3)
    kw = dict(shuffle=True, drop_last=True, rank=1, world_size=2)
    full = list(split.batches(3, generator=torch.Generator().manual_seed(0), **kw))  # type: ignore[arg-type]
    tail = list(split.batches(3, generator=torch.Generator().manual_seed(0), skip=1, **kw))  # type: ignore[arg-type]
    assert len(full) == 3 and _same(tail, full[1:])


def test_a_second_epoch_while_one_is_in_progress(folder: Path) -> None:
    """A paused iterator (e.g. training paused for a k-NN pass) is not disturbed."""
    split = FolderSplit(str(folder), 32, num_workers=1)
    ref_a, ref_b = _epoch(split, 0, views=[MAE_VIEW]), _epoch(split, 1, views=[MAE_VIEW])
    it = iter(split.batches(5, shuffle=True, generator=torch.Generator().manual_seed(0), views=[MAE_VIEW]))
    first = next(it)
    assert _same(ref_b, _epoch(split, 1, views=[MAE_VIEW]))
    assert _same(ref_a, [first, *it])


def test_ddp_shards_are_disjoint_and_crops_do_not_depend_on_the_rank(tmp_path: Path) -> None:
    _make_folder(tmp_path, classes=10, per_class=1, seed=3)  # one image per class: label = sample
    split = FolderSplit(str(tmp_path), 32, num_workers=0)
    whole = _epoch(split, seed=7, views=MOCO_VIEWS)
    crops = {int(y): x for xb, yb in whole for x, y in zip(xb, yb)}
    seen: list[int] = []
    for rank in range(2):
        g = torch.Generator().manual_seed(7)
        shard = list(split.batches(2, shuffle=True, generator=g, rank=rank, world_size=2, views=MOCO_VIEWS))
        g = torch.Generator().manual_seed(7)
        again = list(split.batches(2, shuffle=True, generator=g, rank=rank, world_size=2, views=MOCO_VIEWS))
        assert _same(shard, again)
        for xb, yb in shard:
            for x, y in zip(xb, yb):
                assert torch.equal(x, crops[int(y)])  # a sample's crops: same on any rank
                seen.append(int(y))
    assert sorted(seen) == list(range(10))  # disjoint and complete


def test_tensor_split_ignores_views() -> None:
    images = torch.randint(0, 256, (10, 3, 12, 12), dtype=torch.uint8)
    split = TensorSplit(images, torch.arange(10))
    g, h = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    plain = list(split.batches(4, shuffle=True, generator=g))
    viewed = list(split.batches(4, shuffle=True, generator=h, views=MOCO_VIEWS))
    assert _same(plain, viewed) and viewed[0][0].shape == (4, 3, 12, 12)
    assert torch.equal(g.get_state(), h.get_state())  # nothing extra drawn


# ---------------------------------------------------------------- decode paths


def _torchvision_eval(path: Path, size: int, shorter: int) -> torch.Tensor:
    """Reference: torchvision Resize(shorter, bicubic) + CenterCrop(size) on PIL."""
    t = T.Compose([T.Resize(shorter, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(size),
                   T.PILToTensor()])
    with Image.open(path) as im:
        return t(im.convert("RGB"))


def test_eval_decode_matches_torchvision_resize_center_crop(folder: Path) -> None:
    size = 112  # shorter side 128: too big for DCT scaling of these images, so a full decode
    split = FolderSplit(str(folder), size, num_workers=0)
    (x, y), *_ = list(split.batches(6))
    assert x.shape == (6, 3, size, size) and split.draft_counts[1] == len(split)
    files = sorted(folder.glob("c0/*.jpg"))[:6]
    ref = torch.stack([_torchvision_eval(p, size, 128) for p in files])
    diff = (x.float() - ref.float()).abs()
    assert diff.mean() < 0.6 and diff.max() <= 12  # PIL vs torch antialiased bicubic kernels
    # the torchvision decoder runs the same tensor ops as torchvision's v2 transforms: exact
    tv = FolderSplit(str(folder), size, num_workers=0, decoder="torchvision", draft_margin=None)
    (xt, _), *_ = list(tv.batches(6))
    ref_t = torch.stack([
        F2.center_crop(F2.resize(decode_image(str(p), mode=ImageReadMode.RGB), [128],
                                 interpolation=T.InterpolationMode.BICUBIC, antialias=True), [size, size])
        for p in files
    ])
    assert torch.equal(xt, ref_t)


def test_eval_resize_ratio_option(folder: Path) -> None:
    split = FolderSplit(str(folder), 112, num_workers=0, eval_resize_ratio=1.0, draft_margin=None)
    (x, _), *_ = list(split.batches(3))
    files = sorted(folder.glob("c0/*.jpg"))[:3]
    ref = torch.stack([_torchvision_eval(p, 112, 112) for p in files])
    assert (x.float() - ref.float()).abs().mean() < 1.0
    with pytest.raises(ValueError, match="ratio"):
        FolderSplit(str(folder), 112, num_workers=0, eval_resize_ratio=0.9)


@pytest.mark.parametrize("margin,bound", [(1.0, 3.5), (2.0, 1.5)])
def test_dct_draft_decode_is_close_to_the_full_decode(folder: Path, margin: float, bound: float) -> None:
    pil = FolderSplit(str(folder), 32, num_workers=0, decoder="pil", draft_margin=margin)
    full = FolderSplit(str(folder), 32, num_workers=0, draft_margin=None)  # never DCT-scales
    a, b = _epoch(pil, views=MOCO_VIEWS), _epoch(full, views=MOCO_VIEWS)
    assert sum(pil.draft_counts[k] for k in (2, 4, 8)) >= 5  # the scaled path ran
    assert full.draft_counts == {1: len(full), 2: 0, 4: 0, 8: 0}
    assert all(torch.equal(la, lb) for (_, la), (_, lb) in zip(a, b))
    err = torch.cat([(xa.float() - xb.float()).abs().flatten() for (xa, _), (xb, _) in zip(a, b)])
    # boxes snap to the 1/k grid (< 1/margin/2 output pixel) and the DCT low-pass differs from
    # the bicubic antialias kernel; the noisy content here makes both visible (~2.5 at margin 1,
    # ~0.6 at margin 2); a box off by one decoded pixel measures ~4 at margin 1
    assert err.mean() < bound
    # the default decoder DCT-scales the same way (through PIL), full decodes via torchvision.io
    tv = FolderSplit(str(folder), 32, num_workers=0, decoder="torchvision", draft_margin=margin)
    c = _epoch(tv, views=MOCO_VIEWS)
    assert tv.draft_counts == pil.draft_counts
    assert max((xa.float() - xc.float()).abs().mean().item() for (xa, _), (xc, _) in zip(a, c)) < 0.1


def test_pil_and_torchvision_full_decodes_agree(folder: Path) -> None:
    """Both are libjpeg-turbo (islow IDCT, fancy upsampling): the same pixels up to build details."""
    pil = FolderSplit(str(folder), 32, num_workers=0, decoder="pil", draft_margin=None)
    tv = FolderSplit(str(folder), 32, num_workers=0, decoder="torchvision", draft_margin=None)
    for (xa, la), (xb, lb) in zip(_epoch(pil, views=MOCO_VIEWS), _epoch(tv, views=MOCO_VIEWS)):
        assert torch.equal(la, lb) and (xa.float() - xb.float()).abs().mean() < 0.1


def test_dct_draft_eval_decode(folder: Path) -> None:
    pil = FolderSplit(str(folder), 32, num_workers=0)  # shorter side 37 from 120+ px: factor 2 to 8
    full = FolderSplit(str(folder), 32, num_workers=0, draft_margin=None)
    ea, eb = list(pil.batches(8)), list(full.batches(8))
    assert pil.draft_counts[1] < len(pil)
    # a 1/4-1/8 DCT decode low-passes where the full path's bicubic antialias kernel does; on
    # this noisy content the two filters differ by a few levels (a misplaced crop: > 20)
    assert (torch.cat([x for x, _ in ea]).float() - torch.cat([x for x, _ in eb]).float()).abs().mean() < 5.0
    with pytest.raises(ValueError, match="draft_margin"):
        FolderSplit(str(folder), 32, num_workers=0, draft_margin=0.5)


def test_centre_view_is_the_dit_centre_crop(folder: Path) -> None:
    split = FolderSplit(str(folder), 112, num_workers=0, eval_resize_ratio=1.0)
    (views, _), *_ = list(split.batches(4, views=[CropSpec.center(112)]))
    (evals, _), *_ = list(split.batches(4))  # shorter side to 112, centre square
    assert views.shape == (4, 1, 3, 112, 112)
    # crop-then-resize vs resize-then-crop: the same square up to a sub-pixel offset
    assert (views[:, 0].float() - evals.float()).abs().mean() < 3.0


@pytest.mark.parametrize("decoder", ["torchvision", "pil"])
def test_other_formats_and_modes_decode(tmp_path: Path, decoder: str) -> None:
    """Grey / CMYK JPEGs, PNG with alpha, 16-bit PNG, BMP: all decode to uint8 RGB, none is "unreadable"."""
    rng = np.random.default_rng(5)
    d = tmp_path / "a"
    d.mkdir()
    img = _smooth_image(rng, 150, 170)
    img.save(d / "rgb.jpg", quality=90)
    img.convert("L").save(d / "grey.jpg", quality=90)
    img.convert("CMYK").save(d / "cmyk.jpg", quality=90)
    img.convert("RGBA").save(d / "alpha.png")
    img.save(d / "plain.bmp")
    Image.fromarray((np.asarray(img.convert("L"), dtype=np.uint16) * 257)).save(d / "deep.png")  # 16-bit grey
    split = FolderSplit(str(tmp_path), 32, num_workers=0, decoder=decoder)
    (x, _), = list(split.batches(6, views=MOCO_VIEWS))
    (e, _), = list(split.batches(6))
    assert x.shape == (6, 2, 3, 32, 32) and e.shape == (6, 3, 32, 32) and split.skipped_files == 0
    assert x.dtype == e.dtype == torch.uint8
    ref = e[sorted(p.name for p in d.iterdir()).index("rgb.jpg")].float()
    for name in ("alpha.png", "plain.bmp", "cmyk.jpg"):  # the same picture (up to JPEG / CMYK loss)
        assert (e[sorted(p.name for p in d.iterdir()).index(name)].float() - ref).abs().mean() < 12


# -------------------------------------------------------------- broken files


def _break_files(root: Path) -> tuple[Path, Path]:
    truncated = root / "c1" / "001.jpg"
    truncated.write_bytes(truncated.read_bytes()[:300])
    garbage = root / "c2" / "000.jpg"
    garbage.write_bytes(b"this is not an image")
    return truncated, garbage


@pytest.mark.parametrize("decoder,workers", [("torchvision", 0), ("torchvision", 1), ("pil", 0)])
def test_unreadable_files_are_substituted_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, decoder: str, workers: int
) -> None:
    _make_folder(tmp_path, classes=3, per_class=4)
    truncated, garbage = _break_files(tmp_path)
    split = FolderSplit(str(tmp_path), 32, num_workers=workers, decoder=decoder)
    with caplog.at_level(logging.WARNING, logger="ssl_bench"):
        got = _epoch(split, views=[MAE_VIEW])
    assert split.skipped_files == 2 and set(split.unreadable) == {str(truncated), str(garbage)}
    assert str(truncated) in caplog.text and str(garbage) in caplog.text and "2 unreadable" in caplog.text
    assert sum(x.shape[0] for x, _ in got) == 12
    g = torch.Generator().manual_seed(0)
    assert torch.equal(torch.cat([y for _, y in got]), split.labels[torch.randperm(12, generator=g)])
    assert _same(got, _epoch(split, views=[MAE_VIEW]))  # the substitute is deterministic
    # the substitute is the next file of the class: its eval decode equals that file's
    (ev, _), = list(split.batches(12))
    assert torch.equal(ev[5], ev[6]) and torch.equal(ev[8], ev[9])  # c1/001 -> c1/002, c2/000 -> c2/001
    assert split.skipped_files == 2  # counted once per file


def test_strict_raises_naming_the_bad_files(tmp_path: Path) -> None:
    _make_folder(tmp_path, classes=3, per_class=4)
    truncated, garbage = _break_files(tmp_path)
    assert verify_image(str(truncated)) is not None and verify_image(str(garbage)) is not None
    assert verify_image(str(tmp_path / "c0" / "000.jpg")) is None
    with pytest.raises(UnreadableImageError, match=r"2 unreadable") as info:
        FolderSplit(str(tmp_path), 32, num_workers=0, strict=True)
    assert str(truncated) in str(info.value) and str(garbage) in str(info.value)
    with pytest.raises(UnreadableImageError, match="2 unreadable"):
        load_imagefolder_two_splits(tmp_path, strict=True)


def load_imagefolder_two_splits(root: Path, **options: object) -> object:
    """Turn ``root/<class>`` into ``root/{train,val}/<class>`` (same files) and load it."""
    for split in ("train", "val"):
        (root / split).mkdir()
        for cls in sorted(p for p in root.iterdir() if p.name.startswith("c")):
            (root / split / cls.name).symlink_to(cls, target_is_directory=True)
    return load_imagefolder(str(root), image_size=32, num_workers=0, **options)  # type: ignore[arg-type]


def test_strict_is_quiet_on_good_files(folder: Path) -> None:
    split = FolderSplit(str(folder), 32, num_workers=0, strict=True)
    assert len(split) == 24 and split.skipped_files == 0


def test_load_imagefolder_takes_the_new_options(tmp_path: Path) -> None:
    _make_folder(tmp_path, classes=2, per_class=3)
    data = load_imagefolder_two_splits(tmp_path, decoder="pil", eval_resize_ratio=1.0, limit_train=4)
    assert isinstance(data.train, FolderSplit) and data.train.decoder == "pil"  # type: ignore[attr-defined]
    assert len(data.train) == 4 and data.train.eval_resize_ratio == 1.0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="decoder"):
        FolderSplit(str(tmp_path / "train"), 32, decoder="nvjpeg")


def test_default_num_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_num_workers() == 15
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_num_workers() == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert default_num_workers() == 1


# ------------------------------------------------------------------------ CUDA


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_cuda_decoder_needs_a_gpu(folder: Path) -> None:
    with pytest.raises(ValueError, match="CUDA"):
        FolderSplit(str(folder), 32, decoder="cuda")


def test_cuda_decoder_worker_side_runs_on_the_cpu(tmp_path: Path) -> None:
    """What a cuda-decoder worker does (no GPU needed): a JPEG goes to nvJPEG as its bytes and crop
    boxes; a PNG, which nvJPEG cannot take, is decoded in the worker from the bytes it read, exactly
    as the CPU decoder would."""
    _make_folder(tmp_path, classes=1, per_class=1)
    _smooth_image(np.random.default_rng(1), 150, 170).save(tmp_path / "c0" / "png.png")
    reader = FolderSplit(str(tmp_path), 32, num_workers=0)._reader.with_views(tuple(MOCO_VIEWS))
    files = [reader.path(i) for i in range(len(reader))]
    jpeg, png = (files.index(next(f for f in files if f.endswith(ext))) for ext in (".jpg", ".png"))
    sent = reader._prepare_cuda(reader.path(jpeg), jpeg, 7)
    assert sent.pixels is None and sent.raw is not None and len(sent.boxes) == 2
    assert torch.equal(sent.raw, torch.frombuffer(bytearray(Path(reader.path(jpeg)).read_bytes()), dtype=torch.uint8))
    done = reader._prepare_cuda(reader.path(png), png, 7)
    expected, _ = reader._decode_cpu(reader.path(png), png, 7, "pil")
    assert done.raw is None and done.pixels.shape == (2, 3, 32, 32) and torch.equal(done.pixels, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (nvJPEG)")
def test_cuda_decoder_matches_the_cpu_decode(tmp_path: Path) -> None:
    _make_folder(tmp_path, classes=3, per_class=4)
    (tmp_path / "c0" / "png.png").write_bytes(b"")  # replaced below by a real PNG (CPU path in the worker)
    _smooth_image(np.random.default_rng(1), 150, 170).save(tmp_path / "c0" / "png.png")
    truncated, _ = _break_files(tmp_path)
    gpu = FolderSplit(str(tmp_path), 32, num_workers=1, decoder="cuda")
    cpu = FolderSplit(str(tmp_path), 32, num_workers=0, draft_margin=None)  # no DCT scaling, as nvJPEG
    a = _epoch(gpu, views=MOCO_VIEWS, device="cuda")
    b = _epoch(cpu, views=MOCO_VIEWS)
    assert a[0][0].device.type == "cuda" and a[0][0].dtype == torch.uint8 and a[0][0].shape == (5, 2, 3, 32, 32)
    assert all(torch.equal(la.cpu(), lb) for (_, la), (_, lb) in zip(a, b))
    err = torch.cat([(xa.cpu().float() - xb.float()).abs().flatten() for (xa, _), (xb, _) in zip(a, b)])
    assert err.mean() < 2.0  # nvJPEG vs libjpeg-turbo, float vs uint8 resize kernels
    assert str(truncated) in gpu.unreadable
    (ea, _), = list(gpu.batches(13, device="cuda"))
    (eb, _), = list(cpu.batches(13))
    assert (ea.cpu().float() - eb.float()).abs().mean() < 2.0
    with pytest.raises(ValueError, match="GPU"):
        list(gpu.batches(4, device="cpu"))
