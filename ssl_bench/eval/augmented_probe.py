"""MAE's linear probe on augmented images (``eval.linear.protocol="augmented"``).

What the paper's Table-4 numbers are measured with (He et al. 2022, App. A.1 "Linear probing";
official code facebookresearch/mae ``main_linprobe.py``): the frozen encoder's features of a fresh
``RandomResizedCrop(224, interpolation=3)`` (bicubic, torchvision's default scale (0.08, 1) and
ratio (3/4, 4/3)) + ``RandomHorizontalFlip`` view of every training image, every epoch, into
``BatchNorm1d(affine=False, eps=1e-6) -> Linear``, LARS, lr = blr x batch / 256, per-iteration
warm-up then cosine, the last batch dropped; tested on the centre crop. The head, optimiser and
schedule are the cached probe's (``linear_probe.py``); only the data differ. The test features are
the run's cached eval-transform features (the centre crop), so both protocols score the same test
vectors.

Crops. A folder split (ImageNet) cuts the crop from the *full* image in its loader workers, bicubic,
with torchvision's box sampling (``ssl_bench/data/crops.py``); the crop size is the dataset's
``image_size`` (224), the size the test features are taken at. An in-memory split (digits, CIFAR)
crops on the device with the harness's batched ``random_resized_crop`` boxes and a bilinear
resample (``ssl_bench/data/augment.py``), as pre-training does on those splits. Known difference:
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
import torch.nn.functional as F
from torch import Tensor

from ssl_bench.data.augment import crop_resize, normalize, sample_crop_boxes, to_float01
from ssl_bench.data.crops import CropSpec
from ssl_bench.distributed import broadcast_flag, gather_to_main
from ssl_bench.eval.base import EvalInputError, EvalResult, check_features, check_labels, top1_accuracy
from ssl_bench.eval.linear_probe import (
    LinearProbeEvaluator,
    LinearProbeProtocol,
    _predict,
    build_linear_head,
    build_lr_scheduler,
    build_optimizer,
    check_final_loss,
    probe_record,
    resolved_lr,
    schedule_steps,
)
from ssl_bench.progress import progress

if TYPE_CHECKING:
    from ssl_bench.distributed import DistContext

#: torchvision RandomResizedCrop's default aspect-ratio range (MAE's probe leaves it at the default)
CROP_RATIO: tuple[float, float] = (3 / 4, 4 / 3)
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


def _augment(
    images: Tensor, p: LinearProbeProtocol, size: int, info: Any, generator: torch.Generator, global_batch: int,
    rank: int, world_size: int,
) -> Tensor:
    """This rank's rows of one global batch, cropped, flipped and normalised -> [B_local, C, size, size].

    ``images``: uint8 [B_local, C, H, W] (crop here) or [B_local, 1, C, size, size] (cut by a folder
    loader). Parameters are drawn for all ``global_batch`` samples, identical on every rank, and rank
    r keeps rows r::W: the crops do not depend on the number of processes.
    """
    rows = slice(rank, None, world_size)
    if images.ndim == 5:  # the loader already cut the crop from the full image
        x = to_float01(images[:, 0])  # [B, C, size, size]
    else:
        height, width = images.shape[-2:]
        top, left, h, w = sample_crop_boxes(global_batch, height, width, p.crop_scale, CROP_RATIO, generator, images.device)
        x = crop_resize(to_float01(images), top[rows], left[rows], h[rows], w[rows], size)  # [B, C, size, size]
    flip = torch.rand(global_batch, generator=generator, device=generator.device)[rows].to(x.device) < p.flip_p  # [B]
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return normalize(x, info.mean, info.std)


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
    evaluator: LinearProbeEvaluator | None = None,
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
    views = [CropSpec(size, p.crop_scale, CROP_RATIO, "bicubic")]  # used by splits that decode files
    head_gen = torch.Generator().manual_seed(seed)  # the cached probe's init stream: same head for the same seed
    data_gen = torch.Generator().manual_seed(seed + DATA_SEED_OFFSET)  # identical on every rank

    head = optimizer = scheduler = None
    dim = 0
    cut_in_loader = False
    step = 0
    loss = torch.zeros((), device=device)
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
                x = _augment(images, p, size, info, data_gen, batch, rank, world)  # [B_local, C, S, S]
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
            if head is None:  # the feature width is known once the encoder has run
                dim = f.shape[1]
                head = build_linear_head(dim, num_classes, p.bn_eps, p.init_std, generator=head_gen).to(device)
                optimizer = build_optimizer(head, p, lr)
                scheduler = build_lr_scheduler(optimizer, total_steps, warmup_steps, p.min_lr)
            head.train()
            scheduler.step_update(step)
            loss = F.cross_entropy(head(f.to(device)), y_all.to(device).long())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
    if not main:
        return None
    final_loss = float(loss.item())
    check_final_loss(final_loss, lr, p)
    metrics = {
        "linear_top1": top1_accuracy(_predict(head, test_feats.detach().to(device).float(), p.eval_batch_size), test_labels.to(device)),
        "linear_final_loss": final_loss,
    }
    if p.report_train_acc and train_feats is not None and train_labels is not None:
        metrics["linear_train_top1"] = top1_accuracy(
            _predict(head, train_feats.detach().to(device).float(), p.eval_batch_size), train_labels.to(device)
        )
    if evaluator is not None:
        evaluator.last_head = head
    rec = probe_record(
        p, evaluator=evaluator.name if evaluator is not None else LinearProbeEvaluator.name, seed=seed, n=n, dim=dim,
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
    return EvalResult(metrics=metrics, protocol=rec)
