"""The l-DAE deconstruction chain (Chen, Liu, Xie, He 2024, "Deconstructing Denoising Diffusion Models
for Self-Supervised Learning", §4, Tables 1-3, Fig. 5, Fig. 6).

The paper's argument is a *trajectory*: start from a class-conditional DiT DDM and change one thing
per row until a classical denoising autoencoder (l-DAE) is left, reading the linear-probe accuracy
after every change. This module holds that trajectory as data so that it can be re-run on any
dataset / backbone and compared with the paper row by row:

* ``CHAIN_FILES``: the mmengine config files in ``configs/`` beside this module (shipped as package
  data). Each inherits its parent with ``_base_`` and changes only the keys listed here (the tests
  check that), so the chain of files *is* the paper's chain of rows, one change per row. The root
  file is applied on top of the ``ddm`` method's defaults.
* ``STEPS``: every row of Tables 1-3 and Fig. 5 (name, config file, the paper's accuracy, a note),
  including the rows we cannot realise without a supervised network (``config=None`` and a
  ``not_run`` reason). The Table-2 and Fig.-5 sweeps are generated (``table2_steps``,
  ``fig5_steps``) with their sizes expressed relative to the dataset, because a 768-value 16x16x3
  token only exists on 256 px images.
* ``run_chain`` runs the selected rows (one ``run_method`` each, rows whose resolved configs
  coincide share one run), and for each run the same network untrained (its tokenizer fitted, no
  gradient step) through the same probes: the random-init baseline of *that* network at the probe
  t. Every run is tagged with its row names in the stored config; ``build_table`` rebuilds
  our-vs-paper from the results store alone, so the table survives re-evaluation and can be
  regenerated without re-training.

Every row is a run of the ``ddm`` method (the core ``DenoisingMethod`` plus DiT's DDPM objective
where the config is a DDPM), so the chain depends on no other plugin; the final row resolves to
``ssl-bench run ldae`` and trains identically.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd

from ssl_bench.config import check_keys_exist, config_to_json
from ssl_bench.config_schema import validate_config
from ssl_bench.errors import ConfigError, TrainingInterrupted
from ssl_bench.results.queries import finished_runs, knn_top1_k20, metrics_by_run

log = logging.getLogger("ssl_bench")

#: The chain's config files, shipped inside the plugin (package data): works from a wheel install.
DEFAULT_CHAIN_DIR = Path(__file__).resolve().parent / "configs"
#: Every row is a run of this method; the root file goes on top of its defaults.
CHAIN_METHOD = "ddm"
#: ``ConfigFile.base`` of the root: the method's own default config (not a file of the chain).
ROOT_BASE = "<ddm defaults>"
#: Top-level config key that tags a run with the chain rows it stands for (read back by build_table).
TAG_KEY = "deconstruct"

PAPER_PATCH_DIM = 768  # 16 x 16 x 3: the token dimension D all of the paper's d values refer to
TABLE2_DIMS: tuple[int, ...] = (8, 16, 32, 64, 128)
TABLE2_TOKENIZERS: tuple[str, ...] = ("conv-vae", "patch-vae", "patch-ae", "patch-pca")
#: Table 2 of the paper (arXiv 2401.14404 v1). None = "–" (the VAE / AE rows have four values; the
#: blank is placed at d = 128, an inference from the optimum being "d is 16 or 32" and Fig. 6 quoting
#: 64.9 / 64.7: the column alignment of those two rows is not certain from the text).
PAPER_TABLE2: dict[str, dict[int, float | None]] = {
    "conv-vae": {8: 54.5, 16: 63.4, 32: 62.8, 64: 57.0, 128: 48.1},
    "patch-vae": {8: 58.3, 16: 64.9, 32: 64.8, 64: 56.8, 128: None},
    "patch-ae": {8: 59.9, 16: 64.7, 32: 64.6, 64: 59.9, 128: None},
    "patch-pca": {8: 56.0, 16: 63.4, 32: 65.1, 64: 60.0, 128: 53.9},
}
#: Fig. 5, pixel tokenizer: paper patch size -> (image px, d, accuracy). Only 23.6 % at d = 768 is
#: stated in the text; 58.5 % is presumably the d = 48 optimum; the other labels (53.0, 44.7, 43.7)
#: cannot be assigned to d = 12 / 192 from the text (Fig. 5 and §4.2).
PAPER_FIG5: dict[int, tuple[int, int, float | None]] = {
    16: (256, 768, 23.6),
    8: (128, 192, None),
    4: (64, 48, 58.5),
    2: (32, 12, None),
}

NEEDS_VGG = "needs a supervised VGG (the VQGAN's perceptual loss): not run; we start from the conv VAE"
NEEDS_GAN = "needs a GAN (the VQGAN's adversarial loss): not run; we start from the conv VAE"


# ---------------------------------------------------------------------------------------------
# the chain as data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigFile:
    """One file of ``configs/``: its ``_base_`` (a file of the chain, or the ddm defaults) and the keys it changes (dotted)."""

    name: str
    base: str  # a file name in the chain dir, or ROOT_BASE (relative to the chain dir)
    changes: tuple[str, ...]


CHAIN_FILES: tuple[ConfigFile, ...] = (
    ConfigFile("t1_r1_class_cond.py", ROOT_BASE, (
        "method.tokenizer.name", "method.tokenizer.latent_ratio", "method.class_cond",
        "method.dit.cond_hidden_ratio", "train.warmup_epochs",
    )),
    ConfigFile("t1_r4_conv_vae.py", "t1_r1_class_cond.py", ("method.class_cond",)),
    ConfigFile("t1_r5_gamma2_linear.py", "t1_r4_conv_vae.py", ("method.noise_schedule.name",)),
    ConfigFile("t2_patch_vae.py", "t1_r5_gamma2_linear.py", ("method.tokenizer.name",)),
    ConfigFile("t2_patch_ae.py", "t2_patch_vae.py", ("method.tokenizer.name",)),
    ConfigFile("t2_patch_pca.py", "t2_patch_ae.py", ("method.tokenizer.name", "method.tokenizer.latent_ratio")),
    ConfigFile("t3_r1b_no_learned_variance.py", "t2_patch_pca.py", ("method.diffusion.enabled",)),
    ConfigFile("t3_r2_predict_clean.py", "t3_r1b_no_learned_variance.py", ("method.target.name",)),
    ConfigFile("t3_r3_no_input_scaling.py", "t3_r2_predict_clean.py", ("method.noise_schedule.name",)),
    ConfigFile("t3_r4_image_input.py", "t3_r3_no_input_scaling.py", ("method.input_space",)),
    ConfigFile("t3_r5_image_output.py", "t3_r4_image_input.py", ("method.target.name",)),
    ConfigFile("t3_r6_ldae.py", "t3_r5_image_output.py", ("method.target.name", "method.target.residual_weight")),
    ConfigFile("t3_side_single_noise.py", "t3_r6_ldae.py", ("method.noise_schedule.name", "method.noise_schedule.sigma")),
    ConfigFile("f5_pixel.py", "t2_patch_pca.py", ("method.tokenizer.name",)),
)

#: Table-2 tokenizer -> the chain file that realises its row (d then comes from the sweep).
TABLE2_FILES: dict[str, str] = {
    "conv-vae": "t1_r5_gamma2_linear.py",
    "patch-vae": "t2_patch_vae.py",
    "patch-ae": "t2_patch_ae.py",
    "patch-pca": "t2_patch_pca.py",
}


@dataclass(frozen=True)
class Geometry:
    """Sizes a generated row scales with: the dataset image, the backbone patch and its token grid."""

    image_size: int
    channels: int
    patch: int  # the backbone's pixel patch (16 at 256 px)

    @property
    def grid(self) -> int:
        return self.image_size // self.patch

    @property
    def patch_dim(self) -> int:
        return self.patch * self.patch * self.channels


Overrides = Callable[[Geometry], dict[str, Any]]


@dataclass(frozen=True)
class Step:
    """One row of the paper: what it changes, where its config is, what the paper measured.

    ``config`` None means the row is not realisable here (``not_run`` says why). ``overrides`` are
    config keys set on top of the file (the generated sweeps); a callable gets the dataset
    geometry, for sizes that only exist relative to the image (Fig. 5's image sizes).
    """

    name: str
    group: str  # table1 | table2 | table3 | fig5
    label: str  # the paper's row label
    change: str  # what this row changes, for the printed table
    paper_acc: float | None  # linear-probe top-1 (%) on ImageNet-1k, ViT-1/2L encoder
    config: str | None
    overrides: Mapping[str, Any] | Overrides | None = None
    note: str = ""
    not_run: str = ""
    uses_labels: bool = False
    trajectory: bool = False  # on the Fig. 6 trajectory

    def resolved_overrides(self, geometry: Geometry | None) -> dict[str, Any]:
        if self.overrides is None:
            return {}
        if callable(self.overrides):
            if geometry is None:
                raise ValueError(f"row {self.name} needs the dataset geometry for its overrides")
            return dict(self.overrides(geometry))
        return dict(self.overrides)


def table2_steps(dims: Iterable[int] = TABLE2_DIMS, tokenizers: Iterable[str] = TABLE2_TOKENIZERS) -> list[Step]:
    """Table 2 as a generated sweep: tokenizer x d, d given as a fraction of the token dimension.

    The paper's d counts values per token of D = 768 (a 16x16x3 patch; for the conv VAE 4 x latent
    channels, 2x2 latent patches). ``latent_ratio = d / 768`` lets the method resolve
    ``d = clamp(round(D * d / 768), min_latent_dim, D - 1)`` for the dataset's own D, exactly the
    paper's d at 256 px with 16 px patches (README.md lists what it gives on small images).
    """
    steps = []
    for tok in tokenizers:
        for d in dims:
            acc = PAPER_TABLE2.get(tok, {}).get(d)
            notes = []
            if tok == "conv-vae" and d == 16:
                notes.append("same run as t1_r5 (stated in the paper)")
            if tok == "patch-pca" and d == 32:
                notes.append("Table 3's first row")
            if tok in ("patch-vae", "patch-ae"):
                notes.append("– in the paper" if acc is None else "column alignment inferred")
            steps.append(Step(
                name=f"t2_{tok}_d{d}", group="table2", label=f"{tok}, d = {d}",
                change=f"tokenizer {tok}, d = {d}/{PAPER_PATCH_DIM} of D", paper_acc=acc,
                config=TABLE2_FILES[tok], overrides={"method.tokenizer.latent_ratio": d / PAPER_PATCH_DIM},
                note="; ".join(notes), trajectory=(tok in ("patch-vae", "patch-ae") and d == 16),
            ))
    return steps


def _pixel_image_size(paper_patch: int) -> Overrides:
    """Fig. 5 keeps the token grid and shrinks the image with the patch: ours = grid x (p / k)."""
    shrink = 16 // paper_patch

    def fn(g: Geometry) -> dict[str, Any]:
        return {"method.image_size": g.grid * max(1, g.patch // shrink)}

    return fn


def fig5_steps() -> list[Step]:
    """Fig. 5: pixel tokenizer at patch 16/8/4/2 of 256 px, i.e. the backbone patch / 1, 2, 4, 8."""
    steps = []
    for p, (px, d, acc) in PAPER_FIG5.items():
        note = "" if p == 16 else ("presumably the d = 48 optimum (inferred)" if p == 4 else "paper value not assignable from the text")
        steps.append(Step(
            name=f"f5_pixel_p{p}", group="fig5", label=f"pixel tokenizer, {px} px / patch {p} (d = {d})",
            change=f"pixel tokenizer, image and patch / {16 // p}", paper_acc=acc, config="f5_pixel.py",
            overrides=_pixel_image_size(p), note=note,
        ))
    return steps


def build_steps(dims: Iterable[int] = TABLE2_DIMS) -> list[Step]:
    """Every row in the paper's order: Table 1, Table 2 (sweep), Table 3 (+ side study), Fig. 5."""
    t1 = [
        Step("t1_r1_class_cond", "table1", "DiT baseline (class-conditional, VQGAN tokenizer)",
             "root: DiT DDM, class-conditional; conv VAE d = 16 for the VQGAN", 57.5, "t1_r1_class_cond.py",
             note="conv VAE substitutes the VQGAN; uses labels (not SSL)", uses_labels=True, trajectory=True),
        Step("t1_r2_no_class_cond", "table1", "+ remove class-conditioning", "- class conditioning", 62.5, None,
             note="prose says 62.1 (typo)", not_run=NEEDS_VGG, trajectory=True),
        Step("t1_r3_no_perceptual", "table1", "+ remove VQGAN perceptual loss", "- perceptual loss", 58.4, None,
             not_run=NEEDS_GAN, trajectory=True),
        Step("t1_r4_conv_vae", "table1", "+ remove VQGAN adversarial loss (conv VAE)",
             "- class conditioning (our r1 already uses the conv VAE)", 59.0, "t1_r4_conv_vae.py", trajectory=True),
        Step("t1_r5_gamma2_linear", "table1", "+ replace noise schedule", "schedule: linear betas -> gamma^2 linear",
             63.4, "t1_r5_gamma2_linear.py", trajectory=True),
    ]
    t3 = [
        Step("t3_r1_patch_pca", "table3", "patch-wise PCA baseline", "tokenizer patch PCA, d = 32 (= Table 2)",
             65.1, "t2_patch_pca.py", note="same as t2_patch-pca_d32", trajectory=True),
        Step("t3_r1b_no_learned_variance", "table3", "(ours) - learned variance and VLB",
             "DDPM objective off: plain L_simple, eps-prediction", None, "t3_r1b_no_learned_variance.py",
             note="not a paper row: separates the objective change from 'predict clean data'"),
        Step("t3_r2_predict_clean", "table3", "+ predict clean data", "target z0 (x0-prediction), lambda = gamma^2", 62.4,
             "t3_r2_predict_clean.py", note="footnote 4: drop not seen when undone at the end", trajectory=True),
        Step("t3_r3_no_input_scaling", "table3", "+ remove input scaling", "gamma = 1, sigma 0 -> sqrt 2, lambda = 1/(1+sigma^2)",
             63.6, "t3_r3_no_input_scaling.py", trajectory=True),
        Step("t3_r4_image_input", "table3", "+ operate on image input with inv. PCA", "input: noisy image via inverse PCA",
             63.6, "t3_r4_image_input.py", trajectory=True),
        Step("t3_r5_image_output", "table3", "+ operate on image output with inv. PCA", "output: pixels, target V^T V x0",
             63.9, "t3_r5_image_output.py", trajectory=True),
        Step("t3_r6_ldae", "table3", "+ predict original image (l-DAE)", "target: original image, weights 1 / 0.1",
             64.5, "t3_r6_ldae.py", note="= ssl-bench run ldae", trajectory=True),
        Step("t3_side_single_noise", "table3", "(side study) single noise level", "sigma = sqrt(1/3) for all samples",
             61.5, "t3_side_single_noise.py"),
    ]
    return t1 + table2_steps(dims) + t3 + fig5_steps()


