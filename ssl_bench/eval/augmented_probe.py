"""MAE's linear probe on augmented images (``eval.linear.protocol="augmented"``).

What the paper's Table-4 numbers are measured with (He et al. 2022, App. A.1 "Linear probing";
official code facebookresearch/mae ``main_linprobe.py``): the frozen encoder's features of a fresh
``RandomResizedCrop(224, interpolation=3)`` (bicubic, torchvision's default scale (0.08, 1) and
ratio (3/4, 4/3)) + ``RandomHorizontalFlip`` view of every training image, every epoch, into
``BatchNorm1d(affine=False, eps=1e-6) -> Linear``, LARS, lr = blr x batch / 256, per-iteration
warm-up then cosine, the last batch dropped; tested on the centre crop. The head, optimiser,
schedule, training step and record are the cached probe's (``probe_head.py``); only the data differ. The test features are
the run's cached eval-transform features (the centre crop), so both protocols score the same test
vectors.

Crops. A folder split (ImageNet) cuts the crop from the *full* image in its loader workers, bicubic,
with torchvision's box sampling (``ssl_bench/data/crops.py``); the crop size is the dataset's
``image_size`` (224), the size the test features are taken at. An in-memory split (digits, CIFAR)
crops on the device with the harness's batched ``random_resized_crop`` boxes and a bilinear
resample, as pre-training does on those splits; both are ``CropFlipAugment`` of
``ssl_bench/data/augment.py``, which also flips and normalises. Known difference:
MAE's ``util/crop.py`` draws one box and clamps it to the image where torchvision retries up to ten
times; the two box distributions differ slightly for boxes that do not fit.

Distributed (torchrun): every rank encodes its shard of each global batch and the shards are
gathered on rank 0, which alone trains the head (a few MFLOPs; the encoder passes are the cost) and
scores it. Rank r takes positions r, r + W, ... of the epoch's permutation, the sharding of
``ImageSplit.batches``, and the gather interleaves them back, so rank 0 sees each global batch in
the single-process order. The permutation and every random crop/flip parameter of an in-memory split
are drawn for the whole global batch from one generator that is identical on every rank, and each
rank applies its rows; a folder split derives each crop from the sample index and an epoch seed
drawn from that same generator. So a W-process probe trains on the same crops, in the same order,
as a one-process probe, and gets the same result up to floating-point summation order inside the
encoder. BatchNorm statistics are those of the global batch (MAE's DDP probe uses per-GPU
statistics of 512 samples each: the features are only standardised, so this matters little).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from ssl_bench.data.augment import CropFlipAugment
from ssl_bench.data.crops import CropSpec
from ssl_bench.eval.base import EvalInputError, EvalResult, check_features, check_labels
from ssl_bench.distributed import broadcast_flag, gather_to_main
from ssl_bench.eval.probe_head import (
    PROBE_NAME,
    KeepsHead,
    LinearProbeProtocol,
    ProbeHead,
    probe_record,
    resolved_lr,
    schedule_steps,
)
from ssl_bench.progress import progress

if TYPE_CHECKING:
    from ssl_bench.distributed import DistContext

#: the data generator's seed is ``seed + DATA_SEED_OFFSET``: a stream apart from the head's init
DATA_SEED_OFFSET = 1


def augmented_batch_size(requested: int, n: int, world_size: int = 1) -> int:
    """The global batch actually used: capped to the training set (as the cached probe), then rounded
    down to a multiple of the number of processes so every rank encodes the same number of images."""
    batch = min(requested, n)
    batch -= batch % world_size
    if batch < 2:
        raise EvalInputError(
            f"the augmented linear probe needs a global batch of at least 2 split over {world_size} process(es); "
            f"got batch_size={requested} with {n} training images. Raise eval.linear.batch_size or use more data"
        )
    return batch


def augmented_linear_probe(
    feature_fn: Callable[[Tensor], Tensor],
    train_split: Any,
    info: Any,
    test_feats: Tensor | None,  # [M, D] cached eval-transform features; None on ranks other than 0
    test_labels: Tensor | None,  # [M]
    num_classes: int,
    protocol: LinearProbeProtocol | None = None,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    ctx: DistContext | None = None,
    train_feats: Tensor | None = None,  # [N, D] cached train features: for linear_train_top1 only
    train_labels: Tensor | None = None,  # [N]
    evaluator: KeepsHead | None = None,
) -> EvalResult | None:
    """Train MAE's probe head on ``feature_fn`` of augmented ``train_split`` images; score it on
    ``test_feats``. Under DDP every rank must call it; rank 0 returns the result, the others None.

    ``feature_fn`` maps dataset-normalised float images [B, C, S, S] to frozen features [B, D] (a
    method's ``probe_features``, in eval mode). Deterministic given ``seed`` (private generators:
    one for the head's init, one for the order and the crops; the global RNG is never touched).
    Metrics as the cached probe: ``linear_top1``, ``linear_final_loss`` and, when ``train_feats``
    are given, ``linear_train_top1`` (the head on the cached centre-crop train features).
    ``evaluator`` keeps the trained head in ``last_head``.
    """
    p = protocol or LinearProbeProtocol(protocol="augmented")
    if p.protocol != "augmented":
        raise EvalInputError(f"augmented_linear_probe needs protocol='augmented', got {p.protocol!r}")
    device = torch.device(device)
    distributed = ctx is not None and ctx.world_size > 1
    world, rank = (ctx.world_size, ctx.rank) if distributed else (1, 0)
    main = rank == 0
    n = len(train_split)
    if n < 2:
        raise EvalInputError(f"linear probe needs at least 2 training samples (BatchNorm), got {n}")
    if main:
        if test_feats is None or test_labels is None:
            raise EvalInputError("the augmented linear probe is scored on the cached test features; pass test_feats and test_labels")
        check_features("test_feats", test_feats)
        check_labels("test_labels", test_labels, test_feats.shape[0], num_classes)
        if test_feats.shape[0] == 0:
            raise EvalInputError("test set is empty (test_feats has 0 rows); check the test split")

    batch = augmented_batch_size(p.batch_size, n, world)
    local = batch // world
    steps_per_epoch = n // batch  # drop_last, as MAE's train loader; equals each rank's batch count
    total_steps, warmup_steps = schedule_steps(p, steps_per_epoch)
    lr = resolved_lr(p, batch)
    size = int(info.image_size)
    augment = CropFlipAugment(size, scale=p.crop_scale, flip_p=p.flip_p)  # torchvision's ratio (3/4, 4/3), as MAE's probe
    views = [CropSpec(size, augment.scale, augment.ratio, "bicubic")]  # used by splits that decode files
    head_gen = torch.Generator().manual_seed(seed)  # the cached probe's init stream: same head for the same seed
    data_gen = torch.Generator().manual_seed(seed + DATA_SEED_OFFSET)  # identical on every rank

    probe: ProbeHead | None = None
    dim = 0
    cut_in_loader = False
    for epoch in progress(range(p.epochs), desc="linear probe (augmented)", unit="epoch", main=main):
        batches = train_split.batches(
            local, shuffle=True, generator=data_gen, drop_last=True, rank=rank, world_size=world, device=device, views=views,
        )
        bar = progress(batches, desc=f"epoch {epoch + 1}/{p.epochs}", total=steps_per_epoch, unit="batch", main=main)
        for i, (images, y) in enumerate(bar):
            if i == steps_per_epoch:  # a split yielding more than the sharding rule says: keep ranks in step
                break
            cut_in_loader = images.ndim == 5
            with torch.no_grad():
                x = augment(images, info.mean, info.std, data_gen, rank, world)  # [B_local, C, S, S]
                f = gather_to_main(feature_fn(x).float(), ctx)  # [B, D] on rank 0, single-process order
            y_all = gather_to_main(y.to(device), ctx)  # [B]
            if epoch == 0 and i == 0:  # check the cached test features now, not after every epoch's encoding
                stale = main and test_feats.shape[1] != f.shape[1]
                if broadcast_flag(stale, ctx):  # every rank stops together
                    raise EvalInputError(
                        f"the cached test features have {test_feats.shape[1] if main else '?'} dims but the feature "
                        f"function gives {f.shape[1] if main else '?'}; the features cache belongs to another model: "
                        "re-extract it (ssl-bench eval --recompute)"
                    )
            if not main:
                continue
            if probe is None:  # the feature width is known once the encoder has run
                dim = f.shape[1]
                probe = ProbeHead(dim, num_classes, p, lr, total_steps, warmup_steps, head_gen, device)
            probe.train_step(f.to(device), y_all.to(device).long())
    if not main:
        return None
    metrics, predictions = probe.result(test_feats, test_labels, train_feats, train_labels)
    if evaluator is not None:
        evaluator.last_head = probe.head
    rec = probe_record(
        p, evaluator=evaluator.name if evaluator is not None else PROBE_NAME, seed=seed, n=n, dim=dim,
        n_test=int(test_feats.shape[0]), num_classes=num_classes, batch=batch, lr=lr, steps_per_epoch=steps_per_epoch,
        warmup_steps=warmup_steps, total_steps=total_steps, device=device,
    )
    rec.update({
        "train_data": (
            f"RandomResizedCrop({size}, scale={tuple(p.crop_scale)}, ratio=(3/4, 4/3)) + horizontal flip "
            f"p={p.flip_p}, encoded every epoch"
        ),
        "crop_impl": "cut from the full image in the loader, bicubic (torchvision box sampling)" if cut_in_loader
                     else "on the device, bilinear (ssl_bench.data.augment.random_resized_crop boxes)",
        "test_data": "cached eval-transform features (centre crop)",
        "train_top1_on": "cached eval-transform train features",
        "world_size": world,
        "sharding": "each rank encodes rows r::W of every global batch; rank 0 gathers them and trains the head",
        "batchnorm_stats": "global batch",
    })
    return EvalResult(metrics=metrics, protocol=rec, predictions=predictions)
