"""The import boundaries of the layout, each a test: the core never imports a plugin; no plugin
imports another (a broken ldae cannot take ddm down); components never import the training loop,
runner or CLI; evaluators never import methods."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "__init__.py").is_file())


def _imports(path: Path, package: str) -> set[str]:
    """Absolute module names imported by ``path`` (relative imports resolved against ``package``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names.add(node.module or "")
            else:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
    return names


def _package_of(path: Path, root: Path, top: str) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts[:-1]) if rel.name == "__init__" else list(rel.parts[:-1])
    return ".".join([top, *parts])


def test_the_layout_has_what_the_boundaries_are_about():
    assert set(PLUGINS) >= {"mae", "mocov3", "ldae", "ddm"}


def test_core_never_imports_a_plugin():
    paths = sorted((REPO / "ssl_bench").rglob("*.py"))
    assert len(paths) > 30
    for path in paths:
        bad = {m for m in _imports(path, _package_of(path, REPO / "ssl_bench", "ssl_bench")) if m.split(".")[0] in ("ssl_bench_plugins", "plugins")}
        assert not bad, f"{path.relative_to(REPO)} imports plugin code: {sorted(bad)}"


@pytest.mark.parametrize("plugin", PLUGINS)
def test_no_plugin_imports_another(plugin):
    root = REPO / "plugins" / plugin
    for path in sorted(root.rglob("*.py")):
        package = _package_of(path, REPO / "plugins", "ssl_bench_plugins")
        for m in _imports(path, package):
            head = m.split(".")
            if head[0] == "plugins" or (head[0] == "ssl_bench_plugins" and len(head) > 1 and head[1] != plugin):
                pytest.fail(f"{path.relative_to(REPO)} imports {m}: plugins share code only through ssl_bench")


def test_components_and_evaluators_keep_to_their_layer():
    rules = {
        "components": ("ssl_bench.train.loop", "ssl_bench.runner", "ssl_bench.cli", "ssl_bench.methods"),
        "eval": ("ssl_bench.methods", "ssl_bench.runner", "ssl_bench.cli", "ssl_bench.train.loop"),
    }
    for sub, forbidden in rules.items():
        for path in sorted((REPO / "ssl_bench" / sub).rglob("*.py")):
            imported = _imports(path, _package_of(path, REPO / "ssl_bench", "ssl_bench"))
            bad = {m for m in imported for f in forbidden if m == f or m.startswith(f + ".")}
            assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"


def test_the_deconstruction_chain_ships_inside_its_plugin(tmp_path):
    """A wheel (what a non-editable `pip install .` installs) carries the chain's configs."""
    import subprocess
    import sys
    import zipfile

    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("ssl_bench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {n for n in names if n.startswith("ssl_bench_plugins/ddm/deconstruct/configs/")}
    assert "ssl_bench_plugins/ddm/deconstruct/configs/t1_r1_class_cond.py" in configs and len(configs) >= 14
    assert "ssl_bench_plugins/ddm/deconstruct/README.md" in names
    assert not any(n.startswith(("benchmarks/", "plugins/")) for n in names)