STEPS: tuple[Step, ...] = tuple(build_steps())
GROUPS: dict[str, Callable[[Step], bool]] = {
    "all": lambda s: True,
    "table1": lambda s: s.group == "table1",
    "table2": lambda s: s.group == "table2",
    "table3": lambda s: s.group == "table3",
    "fig5": lambda s: s.group == "fig5",
    "trajectory": lambda s: s.trajectory,
}


def select_steps(rows: Sequence[str] | None, steps: Sequence[Step] = STEPS) -> list[Step]:
    """Rows by group (all, table1, table2, table3, fig5, trajectory), name or glob, in chain order."""
    wanted: set[str] = set()
    for token in rows or ["all"]:
        if token in GROUPS:
            wanted |= {s.name for s in steps if GROUPS[token](s)}
            continue
        hits = {s.name for s in steps if fnmatch.fnmatchcase(s.name, token)}
        if not hits:
            raise ConfigError(
                f"--rows: '{token}' matches no row of the chain; groups are {', '.join(GROUPS)}; "
                f"rows are {', '.join(s.name for s in steps)}"
            )
        wanted |= hits
    return [s for s in steps if s.name in wanted]


def chain_dir_or_error(chain_dir: str | Path | None) -> Path:
    path = Path(chain_dir) if chain_dir else DEFAULT_CHAIN_DIR
    if not (path / CHAIN_FILES[0].name).is_file():
        raise ConfigError(
            f"deconstruction configs not found in {path} (expected {CHAIN_FILES[0].name} ...); "
            "pass --chain-dir pointing at a folder with the chain's config files, or reinstall ssl-bench"
        )
    return path


