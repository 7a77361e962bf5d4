"""Fault injection: no wrong result is ever stored, no good result is ever lost, every bad input is
one clear line. Each case checks the exit code, the one-line message and that the store and the run
directories hold exactly what they held before (nothing lost, nothing half-written) — or, where the
fault happens mid-run, exactly what the fault should leave.

Most cases go through the real command line in a subprocess (signals and kill -9 need one); the
tiny settings train a 32-wide, 2-deep ViT on a 256-image digits subset in seconds.
"""

from __future__ import annotations

import errno
import hashlib
import json
import signal
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.conftest import BIN, cli, make_imagefolder, one_line_error, wait_for as _wait_for
from tests.conftest import cli_env as _env
from tests.conftest import start_cli as _start

TINY = [
    "backbone.embed_dim=32", "backbone.depth=2", "backbone.num_heads=2", "dataset.limit_train=256", "dataset.limit_test=128",
    "train.batch_size=64", "eval.linear.epochs=3", "eval.linear.warmup_epochs=1",
]
RUN = ["run", "mae", "--backbone", "vit-nano", "--out", "runs", "--no-baselines"]


def snapshot(root: Path) -> dict:
    """Every file's hash under ``root`` (the store as its rows, since SQLite may rewrite its pages)."""
    files = {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and "results.db" not in p.name
    }
    db = root / "runs" / "results.db"
    rows = {}
    if db.is_file():
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        for table in ("runs", "metrics"):
            rows[table] = con.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
        con.close()
    return {"files": files, "db": rows}


