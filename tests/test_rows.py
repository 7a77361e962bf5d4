"""A leaderboard row is a configuration: identity (variants, names, seeds), aggregation over seeds,
and the interval maths against scipy on fixed inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from ssl_bench.registry import get_registry
from ssl_bench.results import ResultsStore, RunRecord, build_leaderboard, render
from ssl_bench.results.columns import LINEAR_COL
from ssl_bench.results.rows import runs_table
from ssl_bench.results.stats import interval, mean_sd, overlaps, summarise, wilson_interval
from ssl_bench.run.assemble import method_config
from ssl_bench.run.variant import baseline_variant, differing_settings, row_label, variant_of

NOISE = ["method.corruption.name=additive-latent-noise", "method.noise_schedule.name=sigma-linear"]


# -- the interval maths ------------------------------------------------------------------------


def test_wilson_interval_matches_the_formula() -> None:
    """324 of 360 right: Wilson (1927) score interval, z = 1.959964; worked by hand from
    (p + z^2/2n) / (1 + z^2/n) +- z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2)."""
    lo, hi = wilson_interval(0.9, 360)
    assert lo == pytest.approx(0.864663, abs=1e-6) and hi == pytest.approx(0.926890, abs=1e-6)


def test_seed_spread_and_test_sampling_add_in_quadrature() -> None:
    """The issue's l-DAE digits seeds (91.7 / 89.4 / 90.0 on 360 test images): mean 0.903667,
    sd 0.011930, t(0.975, 2) = 4.302653 -> seed half-width 0.029637; Wilson of 325/360 is
    [0.867788, 0.929262]; combined: mean -+ hypot(0.029637, mean - wilson)."""
    mean, sd = mean_sd([0.917, 0.894, 0.900])
    assert (mean, sd) == (pytest.approx(0.903667, abs=1e-6), pytest.approx(0.011930, abs=1e-6))
    lo, hi = interval([0.917, 0.894, 0.900], 360, accuracy=True)
    assert lo == pytest.approx(0.857131, abs=1e-6) and hi == pytest.approx(0.942826, abs=1e-6)
    # one seed: the Wilson interval alone; a non-accuracy metric: the t interval alone
    assert interval([0.9], 360, accuracy=True) == pytest.approx((0.864663, 0.926890), abs=1e-6)
    assert interval([3.1, 3.3], None, accuracy=False) == pytest.approx((3.2 - 1.270620, 3.2 + 1.270620), abs=1e-6)
    assert interval([3.1], None, accuracy=False) == (None, None)
    got = summarise([0.917, 0.894, 0.900], 360, accuracy=True, scale=100.0)  # the same, in percent
    assert (got["mean"], got["sd"], got["lo"], got["hi"]) == pytest.approx((90.3667, 1.1930, 85.7131, 94.2826), abs=1e-4)
    assert summarise([], 360, accuracy=True) == {"mean": None, "sd": None, "lo": None, "hi": None}
    assert overlaps((0.1, 0.2), (0.2, 0.3)) and not overlaps((0.1, 0.2), (0.21, 0.3)) and overlaps((None, None), (0, 1))


# -- row identity ------------------------------------------------------------------------------


def test_identity_is_what_differs_from_the_method_defaults() -> None:
    registry = get_registry()
    plain = method_config("mae", registry)
    assert variant_of(plain, "mae", registry) == {"label": "mae", "settings": {}}
    noise = method_config("mae", registry, set_items=NOISE)
    v = variant_of(noise, "mae", registry)
    assert v["label"] == "mae · corruption=additive-latent-noise, noise_schedule=sigma-linear"
    assert v["settings"]["method.corruption.name"] == "additive-latent-noise"
    # where it runs, the seed, the data and the probes are not the configuration
    other = method_config("mae", registry, cli={"seed": 3, "out": "elsewhere", "train.device": "cpu"},
                          set_items=["dataset.limit_train=100", "eval.linear.epochs=3", "eval.linear.warmup_epochs=1"])
    assert variant_of(other, "mae", registry)["settings"] == {}
    named = method_config("mae", registry, set_items=["train.blr=0.001", "name=fast-mae"])
    assert variant_of(named, "mae", registry) == {"label": "fast-mae", "settings": {"train.blr": 0.001}}
    assert baseline_variant("pixels", named, None, registry) == {"label": "pixels", "settings": {}}
    assert baseline_variant("random-init", named, "mae", registry)["label"] == "random-init:fast-mae"


def test_labels_stay_short() -> None:
    settings = {f"train.k{i}": i for i in range(5)}
    assert row_label("mae", settings) == "mae · k0=0, k1=1, k2=2, +2 more"
    assert row_label("mae", {"train.epochs": 3}) == "mae"  # the epochs have a column of their own
    assert row_label("mae", {"method.corruption.name": "x", "method.corruption.sigma": 0.5, "train.betas": [0.9, 0.99]}) == (
        "mae · corruption=x, betas=(0.9,0.99)")  # a replaced part stands for its options
    assert differing_settings({"train": {"blr": 1.0}, "seed": 1}, {"train": {"blr": 2.0}, "seed": 0}) == {"train.blr": 1.0}


# -- aggregation -------------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> ResultsStore:
    s = ResultsStore(tmp_path / "results.db")
    yield s
    s.close()


def _run(store: ResultsStore, method: str, seed: int, linear: float, knn: float | None = None,
         variant: dict[str, Any] | None = None, baseline: bool = False) -> int:
    rid = store.add_run(RunRecord(method=method, backbone="vit-nano", dataset="digits", epochs=1, seed=seed,
                                  run_dir=f"runs/{method}-{seed}", variant_json=variant, is_baseline=baseline))
    results: dict[str, Any] = {"linear": ({"linear_top1": linear}, {"n_test": 360})}
    if knn is not None:
        results["knn"] = ({"knn_top1": knn}, {"headline_k": 20, "n_test": 360})
    store.finish_run(rid, results)
    return rid


NOISE_VARIANT = {"label": "mae · corruption=additive-latent-noise", "settings": {"method.corruption.name": "additive-latent-noise"}}


def test_variants_and_seeds_are_rows(store: ResultsStore) -> None:
    for seed, top1 in enumerate((0.917, 0.894, 0.900)):
        _run(store, "mae", seed, top1, variant={"label": "mae", "settings": {}})
        _run(store, "mae", seed, top1 - 0.2, variant=NOISE_VARIANT)
    _run(store, "mae", 1, 0.5, variant={"label": "mae", "settings": {}})  # a rerun of seed 1 replaces it
    _run(store, "random-init", 0, 0.2, baseline=True)
    df = build_leaderboard(store)
    t = df.set_index("row")
    assert df["row"].tolist() == ["random-init", "mae", "mae · corruption=additive-latent-noise"]
    assert t.loc["mae", "n"] == 3 and t.loc["mae", "seeds"] == "0,1,2"
    assert t.loc["mae", LINEAR_COL] == 77.2  # (91.7 + 50.0 + 90.0) / 3
    noise = t.loc["mae · corruption=additive-latent-noise"]
    assert noise["n"] == 3 and noise[LINEAR_COL] == 70.4 and noise[f"{LINEAR_COL} sd"] == 1.19
    # the same seed spread as the interval test above, with Wilson of 253/360 = [0.653627, 0.747647]
    assert (noise[f"{LINEAR_COL} lo"], noise[f"{LINEAR_COL} hi"]) == (64.55, 75.67)
    assert noise["settings"] == 'method.corruption.name="additive-latent-noise"'
    assert noise[f"{LINEAR_COL} gain"] == 50.4 and pd.isna(t.loc["random-init", f"{LINEAR_COL} gain"])
    # the two trained rows' intervals overlap: neither can be told apart from the best
    assert t.loc["mae", f"{LINEAR_COL} best"] and noise[f"{LINEAR_COL} best"]
    md = render(df, "md")
    assert "70.4 ± 1.2 *" in md and "[64.5, 75.7]" in md and "settings" not in md
    assert "additive-latent-noise" in render(df, "csv") and "method.corruption.name" in render(df, "html")


def test_best_marks_only_rows_the_intervals_cannot_separate(store: ResultsStore) -> None:
    for seed in range(3):
        _run(store, "a", seed, 0.90 + 0.001 * seed)
        _run(store, "b", seed, 0.50 + 0.001 * seed)
    t = build_leaderboard(store).set_index("row")
    assert t.loc["a", f"{LINEAR_COL} best"] and not t.loc["b", f"{LINEAR_COL} best"]


def test_a_name_never_merges_two_configurations(store: ResultsStore) -> None:
    _run(store, "mae", 0, 0.8, variant={"label": "mine", "settings": {"train.blr": 0.001}})
    second = _run(store, "mae", 0, 0.7, variant={"label": "mine", "settings": {"train.blr": 0.01}})
    assert sorted(build_leaderboard(store)["row"]) == ["mine", f"mine #{second}"]


def test_runs_table_lists_every_seed_and_validation_runs(store: ResultsStore) -> None:
    _run(store, "mae", 0, 0.8)
    _run(store, "mae", 1, 0.7)
    rid = store.add_run(RunRecord(method="mae", backbone="vit-nano", dataset="digits", seed=0,
                                  variant_json={"label": "mae · blr=0.01", "settings": {"train.blr": 0.01}}))
    store.finish_run(rid, {"linear": ({"val_linear_top1": 0.6}, {"split": "val"})})
    assert build_leaderboard(store)["row"].tolist() == ["mae"]  # validation only: not a test number
    runs = runs_table(store)
    assert runs["seed"].tolist() == [0, 1, 0] and runs["validation only"].tolist() == [False, False, True]
    assert runs["val_linear_top1"].iloc[2] == 60.0 and pd.isna(runs["linear_top1"].iloc[2])