# ---------------------------------------------------------------------------------------------
# resolving and running
# ---------------------------------------------------------------------------------------------


def geometry_of(cfg: Any, info: Any) -> Geometry:
    """The backbone geometry the runner will build for this config on this dataset."""
    patch = int(cfg.backbone.get("patch_size") or info.default_patch_size)
    return Geometry(int(info.image_size), int(info.channels), patch)


def base_config(
    step: Step, registry: Any, chain_dir: Path, cli: Mapping[str, Any] | None = None, set_items: Sequence[str] = (),
    default: Mapping[str, Any] | None = None,
) -> Any:
    """A row's config without its sweep keys: what every row shares (dataset, backbone, device).
    Its part specs are as the layers gave them (``step_config`` resolves them once the row's own
    keys are in). ``default``: the ddm method's default config, already read."""
    from ssl_bench.run.assemble import method_config

    if step.config is None:
        raise ConfigError(f"row {step.name} is not realisable here: {step.not_run}")
    return method_config(
        CHAIN_METHOD, registry, default=default, resolve=False,
        user_config=chain_dir / step.config, cli=dict(cli or {}), set_items=set_items,
    )


def step_config(
    step: Step, registry: Any, chain_dir: Path, cli: Mapping[str, Any] | None = None,
    set_items: Sequence[str] = (), info: Any = None,
) -> Any:
    """Resolved config of a row: method defaults < row file < flags < --set < the row's sweep keys.

    The sweep keys come last because they are the row's identity (a global ``--set`` of
    ``method.tokenizer.latent_ratio`` would otherwise turn the d sweep into five copies of one run).
    ``info`` (the dataset's DatasetInfo) is needed by rows whose sweep scales with the image (Fig. 5).
    """
    from ssl_bench.run.assemble import method_default, resolve_part_specs

    default = method_default(CHAIN_METHOD, registry)
    cfg = base_config(step, registry, chain_dir, cli, set_items, default=default)
    extra = step.resolved_overrides(None if info is None else geometry_of(cfg, info))
    if extra:
        check_keys_exist(cfg, extra, f"row {step.name}")
        cfg.merge_from_dict(extra)
    _drop_options_the_row_does_not_take(cfg, registry, set_items, step)
    resolve_part_specs(cfg, registry, default)  # as `ssl-bench run ddm` resolves its config
    validate_config(cfg)
    return cfg