def runs_table(root: Path) -> list[dict]:
    con = sqlite3.connect(root / "runs" / "results.db")
    con.row_factory = sqlite3.Row
    out = [dict(r) for r in con.execute("SELECT id, method, run_dir, status, is_baseline FROM runs ORDER BY id")]
    con.close()
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-epoch mae run (non-default --epochs) and its baselines, to be attacked."""
    root = tmp_path_factory.mktemp("finished")
    proc = cli("run", "mae", "--backbone", "vit-nano", "--out", "runs", "--epochs", "2", "--set", *TINY, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


# ------------------------------------------------------------------------------ bad input, nothing written


@pytest.mark.parametrize("flags,expected", [
    (["--epochs", "0"], "train.epochs=0 is invalid: expected an integer >= 1"),
    (["--epochs", "-1"], "train.epochs=-1 is invalid: expected an integer >= 1"),
    (["--set", "train.epochs=abc"], "train.epochs='abc' is invalid: expected an integer >= 1"),
    (["--set", "train.batch_size=0"], "train.batch_size=0 is invalid: expected an integer >= 1"),
    (["--set", "train.blr=-1e-3"], "train.blr=-0.001 is invalid: expected a number > 0"),
    (["--set", "method.corruption.mask_ratio=1.0"], "method.corruption.mask_ratio=1.0 is invalid: expected a number in (0, 1)"),
    (["--set", "train.optimizer=adam"], "train.optimizer='adam' is invalid: expected one of adamw, sgd, lars"),
    (["--set", "eval.linear.warmup_epochs=5", "eval.linear.epochs=3"], "eval.linear.warmup_epochs=5 must be below eval.linear.epochs=3"),
    # a build that fails (parts that cannot work together) leaves no half-made run directory either
    (["--set", "method.target.name=noise"], "target 'noise' needs the corruption to record noise, but corruption 'random-masking'"),
    (["--set", "method.corruption.mask_ratoi=0.5"], "corruption 'random-masking' takes no option mask_ratoi"),
])
def test_invalid_settings_are_one_line_and_write_nothing(tmp_path, flags, expected):
    if flags[0] == "--set":  # after the tiny settings, so the bad value is the one that counts
        proc = cli(*RUN, "--set", *TINY, *flags[1:], cwd=tmp_path)
    else:
        proc = cli(*RUN, *flags, "--set", *TINY, cwd=tmp_path)
    assert expected in one_line_error(proc)
    assert not (tmp_path / "runs").exists()  # no run dir, no store


@pytest.mark.slow
def test_config_file_syntax_error_is_file_and_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("train = dict(epochs=3,\nmethod = dict()\n")
    line = one_line_error(cli(*RUN, "--config", str(bad), cwd=tmp_path))
    assert f"{bad}:" in line and "syntax error" in line
    typo = tmp_path / "typo.py"
    typo.write_text("train = dict(epoch=3)\n")
    assert "unknown config key 'train.epoch'" in one_line_error(cli(*RUN, "--config", str(typo), cwd=tmp_path))
    assert not (tmp_path / "runs").exists()




@pytest.mark.parametrize("case,flags,expected", [
    ("one class", "imagefolder", "1 class(es) in its training split"),
    ("class missing from train", ["dataset.limit_train=5"], "never occur in the training split"),
    ("fewer images than k", ["dataset.limit_train=60"], "k-NN with k up to 200 needs at least 200 training images"),
])
def test_datasets_that_cannot_give_a_meaningful_number_are_refused(tmp_path, case, flags, expected):
    if flags == "imagefolder":
        data = make_imagefolder(tmp_path / "one", classes=1)
        proc = cli(*RUN, "--dataset", "imagefolder", "--data-root", str(data), "--set", *TINY, "dataset.image_size=16",
                   "dataset.num_workers=0", "dataset.limit_train=None", "dataset.limit_test=None", cwd=tmp_path)
    else:
        proc = cli(*RUN, "--set", *TINY, *flags, cwd=tmp_path)
    assert expected in one_line_error(proc)
    assert not (tmp_path / "runs").exists()


def test_set_dataset_image_size_works(tmp_path):
    data = make_imagefolder(tmp_path / "two", classes=2, per_class=12)
    proc = cli(*RUN, "--dataset", "imagefolder", "--data-root", str(data), "--epochs", "1", "--set", *TINY,
               "dataset.image_size=32", "dataset.num_workers=0", "dataset.limit_train=None", "dataset.limit_test=None",
               "eval.knn.ks=(10,20)", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads(next((tmp_path / "runs").rglob("config.json")).read_text())
    assert cfg["dataset"]["image_size"] == 32


# ------------------------------------------------------------------------------ resume: exact or refused


def test_resume_with_changed_training_flags_is_refused_and_changes_nothing(finished, tmp_path):
    root = _copy(finished, tmp_path / "w")
    before = snapshot(root)
    line = one_line_error(cli(*RUN, "--resume", "--epochs", "2", "--set", *TINY, "train.blr=1e-2", cwd=root))
    assert "changes 1 setting(s)" in line and "train.blr" in line and "Nothing was changed" in line
    assert snapshot(root) == before


def test_resume_that_fills_a_part_the_run_left_empty_is_refused_in_one_line(finished, tmp_path):
    """MAE's run stores method.noise_schedule=None; giving that part an option on resume must merge
    as on a new run (and then be refused as a change), not end in mmengine's TypeError traceback."""
    root = _copy(finished, tmp_path / "w")
    before = snapshot(root)
    line = one_line_error(cli(*RUN, "--resume", "--set", "method.noise_schedule.name=sigma-linear", cwd=root))
    assert "method.noise_schedule" in line and "Nothing was changed" in line
    assert snapshot(root) == before


@pytest.mark.slow
def test_rejected_resume_of_a_finished_run_keeps_it(finished, tmp_path):
    """A checkpoint that does not match (here: the checkpoint of another configuration copied over
    the finished run's) is refused; the finished run stays finished, on the leaderboard, config intact."""
    root = _copy(finished, tmp_path / "w")
    other = cli("run", "mae", "--backbone", "vit-nano", "--out", "other", "--epochs", "1", "--no-baselines",
                "--set", *[t for t in TINY if not t.startswith("backbone.embed_dim")], "backbone.embed_dim=64", cwd=root)
    assert other.returncode == 0, other.stderr[-2000:]
    run_dir = root / "runs" / "digits" / "vit-nano" / "mae-s0"
    (run_dir / "checkpoint.pt").write_bytes(next((root / "other").rglob("checkpoint.pt")).read_bytes())
    before = snapshot(root)
    line = one_line_error(cli(*RUN, "--resume", str(run_dir), cwd=root))
    assert "--resume" in line and "backbone.embed_dim" in line
    assert snapshot(root) == before
    assert [r["status"] for r in runs_table(root) if r["method"] == "mae"] == ["finished"]
    board = cli("leaderboard", "--out", "runs", cwd=root)
    assert board.returncode == 0 and "| mae" in board.stdout


