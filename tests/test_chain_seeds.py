"""The deconstruction chain's table over seeds, on hand-made stores: each row's mean ± sd and 95%
interval over its seeds, the gain over its own untrained network, and the step from the row it
changes as a paired difference of known predictions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ssl_bench.eval.predictions import write_predictions
from ssl_bench.results import ResultsStore, RunRecord
from ssl_bench_plugins.ddm.deconstruct import chain as dc

M = 100
LABELS = torch.arange(M) % 10  # [M] test labels


def _run(store: ResultsStore, tmp_path: Path, rows: list[str], seed: int, wrong: int, *, knn: float = 0.5,
         baseline: float | None = None) -> int:
    """A finished chain run tagged with ``rows`` whose linear probe gets the first ``wrong`` of M test
    images wrong (predictions kept), and, with ``baseline``, its untrained network's run."""
    run_dir = tmp_path / f"{rows[0]}-s{seed}"
    run_dir.mkdir()
    preds = LABELS.clone()
    preds[:wrong] = (preds[:wrong] + 1) % 10
    write_predictions(run_dir, {"weights": run_dir.name}, LABELS, {"linear": {"linear_top1": preds}})
    config = {dc.TAG_KEY: {"rows": rows}, "seed": seed}
    rid = store.add_run(RunRecord(method="ddm", backbone="vit-nano", dataset="digits", seed=seed, run_dir=str(run_dir),
                                  config_json=config))
    proto = {"n_test": M, "features": {"latent_dim": 2}}
    store.finish_run(rid, {"linear": ({"linear_top1": (M - wrong) / M}, proto),
                           "knn": ({"knn_top1": knn}, {"n_test": M, "headline_k": 20})})
    if baseline is not None:
        bid = store.add_run(RunRecord(method="ddm:random-init", backbone="vit-nano", dataset="digits", seed=seed,
                                      config_json=config, is_baseline=True))
        store.finish_run(bid, {"linear": ({"linear_top1": baseline}, {"n_test": M})})
    return rid


STEPS = dc.select_steps(["t2_patch-pca_d32", "t3_r1_patch_pca", "t3_r1b_no_learned_variance", "t3_r2_predict_clean"])


def _store(tmp_path: Path) -> ResultsStore:
    store = ResultsStore(tmp_path / "r.db")
    shared = ["t2_patch-pca_d32", "t3_r1_patch_pca"]  # one resolved config: one run per seed for both rows
    _run(store, tmp_path, shared, 0, 10, knn=0.5, baseline=0.30)
    _run(store, tmp_path, shared, 1, 12, knn=0.6, baseline=0.20)
    _run(store, tmp_path, ["t3_r1b_no_learned_variance"], 0, 2, baseline=0.25)
    _run(store, tmp_path, ["t3_r1b_no_learned_variance"], 1, 3, baseline=0.25)
    _run(store, tmp_path, ["t3_r2_predict_clean"], 0, 3)
    _run(store, tmp_path, ["t3_r2_predict_clean"], 1, 3)
    return store


def test_rows_are_aggregated_over_their_seeds(tmp_path: Path) -> None:
    """t3_r1: linear 0.90 / 0.88 on 100 images -> mean 89.0, sd 1.414; interval = mean -/+ hypot(t
    half-width 12.706 x 0.01414 / sqrt 2 = 0.12706, Wilson 89/100 [0.81369, 0.93746]) = [74.178,
    102.56 -> 100] (scipy.stats.t.ppf(0.975, 1), binomtest(89, 100).proportion_ci(method="wilson"));
    untrained 0.30 / 0.20 -> 25.0, gain (0.60 + 0.68) / 2 = 64.0; k-NN 0.5 / 0.6 -> 55.0 ± 7.071."""
    store = _store(tmp_path)
    df = dc.build_table(STEPS, store, dataset="digits", backbone="vit-nano").set_index(dc.ROW_COL)
    r1 = df.loc["t3_r1_patch_pca"]
    assert r1[dc.N_COL] == 2 and r1[dc.D_COL] == 2
    assert r1[dc.LINEAR_COL] == pytest.approx(89.0)
    assert r1[dc.LINEAR_COL + " sd"] == pytest.approx(1.4142136)
    assert r1[dc.LINEAR_COL + " lo"] == pytest.approx(74.178248, abs=1e-4)
    assert r1[dc.LINEAR_COL + " hi"] == pytest.approx(100.0)
    assert r1[dc.RANDOM_COL] == pytest.approx(25.0)
    assert r1[dc.GAIN_COL] == pytest.approx(64.0)
    assert (r1[dc.KNN_COL], r1[dc.KNN_COL + " sd"]) == (pytest.approx(55.0), pytest.approx(7.0710678))
    assert r1[dc.PAPER_COL] == pytest.approx(65.1)
    assert df.loc["t3_r2_predict_clean", dc.RANDOM_COL] != df.loc["t3_r2_predict_clean", dc.RANDOM_COL]  # no baseline: NaN
    # only the seeds asked for
    one = dc.build_table(STEPS, store, seeds=[1]).set_index(dc.ROW_COL)
    assert (one.loc["t3_r1_patch_pca", dc.LINEAR_COL], one.loc["t3_r1_patch_pca", dc.N_COL]) == (pytest.approx(88.0), 1)


