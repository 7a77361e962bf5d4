"""The import boundaries of the layout, each a test.

* **Floors.** Every ``ssl_bench`` module sits on a floor (:data:`FLOORS`). A module may import its own
  package and anything on a lower floor, never a higher floor and never another package of its own
  floor. Every ``import`` counts, including those inside functions (a lazy import is still a
  dependency: it only hides a circle until the function runs).
* **No circles** between modules, counted the same way.
* **No private names across modules**: no module imports another module's ``_name`` or reads
  ``module._name``; make the name public or move it.
* The core never imports a plugin; no plugin imports another (a broken ldae cannot take ddm down);
  a plugin stands below the CLI (``ssl_bench.cli``) and reaches the command helpers through
  ``ssl_bench.commands``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p.name for p in (REPO / "plugins").iterdir() if (p / "__init__.py").is_file())

#: Lowest floor first. A unit is a top-level module or sub-package of ``ssl_bench``.
FLOORS: tuple[tuple[str, ...], ...] = (
    # 0 the errors users see (and ssl_bench.configs, the harness's default config file)
    ("ssl_bench.errors", "ssl_bench.configs"),
    # 1 ground: atomic writes, the distributed context (device, ranks, gather, broadcast), hook specs
    ("ssl_bench.files", "ssl_bench.distributed", "ssl_bench.hookspecs", "ssl_bench.provenance"),
    # 2 what every layer may use: progress bars, config checks, the results store (no torch)
    ("ssl_bench.progress", "ssl_bench.config_schema", "ssl_bench.results"),
    # 3 config resolution
    ("ssl_bench.config",),
    # 4 data and the model parts
    ("ssl_bench.data", "ssl_bench.components"),
    # 5 diffusion processes (built on components)
    ("ssl_bench.diffusion",),
    # 6 engines: the method pipelines, the evaluators, the training loop
    ("ssl_bench.methods", "ssl_bench.eval", "ssl_bench.train"),
    # 7 discovery: the registry and the built-in registrations
    ("ssl_bench.registry", "ssl_bench.builtin"),
    # 8 orchestration: build, train, score, record
    ("ssl_bench.run",),
    # 9 command helpers shared by the CLI and plugin commands
    ("ssl_bench.commands",),
    # 10 the command line
    ("ssl_bench.cli",),
)
FLOOR_OF: dict[str, int] = {unit: i for i, units in enumerate(FLOORS) for unit in units}
#: Plugins stand just below the CLI: they may use all of ssl_bench but ssl_bench.cli.
PLUGIN_FLOOR = FLOOR_OF["ssl_bench.cli"]


def _module_name(path: Path) -> str:
    """Dotted module name of a file under ssl_bench/ or plugins/ (plugins install as ssl_bench_plugins)."""
    if path.is_relative_to(REPO / "plugins"):
        parts = ["ssl_bench_plugins", *path.relative_to(REPO / "plugins").with_suffix("").parts]
    else:
        parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    files = [*(REPO / "ssl_bench").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]
    return {_module_name(p): p for p in sorted(files)}


SOURCES = _sources()


def _package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _imports(module: str, path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in the file, at any depth."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                base = node.module or ""
            else:
                pkg = _package(module, path).split(".")
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            names = [a.name for a in node.names]
            yield base, names, node.lineno
            for name in names:  # `from pkg import submodule`
                if f"{base}.{name}" in SOURCES:
                    yield f"{base}.{name}", [], node.lineno


def _unit(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2])


def _edges() -> dict[str, set[str]]:
    """Module -> the project modules it imports (any depth), for the circle check."""
    out: dict[str, set[str]] = {}
    for module, path in SOURCES.items():
        targets = set()
        for imported, _, _ in _imports(module, path):
            if imported in SOURCES and imported != module:
                targets.add(imported)
        out[module] = targets
    return out


def test_the_layout_has_what_the_boundaries_are_about():
    assert set(PLUGINS) >= {"mae", "mocov3", "ldae", "ddm"}
    units = {_unit(m) for m in SOURCES if m.startswith("ssl_bench.")}
    assert units <= set(FLOOR_OF), f"modules on no floor: {sorted(units - set(FLOOR_OF))}; add them to FLOORS"


def test_every_import_goes_down_a_floor():
    """A module imports its own package or a lower floor; a plugin imports ssl_bench below the CLI."""
    bad = []
    for module, path in SOURCES.items():
        own = _unit(module)
        floor = PLUGIN_FLOOR if module.startswith("ssl_bench_plugins") else FLOOR_OF.get(own)
        if floor is None:  # reported by test_the_layout_has_what_the_boundaries_are_about
            continue
        for imported, _, line in _imports(module, path):
            if not imported.startswith("ssl_bench.") and imported != "ssl_bench":
                continue
            target = _unit(imported)
            if target == own or target == "ssl_bench" or target not in FLOOR_OF:
                continue
            if FLOOR_OF[target] >= floor:
                bad.append(f"{path.relative_to(REPO)}:{line} ({own}, floor {floor}) imports {imported} (floor {FLOOR_OF[target]})")
    assert not bad, "imports that do not go down a floor:\n" + "\n".join(bad)


def test_no_import_circles():
    """Tarjan's strongly connected components over every import, lazy ones included."""
    edges = _edges()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                circles.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _checked_files() -> dict[str, Path]:
    files = dict(SOURCES)
    for path in sorted((REPO / "benchmarks").rglob("*.py")):
        files[f"benchmarks.{'.'.join(path.relative_to(REPO / 'benchmarks').with_suffix('').parts)}"] = path
    return files