def test_resume_without_flags_reuses_the_runs_config_and_its_baselines(finished, tmp_path):
    """README's `ssl-bench run mae --resume` on a run trained with --epochs 2: continues with its own
    config (not the default 10 epochs), re-scores the finished run in place, reuses the baselines."""
    root = _copy(finished, tmp_path / "w")
    before = runs_table(root)
    proc = cli("run", "mae", "--backbone", "vit-nano", "--out", "runs", "--resume", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing to train" in proc.stdout
    assert runs_table(root) == before  # same rows: the run re-scored in place, baselines reused
    cfg = json.loads((root / "runs" / "digits" / "vit-nano" / "mae-s0" / "config.json").read_text())
    assert cfg["train"]["epochs"] == 2


# ------------------------------------------------------------------------------ faults mid-run


@pytest.mark.slow
def test_ctrl_c_checkpoints_marks_interrupted_and_resumes(tmp_path):
    args = [*RUN, "--epochs", "40", "--set", *TINY]
    proc = _start(args, tmp_path)
    log = tmp_path / "runs" / "digits" / "vit-nano" / "mae-s0" / "train.log"
    _wait_for(lambda: log.is_file() and "epoch 2/40" in log.read_text(), what="epoch 2")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "ssl-bench run mae --resume" in err and "Traceback" not in err
    assert [r["status"] for r in runs_table(tmp_path)] == ["interrupted"]
    ckpt = log.parent / "checkpoint.pt"
    import torch

    assert torch.load(ckpt, weights_only=True)["step"] >= 8  # at a step boundary after epoch 2
    resumed = cli(*RUN, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [r["status"] for r in runs_table(tmp_path)] == ["finished"]


@pytest.mark.slow
def test_killed_run_shows_as_interrupted_once_a_later_command_sees_it_gone(tmp_path):
    proc = _start([*RUN, "--epochs", "40", "--set", *TINY], tmp_path)
    log = tmp_path / "runs" / "digits" / "vit-nano" / "mae-s0" / "train.log"
    _wait_for(lambda: log.is_file() and "epoch 1/40" in log.read_text(), what="epoch 1")
    proc.kill()
    proc.communicate()
    assert [r["status"] for r in runs_table(tmp_path)] == ["running"]
    later = cli(*RUN, "--epochs", "1", "--set", *TINY, cwd=tmp_path)
    assert later.returncode == 0, later.stderr[-2000:]
    assert [r["status"] for r in runs_table(tmp_path)] == ["interrupted", "finished"]


_SLOW_CHECKPOINT = textwrap.dedent("""
    import os, sys, time
    import ssl_bench.files as ck  # where the checkpoint's atomic write renames its temp file
    real = os.replace
    def slow_replace(src, dst):
        if str(dst).endswith("checkpoint.pt") and os.path.exists(dst):  # the second checkpoint onwards
            open(os.path.join(os.path.dirname(dst), "WRITING"), "w").close()
            time.sleep(600)
        return real(src, dst)
    ck.os.replace = slow_replace
    from ssl_bench.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_kill_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    import torch

    proc = _start([*RUN, "--epochs", "5", "--set", *TINY], tmp_path, driver=_SLOW_CHECKPOINT)
    run_dir = tmp_path / "runs" / "digits" / "vit-nano" / "mae-s0"
    _wait_for(lambda: (run_dir / "WRITING").is_file(), what="the second checkpoint write")
    proc.kill()
    proc.communicate()
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)  # still a whole, loadable checkpoint
    assert state["epoch"] == 1
    assert (run_dir / "checkpoint.pt.tmp").is_file()  # the killed write's leftover
    (run_dir / "WRITING").unlink()
    later = cli("run", "mae", "--backbone", "vit-nano", "--out", "runs", "--no-baselines", "--epochs", "1", "--set", *TINY, cwd=tmp_path)
    assert later.returncode == 0, later.stderr[-2000:]
    assert not (run_dir / "checkpoint.pt.tmp").exists()  # the command that found the run dead cleared it
    assert [r["status"] for r in runs_table(tmp_path)] == ["interrupted", "finished"]
    resumed = cli(*RUN, "--resume", str(run_dir), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["epoch"] == 5
    assert [r["status"] for r in runs_table(tmp_path)] == ["finished", "finished"]


_SLOW_EVALUATION = textwrap.dedent("""
    import os, sys, time
    import ssl_bench.run.runs as runs
    real = runs.score
    def slow(subject, dataset, run_dir, evaluators, cfg, ctx):
        open(os.path.join(cfg.out, "EVALUATING"), "w").close()
        time.sleep(600)
        return real(subject, dataset, run_dir, evaluators, cfg, ctx)
    runs.score = slow
    from ssl_bench.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_kill_during_evaluation_leaves_no_half_result(tmp_path):
    proc = _start([*RUN, "--epochs", "1", "--set", *TINY], tmp_path, driver=_SLOW_EVALUATION)
    _wait_for(lambda: (tmp_path / "runs" / "EVALUATING").is_file(), what="evaluation")
    proc.kill()
    proc.communicate()
    con = sqlite3.connect(tmp_path / "runs" / "results.db")
    assert con.execute("SELECT COUNT(*) FROM metrics").fetchone()[0] == 0  # nothing half-recorded
    con.close()
    board = cli("leaderboard", "--out", "runs", cwd=tmp_path)
    assert board.returncode == 0 and "| mae" not in board.stdout  # an unfinished run is not a result
    run_dir = tmp_path / "runs" / "digits" / "vit-nano" / "mae-s0"
    again = cli("eval", str(run_dir), "--out", "runs", cwd=tmp_path)  # marks it interrupted, then finishes it
    assert again.returncode == 0, again.stderr[-2000:]
    assert [r["status"] for r in runs_table(tmp_path)] == ["finished"]


def test_disk_full_is_one_line_and_the_run_is_marked_failed(tmp_path, monkeypatch, capsys):
    import torch

    from ssl_bench.cli import main

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch, "save", full)
    assert main([*RUN, "--epochs", "1", "--set", *TINY]) == 2
    err = capsys.readouterr().err
    assert err.count("ssl-bench: error:") == 1 and "no space left on device" in err.lower() and "Traceback" not in err
    assert [r["status"] for r in runs_table(tmp_path)] == ["failed"]


def test_unwritable_out_dir_is_one_line(tmp_path):
    target = Path("/sys/ssl-bench-runs")  # a kernel filesystem: not even root can create a folder there
    try:
        target.mkdir()
    except OSError:
        pass
    else:
        target.rmdir()
        pytest.skip("/sys accepts new folders here")
    proc = cli(*RUN, "--epochs", "1", "--out", str(target), "--results", str(tmp_path / "results.db"), "--set", *TINY, cwd=tmp_path)
    line = one_line_error(proc)
    assert "cannot write /sys/ssl-bench-runs" in line and "Fix:" in line
    assert not (tmp_path / "results.db").exists()  # refused before anything was recorded


# ------------------------------------------------------------------------------ the store and the run dir as data


def test_leaderboard_refuses_a_zero_byte_or_foreign_store_and_leaves_it(tmp_path):
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    assert "is empty" in one_line_error(cli("leaderboard", "--results", str(empty), cwd=tmp_path))
    assert empty.read_bytes() == b""
    foreign = tmp_path / "foreign.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE TABLE songs (title TEXT)")
    con.commit()
    con.close()
    data = foreign.read_bytes()
    one_line_error(cli("leaderboard", "--results", str(foreign), cwd=tmp_path))
    assert foreign.read_bytes() == data


def _read_only_mount_works(probe: Path) -> bool:
    """Whether ``unshare -rm`` may bind-mount a folder read-only here (user + mount namespaces).

    A real read-only file system, unlike chmod, also binds root (CI runs as root)."""
    import shutil

    if shutil.which("unshare") is None:
        return False
    probe.mkdir()
    try:
        proc = subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount --bind -o ro {probe} {probe} && ! touch {probe}/x 2>/dev/null"],
            capture_output=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and not (probe / "x").exists()


@pytest.mark.slow
def test_read_only_media_leaderboard_reads_and_every_writer_is_one_line(finished, tmp_path):
    """The out folder on a read-only file system (a bind mount in a private namespace): the
    leaderboard works; run, resume and eval each refuse in one line; nothing changes."""
    if not _read_only_mount_works(tmp_path / "probe"):
        pytest.skip("no unprivileged read-only bind mount here (unshare -rm)")
    root = _copy(finished, tmp_path / "w")
    before = snapshot(root)
    run_dir = "runs/digits/vit-nano/mae-s0"
    commands = {
        "leaderboard": ["leaderboard", "--out", "runs"],
        "run": [*RUN, "--epochs", "1", "--set", *TINY],
        "resume": ["run", "mae", "--backbone", "vit-nano", "--out", "runs", "--resume"],
        "eval": ["eval", run_dir, "--out", "runs"],
    }
    results = {}
    for name, args in commands.items():
        argv = " ".join(f"'{a}'" for a in [str(BIN / "ssl-bench"), *args])
        results[name] = subprocess.run(
            ["unshare", "-rm", "sh", "-c", f"mount --bind -o ro '{root}' '{root}' && cd '{root}' && exec {argv}"],
            capture_output=True, text=True, env=_env(), timeout=600,
        )
    lb = results.pop("leaderboard")
    assert lb.returncode == 0, lb.stderr[-2000:]
    assert "| mae " in lb.stdout and "| pixels " in lb.stdout
    for name, proc in results.items():
        line = one_line_error(proc)
        assert "read-only" in line.lower() and "Fix:" in line, (name, line)
    assert snapshot(root) == before


def test_a_damaged_row_is_one_warning_line_naming_the_run(finished, tmp_path):
    """A damaged metric record costs that value (shown as damaged), not the whole table."""
    root = _copy(finished, tmp_path / "w")
    con = sqlite3.connect(root / "runs" / "results.db")
    run_id = con.execute("SELECT id FROM runs WHERE method = 'mae'").fetchone()[0]
    con.execute("UPDATE metrics SET protocol_json = '{not json' WHERE run_id = ?", (run_id,))
    con.commit()
    con.close()
    proc = cli("leaderboard", "--out", "runs", cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"run {run_id} (" in lines[0] and "metrics.protocol_json" in lines[0], proc.stderr
    mae = next(line for line in proc.stdout.splitlines() if line.startswith("| mae "))
    assert "damaged" in mae and "| pixels " in proc.stdout


def test_eval_reads_config_json_and_never_executes_config_py(finished, tmp_path):
    root = _copy(finished, tmp_path / "w")
    run_dir = root / "runs" / "digits" / "vit-nano" / "mae-s0"
    marker = tmp_path / "EXECUTED"
    (run_dir / "config.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    proc = cli("eval", str(run_dir), "--out", "runs", cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not marker.exists()


def test_corrupt_feature_cache_is_recomputed_with_a_warning(finished, tmp_path):
    root = _copy(finished, tmp_path / "w")
    run_dir = root / "runs" / "digits" / "vit-nano" / "mae-s0"
    expected = json.loads((run_dir / "metrics.json").read_text())["knn"]["metrics"]["knn_top1"]
    (run_dir / "features.pt").write_bytes(b"garbage")
    proc = cli("eval", str(run_dir), "--out", "runs", cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "features cache" in proc.stderr and "recomputing" in proc.stderr
    assert f"knn_top1: {100 * expected:.2f}%" in proc.stdout  # the same features again
