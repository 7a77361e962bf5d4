"""The l-DAE deconstruction chain (a plugin command of ddm): config inheritance, one change per row,
the generated sweeps, the paper's numbers, and the whole chain end to end at a tiny scale through
`ssl-bench deconstruct`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from mmengine.config import Config

from ssl_bench.data.base import DatasetInfo
from ssl_bench.errors import ConfigError
from ssl_bench.results.store import ResultsStore
from ssl_bench.run import build_method, method_config
from ssl_bench_plugins.ddm.deconstruct import chain as dc

CHAIN = dc.DEFAULT_CHAIN_DIR
TINY_BACKBONE = ["backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2"]
DIGITS = DatasetInfo("digits", 10, 1, 8, (0.3,), (0.3,), default_patch_size=2)
CIFAR = DatasetInfo("cifar10", 10, 3, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), default_patch_size=4)
IMAGENET = DatasetInfo("imagenet", 1000, 3, 256, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), default_patch_size=16)


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in dict(d).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _load(name: str) -> dict[str, Any]:
    if name == dc.ROOT_BASE:  # the root goes on top of the ddm method's own defaults
        from ssl_bench_plugins.ddm.method import DDM

        return _flat(Config.fromfile(str(DDM.default_config)).to_dict())
    return _flat(Config.fromfile(str((CHAIN / name).resolve())).to_dict())


# -- the chain of files ---------------------------------------------------------------------------


@pytest.mark.parametrize("entry", dc.CHAIN_FILES, ids=lambda e: e.name)
def test_each_file_changes_only_its_documented_keys(entry: dc.ConfigFile):
    text = (CHAIN / entry.name).read_text()
    if entry.base == dc.ROOT_BASE:
        assert "_base_" not in text  # the root is applied on top of the ddm defaults by the runner
        child = {**_load(entry.base), **_load(entry.name)}
    else:
        assert f'_base_ = ["./{entry.base}"]' in text  # inherits its parent row, nothing else
        child = _load(entry.name)
    parent = _load(entry.base)
    assert set(child) >= set(parent)
    changed = {k for k in child if k not in parent or child[k] != parent[k]}
    assert changed == set(entry.changes)


def test_chain_files_and_steps_agree():
    files = {f.name for f in dc.CHAIN_FILES}
    assert files == {p.name for p in CHAIN.glob("*.py")}
    used = {s.config for s in dc.STEPS if s.config is not None}
    assert used == files
    names = [s.name for s in dc.STEPS]
    assert len(names) == len(set(names))
    # Table 2 is a generated list: 4 tokenizers x 5 d; Fig. 5: 4 pixel-tokenizer sizes
    assert len([s for s in dc.STEPS if s.group == "table2"]) == 20
    assert len([s for s in dc.STEPS if s.group == "fig5"]) == 4


def test_paper_numbers_follow_the_fig6_trajectory():
    traj = [s.paper_acc for s in dc.STEPS if s.trajectory]
    assert traj == [57.5, 62.5, 58.4, 59.0, 63.4, 64.9, 64.7, 65.1, 62.4, 63.6, 63.6, 63.9, 64.5]
    by_name = {s.name: s for s in dc.STEPS}
    assert by_name["t3_side_single_noise"].paper_acc == 61.5
    assert by_name["f5_pixel_p16"].paper_acc == 23.6
    assert [by_name[f"t2_patch-pca_d{d}"].paper_acc for d in dc.TABLE2_DIMS] == [56.0, 63.4, 65.1, 60.0, 53.9]
    assert [by_name[f"t2_conv-vae_d{d}"].paper_acc for d in dc.TABLE2_DIMS] == [54.5, 63.4, 62.8, 57.0, 48.1]
    not_run = [s for s in dc.STEPS if s.config is None]
    assert [s.name for s in not_run] == ["t1_r2_no_class_cond", "t1_r3_no_perceptual"]
    assert "supervised VGG" in not_run[0].not_run and "GAN" in not_run[1].not_run


def test_select_steps_groups_names_globs():
    assert [s.name for s in dc.select_steps(["table1"])][:2] == ["t1_r1_class_cond", "t1_r2_no_class_cond"]
    assert len(dc.select_steps(["all"])) == len(dc.STEPS) == len(dc.select_steps(None))
    pca = dc.select_steps(["t2_patch-pca_*", "t3_r6_ldae"])
    assert [s.name for s in pca] == [f"t2_patch-pca_d{d}" for d in dc.TABLE2_DIMS] + ["t3_r6_ldae"]
    with pytest.raises(ConfigError, match="matches no row"):
        dc.select_steps(["t9_nothing"])


# -- resolved configs -----------------------------------------------------------------------------


def test_final_row_is_ldae_and_root_is_ddm_plus_its_changes(registry):
    """The chain ends at `ssl-bench run ldae`: every key of the ldae config has the ldae value (but the
    method's name); the only extra keys are the DDM objective's, switched off since Table 3 row 1b."""
    row = _flat(dc.step_config(dc.select_steps(["t3_r6_ldae"])[0], registry, CHAIN).to_dict())
    ldae = _flat(method_config("ldae", registry).to_dict())
    ddm = _flat(method_config("ddm", registry).to_dict())
    assert {k: row[k] for k in ldae if k != "method.name"} == {k: v for k, v in ldae.items() if k != "method.name"}
    assert all(k in ddm and k not in ldae for k in set(row) - set(ldae))
    assert row["method.diffusion.enabled"] is False
    root = dc.step_config(dc.STEPS[0], registry, CHAIN)
    assert root.method.name == "ddm" and root.method.class_cond is True and root.method.tokenizer.name == "conv-vae"


def test_sweeps_give_the_paper_sizes_at_256px_and_collapse_on_small_images(registry):
    def dims(info: DatasetInfo, pattern: str) -> list[tuple[int, int | None]]:
        out = []
        for s in dc.select_steps([pattern]):
            cfg = dc.step_config(s, registry, CHAIN, info=info)
            tok = dc._resolved_tokenizer(cfg, info, registry)
            out.append((tok["latent_dim"], cfg.method.image_size))
        return out

    for tok in dc.TABLE2_TOKENIZERS:
        assert [d for d, _ in dims(IMAGENET, f"t2_{tok}_*")] == list(dc.TABLE2_DIMS)
    assert dims(IMAGENET, "f5_*") == [(768, 256), (192, 128), (48, 64), (12, 32)]
    assert [d for d, _ in dims(CIFAR, "t2_patch-pca_*")] == [2, 2, 2, 4, 8]
    assert dims(DIGITS, "f5_*") == [(4, 8), (1, 4), (1, 4), (1, 4)]


@pytest.mark.parametrize("info", [DIGITS, CIFAR], ids=["digits", "cifar"])
def test_every_row_of_the_full_sweep_builds(registry, info: DatasetInfo):
    """Every realisable row (all 20 Table-2 cells included) resolves and builds its model."""
    keys = set()
    for s in dc.STEPS:
        if s.config is None:
            continue
        cfg = dc.step_config(s, registry, CHAIN, cli={"backbone.name": "vit-nano"}, set_items=TINY_BACKBONE, info=info)
        model = build_method(cfg, registry, info)
        assert model.uses_labels is s.uses_labels
        keys.add(dc.dedupe_key(cfg, info, registry))
    # the paper's own "same run" pairs always coincide, so fewer runs than realisable rows
    assert len(keys) < len([s for s in dc.STEPS if s.config is not None])


# -- end to end -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_whole_chain_end_to_end(tmp_path: Path, capsys):
    from ssl_bench.cli import main

    out = tmp_path / "dc"
    args = [
        "deconstruct", "--rows", "all", "--dataset", "digits", "--backbone", "vit-nano", "--epochs", "1", "--out", str(out),
        "--set", *TINY_BACKBONE, "dataset.limit_train=128", "dataset.limit_test=64", "train.batch_size=64",
        "train.warmup_epochs=0", "eval.linear.epochs=2", "eval.linear.warmup_epochs=1", "eval.knn.ks=(10,20)",
        "method.tokenizer.steps=20", "method.figures=True",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    table = text[text.index("| row"):]
    lines = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert set(lines) == {s.name for s in dc.STEPS}
    for s in dc.STEPS:
        # row | what changed | d | n | linear | its CI | random-init linear | gain | k-NN | its CI | step from | step | paper | notes
        cells = [c.strip() for c in lines[s.name].split("|")[1:-1]]
        assert cells[12] == ("" if s.paper_acc is None else f"{s.paper_acc:.1f}")  # the paper's number
        if s.config is None:
            assert "not run" in cells[13] and cells[4] == "" and cells[3] == "0"
        else:
            assert cells[3] == "1"  # one seed: no sd
            for cell in (cells[4], cells[6], cells[8]):  # ours, the row's own untrained network, k-NN
                assert re.fullmatch(r"\d+\.\d", cell), lines[s.name]
            assert re.fullmatch(r"\[\d+\.\d, \d+\.\d\]", cells[5]) and re.fullmatch(r"[+-]\d+\.\d", cells[7])
    for paper in ("57.5", "62.5", "58.4", "59.0", "63.4", "65.1", "62.4", "63.6", "63.9", "64.5", "61.5", "23.6"):
        assert f" {paper} |" in table

    # the l-DAE row wrote the paper's figures into its run dir
    run = out / "t3_r6_ldae" / "digits" / "vit-nano" / "ddm-s0"
    for fig in ("fig4_pca_bases.png", "fig7_noise_latent_vs_pixel.png", "fig8_denoising.png"):
        assert (run / fig).stat().st_size > 0, fig

    # runs are tagged with their rows; class conditioning is recorded as using labels
    store = ResultsStore(out / "results.db")
    runs = store.runs_frame()
    assert set(runs["status"]) == {"finished"}
    trained = runs[~runs["is_baseline"].astype(bool)]
    tags = {json.loads(c)["deconstruct"]["rows"][0]: bool(u) for c, u in zip(trained["config_json"], trained["uses_labels"])}
    assert tags["t1_r1_class_cond"] is True and tags["t3_r6_ldae"] is False
    assert len(trained) < len([s for s in dc.STEPS if s.config is not None])  # shared runs trained once
    assert set(runs[runs["is_baseline"].astype(bool)]["method"]) == {"random-init:ddm"}  # one per trained run
    assert (runs["is_baseline"].astype(bool)).sum() == len(trained)
    store.close()

    # the table is rebuilt from the store alone
    assert main(["deconstruct", "--table-only", "--dataset", "digits", "--backbone", "vit-nano", "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert again[again.index("| row"):] == table


def test_final_row_trains_exactly_as_ldae(registry):
    """The last row is `ssl-bench run ldae` as a ddm run: same parameters, same loss, same features."""
    import torch

    from ssl_bench.run import load_dataset

    tiny = [*TINY_BACKBONE, "dataset.limit_train=128"]
    row = dc.step_config(dc.select_steps(["t3_r6_ldae"])[0], registry, CHAIN, cli={"backbone.name": "vit-nano"}, set_items=tiny)
    ldae = method_config("ldae", registry, cli={"backbone.name": "vit-nano"}, set_items=tiny)
    data = load_dataset(ldae, registry)
    images, labels = next(iter(data.train.batches(32)))
    out = []
    for cfg in (row, ldae):
        model = build_method(cfg, registry, data.info)
        model.prepare(data.train, torch.Generator().manual_seed(0))
        loss = model(images, labels, torch.Generator().manual_seed(3)).loss
        model.eval()
        out.append((type(model).__name__, loss.item(), model.probe_features(torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)))))
    (cls_row, loss_row, f_row), (cls_ldae, loss_ldae, f_ldae) = out
    assert (cls_row, cls_ldae) == ("DDM", "LDAE")
    assert loss_row == loss_ldae and torch.equal(f_row, f_ldae)


def test_every_table3_row_predicts_the_mean_patch_at_initialisation(registry):
    """Same centring in every row: at initialisation r4 (latent output, decoded by inverse PCA), r5
    (inverse-PCA image) and r6 (original image) all predict the PCA mean patch, so no row starts by
    having to learn a constant the others do not (l-DAE §4.3, Eq. 4 with a centred PCA)."""
    import torch

    from ssl_bench.components.patches import patchify
    from ssl_bench.run import load_dataset

    tiny = [*TINY_BACKBONE, "dataset.limit_train=128"]
    data = None
    for row in ("t3_r4_image_input", "t3_r5_image_output", "t3_r6_ldae"):
        cfg = dc.step_config(dc.select_steps([row])[0], registry, CHAIN, cli={"backbone.name": "vit-nano"}, set_items=tiny)
        data = data or load_dataset(cfg, registry)
        model = build_method(cfg, registry, data.info)
        model.prepare(data.train, torch.Generator().manual_seed(0))
        images, labels = next(iter(data.train.batches(8)))
        x = model.augment(images, torch.Generator().manual_seed(0))
        z0 = model.tokenizer.encode(x)
        noisy = model.corruption(z0, torch.Generator().manual_seed(1))
        pred = model.predict_offset(model.network_input(noisy.z_t), noisy, labels, None)  # [8, 16, P]
        if model.target.output_space == "latent":
            pred = patchify(model.tokenizer.decode(pred), model.patch_size)  # the image the latent stands for
        mean = model.tokenizer.mean.expand_as(pred)
        assert float(mean.abs().max()) > 0.1  # digits' mean patch in [-1, 1] pixels is far from 0
        torch.testing.assert_close(pred, mean, rtol=0, atol=1e-6, msg=f"{row} does not start at the mean patch")


def test_ctrl_c_stops_the_chain_not_just_a_row(registry, monkeypatch, tmp_path):
    """A row stopped by Ctrl-C / SIGTERM (TrainingInterrupted, or a KeyboardInterrupt outside the
    training loop) stops the chain; only a row's own error is reported as a failed row."""
    import ssl_bench.run as run
    from ssl_bench.distributed import DistContext
    from ssl_bench.errors import RunInterrupted, TrainingInterrupted

    steps = dc.select_steps(["t3_r6_ldae", "t3_r5_image_output"])
    ctx = DistContext(0, 1, 0, torch.device("cpu"))
    for stop in (TrainingInterrupted("stopped", "ckpt", 1, 0, 4, "SIGINT"), RunInterrupted("stopped")):
        def stopped(*args, stop=stop, **kwargs):
            raise stop

        monkeypatch.setattr(run, "run_method", stopped)
        with pytest.raises(type(stop)):
            dc.run_chain(steps, registry=registry, chain_dir=dc.chain_dir_or_error(None), store=None, ctx=ctx,
                         out=tmp_path, set_items=["dataset.limit_train=64", "dataset.limit_test=32"])

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in one row")

    monkeypatch.setattr(run, "run_method", broken)
    outcomes = dc.run_chain(steps, registry=registry, chain_dir=dc.chain_dir_or_error(None), store=None, ctx=ctx,
                            out=tmp_path, set_items=["dataset.limit_train=64", "dataset.limit_test=32"])
    assert {o.status for o in outcomes} == {"failed"}