def _drop_options_the_row_does_not_take(cfg: Any, registry: Any, set_items: Sequence[str], step: Step) -> None:
    """A chain-wide ``--set method.tokenizer.steps=20`` is meant for the rows whose tokenizer has
    that option (the patch AE / VAE / conv VAE); the other rows drop it (logged) instead of failing."""
    from ssl_bench.config import parse_set_items
    from ssl_bench.hookspecs import PART_KINDS
    from ssl_bench.methods.parts import keyword_options, part_spec

    for key in parse_set_items(set_items):
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "method" or parts[1] not in PART_KINDS or parts[2] == "name":
            continue
        spec = part_spec(cfg.method.get(parts[1]), parts[1])
        if spec is None:
            continue
        names, takes_any = keyword_options(registry.get(PART_KINDS[parts[1]], spec["name"]))
        if not takes_any and parts[2] not in names:
            del cfg.method[parts[1]][parts[2]]
            log.info("row %s: %s does not apply to %s '%s'; dropped for this row", step.name, key, parts[1], spec["name"])


def _resolved_tokenizer(cfg: Any, info: Any, registry: Any) -> dict[str, Any] | None:
    """Tokenizer sizes as the method will resolve them (d from latent_ratio, conv-VAE channels).

    Builds only the tokenizer (the run's builder, ``build_tokenizer``), not the DiT: cheap even for
    ViT-L rows. None when that is not possible.
    """
    from ssl_bench.run.assemble import build_tokenizer

    try:
        tok = build_tokenizer(cfg, registry, info)
    except Exception:  # a config the run itself will reject with a clear error
        return None
    return {"latent_dim": int(tok.latent_dim), "latent_channels": getattr(tok, "latent_channels", None), "patch": getattr(tok, "patch_size", None)}


