"""The one run path (``ssl_bench.run``): a stopped run is never scored as finished, a resume is the
uninterrupted run byte for byte, what an evaluator returns is checked before anything is written,
concurrent runs share their baselines, and a bad results store is refused before anything is made.

Most cases go through the real command line in a subprocess (signals need one), with a 32-wide,
2-deep ViT on a digits subset.
"""

from __future__ import annotations

import json
import math
import shlex
import signal
import sqlite3
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch

TINY = [
    "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "dataset.limit_train=256", "dataset.limit_test=128",
    "train.batch_size=64", "train.warmup_epochs=1", "eval.linear.epochs=3", "eval.linear.warmup_epochs=1",
]
CPU = torch.device("cpu")

from tests.conftest import BIN, cli, one_line_error, start_cli, wait_for  # noqa: E402
from tests.conftest import cli_env as _env  # noqa: E402


def runs_table(db: Path) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    rows = [dict(r) for r in con.execute("SELECT id, method, run_dir, status, is_baseline FROM runs ORDER BY id")]
    con.close()
    return rows


def interrupt_after(proc: subprocess.Popen, log: Path, line: str) -> str:
    """SIGINT ``proc`` once ``log`` shows ``line``; its stderr (it must exit 130)."""
    wait_for(lambda: log.is_file() and line in log.read_text(), what=line)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    return err


# ------------------------------------------------------------------------------ a stopped run


@pytest.mark.slow
def test_eval_refuses_a_run_stopped_before_its_last_epoch(tmp_path):
    """Wrong result 1 of the issue: `eval` on a run killed after epoch 2 of 4 exited 0 and recorded
    it as a finished 4-epoch run with epoch-2 scores."""
    run_dir = tmp_path / "runs" / "digits" / "vit-nano" / "mae-s0"
    proc = start_cli(["run", "mae", "--backbone", "vit-nano", "--epochs", "4", "--no-baselines", "--set", *TINY,
                      "dataset.limit_train=1024"], tmp_path)
    interrupt_after(proc, run_dir / "train.log", "epoch 2/4")
    line = one_line_error(cli("eval", str(run_dir), "--out", "runs", cwd=tmp_path))
    assert "stopped at" in line and "of 4" in line and "ssl-bench run mae --resume" in line and "nothing was recorded" in line
    assert [r["status"] for r in runs_table(tmp_path / "runs" / "results.db")] == ["interrupted"]
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "features.pt").exists()
    board = cli("leaderboard", "--out", "runs", cwd=tmp_path)
    assert board.returncode == 0 and "| mae " not in board.stdout


