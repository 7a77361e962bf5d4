"""Decode + crop throughput: FolderSplit vs the standard torchvision ImageFolder pipeline.

    python benchmarks/data_speed.py [--images 400] [--repeats 3] [--device cpu|cuda] [--save]

Generates an ImageNet-like JPEG folder in a temporary directory (class folders,
sizes around 500x375, quality 90, smooth random fields plus noise so the files are
not trivially compressible), then measures decode + crop throughput with one
DataLoader worker and with one per spare core, for

* MAE, one view: ours (``batches(views=[CropSpec(224, (0.2, 1))])``, decoders
  torchvision (the default: torchvision.io full decodes, PIL ``draft`` for DCT-scaled
  ones) and pil) vs the standard ``ImageFolder`` + ``RandomResizedCrop(224, scale=(0.2, 1),
  bicubic)`` + ``RandomHorizontalFlip`` + ``PILToTensor`` through a DataLoader; also
  PIL decoding + ``PIL.Image.resize(box=...)`` instead of torchvision's tensor kernels
  (why FolderSplit does not resize with PIL);
* MoCo v3, two views (scale (0.08, 1), bilinear): ours vs the standard transform
  applied twice to the decoded image;
* the evaluation decode: ours vs ``Resize(256, bicubic)`` + ``CenterCrop(224)``.

``--device cuda`` adds the nvJPEG decoder (workers read bytes, the GPU decodes).
Every pipeline first runs a few untimed batches (worker start-up is not timed);
then the pipelines of one task take turns at ``--repeats`` full passes each and the
fastest pass counts, so load from other processes on a shared machine hits them
alike. Two per-core figures: images/s per worker (wall clock) and images per
CPU-second of the main process plus its workers (from ``/proc``; insensitive to
other load). The issue's target: ours >= 1.5x the standard pipeline per core on CPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import PIL
import torch
import torchvision
import torchvision.transforms as T
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS  # noqa: E402

from ssl_bench.data.crops import CropSpec, view_boxes  # noqa: E402
from ssl_bench.data.folder import FolderSplit, default_num_workers  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MAE = [CropSpec(224, scale=(0.2, 1.0), interpolation="bicubic")]  # MAE main_pretrain.py
MOCO = [CropSpec(224, scale=(0.08, 1.0), interpolation="bilinear")] * 2  # MoCo v3 main_moco.py
_PIL_RESAMPLE = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


# ------------------------------------------------------------------ the data


def make_folder(root: Path, images: int, classes: int, seed: int, widths: tuple[int, int] = (400, 600)) -> None:
    """``root/<class>/<i>.JPEG``: width in ``widths``, aspect (w/h) 0.6-1.4, quality 90."""
    rng = np.random.default_rng(seed)
    for i in range(images):
        c = i % classes
        d = root / f"n{c:08d}"
        d.mkdir(exist_ok=True)
        w = int(rng.integers(widths[0], widths[1] + 1))
        h = int(round(w / rng.uniform(0.6, 1.4)))
        cell = int(rng.integers(12, 48))  # feature size of the smooth field
        coarse = rng.integers(0, 256, (h // cell + 2, w // cell + 2, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
        noisy = field + rng.normal(0.0, 6.0, field.shape).astype(np.float32)  # [H, W, 3]
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(d / f"{i:06d}.JPEG", quality=90)


# ------------------------------------------------------------ the pipelines


class TwoCrops:
    """MoCo v3's ``TwoCropsTransform`` (moco/loader.py): the same transform, twice."""

    def __init__(self, transform: Callable[[Any], torch.Tensor]) -> None:
        self.transform = transform

    def __call__(self, img: Any) -> list[torch.Tensor]:
        return [self.transform(img), self.transform(img)]


