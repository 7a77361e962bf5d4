"""The paper's linear probe (MAE main_linprobe.py) on augmented images: it trains, it is deterministic
for a seed, it records its protocol, it caps batches like the cached probe, the runner runs it when
``eval.linear.protocol="augmented"``, and the Table-4 note tells it apart from the cached probe."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from ssl_bench.config_schema import validate_config
from ssl_bench.data.augment import CropFlipAugment, normalize, to_float01
from ssl_bench.data.datasets import load_digits
from ssl_bench.distributed import DistContext
from ssl_bench.errors import ConfigError
from ssl_bench.eval.augmented_probe import augmented_batch_size, augmented_linear_probe
from ssl_bench.eval.base import EvalInputError
from ssl_bench.eval.features import extract_features
from ssl_bench.eval.linear_probe import LinearProbeEvaluator
from ssl_bench.eval.probe_head import LinearProbeProtocol, probe_record
from ssl_bench.registry import get_registry
from ssl_bench.results.table4 import build_table4
from ssl_bench.results.store import ResultsStore, RunRecord
from ssl_bench.run import method_config, run_baseline, run_method
from tests.conftest import make_imagefolder

CPU = torch.device("cpu")
CTX = DistContext(0, 1, 0, CPU)
TABLE4 = Path(__file__).resolve().parents[1] / "benchmarks" / "table4"


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_digits(None)


def _tiny_model() -> torch.nn.Module:
    """A fixed random ReLU layer: a frozen 'encoder' whose features a linear head can read."""
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(64, 64)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(64, 64, generator=g) / 8)
        lin.bias.zero_()
    return torch.nn.Sequential(torch.nn.Flatten(), lin, torch.nn.ReLU()).eval()


@pytest.fixture(scope="module")
def model_and_test(digits: Any) -> tuple[Any, Tensor, Tensor]:
    fn = torch.no_grad()(_tiny_model())
    test_f, test_y = extract_features(fn, digits.test, digits.info, 256, CPU)
    return fn, test_f, test_y


def _probe(digits: Any, model_and_test: Any, seed: int = 0, **overrides: Any):
    fn, test_f, test_y = model_and_test
    p = LinearProbeProtocol(**{"protocol": "augmented", "epochs": 4, "warmup_epochs": 1, "optimizer": "sgd",
                               "batch_size": 128, **overrides})
    return augmented_linear_probe(fn, digits.train, digits.info, test_f, test_y, digits.info.num_classes, p, seed=seed)


def test_trains_on_augmented_views(digits, model_and_test) -> None:
    res = _probe(digits, model_and_test)
    assert res.metrics["linear_top1"] > 0.4  # chance is 0.1 (measured 0.64 with 4 epochs)
    assert res.metrics["linear_final_loss"] < math.log(10) - 0.2  # below the loss of a uniform guess
    # milder crops and no flip (digits are not mirror-symmetric) are easier, so the views do reach the head
    easier = _probe(digits, model_and_test, crop_scale=(0.5, 1.0), flip_p=0.0)
    assert easier.metrics["linear_top1"] > res.metrics["linear_top1"]


@pytest.mark.parametrize("world", [2, 3])
def test_views_are_the_data_packages_crop_flip_whatever_the_number_of_processes(world: int) -> None:
    """The probe's views come from ``CropFlipAugment`` (ssl_bench/data/augment.py). Rank r holds rows
    r::W of a global batch and gets exactly the views the one-process call gives those rows; a view
    the loader already cut ([B, 1, C, S, S]) is only flipped and normalised."""
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)
    images = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    aug = CropFlipAugment(8, scale=(0.08, 1.0), flip_p=0.5)
    whole = aug(images, mean, std, torch.Generator().manual_seed(1))  # [12, 3, 8, 8]
    assert whole.shape == (12, 3, 8, 8)
    for r in range(world):
        assert torch.equal(aug(images[r::world], mean, std, torch.Generator().manual_seed(1), r, world), whole[r::world])
    cut = images[:, None, :, 4:12, 4:12]  # [12, 1, 3, 8, 8]
    plain = normalize(to_float01(cut[:, 0]), mean, std)
    views = aug(cut, mean, std, torch.Generator().manual_seed(1))
    mirrored = torch.tensor([torch.equal(v, x.flip(-1)) and not torch.equal(v, x) for v, x in zip(views, plain)])
    assert all(torch.equal(v, x) or m for v, x, m in zip(views, plain, mirrored)) and 0 < int(mirrored.sum()) < 12
    for r in range(world):
        assert torch.equal(aug(cut[r::world], mean, std, torch.Generator().manual_seed(1), r, world), views[r::world])


def test_a_stale_features_cache_is_refused_at_the_first_batch(digits, model_and_test) -> None:
    """Cached test features of another width (a cache from another model) stop the probe after one
    encoder pass, not after every epoch of encoding."""
    fn, test_f, test_y = model_and_test
    calls = {"n": 0}

    def counted(x: Tensor) -> Tensor:
        calls["n"] += 1
        return fn(x)

    p = LinearProbeProtocol(protocol="augmented", epochs=4, warmup_epochs=1, optimizer="sgd", batch_size=128)
    with pytest.raises(EvalInputError, match="features cache belongs to another model"):
        augmented_linear_probe(counted, digits.train, digits.info, test_f[:, :10], test_y, digits.info.num_classes, p)
    assert calls["n"] == 1


def test_deterministic_for_a_seed_and_leaves_the_global_rng(digits, model_and_test) -> None:
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b = _probe(digits, model_and_test, seed=5), _probe(digits, model_and_test, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    assert a.metrics == b.metrics and a.protocol == b.protocol
    other = _probe(digits, model_and_test, seed=6)
    assert other.metrics != a.metrics
    assert torch.equal(a.predictions["linear_top1"], b.predictions["linear_top1"])


def test_returns_the_test_predictions_behind_its_accuracy(digits, model_and_test) -> None:
    res = _probe(digits, model_and_test)
    preds, test_y = res.predictions["linear_top1"], model_and_test[2]
    assert set(res.predictions) == {"linear_top1"} and preds.dtype == torch.long and preds.shape == test_y.shape
    assert (preds == test_y).double().mean().item() == res.metrics["linear_top1"]


def test_records_its_protocol(digits, model_and_test) -> None:
    ev = LinearProbeEvaluator(LinearProbeProtocol(protocol="augmented", epochs=2, warmup_epochs=1, batch_size=100), seed=2)
    assert ev.needs_images
    fn, test_f, test_y = model_and_test
    feats = {"test": test_f, "test_labels": test_y}
    rec = ev.evaluate_images(fn, digits.train, digits.info, feats, 10, CPU).protocol
    assert rec["protocol"] == "augmented" and rec["evaluator"] == "linear" and rec["seed"] == 2
    assert rec["crop_scale"] == [0.08, 1.0] and rec["flip_p"] == 0.5  # torchvision's default scale, MAE's flip
    assert "RandomResizedCrop(8" in rec["train_data"] and "centre crop" in rec["test_data"]
    assert rec["optimizer"] == "lars" and rec["optimizer_impl"] == "timm.optim.Lars"
    assert rec["batch_size"] == 100 and rec["steps_per_epoch"] == len(digits.train) // 100
    assert rec["n_train"] == len(digits.train) and rec["n_test"] == len(test_y) and rec["dim"] == 64
    assert ev.last_head is not None
    # the cached probe says what it trains on too, and has no crop settings
    cached = LinearProbeEvaluator(epochs=2, warmup_epochs=1)(test_f, test_y, test_f, test_y, 10).protocol
    assert cached["protocol"] == "cached" and "crop_scale" not in cached and "flip_p" not in cached


def test_batch_capping_like_the_cached_probe(digits, model_and_test) -> None:
    fn, test_f, test_y = model_and_test
    small = digits.train.subset(torch.arange(30))
    p = LinearProbeProtocol(protocol="augmented", epochs=2, warmup_epochs=1, batch_size=16384, optimizer="sgd")
    rec = augmented_linear_probe(fn, small, digits.info, test_f, test_y, 10, p).protocol
    assert rec["batch_size"] == 30 and rec["batch_size_requested"] == 16384 and rec["steps_per_epoch"] == 1
    assert rec["lr"] == pytest.approx(0.1 * 30 / 256)  # the scaling rule on the batch actually used
    assert augmented_batch_size(16384, 1_281_167, 8) == 16384
    assert augmented_batch_size(256, 101, 2) == 100  # capped, then a multiple of the processes
    with pytest.raises(EvalInputError, match="at least 2 training samples"):
        augmented_linear_probe(fn, digits.train.subset([0]), digits.info, test_f, test_y, 10, p)
    with pytest.raises(EvalInputError, match="global batch of at least 2"):
        augmented_batch_size(3, 100, 4)


def test_misuse_is_one_clear_error(model_and_test) -> None:
    _, f, y = model_and_test
    with pytest.raises(EvalInputError, match="trains on augmented images, not on features"):
        LinearProbeEvaluator(protocol="augmented")(f, y, f, y, 10)
    with pytest.raises(EvalInputError, match="unknown linear-probe protocol 'images'"):
        LinearProbeProtocol(protocol="images")
    with pytest.raises(EvalInputError, match="drops the last partial batch"):
        LinearProbeProtocol(protocol="augmented", drop_last=False)
    with pytest.raises(EvalInputError, match="crop_scale"):
        LinearProbeProtocol(crop_scale=(0.5, 0.2))
    cfg = method_config("mae", get_registry())
    cfg.eval.linear.protocol = "images"
    with pytest.raises(ConfigError, match=r"eval.linear.protocol='images' is invalid: expected one of cached, augmented"):
        validate_config(cfg)


def test_runner_runs_it_for_a_method_and_a_baseline(tiny_cfg, tmp_path) -> None:
    store = ResultsStore(tmp_path / "results.db")
    cfg = tiny_cfg("mae", "eval.linear.protocol=augmented", "eval.linear.epochs=2", "eval.linear.batch_size=64")
    out = run_method("mae", cfg, store, CTX)
    assert 0.0 <= out.metrics["linear_top1"] <= 1.0 and "knn_top1" in out.metrics
    proto = store.metrics_frame().query("name == 'linear_top1'")["protocol_json"].iloc[0]
    assert '"protocol": "augmented"' in proto and '"world_size": 1' in proto
    base = run_baseline("pixels", cfg, store, _tiny_digits(cfg), CPU)
    assert 0.0 <= base.metrics["linear_top1"] <= 1.0
    protos = store.metrics_frame().query("name == 'linear_top1'")["protocol_json"].tolist()
    assert len(protos) == 2 and all('"protocol": "augmented"' in p for p in protos)


def _tiny_digits(cfg: Any) -> Any:
    from ssl_bench.run import load_dataset

    return load_dataset(cfg, get_registry())


def test_table4_recipes_use_the_augmented_probe() -> None:
    for path in sorted(TABLE4.glob("*_vit_[bl].py")):
        method = path.stem.rpartition("_vit_")[0]
        cfg = method_config(method, get_registry(), user_config=path)
        assert cfg.eval.linear.protocol == "augmented", path.name
    assert method_config("mae", get_registry()).eval.linear.protocol == "cached"  # small data default


def _table4_note(tmp_path: Path, record: dict[str, Any]) -> str:
    store = ResultsStore(tmp_path / "t4.db")
    rid = store.add_run(RunRecord(method="mae", backbone="vit-b", dataset="imagenet-1k", epochs=1600, run_dir="r", seed=0))
    store.finish_run(rid, {"linear": ({"linear_top1": 0.67}, record)})
    note = build_table4(store).set_index("method").loc["mae", "notes"]
    store.close()
    return note


def test_table4_note_for_a_cached_probe_and_not_for_the_augmented_paper_probe(tmp_path, digits, model_and_test) -> None:
    fn, test_f, test_y = model_and_test
    cached = LinearProbeEvaluator(epochs=2, warmup_epochs=1, optimizer="sgd")(test_f, test_y, test_f, test_y, 10).protocol
    note = _table4_note(tmp_path / "a", cached)
    assert note.startswith("probe: cached") and "vs paper augmented, LARS, batch 16384" in note
    # the record the augmented LARS 16384 probe writes for ImageNet on 8 processes
    p = LinearProbeProtocol(protocol="augmented", optimizer="lars", blr=0.1, batch_size=16384, epochs=90, warmup_epochs=10)
    batch = augmented_batch_size(p.batch_size, 1_281_167, 8)
    paper = probe_record(p, evaluator="linear", seed=0, n=1_281_167, dim=768, n_test=50_000, num_classes=1000, batch=batch,
                         lr=0.1 * batch / 256, steps_per_epoch=1_281_167 // batch, warmup_steps=780, total_steps=7020, device=CPU)
    assert _table4_note(tmp_path / "b", paper) == ""
    # a real augmented record from digits differs from the paper's only in what digits forces (batch, epochs)
    small = _probe(digits, model_and_test, optimizer="lars", blr=0.1, batch_size=16384, epochs=2).protocol
    note = _table4_note(tmp_path / "c", small)
    assert "cached" not in note and note == f"probe: batch {len(digits.train)}, 2 ep vs paper batch 16384, 90 ep"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_runs_on_cuda(digits) -> None:
    cuda = torch.device("cuda")
    fn = torch.no_grad()(_tiny_model().to(cuda))
    test_f, test_y = extract_features(fn, digits.test, digits.info, 256, cuda)
    p = LinearProbeProtocol(protocol="augmented", epochs=4, warmup_epochs=1, optimizer="sgd", batch_size=128)
    res = augmented_linear_probe(fn, digits.train, digits.info, test_f, test_y, 10, p, device=cuda)
    assert res.protocol["device"] == "cuda" and res.metrics["linear_top1"] > 0.4
    # same crops (CPU generators) and the same head init: the CPU probe lands close by
    cpu = _probe(digits, (torch.no_grad()(_tiny_model()), test_f.cpu(), test_y.cpu()))
    assert abs(res.metrics["linear_top1"] - cpu.metrics["linear_top1"]) < 0.05




def test_folder_split_crops_in_the_loader_from_the_full_image(tmp_path) -> None:
    from ssl_bench.data.datasets import load_imagefolder

    ds = load_imagefolder(str(make_imagefolder(tmp_path / "data", per_class=8)), image_size=32, num_workers=0)
    seen: list[Tensor] = []

    def fn(x: Tensor) -> Tensor:  # [B, 3, 32, 32] -> [B, 4]: mean and std per image, plus two fixed pixels
        seen.append(x)
        return torch.stack([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3)), x[:, 0, 0, 0], x[:, 1, 16, 16]], dim=1)

    test_f, test_y = extract_features(fn, ds.test, ds.info, 8, CPU)
    eval_train, _ = extract_features(fn, ds.train, ds.info, 16, CPU)
    seen.clear()
    p = LinearProbeProtocol(protocol="augmented", epochs=2, warmup_epochs=1, batch_size=8, optimizer="sgd")
    a = augmented_linear_probe(fn, ds.train, ds.info, test_f, test_y, 2, p, seed=1)
    assert all(x.shape[1:] == (3, 32, 32) for x in seen) and sum(len(x) for x in seen) == 2 * 16
    assert "in the loader, bicubic" in a.protocol["crop_impl"] and a.protocol["protocol"] == "augmented"
    # the views are crops, not the eval decode
    first_epoch = torch.cat(seen[:2])[:, 0, 0, 0]  # 16 views, one of each training image
    assert not torch.allclose(first_epoch.sort().values, eval_train[:, 2].sort().values)
    b = augmented_linear_probe(fn, ds.train, ds.info, test_f, test_y, 2, p, seed=1)
    assert a.metrics == b.metrics  # the crops come from the seed, not from the loader's timing
