"""Shared fixtures: tiny configs so every end-to-end test trains in seconds on CPU."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

# One thread: on a shared 2-core machine two OpenMP threads per process make tiny ops ~100x slower.
torch.set_num_threads(1)

# A tiny backbone (width 32, depth 2) on a small balanced subset of digits.
TINY_SET = [
    "backbone.embed_dim=32",
    "backbone.depth=2",
    "backbone.num_heads=2",
    "dataset.limit_train=256",
    "dataset.limit_test=128",
    "train.batch_size=64",
    "train.epochs=2",
    "train.warmup_epochs=1",
    "eval.linear.epochs=5",
    "eval.linear.warmup_epochs=1",
]


@pytest.fixture(scope="session")
def registry():
    from ssl_bench.registry import get_registry

    return get_registry()


@pytest.fixture
def tiny_cfg(registry, tmp_path):
    """Factory: resolved config for `method` with the tiny settings and output under tmp_path."""
    from ssl_bench.run import method_config

    def make(method: str, *extra: str, backbone: str = "vit-nano"):
        return method_config(
            method, registry, cli={"backbone.name": backbone, "out": str(tmp_path / "runs")},
            set_items=[*TINY_SET, *extra],
        )

    return make


def make_imagefolder(root, classes: int = 2, per_class: int = 6, width: tuple[int, int] = (40, 64), height: tuple[int, int] = (30, 50)):
    """A small ImageNet-layout folder ``root/{train,val}/class<c>/<i>.jpg`` of random JPEGs of varied
    sizes (seeded); class c is 1/(c+1) as bright, so a probe has something to find."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(per_class):
                w, h = int(rng.integers(*width)), int(rng.integers(*height))
                pixels = rng.integers(0, 255, (h, w, 3), dtype=np.uint8) // (c + 1)
                Image.fromarray(pixels).save(d / f"{i}.jpg", quality=90)
    return root


# ------------------------------------------------------------------ file permissions that bind root too

#: capabilities(7) that let root ignore file permissions: CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
ROOT_FILE_CAPABILITIES = (1, 2, 3)
_CAPABILITY_VERSION_3 = 0x20080522  # linux/capability.h: two 32-bit words per set


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_root_file_capabilities() -> None:
    """Remove :data:`ROOT_FILE_CAPABILITIES` from this process's effective *and* permitted sets, for
    good: ``access(2)`` checks root against the permitted set, so dropping them only from the
    effective set would leave ``os.access`` answering as root. Raises OSError where it cannot."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    header, data = _CapHeader(_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    mask = ~sum(1 << cap for cap in ROOT_FILE_CAPABILITIES) & 0xFFFFFFFF
    data[0].effective &= mask
    data[0].permitted &= mask
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def run_as_unprivileged(check: Callable[[], None]) -> None:
    """Run ``check`` where file permissions bind it, also when the tests run as root (CI does).

    Not root: ``check()`` as it is. Root: ``check()`` in a forked child that has given up the
    capabilities root ignores permissions with (:data:`ROOT_FILE_CAPABILITIES`), so a ``chmod 0o555``
    folder refuses it with EACCES, exactly as it refuses any user; the rest of the session keeps
    them. A failure in the child fails the test with the child's traceback. Skips where the
    capabilities cannot be dropped.
    """
    if os.geteuid() != 0:
        check()
        return
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 0
        try:
            os.close(read_end)
            try:
                _drop_root_file_capabilities()
            except OSError as exc:
                status = 3
                os.write(write_end, f"cannot drop root's file capabilities here: {exc}".encode())
            else:
                check()
        except BaseException:
            status = 1
            os.write(write_end, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        report = pipe.read().decode(errors="replace")
    _, wait_status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(wait_status)
    if code == 3:
        pytest.skip(report)
    if code != 0:
        pytest.fail(f"in the unprivileged child (exit {code}):\n{report}", pytrace=False)


@pytest.fixture
def as_unprivileged() -> Callable[[Callable[[], None]], None]:
    """:func:`run_as_unprivileged`, for tests that need chmod to bind (as root too)."""
    return run_as_unprivileged


# -- the command line in a subprocess (signals, kill -9 and fresh processes need one) ---------------

BIN = Path(sys.executable).parent


def cli_env() -> dict[str, str]:
    """One thread per process (2 cores, tests in parallel processes) and unbuffered output."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args: str, cwd, timeout: float = 600) -> subprocess.CompletedProcess:
    """``ssl-bench ARGS`` run to the end in ``cwd``."""
    return subprocess.run([str(BIN / "ssl-bench"), *args], cwd=cwd, capture_output=True, text=True, env=cli_env(), timeout=timeout)


def start_cli(args: list[str], cwd, driver: str | None = None) -> subprocess.Popen:
    """``ssl-bench ARGS`` started in ``cwd``; ``driver``: Python source that patches something, then runs the CLI."""
    cmd = [sys.executable, "-c", driver, *args] if driver else [str(BIN / "ssl-bench"), *args]
    return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env())


def wait_for(predicate, timeout: float = 300, what: str = "") -> None:
    t0 = time.time()
    while not predicate():
        if time.time() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def one_line_error(proc: subprocess.CompletedProcess, code: int = 2) -> str:
    """The process failed with ``code`` and said why in exactly one ``ssl-bench:`` line, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ssl-bench:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]