@pytest.mark.slow
def test_a_resume_writes_the_uninterrupted_runs_metrics_json_byte_for_byte(tmp_path):
    """Interrupted mid-epoch, continued with the printed command from another directory: the same
    metrics.json bytes (key order included) as an uninterrupted run. The printed command is
    shell-quoted (the --out name holds `;` and a space) and names the results file."""
    settings = ["--backbone", "vit-nano", "--epochs", "3", "--no-baselines", "--set", *TINY, "dataset.limit_train=1024"]
    whole = cli("run", "ldae", "--out", "whole", *settings, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    out = "x ;touch PWNED"
    run_dir = tmp_path / out / "digits" / "vit-nano" / "ldae-s0"
    proc = start_cli(["run", "ldae", "--out", out, *settings], tmp_path)
    wait_for(lambda: (run_dir / "train.log").is_file() and "epoch 1/3" in (run_dir / "train.log").read_text(), what="epoch 1")
    proc.send_signal(signal.SIGINT)  # in epoch 2: a mid-epoch checkpoint
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert err.count("Resume with:") == 1, err  # printed once
    command = shlex.split(err.split("Resume with:", 1)[1].strip().splitlines()[0])
    assert command == ["ssl-bench", "run", "ldae", "--resume", str(run_dir.resolve()),
                       "--results", str((tmp_path / out / "results.db").resolve())]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = subprocess.run([str(BIN / command[0]), *command[1:], "--no-baselines"], cwd=elsewhere, capture_output=True,
                             text=True, env=_env(), timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert not (tmp_path / "PWNED").exists() and not list(elsewhere.iterdir())  # nothing made where it was pasted
    a = (tmp_path / "whole" / "digits" / "vit-nano" / "ldae-s0" / "metrics.json").read_bytes()
    assert (run_dir / "metrics.json").read_bytes() == a
    assert [r["status"] for r in runs_table(tmp_path / out / "results.db")] == ["finished"]


@pytest.mark.slow
def test_a_resume_never_scores_the_features_of_an_earlier_checkpoint(tmp_path):
    """Wrong result 2 of the issue: features cached from the weights of epoch 1 (as a scoring of the
    stopped run left them) were scored again after the resume trained on. The cache is keyed by
    the weights, so the resumed run scores what an uninterrupted run scores."""
    from ssl_bench.registry import get_registry
    from ssl_bench.run import load_trained_method
    from ssl_bench.run.runs import features_key
    from ssl_bench.eval.features import cached_features

    settings = ["--backbone", "vit-nano", "--epochs", "3", "--no-baselines", "--set", *TINY, "dataset.limit_train=1024"]
    whole = cli("run", "mae", "--out", "whole", *settings, cwd=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    run_dir = tmp_path / "runs" / "digits" / "vit-nano" / "mae-s0"
    proc = start_cli(["run", "mae", "--out", "runs", *settings], tmp_path)
    interrupt_after(proc, run_dir / "train.log", "epoch 1/3")
    _, dataset, model, state = load_trained_method(run_dir, get_registry())
    assert state["epoch"] < 3  # stopped before the end (at or after epoch 1)
    model.eval()
    key = features_key("mae", model, state["epoch"], state["step"], True)
    stale = cached_features(run_dir, model.probe_features, dataset, 256, CPU, key)  # what a scoring at epoch 1 caches
    resumed = cli("run", "mae", "--out", "runs", "--resume", str(run_dir), "--no-baselines", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = torch.load(run_dir / "features.pt", weights_only=True)
    assert not torch.equal(final["test"], stale["test"])  # recomputed from the final weights
    expected = json.loads((tmp_path / "whole" / "digits" / "vit-nano" / "mae-s0" / "metrics.json").read_text())
    got = json.loads((run_dir / "metrics.json").read_text())
    assert got["knn"]["metrics"] == expected["knn"]["metrics"] and got["linear"]["metrics"] == expected["linear"]["metrics"]


def test_the_features_cache_is_keyed_by_the_weights(tmp_path):
    from ssl_bench.data import load_dataset as load
    from ssl_bench.eval.features import cached_features
    from ssl_bench.run.build import weights_fingerprint

    dataset = load("digits", limit_train=64, limit_test=32)
    net = torch.nn.Linear(64, 4)
    key = lambda: {"features": "linear", "weights": weights_fingerprint(net)}  # noqa: E731
    fn = lambda x: net(x.flatten(1))  # noqa: E731
    first = cached_features(tmp_path, fn, dataset, 32, CPU, key())
    assert torch.equal(cached_features(tmp_path, lambda x: torch.zeros(len(x), 4), dataset, 32, CPU, key())["test"], first["test"])  # a hit
    with torch.no_grad():
        net.weight.add_(1.0)  # other weights: a miss, recomputed
    assert torch.equal(cached_features(tmp_path, fn, dataset, 32, CPU, key())["test"], fn(_eval(dataset)))


def _eval(dataset: Any) -> torch.Tensor:
    from ssl_bench.data.augment import eval_transform

    images = torch.cat([x for x, _ in dataset.test.batches(32, shuffle=False, generator=None, drop_last=False)])
    return eval_transform(images, dataset.info.mean, dataset.info.std)


# ------------------------------------------------------------------------------ evaluators are checked


class _Bad:
    """A plugin evaluator that returns ``what``."""

    name = "bad"
    what: Any = None

    def __call__(self, train: Any, train_y: Any, test: Any, test_y: Any, num_classes: int) -> Any:
        from ssl_bench.eval.base import EvalResult

        if self.what == "raise":
            raise ValueError("boom")
        if self.what == "text":
            return "97.5%"
        if self.what == "float predictions":
            return EvalResult(metrics={"bad_top1": 0.5}, predictions={"bad_top1": torch.zeros(len(test_y))})
        if self.what == "predictions of no metric":
            return EvalResult(metrics={"bad_top1": 0.5}, predictions={"other": torch.zeros(len(test_y), dtype=torch.long)})
        if self.what == "short predictions":
            return EvalResult(metrics={"bad_top1": 0.5}, predictions={"bad_top1": torch.zeros(3, dtype=torch.long)})
        return EvalResult(metrics={"bad_top1": self.what}, protocol={"evaluator": "bad"})


@pytest.mark.parametrize("what,says", [
    (math.nan, "returned metric 'bad_top1' = nan: nan is not a finite number"),
    (97.5, "returned metric 'bad_top1' = 97.5: 97.5 is outside [0, 1]"),
    ("text", "returned str '97.5%', not an EvalResult"),
    ("raise", "raised ValueError: boom"),
    ("float predictions", "returned predictions 'bad_top1' as torch.float32 of shape (128,), not one integer class per test image (128)"),
    ("short predictions", "returned predictions 'bad_top1' as torch.int64 of shape (3,), not one integer class per test image (128)"),
    ("predictions of no metric", "returned predictions for 'other', which is not one of its metrics"),
])
def test_a_misbehaving_evaluator_is_one_line_naming_it_and_nothing_is_recorded(tmp_path, tiny_cfg, what, says):
    from ssl_bench.errors import SSLBenchError
    from ssl_bench.hookspecs import hookimpl
    from ssl_bench.registry import build_registry
    from ssl_bench.results import ResultsStore
    from ssl_bench.run import run_method
    from ssl_bench.distributed import DistContext

    bad = type("Bad", (_Bad,), {"what": what})
    plugin = types.ModuleType("bad_plugin")
    plugin.ssl_bench_evaluators = hookimpl(lambda: {"bad": bad})
    registry = build_registry(extra_modules=[("bad-pkg", plugin)])
    cfg = tiny_cfg("mae", "train.epochs=1", "train.warmup_epochs=0", "eval.evaluators=['knn', 'bad']")
    store = ResultsStore(tmp_path / "results.db")
    with pytest.raises(SSLBenchError) as info:
        run_method("mae", cfg, store, DistContext(0, 1, 0, CPU), registry=registry)
    message = str(info.value)
    assert "evaluator 'bad' from package 'bad-pkg'" in message and says in message and "\n" not in message
    run = store.get_run(store.runs_frame()["id"].iloc[0])
    assert run.status == "failed" and store.metrics_frame().empty
    assert not (Path(run.run_dir) / "metrics.json").exists() and not (Path(run.run_dir) / "predictions.pt").exists()


def test_a_plugin_evaluator_without_predictions_is_scored_and_the_builtin_predictions_are_kept(tmp_path, tiny_cfg):
    from ssl_bench.distributed import DistContext
    from ssl_bench.eval.predictions import read_predictions
    from ssl_bench.hookspecs import hookimpl
    from ssl_bench.registry import build_registry
    from ssl_bench.results import ResultsStore
    from ssl_bench.run import run_method

    plain = type("Plain", (_Bad,), {"what": 0.25})  # a valid result without predictions
    plugin = types.ModuleType("plain_plugin")
    plugin.ssl_bench_evaluators = hookimpl(lambda: {"bad": plain})
    registry = build_registry(extra_modules=[("plain-pkg", plugin)])
    cfg = tiny_cfg("mae", "train.epochs=1", "train.warmup_epochs=0", "eval.evaluators=['knn', 'bad']")
    out = run_method("mae", cfg, ResultsStore(tmp_path / "results.db"), DistContext(0, 1, 0, CPU), registry=registry)
    assert out.metrics["bad_top1"] == 0.25
    preds = read_predictions(out.run_dir)
    assert preds is not None and set(preds.evaluator_of.values()) == {"knn"} and "bad_top1" not in preds.preds
    assert preds.accuracy("knn_top1") == out.metrics["knn_top1"] and preds.labels.shape == (128,)


# ------------------------------------------------------------------------------ concurrency and the store


@pytest.mark.slow
def test_simultaneous_runs_of_one_seed_each_succeed_and_share_each_baseline(tmp_path):
    """Four `ssl-bench run` of one method and seed started together: each gets its own run
    directory, and each baseline is scored once and reused by the others."""
    args = ["run", "mae", "--backbone", "vit-nano", "--epochs", "1", "--set", *TINY, "train.warmup_epochs=0"]
    procs = [start_cli([*args], tmp_path) for _ in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=900)
        assert p.returncode == 0, err[-3000:]
    rows = runs_table(tmp_path / "runs" / "results.db")
    assert sorted(r["method"] for r in rows if not r["is_baseline"]) == ["mae"] * 4
    assert sorted(r["method"] for r in rows if r["is_baseline"]) == ["pixels", "random-init"]
    assert all(r["status"] == "finished" for r in rows)
    assert len({r["run_dir"] for r in rows}) == len(rows)


def _truncated_store(path: Path) -> None:
    from ssl_bench.results import ResultsStore, RunRecord

    with ResultsStore(path) as store:
        for i in range(200):
            store.add_run(RunRecord(method=f"m{i}", config_json={"pad": "x" * 500}))
    data = path.read_bytes()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.write_bytes(data[: len(data) // 3])


def _foreign_store(path: Path) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE songs (title TEXT)")
    con.commit()
    con.close()


@pytest.mark.parametrize("make", [
    lambda p: p.write_bytes(b""),
    lambda p: p.write_bytes(b"not a database at all" * 100),
    _foreign_store,
    _truncated_store,
], ids=["zero-byte", "garbage", "foreign", "truncated"])
def test_a_bad_store_is_refused_before_a_run_directory_is_made(tmp_path, make):
    (tmp_path / "runs").mkdir()
    db = tmp_path / "runs" / "results.db"
    make(db)
    before = db.read_bytes()
    one_line_error(cli("run", "mae", "--backbone", "vit-nano", "--epochs", "1", "--set", *TINY, cwd=tmp_path))
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["results.db"]  # no run directory
    assert db.read_bytes() == before


# ------------------------------------------------------------------------------ commands that refuse leave nothing


def test_eval_of_a_folder_that_is_no_run_makes_no_store(tmp_path):
    (tmp_path / "notarun").mkdir()
    line = one_line_error(cli("eval", "notarun", "--out", "runs", cwd=tmp_path))
    assert "not an ssl-bench run directory" in line
    assert not (tmp_path / "runs").exists()


def test_a_refused_deconstruct_makes_no_store(tmp_path):
    line = one_line_error(cli("deconstruct", "--rows", "table3", "--backbone", "vit-nano", "--dataset", "imagefolder",
                              "--data-root", "nowhere", cwd=tmp_path))
    assert "nowhere" in line
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------------------ a full disk


def _tmpfs_works(probe: Path) -> bool:
    """Whether ``unshare -rm`` may mount a small tmpfs here (user + mount namespaces): a real full disk."""
    import shutil

    if shutil.which("unshare") is None:
        return False
    probe.mkdir()
    try:
        proc = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {probe} && "
                               f"! dd if=/dev/zero of={probe}/x bs=1k count=32 2>/dev/null"], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


_ON_A_SMALL_DISK = """
import json, subprocess, sys
bin_, size_kb, tiny = sys.argv[1], sys.argv[2], sys.argv[3:]
run = [bin_, "run", "mae", "--backbone", "vit-nano", "--out", "runs", "--epochs", "1", "--set", *tiny]
out = {}
p = subprocess.run(run, capture_output=True, text=True)
out["run"] = [p.returncode, p.stderr]
if p.returncode == 0:  # then fill the disk and try every writer again
    subprocess.run(["dd", "if=/dev/zero", "of=filler", "bs=4k"], capture_output=True)
    for name, args in {"resume": ["run", "mae", "--backbone", "vit-nano", "--out", "runs", "--resume"],
                       "eval": ["eval", "runs/digits/vit-nano/mae-s0", "--recompute", "--out", "runs"],
                       "new run": run[1:]}.items():
        p = subprocess.run([bin_, *args], capture_output=True, text=True)
        out[name] = [p.returncode, p.stderr]
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("size_kb", [16, 64, 600, 1700, 1800, 2000, 2400, 6000])
def test_a_full_disk_is_one_line_on_every_path(tmp_path, size_kb):
    """The out folder on a real, small file system (a tmpfs in a private namespace), of sizes that
    run out at different writes (the store, the config, a checkpoint, the features, metrics.json, a
    baseline); at the largest the run fits and the disk is then filled before a resume, an eval and
    a new run. Every command either succeeds or says in one line that the disk is full."""
    if not _tmpfs_works(tmp_path / "probe"):
        pytest.skip("no unprivileged tmpfs mount here (unshare -rm)")
    disk = tmp_path / "disk"
    disk.mkdir()
    driver = tmp_path / "driver.py"
    driver.write_text(_ON_A_SMALL_DISK)
    argv = " ".join(shlex.quote(a) for a in [sys.executable, str(driver), str(BIN / "ssl-bench"), str(size_kb), *TINY, "train.warmup_epochs=0"])
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size_kb}k tmpfs {shlex.quote(str(disk))} && "
                           f"cd {shlex.quote(str(disk))} && {argv}"], capture_output=True, text=True, env=_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (code, err) in results.items():
        assert "Traceback" not in err and "Logging error" not in err, (name, err[-3000:])
        if code != 0:
            errors = [line for line in err.splitlines() if line.startswith("ssl-bench: error:")]
            assert code == 2 and len(errors) == 1, (name, code, err[-3000:])
            assert any(w in errors[0].lower() for w in ("no space left on device", "disk is full")), (name, errors[0])
    if size_kb == 6000:
        assert results["run"][0] == 0 and set(results) == {"run", "resume", "eval", "new run"}


def test_a_run_that_cannot_be_recorded_leaves_no_directory(tmp_path):
    """The results file cannot be created (its folder is a file): one line, and the run directory
    claimed a moment before is gone again."""
    (tmp_path / "afile").write_text("")
    line = one_line_error(cli("run", "mae", "--backbone", "vit-nano", "--epochs", "1", "--no-baselines",
                              "--results", "afile/results.db", "--set", *TINY, cwd=tmp_path))
    assert "afile" in line
    assert not list((tmp_path / "runs").rglob("mae-s0*"))


@pytest.mark.parametrize("method", ["mae", "ldae", "ddm", "mocov3"])
def test_a_built_method_deep_copies(tiny_cfg, method):
    """A model holds what it computes with, not the registry or a factory over it: it deep-copies
    (a DDP replica, an EMA copy) and the copy computes the same."""
    import copy

    from ssl_bench.data import load_dataset as load
    from ssl_bench.registry import get_registry
    from ssl_bench.run import build_method

    cfg = tiny_cfg(method, "method.input_space='latent'") if method == "mae" else tiny_cfg(method)
    dataset = load("digits", limit_train=64, limit_test=32)
    model = build_method(cfg, get_registry(), dataset.info)
    model.prepare(dataset.train, torch.Generator().manual_seed(0))  # e.g. fit the PCA tokenizer
    model.eval()
    twin = copy.deepcopy(model)
    x = torch.randn(4, 1, 8, 8)
    assert torch.equal(model.probe_features(x), twin.probe_features(x))