def test_step_column_pairs_known_predictions(tmp_path: Path) -> None:
    """r1b - r1: (98 + 97 - 90 - 88) / 200 = +8.5 points, paired over images and seeds, an interval
    above 0; r2 - r1b: (97 + 97 - 98 - 97) / 200 = -0.5, within noise; r1 shares t2_patch-pca_d32's run."""
    df = dc.build_table(STEPS, _store(tmp_path), dataset="digits", backbone="vit-nano")
    by = df.set_index(dc.ROW_COL)
    assert by.loc["t3_r1_patch_pca", dc.STEP_FROM_COL] == "t2_patch-pca_d32 (same run)"
    assert by.loc["t3_r1b_no_learned_variance", dc.STEP_FROM_COL] == "t3_r1_patch_pca"
    assert by.loc["t3_r1b_no_learned_variance", dc.STEP_COL] == pytest.approx(8.5)
    assert by.loc["t3_r1b_no_learned_variance", dc.STEP_COL + " lo"] > 0
    assert by.loc["t3_r2_predict_clean", dc.STEP_FROM_COL] == "t3_r1b_no_learned_variance"
    assert by.loc["t3_r2_predict_clean", dc.STEP_COL] == pytest.approx(-0.5)
    shown = dc.readable_table(df).set_index(dc.ROW_COL)
    col = f"{dc.STEP_COL} (paired 95% CI)"
    assert shown.loc["t3_r1b_no_learned_variance", col].startswith("+8.5 [+")
    assert shown.loc["t3_r2_predict_clean", col].startswith("within noise (-0.5 [-")
    assert shown.loc["t3_r1_patch_pca", dc.LINEAR_COL] == "89.0 ± 1.4"
    assert shown.loc["t3_r1_patch_pca", f"{dc.LINEAR_COL} 95% CI"] == "[74.2, 100.0]"
    assert shown.loc["t3_r1_patch_pca", dc.GAIN_COL] == "+64.0"
    assert "| t3_r1_patch_pca" in dc.render_table(df, "md")


def test_stale_predictions_are_not_paired(tmp_path: Path) -> None:
    store = _store(tmp_path)
    run_dir = tmp_path / "t3_r2_predict_clean-s1"
    write_predictions(run_dir, {"weights": "other"}, LABELS, {"linear": {"linear_top1": LABELS}})  # a later scoring's file
    by = dc.build_table(STEPS, store).set_index(dc.ROW_COL)
    assert by.loc["t3_r2_predict_clean", dc.STEP_FROM_COL] == "t3_r1b_no_learned_variance (no predictions)"
    assert by.loc["t3_r2_predict_clean", dc.STEP_COL] != by.loc["t3_r2_predict_clean", dc.STEP_COL]  # NaN


def test_validation_scores_are_read_as_val_columns(tmp_path: Path) -> None:
    """A sweep scored on the validation split records val_linear_top1: the table reads those, names
    its columns "val ...", and has no step column (predictions are kept for the test split only)."""
    store = ResultsStore(tmp_path / "r.db")
    for seed, acc in ((0, 0.80), (1, 0.90)):
        rid = store.add_run(RunRecord(method="ddm", dataset="digits", seed=seed, config_json={dc.TAG_KEY: {"rows": ["t3_r6_ldae"]}}))
        store.finish_run(rid, {"linear": ({"val_linear_top1": acc}, {"n_test": 144})})
    df = dc.build_table(dc.select_steps(["t3_r6_ldae"]), store, split="val")
    assert df.loc[0, dc.LINEAR_COL] == pytest.approx(85.0) and df.loc[0, dc.N_COL] == 2
    shown = dc.readable_table(df)
    assert shown.loc[0, f"val {dc.LINEAR_COL}"] == "85.0 ± 7.1"
    assert f"{dc.STEP_COL} (paired 95% CI)" not in shown.columns


def test_chain_figure_is_drawn(tmp_path: Path) -> None:
    df = dc.build_table(STEPS, _store(tmp_path))
    png = dc.plot_table(df, tmp_path / "chain.png", title="test")
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "chain.png").read_bytes() == png
    assert dc.chain_title("digits", "vit-nano", [0, 1, 2]) == (
        "deconstruction chain: digits, vit-nano, seeds 0 1 2 (ours: mean and 95% interval, n = 3 per row) vs the paper")


def test_deconstruct_seeds_trains_each_row_per_seed_and_plots(tmp_path: Path, capsys) -> None:
    """`ssl-bench deconstruct --seeds 0 1` on one tiny row: two trained runs, two untrained baselines,
    a table of n = 2 with mean ± sd, the figure; --table-only rebuilds the same table; --seed with
    --seeds is refused."""
    from ssl_bench.cli import main

    out = tmp_path / "dc"
    common = ["deconstruct", "--rows", "t3_r6_ldae", "--dataset", "digits", "--backbone", "vit-nano", "--out", str(out)]
    tiny = ["--epochs", "1", "--set", "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2",
            "dataset.limit_train=128", "dataset.limit_test=64", "train.batch_size=64", "train.warmup_epochs=0",
            "eval.linear.epochs=2", "eval.linear.warmup_epochs=1", "eval.knn.ks=(10,20)"]
    assert main([*common, *tiny, "--seeds", "0", "1", "--plot", str(tmp_path / "chain.png")]) == 0
    text = capsys.readouterr().out
    table = text[text.index("| row"):text.index("figure:")]
    cells = [c.strip() for c in table.splitlines()[2].split("|")[1:-1]]
    assert cells[0] == "t3_r6_ldae" and cells[3] == "2" and " ± " in cells[4] and cells[5].startswith("[")
    runs = ResultsStore(out / "results.db").runs_frame()
    assert sorted(runs["seed"]) == [0, 0, 1, 1] and int(runs["is_baseline"].astype(bool).sum()) == 2
    assert (tmp_path / "chain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*common, "--table-only"]) == 0
    again = capsys.readouterr().out
    assert again[again.index("| row"):].strip() == table.strip()
    assert main([*common, "--table-only", "--seed", "0", "--seeds", "0", "1"]) == 2
    assert "ssl-bench: error: --seed and --seeds both given" in capsys.readouterr().err