def standard_loader(root: Path, kind: str, batch: int, workers: int) -> DataLoader:
    """torchvision ImageFolder + the papers' PIL transforms, as the official code does."""
    rrc = {
        "mae": T.RandomResizedCrop(224, scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        "moco": T.RandomResizedCrop(224, scale=(0.08, 1.0)),  # bilinear, torchvision's default
    }
    if kind == "eval":
        transform: Any = T.Compose([T.Resize(256, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(224),
                                    T.PILToTensor()])
    else:
        transform = T.Compose([rrc[kind], T.RandomHorizontalFlip(), T.PILToTensor()])
        if kind == "moco":
            transform = TwoCrops(transform)
    return DataLoader(ImageFolder(str(root), transform=transform), batch_size=batch, shuffle=True,
                      num_workers=workers, persistent_workers=True)


class PilResizeFolder:
    """Ours with ``PIL.Image.resize(size, resample, box=...)`` as the resize (for comparison).

    Same boxes and DCT-scaling rule as FolderSplit; the box is mapped to the draft
    image in float pixels, which PIL accepts.
    """

    def __init__(self, split: FolderSplit, views: list[CropSpec], epoch_seed: int) -> None:
        self.reader, self.views, self.epoch_seed = split._reader, views, epoch_seed

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from ssl_bench.data.crops import draft_factor

        with Image.open(self.reader.path(index)) as im:
            width, height = im.size
            boxes = view_boxes(height, width, self.views, self.epoch_seed, index)
            k = draft_factor(boxes, [v.size for v in self.views])
            if k > 1 and im.draft("RGB", (width // k, height // k)) is None:
                k = 1
            im = im.convert("RGB")
            out = [
                np.asarray(im.resize((v.size, v.size), _PIL_RESAMPLE[v.interpolation],
                                     box=(left / k, top / k, (left + w) / k, (top + h) / k)))
                for (top, left, h, w), v in zip(boxes, self.views)
            ]
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2), int(self.reader.targets[index])  # [V, C, S, S]


def _const(loader: DataLoader) -> Callable[[], Iterable[Any]]:
    return lambda: loader


def _epochs(split: FolderSplit, batch: int, g: torch.Generator, device: torch.device,
            views: list[CropSpec] | None) -> Callable[[], Iterable[Any]]:
    return lambda: split.batches(batch, shuffle=True, generator=g, device=device, views=views)


def _images_in(batch: Any) -> int:
    x = batch[0]
    return int(x[0].shape[0]) if isinstance(x, list) else int(x.shape[0])


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its live children (the DataLoader workers).

    Read from ``/proc``: per-core throughput measured this way does not depend on how
    busy the rest of a shared machine is (idle workers of other pipelines use ~0).
    """
    total = time.process_time()
    me, tick = os.getpid(), os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == me:  # ppid; fields[11:13] = utime, stime
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


class Pipeline:
    """One loader under test: ``make_iter()`` starts a pass over the whole folder."""

    def __init__(self, name: str, make_iter: Callable[[], Iterable[Any]], device: torch.device,
                 split: FolderSplit | None = None) -> None:
        self.name, self.make_iter, self.device, self.split = name, make_iter, device, split
        self.best = 0.0  # images/s of the fastest timed pass
        self.best_cpu = 0.0  # images per CPU-second (main process + workers), best pass

    def warm_up(self, batches: int) -> None:
        """A few batches, untimed (workers start); the abandoned pass resets, not restarts, them."""
        it: Iterator[Any] = iter(self.make_iter())
        for _ in range(batches):
            if next(it, None) is None:
                break
        del it
        if self.split is not None:
            self.split.draft_counts = {1: 0, 2: 0, 4: 0, 8: 0}  # count timed passes only

    def timed_pass(self) -> None:
        n, t0, c0 = 0, time.perf_counter(), cpu_seconds()
        for batch in self.make_iter():
            n += _images_in(batch)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.best = max(self.best, n / (time.perf_counter() - t0))
        self.best_cpu = max(self.best_cpu, n / max(cpu_seconds() - c0, 1e-9))


# ---------------------------------------------------------------- reporting


def cpu_description() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return f"{model}, {usable} cores usable ({os.cpu_count()} logical CPUs)"


def device_line(device: torch.device) -> str:
    line = cpu_description()
    if device.type == "cuda":
        line += f"; GPU {torch.cuda.get_device_name(device)}"
    return line


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=400, help="JPEG files to generate (default sized for ~2 min on 2 cores)")
    p.add_argument("--classes", type=int, default=1000, help="class folders (fewer when --images is smaller)")
    p.add_argument("--widths", type=int, nargs=2, default=[400, 600], metavar=("MIN", "MAX"),
                   help="image width range (ImageNet's typical ~500x375 by default; larger shows DCT scaling)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="timed passes per pipeline (interleaved; the best counts)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", action="store_true",
                   help="write benchmarks/results/data_speed[-w<MIN>-<MAX>]-<date>-<device>.md")
    args = p.parse_args()
    device = torch.device(args.device)
    classes = min(args.classes, args.images)
    spare = default_num_workers()
    worker_counts = sorted({1, spare})
    print(f"device: {device_line(device)}; worker counts {worker_counts}", flush=True)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ssl-bench-data-speed-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        make_folder(root, args.images, classes, args.seed, tuple(args.widths))
        size_mb = sum(f.stat().st_size for f in root.rglob("*.JPEG")) / 2**20
        print(f"generated {args.images} JPEGs in {classes} classes ({size_mb:.0f} MiB) in "
              f"{time.perf_counter() - t0:.0f}s", flush=True)

        def record(task: str, pipe: Pipeline, workers: int) -> None:
            row: dict[str, Any] = {"task": task, "pipeline": pipe.name, "workers": workers,
                                   "images/s": round(pipe.best, 1), "images/s per worker": round(pipe.best / workers, 1),
                                   "images per CPU-second": round(pipe.best_cpu, 1)}
            if pipe.split is not None:
                counts = pipe.split.draft_counts
                total = sum(counts.values()) or 1
                row["DCT scale 1/2/4/8 (%)"] = "/".join(f"{100 * counts[k] / total:.0f}" for k in (1, 2, 4, 8))
            rows.append(row)
            print(row, flush=True)

        tasks = {"MAE, 1 view": ("mae", MAE), "MoCo v3, 2 views": ("moco", MOCO), "eval decode": ("eval", None)}
        decoders = ["torchvision", "pil"] + (["cuda"] if device.type == "cuda" else [])
        cpu = torch.device("cpu")
        for task, (kind, views) in tasks.items():
            for workers in worker_counts:
                pipes = [Pipeline("standard (ImageFolder + PIL transforms)",
                                  _const(standard_loader(root, kind, args.batch_size, workers)), cpu)]
                for decoder in decoders:
                    split = FolderSplit(str(root), 224, num_workers=workers, decoder=decoder)
                    dev = device if decoder == "cuda" else cpu
                    g = torch.Generator().manual_seed(args.seed)
                    pipes.append(Pipeline(f"ours (decoder={decoder})", _epochs(split, args.batch_size, g, dev, views),
                                          dev, split))
                if kind == "mae":
                    base = FolderSplit(str(root), 224, num_workers=0)
                    pil_resize = DataLoader(PilResizeFolder(base, MAE, args.seed), batch_size=args.batch_size,
                                            shuffle=True, num_workers=workers, persistent_workers=True)
                    pipes.append(Pipeline("ours, PIL resize(box=) instead of torchvision kernels",
                                          _const(pil_resize), cpu))
                for pipe in pipes:
                    pipe.warm_up(workers + 1)
                for _ in range(args.repeats):  # interleaved, best of: load from elsewhere hits all alike
                    for pipe in pipes:
                        pipe.timed_pass()
                for pipe in pipes:
                    record(task, pipe, workers)
                del pipes

    df = pd.DataFrame(rows)
    std = df[df.pipeline.str.startswith("standard")].set_index(["task", "workers"])["images/s per worker"]
    std_cpu = df[df.pipeline.str.startswith("standard")].set_index(["task", "workers"])["images per CPU-second"]
    df["vs standard (per worker)"] = [
        f"{r['images/s per worker'] / std[(r['task'], r['workers'])]:.2f}x" for _, r in df.iterrows()
    ]
    df["vs standard (per CPU-second)"] = [
        f"{r['images per CPU-second'] / std_cpu[(r['task'], r['workers'])]:.2f}x" for _, r in df.iterrows()
    ]
    table = df.fillna("").to_markdown(index=False)
    summary = []
    for task in tasks:
        for decoder in ("torchvision", "pil"):
            rows_ = df[(df.task == task) & (df.pipeline == f"ours (decoder={decoder})")]
            wall = ", ".join(rows_["vs standard (per worker)"])
            cpu = ", ".join(rows_["vs standard (per CPU-second)"])
            summary.append(f"- {task}, ours (decoder={decoder}) vs standard: {wall} per worker, {cpu} per CPU-second "
                           f"(workers {', '.join(map(str, worker_counts))}; target >= 1.5x)")
    notes = (
        "standard: torchvision ImageFolder (PIL decode) + the official PIL transforms (MAE: RandomResizedCrop"
        "(224, (0.2, 1), bicubic) + flip; MoCo v3: RandomResizedCrop(224, (0.08, 1)) + flip, applied twice; eval: "
        "Resize(256, bicubic) + CenterCrop(224)) + PILToTensor, default collate. ours: FolderSplit.batches"
        "(views=...) (flips are left to the method, on the device). DCT scale: share of images decoded at "
        "1/1, 1/2, 1/4, 1/8 resolution (PIL draft) in the timed passes. images/s: best of the timed passes "
        "(wall clock); images per CPU-second: images over the CPU time of the main process and its workers "
        "(/proc), best pass: the per-core figure, insensitive to other load on a shared machine."
    )
    print(table)
    print("\n".join(summary))
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        today = dt.date.today().isoformat()
        widths = "" if args.widths == [400, 600] else f"-w{args.widths[0]}-{args.widths[1]}"
        path = RESULTS / f"data_speed{widths}-{today}-{device.type}.md"
        script = os.path.relpath(Path(sys.argv[0]).resolve(), REPO)
        command = " ".join(["python", script, *sys.argv[1:]])
        path.write_text(
            f"# data_speed\n\n- date: {today}\n- device: {device_line(device)}\n- torch: {torch.__version__}, "
            f"torchvision {torchvision.__version__}, Pillow {PIL.__version__}\n"
            f"- command: `{command}`\n- data: {args.images} generated JPEGs (q90, {args.widths[0]}-{args.widths[1]} px "
            f"wide, aspect 0.6-1.4), {classes} classes, {size_mb:.0f} MiB, batch size {args.batch_size}, "
            f"best of {args.repeats} passes\n\n{table}\n\n" + "\n".join(summary) + f"\n\n{notes}\n"
        )
        print(f"saved {os.path.relpath(path, REPO)}")


if __name__ == "__main__":
    main()