def dedupe_key(cfg: Any, info: Any, registry: Any) -> str:
    """Identity of a run: the resolved config with d-related knobs replaced by the resolved sizes.

    On small images several paper d values resolve to the same d (and Fig. 5's image sizes to the
    same size); those rows, and the paper's own "same run" rows (Table 1 r5 = conv VAE d16, Table 3
    r1 = patch PCA d32), are trained once and share the result.
    """
    data = json.loads(config_to_json(cfg))
    data.pop("out", None)
    data.pop(TAG_KEY, None)
    tok = _resolved_tokenizer(cfg, info, registry)
    if tok is not None:
        for k in ("latent_dim", "latent_ratio", "min_latent_dim", "latent_channels"):
            data["method"]["tokenizer"].pop(k, None)
        data["method"]["tokenizer"]["resolved"] = tok
        data["method"]["image_size"] = int(cfg.method.get("image_size") or info.image_size)
    return json.dumps(data, sort_keys=True)


@dataclass
class StepRun:
    """What happened to one row in this invocation."""

    step: Step
    status: str  # finished | failed | not run | shared
    error: str = ""


def run_chain(
    steps: Sequence[Step], *, registry: Any, chain_dir: Path, store: Any, ctx: Any,
    cli: Mapping[str, Any] | None = None, set_items: Sequence[str] = (), out: str | Path = "runs/deconstruct",
    dataset: Any = None, random_init: bool = True,
) -> list[StepRun]:
    """Train and evaluate every realisable row (one ``run_method`` per distinct resolved config), and
    with ``random_init`` the same network untrained, probed the same way.

    Each run's config gets ``deconstruct = dict(rows=[...])`` so that ``build_table`` finds it in the
    store later; its run dir is ``OUT/<first row>/...``. A failing row is reported and the chain goes
    on: one broken tokenizer should not cost the other rows of a multi-hour run.
    """
    from ssl_bench.run import load_dataset, run_baseline, run_method

    runnable = [s for s in steps if s.config is not None]
    results: dict[str, StepRun] = {s.name: StepRun(s, "not run", error=s.not_run) for s in steps if s.config is None}
    if not runnable:
        return [results[s.name] for s in steps]
    if dataset is None:  # the rows share the dataset keys: any row's config loads it
        dataset = load_dataset(base_config(runnable[0], registry, chain_dir, cli, set_items), registry)
    info = dataset.info

    groups: dict[str, list[tuple[Step, Any]]] = {}
    for s in runnable:
        cfg = step_config(s, registry, chain_dir, cli, set_items, info=info)
        groups.setdefault(dedupe_key(cfg, info, registry), []).append((s, cfg))

    for members in groups.values():
        first, cfg = members[0]
        names = [s.name for s, _ in members]
        cfg[TAG_KEY] = dict(rows=names)
        cfg.out = str(Path(out) / first.name)
        if getattr(ctx, "is_main", True):
            extra = f" (also {', '.join(names[1:])})" if len(names) > 1 else ""
            log.info("== deconstruct %s%s: %s, %s ==", first.name, extra, first.config, first.change)
        try:
            trained = run_method(CHAIN_METHOD, cfg, store, ctx, dataset=dataset, registry=registry)
            if random_init:  # every rank: each extracts its shard of the untrained network's features
                run_baseline("random-init", cfg, store, dataset, ctx.device, registry=registry, method=CHAIN_METHOD, ctx=ctx,
                             tokenizer_from=trained.run_dir)  # the run's fitted tokenizer, not fitted again
        except (KeyboardInterrupt, SystemExit, TrainingInterrupted):  # the user stops the chain, not a row
            raise
        except Exception as exc:
            msg = f"{type(exc).__name__}: {exc}"
            log.error("row %s failed: %s\n%s", first.name, msg, traceback.format_exc())
            for s, _ in members:
                results[s.name] = StepRun(s, "failed", error=msg)
            continue
        for s, _ in members:
            results[s.name] = StepRun(s, "finished" if s is first else "shared")
    return [results[s.name] for s in steps]


# ---------------------------------------------------------------------------------------------
# the table, from the results store
# ---------------------------------------------------------------------------------------------

ROW_COL, CHANGE_COL, D_COL, N_COL = "row", "what changed", "d", "n"
LINEAR_COL, RANDOM_COL, GAIN_COL, KNN_COL, PAPER_COL, NOTES_COL = (
    "linear top-1", "random-init linear", "gain over random-init", "k-NN top-1", "paper linear", "notes",
)
STEP_FROM_COL, STEP_COL = "step from", "step linear"
#: Per accuracy column C: C (mean, %), f"{C} sd", f"{C} lo", f"{C} hi" (95% interval, %).
SPREAD = (" sd", " lo", " hi")
TABLE_COLUMNS = (
    ROW_COL, CHANGE_COL, D_COL, N_COL,
    LINEAR_COL, *(LINEAR_COL + x for x in SPREAD), RANDOM_COL, GAIN_COL,
    KNN_COL, *(KNN_COL + x for x in SPREAD),
    STEP_FROM_COL, STEP_COL, STEP_COL + " lo", STEP_COL + " hi", PAPER_COL, NOTES_COL,
)
#: The metric the step column pairs (the paper's metric; predictions are kept for the test split only).
STEP_METRIC = "linear_top1"


