"""``ssl-bench compare`` on runs with known predictions, and the issue's new-user path end to end:
two configurations x seeds -> two rows with mean ± sd and intervals, a paired verdict, a figure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.conftest import TINY_SET, cli
from ssl_bench.errors import SSLBenchError
from ssl_bench.eval.predictions import write_predictions
from ssl_bench.results import ResultsStore, RunRecord
from ssl_bench.run.compare import compare_rows, report

LABELS = torch.tensor([0, 1] * 10)  # [20] test labels


def _run(store: ResultsStore, tmp_path: Path, label: str, seed: int, wrong: int) -> int:
    """A finished run whose linear probe got the first ``wrong`` of 20 test images wrong."""
    run_dir = tmp_path / f"{label}-{seed}"
    run_dir.mkdir()
    preds = LABELS.clone()
    preds[:wrong] = 1 - preds[:wrong]
    write_predictions(run_dir, {"weights": label}, LABELS, {"linear": {"linear_top1": preds}})
    rid = store.add_run(RunRecord(method="mae", backbone="vit-nano", dataset="digits", epochs=1, seed=seed, run_dir=str(run_dir),
                                  variant_json={"label": label, "settings": {"train.blr": len(label)}}))
    store.finish_run(rid, {"linear": ({"linear_top1": (20 - wrong) / 20}, {"n_test": 20})})
    return rid


def test_compare_pairs_seeds_on_known_predictions(tmp_path: Path) -> None:
    """A gets 2 and 3 of 20 wrong, B gets 10 of 20 wrong (a superset of A's mistakes) on seeds 0 and 1:
    A - B = (18 + 17 - 10 - 10) / 40 = +37.5 points; McNemar seed 0: b = 8, c = 0 -> p = 2 / 2^8 =
    0.0078125; seed 1: b = 7, c = 0 -> p = 0.015625."""
    store = ResultsStore(tmp_path / "r.db")
    for seed, wrong in ((0, 2), (1, 3)):
        _run(store, tmp_path, "a", seed, wrong)
        _run(store, tmp_path, "bb", seed, 10)
    a, b, c = compare_rows(store, "a", "bb")
    assert (a.label, b.label, c.n_seeds, c.n_images) == ("a", "bb", 2, 20)
    assert (c.mean_a, c.mean_b, c.diff) == (pytest.approx(0.875), pytest.approx(0.5), pytest.approx(0.375))
    assert c.mcnemar_p == {0: pytest.approx(0.0078125), 1: pytest.approx(0.015625)}
    assert c.lo > 0 and c.verdict("a", "bb").startswith("a is better by 37.5 points [")
    text = report(a, b, c)
    assert "A - B: +37.5 points" in text and "seed 0: +40.0 (p 0.00781)" in text and "seed 1: +35.0 (p 0.0156)" in text
    with pytest.raises(SSLBenchError, match="no leaderboard row 'nope'"):
        compare_rows(store, "a", "nope")
    with pytest.raises(SSLBenchError, match="same row"):
        compare_rows(store, "a", "1")


def test_stale_predictions_are_refused(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "r.db")
    _run(store, tmp_path, "a", 0, 2)
    rid = _run(store, tmp_path, "bb", 0, 10)
    run_dir = Path(store.get_run(rid).run_dir)
    write_predictions(run_dir, {"weights": "other"}, LABELS, {"linear": {"linear_top1": LABELS}})  # a later scoring's file
    with pytest.raises(SSLBenchError, match=f"run {rid} of 'bb'.*reproduce its stored accuracy.*ssl-bench eval"):
        compare_rows(store, "a", "bb")


@pytest.mark.slow
def test_two_configurations_with_seeds_compare_and_plot(tmp_path: Path) -> None:
    """The issue's "done when", on a tiny network: `run mae --seeds`, then the same with additive
    latent noise -> two rows of n = 2 with intervals; `compare` prints a verdict; `--plot` draws them."""
    common = ["run", "mae", "--seeds", "0", "1", "--backbone", "vit-nano", "--no-baselines", "--results", "r.db", "--set", *TINY_SET]
    noise = ["method.corruption.name=additive-latent-noise", "method.noise_schedule.name=sigma-linear"]
    proc = cli(*common, cwd=tmp_path)  # the tiny settings differ from mae's defaults: they are in its label
    assert proc.returncode == 0, proc.stderr
    proc = cli(*common, *noise, "--name", "mae-noise", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("| mae")]
    assert len(lines) == 2
    assert sum(ln.startswith("| mae · batch_size=64, backbone.depth=2") for ln in lines) == 1
    assert sum(ln.startswith("| mae-noise ") for ln in lines) == 1
    assert all(" ± " in ln and "[" in ln for ln in lines)  # mean ± sd (n = 2) and the 95% interval
    cmp = cli("compare", "mae-noise", "1", "--results", "r.db", cwd=tmp_path)  # a label, or any run id of a row
    assert cmp.returncode == 0, cmp.stderr
    assert "per seed, A - B (McNemar exact p): seed 0: " in cmp.stdout and ("is better by" in cmp.stdout or "within noise" in cmp.stdout)
    lb = cli("leaderboard", "--results", "r.db", "--plot", "lb.png", cwd=tmp_path)
    assert lb.returncode == 0, lb.stderr
    assert (tmp_path / "lb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs = cli("leaderboard", "--results", "r.db", "--runs", "--format", "csv", cwd=tmp_path)
    assert runs.returncode == 0 and len(runs.stdout.strip().splitlines()) == 1 + 4  # header + 2 configurations x 2 seeds
