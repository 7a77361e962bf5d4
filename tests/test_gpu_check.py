"""The prepared GPU check (benchmarks/gpu_check.sh) runs its dry run end to end on the CPU, so the code
a GPU loan will run cannot rot unnoticed: every section must hold numbers, and a part that fails or
hangs must be reported while the others still run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("1. ", "2. ", "3. ", "4. ", "5. ")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}  # $OUT would make the check copy its file there
    env["PYTHON"] = sys.executable
    return env


def _sections(text: str) -> dict[str, str]:
    """{"1. ": body, ...}: the text under each '## N. ...' heading."""
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    return {p[:3]: p for p in parts}


def _table_rows(body: str) -> list[list[str]]:
    """Body rows of the first markdown table in ``body`` (header and separator dropped)."""
    rows: list[str] = []
    for line in body.splitlines():
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[2:]]


def _number(cell: str) -> float:
    return float(cell.replace(",", "").rstrip("x"))


def _run(*args: str, tmp_path: Path, timeout: float = 600) -> tuple[subprocess.CompletedProcess, str]:
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out", str(out), *args],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout)
    files = sorted(out.glob("gpu_check-*-cpu-dry-run.md"))
    assert proc.returncode == 0 and len(files) == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, files[0].read_text()


@pytest.mark.slow
def test_dry_run_fills_every_section(tmp_path: Path) -> None:
    before = set((REPO / "benchmarks" / "results").iterdir())
    _, text = _run(tmp_path=tmp_path)
    assert set((REPO / "benchmarks" / "results").iterdir()) == before, "a dry run must never write benchmarks/results/"
    sec = _sections(text)
    assert set(sec) == set(SECTIONS), list(sec)
    for key, body in sec.items():
        assert "status: ok" in body.splitlines()[2], f"section {key}: {body[:400]}"

    # 1. every method built and stepped: images/s, memory and counted FLOPs are positive numbers
    cols = [c.strip() for c in next(line for line in sec["1. "].splitlines() if line.startswith("|")).strip("|").split("|")]
    rows = {r[0]: dict(zip(cols, r)) for r in _table_rows(sec["1. "])}
    assert set(rows) == {"mae", "ldae", "ddm", "mocov3"}
    for method, row in rows.items():
        assert row["status"] == "ok", (method, row)
        for col in ("images/s", "step (ms)", "peak mem (GiB)", "GFLOP/image (fwd+bwd)", "achieved TFLOP/s",
                    "probe features images/s (fp32)"):
            assert _number(row[col]) > 0, (method, col, row[col])
        assert row["attention matmuls counted"], row  # says yes or no, never nothing
    assert rows["mocov3"]["views"] == "2" and rows["mae"]["views"] == "1"  # the folder loader's crops per method

    # 2. the standard pipeline and ours with both CPU decoders, for MAE and MoCo v3, against part 1's MAE speed
    rows2 = _table_rows(sec["2. "])
    pipelines = {(r[0], r[1]) for r in rows2}
    for task in ("MAE, 1 view", "MoCo v3, 2 views"):
        for pipe in ("standard (ImageFolder + PIL transforms)", "ours (decoder=torchvision)", "ours (decoder=pil)"):
            assert (task, pipe) in pipelines
    assert all(_number(r[3]) > 0 for r in rows2)
    assert all(re.match(r"(yes|no) \(\d", r[6]) for r in rows2 if r[0].startswith("MAE"))

    # 3. the CPU backends predict exactly what the device's torch backend predicted
    cpu_rows = [r for r in _table_rows(sec["3. "]) if r[7]]
    assert {r[0] for r in cpu_rows} >= {"torch"}
    assert all(r[7] == "1.00000" and r[8].startswith("0 of ") for r in cpu_rows), cpu_rows

    # 4. torchrun + the CLI finished with its leaderboard line; the direct DDP step on gloo agreed with its replica
    assert "exit code: 0," in sec["4. "]
    # the row label is the method plus what differs from its defaults (the dry run's tiny settings)
    assert re.search(r"^\| mae( · [^|]*)? +\| vit-tiny +\| digits", sec["4. "], re.M)
    assert "backend gloo, world size 1" in sec["4. "] and "all_reduce correct: True" in sec["4. "]
    assert re.search(r"max \|weight difference\| 0\.0[,e ]", sec["4. "]), sec["4. "]

    # 5. every method ran (exit 0) and is on the leaderboard beside the baselines
    runs = {r[0]: r for r in _table_rows(sec["5. "])}
    assert set(runs) == {"mae", "ldae", "ddm", "mocov3"} and all(r[1] == "0" for r in runs.values()), runs
    board = sec["5. "].split("Leaderboard", 1)[1]
    for name in ("pixels", "random-init", "mae", "ldae", "ddm", "mocov3"):
        assert re.search(rf"^\| {re.escape(name)}( · [^|]*)? +\|", board, re.M), name


@pytest.mark.slow
def test_a_failing_or_hanging_part_is_reported_and_the_next_one_runs(tmp_path: Path) -> None:
    # knn hangs until its share of the 28 s budget (30/80 of it, 10.5 s) is spent; ddp then fails at once
    proc, text = _run("--parts", "knn,ddp", "--inject", "knn=hang,ddp=raise", "--budget", "28", tmp_path=tmp_path)
    sec = _sections(text)
    assert "status: timed out" in sec["3. "] and "killed at its time limit" in sec["3. "], sec["3. "][:500]
    assert "status: failed" in sec["4. "] and "injected failure" in sec["4. "], sec["4. "][:800]
    for key in ("1. ", "2. ", "5. "):
        assert "status: skipped: not selected" in sec[key]


def _load_gpu_check():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_results_render_mfu_failures_and_timeouts() -> None:
    """What a GPU run writes (no GPU needed: fabricated part results): the MFU from the device's
    peak, a failed method's error beside the measured ones, a timed-out part's partial rows."""
    gc = _load_gpu_check()
    assert gc.peak_tflops("NVIDIA H200", None)[0] == 989.4
    assert gc.peak_tflops("NVIDIA A100-SXM4-80GB", None)[0] == 312.0
    assert gc.peak_tflops("NVIDIA H100 PCIe", None)[0] is None  # lower clocks than SXM: not guessed
    assert gc.peak_tflops("NVIDIA L40S", 362.0)[0] == 362.0
    spec = gc.build_spec(gc.parse_args([]), Path("work"), "cuda", "NVIDIA H200")
    mae = {"method": "mae", "batch": 256, "img_s": 2900.0, "step_ms": 88.3, "peak_gib": 21.4, "gflop_img": 57.1,
           "tflops": 165.6, "mfu_pct": 16.74, "attention_counted": "yes (aten._scaled_dot_product_flash_attention)", "status": "ok"}
    results = {
        "throughput": {"status": "ok", "seconds": 80.0, "allotted": 120, "rows": [
            mae, {"method": "ddm", "status": "failed", "error": "exit code 1; last log lines:\nRuntimeError: CUDA error: boom"}]},
        "data": {"status": "timed out", "seconds": 60.0, "allotted": 60, "error": "killed at its time limit (60 s)", "rows": [
            {"task": "MAE, 1 view", "pipeline": "standard (ImageFolder + PIL transforms)", "workers": 15, "img_s": 2000.0, "img_cpu_s": 150.0},
            {"task": "MAE, 1 view", "pipeline": "ours (decoder=torchvision)", "workers": 15, "img_s": 3100.0, "img_cpu_s": 230.0}]},
        "knn": {"status": "failed", "seconds": 3.0, "allotted": 30, "error": "RuntimeError: no kernel image"},
        "ddp": {"status": "skipped: not selected (--parts)", "allotted": 0},
        "fashion": {"status": "skipped: over budget (3 s left of its allotment)", "allotted": 3},
    }
    ctx = {"dry_run": False, "spec": spec, "peak_text": "x", "mae_img_s": 2900.0, "total_s": 150.0, "header": {}}
    sec = _sections(gc.render(results, ctx))
    row = dict(zip([c.strip() for c in sec["1. "].split("\n|", 1)[1].split("\n")[0].strip("|").split("|")],
                   _table_rows(sec["1. "])[0]))
    assert row["MFU (%)"] == "16.7" and row["images/s"] == "2,900.0"
    assert "ddm: RuntimeError: CUDA error: boom" in sec["1. "]
    data = {(r[1], r[6]) for r in _table_rows(sec["2. "])}
    assert ("standard (ImageFolder + PIL transforms)", "no (0.69x)") in data and ("ours (decoder=torchvision)", "yes (1.07x)") in data
    assert "status: timed out" in sec["2. "] and "killed at its time limit" in sec["2. "]
    assert "status: failed" in sec["3. "] and "no kernel image" in sec["3. "]
    assert "status: skipped: over budget" in sec["5. "]