@dataclass
class RowRuns:
    """The runs behind one chain row: seed -> trained run record, seed -> its untrained baseline."""

    trained: dict[int, dict[str, Any]]
    baseline: dict[int, dict[str, Any]]

    def run_ids(self) -> dict[int, int]:
        return {s: int(r["id"]) for s, r in self.trained.items()}


def _tagged_runs(store: Any, dataset: str | None, backbone: str | None, seeds: Sequence[int] | None = None) -> dict[str, RowRuns]:
    """row -> its runs per seed (the latest finished trained run and random-init baseline of each
    seed), as runs-frame records, for dataset / backbone; only ``seeds`` when given."""
    runs = finished_runs(store, dataset, backbone)
    out: dict[str, RowRuns] = {}
    for rec in ([] if runs.empty else runs.sort_values("id").to_dict("records")):
        tag = (json.loads(rec["config_json"] or "{}") or {}).get(TAG_KEY) or {}
        seed = int(rec["seed"]) if pd.notna(rec.get("seed")) else 0
        if seeds is not None and seed not in seeds:
            continue
        for name in tag.get("rows") or []:
            row = out.setdefault(name, RowRuns({}, {}))
            target = row.baseline if bool(rec.get("is_baseline")) else row.trained
            target[seed] = {**rec, "rows": list(tag["rows"])}  # ordered by id: the latest wins
    return out


def _latent_dim(protocols: Mapping[str, Mapping[str, Any]]) -> int | None:
    """The resolved d recorded in the probe protocol (the same for every metric of a run)."""
    for protocol in protocols.values():
        features = protocol.get("features")
        if isinstance(features, dict) and features.get("latent_dim") is not None:
            return int(features["latent_dim"])
    return None


def _knn(values: Mapping[str, Any], protocols: Mapping[str, Mapping[str, Any]], prefix: str) -> float | None:
    """k-NN top-1 at k = 20 of the scored split (``prefix`` "" for test, "val_" for validation)."""
    if not prefix:
        return knn_top1_k20(dict(values), dict(protocols))
    return knn_top1_k20({k[len(prefix):]: v for k, v in values.items() if k.startswith(prefix)},
                        {k[len(prefix):]: v for k, v in protocols.items() if k.startswith(prefix)})


def _n_test(protocols: Mapping[str, Mapping[str, Any]], metric: str) -> int | None:
    n = (protocols.get(metric) or {}).get("n_test")
    return int(n) if n is not None else None


def summarise_seeds(values: Sequence[float], n_test: int | None) -> dict[str, float | None]:
    """mean, sd and the 95% interval (``ssl_bench.results.stats.interval``: seed spread and test-set
    sampling) of per-seed accuracies (fractions), in percent; all None without values."""
    from ssl_bench.results.stats import summarise

    got = summarise(values, n_test, accuracy=True, scale=100.0)
    return {"": got["mean"], " sd": got["sd"], " lo": got["lo"], " hi": got["hi"]}


# -- the step column: each row against the row it changes, image by image --------------------


def _file_ancestors() -> dict[str, tuple[str, ...]]:
    """config file -> itself and every file it inherits from (``_base_``), nearest first."""
    base = {f.name: f.base for f in CHAIN_FILES}
    out = {}
    for name in base:
        chain, cur = [], name
        while cur in base:
            chain.append(cur)
            cur = base[cur]
        out[name] = tuple(chain)
    return out


def step_reference(steps: Sequence[Step], i: int, runs: Mapping[str, RowRuns]) -> Step | None:
    """The row that row ``i`` changes one thing of: the nearest earlier row with runs whose config
    file is this row's file or one it inherits from (so Fig. 5 is read against Table 2's patch PCA,
    not against the Table-3 row printed above it). None for the chain's root or a row without runs."""
    s = steps[i]
    if s.config is None or not (runs.get(s.name) and runs[s.name].trained):
        return None
    ancestors = _file_ancestors().get(s.config, (s.config,))
    for prev in reversed(steps[:i]):
        if prev.config in ancestors and runs.get(prev.name) and runs[prev.name].trained:
            return prev
    return None


def _predictions(row: RowRuns, metric: str) -> dict[int, tuple[Any, Any]] | None:
    """seed -> (predictions [M], test labels [M]) of the row's trained runs; None when a run has none
    or its file does not reproduce the stored accuracy (never pair stale predictions)."""
    from ssl_bench.eval.predictions import scored_predictions

    out = {}
    for seed, rec in row.trained.items():
        got = scored_predictions(rec.get("run_dir"), metric, rec.get("_value"))
        if got is None:
            return None
        out[seed] = got
    return out


