"""No import cycles among mer's packages (extract/, common/, train/).

Read with ``ast`` from the source, so it needs no heavy library and counts every import,
also the ones inside functions (a lazy import still ties two modules together: it only
moves the failure to run time).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("common", "extract", "train")


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return "mer." + ".".join(parts)


def imported_names(path: Path, mod: str) -> set[str]:
    """Every name an import in ``path`` (module ``mod``) may refer to as a module, relative
    imports resolved: ``import a.b`` -> a.b; ``from a import b`` -> a and a.b."""
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this module's package
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            out.update([stem] + [f"{stem}.{a.name}" for a in node.names])
    return out


def import_graph() -> dict[str, set[str]]:
    mods = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            mods[_module_name(p)] = p
    # "from mer.extract import cache" names a module; "from mer.extract.cache import X" names one too.
    return {mod: {n for n in imported_names(path, mod) if n in mods and n != mod} for mod, path in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_graph_sees_lazy_imports():
    """The checker itself: a function-level import is an edge (so a lazy cycle is caught)."""
    g = import_graph()
    assert "mer.extract.store" in g["mer.extract.cache"]
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def layer_violations(lower: str, uppers: tuple[str, ...], root: Path = ROOT) -> list[str]:
    """``file: module`` for each import in package ``lower`` that reaches one of ``uppers``."""
    bad = []
    for p in sorted((root / lower).rglob("*.py")):
        parts = list(p.relative_to(root).with_suffix("").parts)
        mod = "mer." + ".".join(parts[:-1] if p.name == "__init__.py" else parts)
        names = imported_names(p, mod)
        # One line per import: "from a import b" is reported as a, not also as a.b.
        for name in sorted(n for n in names if not any(n.startswith(o + ".") for o in names)):
            if any(name == f"mer.{u}" or name.startswith(f"mer.{u}.") for u in uppers):
                bad.append(f"{p.relative_to(root)}: {name}")
    return bad


def test_layer_check_sees_a_lazy_upward_import(tmp_path):
    """The checker itself: an import inside a function of common/ is a violation."""
    (tmp_path / "common").mkdir()
    (tmp_path / "common" / "x.py").write_text("def f():\n    from mer.train.trainer import run_train\n")
    (tmp_path / "common" / "y.py").write_text("from ..extract import base\n")
    assert layer_violations("common", ("extract", "train"), tmp_path) == [
        "common/x.py: mer.train.trainer", "common/y.py: mer.extract"]


def test_common_is_the_bottom_layer():
    """common/ (adapters, manifests, registry, CLI shell) imports neither extract nor train,
    not even lazily: a change to extract or train can never break `mer prepare`."""
    bad = layer_violations("common", ("extract", "train"))
    assert not bad, "common/ imports an upper layer: " + "; ".join(bad)


def test_extract_does_not_import_train():
    bad = layer_violations("extract", ("train",))
    assert not bad, "extract/ imports train/: " + "; ".join(bad)


def test_extract_help_imports_no_heavy_library():
    """`mer extract --help` builds its options from the registries (every extractor's config,
    every store format) without importing torch, zarr, h5py, pandas, dask or the audio and
    model libraries: those cost seconds and are imported where features are computed."""
    import subprocess
    import sys

    heavy = ("torch", "zarr", "h5py", "pandas", "dask", "distributed", "librosa", "opensmile", "transformers",
             "scipy", "soundfile")
    code = ("import sys\nfrom mer.common.cli import main\ntry:\n    main(['extract', '--help'])\nexcept SystemExit:\n    pass\n"
            f"print(','.join(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "--format [hdf5|zarr]" in r.stdout, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1:] in ([], [""]), r.stderr