def test_no_module_takes_another_modules_private_names():
    """``from x import _name`` and ``x._name`` (x an imported project module) across modules."""
    bad = []
    for module, path in _checked_files().items():
        tree = ast.parse(path.read_text(), filename=str(path))
        aliases: dict[str, str] = {}  # local name -> project module it is bound to
        for imported, names, line in _imports(module, path):
            if not imported.startswith(("ssl_bench", "benchmarks")) or imported == module:
                continue
            bad += [f"{path.relative_to(REPO)}:{line} imports {imported}.{n}" for n in names if _private(n)]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name in SOURCES:
                        aliases[a.asname or a.name.split(".")[0]] = a.name
            elif isinstance(node, ast.ImportFrom):
                for a in node.names:
                    base = node.module or ""
                    if f"{base}.{a.name}" in SOURCES:
                        aliases[a.asname or a.name] = f"{base}.{a.name}"
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name):
                target = aliases.get(node.value.id)
                if target is not None and target != module:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno} reads {target}.{node.attr}")
    assert not bad, "private names used across modules (make them public or move them):\n" + "\n".join(bad)


def test_core_never_imports_a_plugin():
    paths = sorted((REPO / "ssl_bench").rglob("*.py"))
    assert len(paths) > 30
    for path in paths:
        module = _module_name(path)
        bad = {m for m, _, _ in _imports(module, path) if m.split(".")[0] in ("ssl_bench_plugins", "plugins")}
        assert not bad, f"{path.relative_to(REPO)} imports plugin code: {sorted(bad)}"


@pytest.mark.parametrize("plugin", PLUGINS)
def test_no_plugin_imports_another(plugin):
    for path in sorted((REPO / "plugins" / plugin).rglob("*.py")):
        for m, _, line in _imports(_module_name(path), path):
            head = m.split(".")
            if head[0] == "plugins" or (head[0] == "ssl_bench_plugins" and len(head) > 1 and head[1] != plugin):
                pytest.fail(f"{path.relative_to(REPO)}:{line} imports {m}: plugins share code only through ssl_bench")


def test_model_code_receives_its_parts():
    """Methods and components never look parts up in the process-wide registry: the run's builder
    constructs them and passes them in (one registry, one resolution of the config)."""
    model_files = [*(REPO / "ssl_bench" / "methods").rglob("*.py"), *(REPO / "ssl_bench" / "components").rglob("*.py")]
    model_files += [p for p in (REPO / "plugins").rglob("method.py")]
    for path in sorted(model_files):
        text = path.read_text()
        assert "get_registry" not in text, f"{path.relative_to(REPO)} calls get_registry(); receive the parts from the builder"
        assert "Config.fromfile" not in text, f"{path.relative_to(REPO)} re-reads a config file; the resolved config is passed in"


def test_the_floor_rules_catch_what_they_are_about(tmp_path):
    """The checks above are not vacuous: a planted upward import, a circle and a private import fail."""
    module = "ssl_bench.components.planted"
    src = tmp_path / "planted.py"
    src.write_text("from ssl_bench.run import build\nfrom ssl_bench.eval.features import _read_cache\n")
    imported = list(_imports(module, src))
    assert ("ssl_bench.run", ["build"], 1) in imported
    assert FLOOR_OF[_unit("ssl_bench.run")] > FLOOR_OF[_unit(module)]
    assert any(_private(n) for _, names, _ in imported for n in names)


def test_the_deconstruction_chain_ships_inside_its_plugin(tmp_path):
    """A wheel (what a non-editable `pip install .` installs) carries the chain's configs.

    Built from a clean copy of the tracked files, so a stale ``*.egg-info`` or ``build/`` in the
    working tree cannot make it pass."""
    import shutil
    import subprocess
    import sys
    import zipfile

    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: cannot tell tracked files from build leftovers")
    clean = tmp_path / "src"
    for rel in filter(None, listed.stdout.split("\0")):
        if (REPO / rel).is_file():
            (clean / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, clean / rel)
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(clean)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("ssl_bench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {n for n in names if n.startswith("ssl_bench_plugins/ddm/deconstruct/configs/")}
    assert "ssl_bench_plugins/ddm/deconstruct/configs/t1_r1_class_cond.py" in configs and len(configs) >= 14
    assert "ssl_bench_plugins/ddm/deconstruct/README.md" in names
    assert not any(n.startswith(("benchmarks/", "plugins/")) for n in names)