def step_difference(row: RowRuns, ref: RowRuns, metric: str = STEP_METRIC) -> tuple[float, float, float] | str:
    """(row - ref, lo, hi) in points: the paired bootstrap 95% interval over test images pooled over
    the shared seeds (``ssl_bench.results.paired.compare_predictions``); or why there is none."""
    from ssl_bench.results.paired import PairingError, compare_predictions

    if row.run_ids() == ref.run_ids():
        return "same run"
    a, b = _predictions(row, metric), _predictions(ref, metric)
    if a is None or b is None:
        return "no predictions"
    try:
        c = compare_predictions(a, b, metric)
    except PairingError as exc:
        log.warning("step %s: %s", metric, exc)
        return "not paired"
    return 100.0 * c.diff, 100.0 * c.lo, 100.0 * c.hi


def build_table(
    steps: Sequence[Step], store: Any, dataset: str | None = None, backbone: str | None = None,
    outcomes: Sequence[StepRun] = (), split: str = "test", seeds: Sequence[int] | None = None,
) -> pd.DataFrame:
    """One line per row, aggregated over its seeds: our linear probe (the paper's metric) and k-NN
    top-1 as mean, sd and 95% interval (percent), the row's own untrained network (mean over the
    same seeds) and the gain over it, the step from the row it changes (paired over test images and
    seeds: ``step linear`` with ``lo`` / ``hi``, or in ``step from`` why not), and the paper's
    linear probe.

    ``split`` "val" reads the validation scores (``val_linear_top1``...; no step column, predictions
    are kept for the test split only). ``outcomes`` only adds this invocation's failures to the
    notes; every number comes from the store (rows tagged in their run config), so the same table is
    rebuilt by ``--table-only``.
    """
    prefix = "" if split == "test" else f"{split}_"
    runs = _tagged_runs(store, dataset, backbone, seeds)
    ids = {int(r["id"]) for rr in runs.values() for r in (*rr.trained.values(), *rr.baseline.values())}
    metrics = metrics_by_run(store, ids)
    for rr in runs.values():  # the stored value each predictions file must reproduce
        for rec in rr.trained.values():
            rec["_value"] = metrics[int(rec["id"])][0].get(STEP_METRIC)
    failed: dict[str, str] = {}
    for o in outcomes:
        if o.status == "failed":
            failed.setdefault(o.step.name, o.error)
    rows = []
    for i, s in enumerate(steps):
        notes = [s.note] if s.note else []
        rr = runs.get(s.name) or RowRuns({}, {})
        linear, knn, random, gains, n_test = [], [], [], [], {}
        d = None
        for seed in sorted(rr.trained):
            values, protocols = metrics[int(rr.trained[seed]["id"])]
            d = d if d is not None else _latent_dim(protocols)
            lin = values.get(f"{prefix}linear_top1")
            if lin is not None:
                linear.append(lin)
                n_test.setdefault("linear", _n_test(protocols, f"{prefix}linear_top1"))
            k = _knn(values, protocols, prefix)
            if k is not None:
                knn.append(k)
                n_test.setdefault("knn", _n_test(protocols, f"{prefix}knn_top1"))
            base = rr.baseline.get(seed)
            rand = metrics[int(base["id"])][0].get(f"{prefix}linear_top1") if base else None
            if rand is not None:
                random.append(rand)
                if lin is not None:
                    gains.append(lin - rand)
        if s.config is None:
            notes.insert(0, s.not_run)
        elif s.name in failed:
            notes.insert(0, f"failed: {failed[s.name]}")
        elif not rr.trained:
            notes.insert(0, "no run in the store")
        if rr.trained:
            rec = rr.trained[min(rr.trained)]
            owner, n_rows = rec["rows"][0], len(rec["rows"])
            if owner != s.name:
                notes.append(f"run of {owner} (same resolved config)")
            elif n_rows > 1:
                notes.append(f"one run for {n_rows} rows (same resolved config)")
            if bool(rec.get("uses_labels")) and not s.uses_labels:
                notes.append("uses labels")
        step_from, step = "", None
        ref = step_reference(steps, i, runs) if split == "test" else None
        if ref is not None:
            got = step_difference(rr, runs[ref.name])
            step_from = ref.name if not isinstance(got, str) else f"{ref.name} ({got})"
            step = None if isinstance(got, str) else got
        row = {ROW_COL: s.name, CHANGE_COL: s.change, D_COL: d, N_COL: len(rr.trained)}
        row.update({LINEAR_COL + k: v for k, v in summarise_seeds(linear, n_test.get("linear")).items()})
        row[RANDOM_COL] = 100.0 * sum(random) / len(random) if random else None
        row[GAIN_COL] = 100.0 * sum(gains) / len(gains) if gains else None
        row.update({KNN_COL + k: v for k, v in summarise_seeds(knn, n_test.get("knn")).items()})
        row.update({STEP_FROM_COL: step_from, STEP_COL: step[0] if step else None,
                     STEP_COL + " lo": step[1] if step else None, STEP_COL + " hi": step[2] if step else None})
        row.update({PAPER_COL: s.paper_acc, NOTES_COL: "; ".join(n for n in notes if n)})
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    df[D_COL] = df[D_COL].astype("Int64")
    for col in TABLE_COLUMNS:
        if col not in (ROW_COL, CHANGE_COL, D_COL, N_COL, STEP_FROM_COL, NOTES_COL):
            df[col] = df[col].astype("float64")
    df.attrs["split"] = split
    return df


def _num(v: Any) -> float | None:
    return None if v is None or pd.isna(v) else float(v)


def readable_table(df: pd.DataFrame) -> pd.DataFrame:
    """``build_table``'s frame for reading (md / html): each accuracy as ``mean ± sd`` with its 95%
    interval ``[lo, hi]`` beside it, the gain and the step signed, a step whose paired interval
    holds 0 written "within noise (...)". On the validation split the accuracy columns are named
    ``val ...``."""
    out = pd.DataFrame({ROW_COL: df[ROW_COL], CHANGE_COL: df[CHANGE_COL],
                        D_COL: ["" if pd.isna(v) else str(int(v)) for v in df[D_COL]], N_COL: df[N_COL].astype(str)})
    for col in (LINEAR_COL, KNN_COL):
        cells, cis = [], []
        for mean, sd, lo, hi in zip(*(df[col + x].tolist() for x in ("", *SPREAD))):
            mean, sd, lo, hi = map(_num, (mean, sd, lo, hi))
            cells.append("" if mean is None else f"{mean:.1f}" + ("" if sd is None else f" ± {sd:.1f}"))
            cis.append("" if lo is None or hi is None else f"[{lo:.1f}, {hi:.1f}]")
        out[col], out[f"{col} 95% CI"] = cells, cis
        if col == LINEAR_COL:
            out[RANDOM_COL] = ["" if _num(v) is None else f"{v:.1f}" for v in df[RANDOM_COL]]
            out[GAIN_COL] = ["" if _num(v) is None else f"{v:+.1f}" for v in df[GAIN_COL]]
    steps = []
    for diff, lo, hi in zip(df[STEP_COL], df[STEP_COL + " lo"], df[STEP_COL + " hi"]):
        diff, lo, hi = map(_num, (diff, lo, hi))
        if diff is None:
            steps.append("")
            continue
        text = f"{diff:+.1f} [{lo:+.1f}, {hi:+.1f}]"
        steps.append(text if lo > 0 or hi < 0 else f"within noise ({text})")
    out[STEP_FROM_COL] = df[STEP_FROM_COL].tolist()
    out[f"{STEP_COL} (paired 95% CI)"] = steps
    out[PAPER_COL] = ["" if _num(v) is None else f"{v:.1f}" for v in df[PAPER_COL]]
    out[NOTES_COL] = df[NOTES_COL].tolist()
    if df.attrs.get("split", "test") != "test":
        split = df.attrs["split"]
        out = out.rename(columns={c: f"{split} {c}" for c in out.columns if c.startswith((LINEAR_COL, KNN_COL, RANDOM_COL, GAIN_COL))})
        out = out.drop(columns=[STEP_FROM_COL, f"{STEP_COL} (paired 95% CI)"])
    return out


def render_table(df: pd.DataFrame, fmt: str) -> str:
    """md / html: :func:`readable_table`; csv: the numeric frame as it is (for loading back)."""
    if fmt == "csv":
        return df.to_csv(index=False)
    shown = readable_table(df)
    if fmt == "html":
        return shown.to_html(index=False, na_rep="")
    text_cols = (ROW_COL, CHANGE_COL, STEP_FROM_COL, NOTES_COL)
    colalign = ["left" if c in text_cols else "right" for c in shown.columns]
    return shown.to_markdown(index=False, disable_numparse=True, colalign=colalign)


def chain_title(dataset: str, backbone: str, seeds: list[int | None]) -> str:
    """The figure's title: what ran and over which seeds, so a picture of means says it is one."""
    named = " ".join("0" if s is None else str(s) for s in seeds)
    return (f"deconstruction chain: {dataset}, {backbone}, seed{'s' if len(seeds) > 1 else ''} {named} "
            f"(ours: mean and 95% interval, n = {len(seeds)} per row) vs the paper")


def plot_table(df: pd.DataFrame, path: str | Path, title: str = "") -> bytes:
    """Ours (linear top-1, mean and 95% interval) beside the paper's linear probe, row by row
    (``ssl_bench.results.plot.plot_chain``); rows with neither a value nor a paper number are left out."""
    from ssl_bench.results.plot import plot_chain

    shown = df[df[LINEAR_COL].notna() | df[PAPER_COL].notna()]
    return plot_chain(shown, shown[[ROW_COL, PAPER_COL]], path, row_col=ROW_COL, metric=LINEAR_COL,
                      paper_col=PAPER_COL, title=title)


__all__ = [
    "CHAIN_FILES", "DEFAULT_CHAIN_DIR", "GROUPS", "PAPER_FIG5", "PAPER_TABLE2", "STEPS", "TABLE2_DIMS",
    "ConfigFile", "Geometry", "RowRuns", "Step", "StepRun", "build_steps", "build_table", "chain_dir_or_error", "chain_title",
    "dedupe_key", "fig5_steps", "geometry_of", "plot_table", "readable_table", "render_table", "run_chain",
    "select_steps", "step_config", "step_difference", "step_reference", "summarise_seeds", "table2_steps",
]
