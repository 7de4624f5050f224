"""One registry per kind of thing (datasets, extractors, store formats, fusion models).

The CLI builds its choices from these, so adding a corpus or a model never needs a second
list edited somewhere else. Entries are found, not listed:

* every module of the registry's ``package`` whose source mentions ``marker`` (for example
  ``"EXTRACTORS.register"``) is imported on first use, so a new file dropped into
  ``extract/``, ``train/`` or ``common/datasets/`` registers itself with no other edit;
* plugins outside the source tree: the Python files or module names in ``$MER_PLUGINS``
  (``os.pathsep``-separated) and the ``mer.plugins`` entry-point group of installed packages.

Discovery reads source text before importing, so modules that register nothing (drivers,
plots) are not imported just to build a list of names.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import pkgutil
import sys
from pathlib import Path
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")

PLUGINS_ENV = "MER_PLUGINS"
PLUGINS_GROUP = "mer.plugins"
_plugins_loaded: set[str] = set()


def _import_path(path: Path):
    name = f"mer_plugin_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        from mer.common.errors import UsageError

        raise UsageError(f"${PLUGINS_ENV}: {path}: not a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def load_plugins() -> None:
    """Import the plugins named in $MER_PLUGINS and the ``mer.plugins`` entry points (once each)."""
    for item in filter(None, os.environ.get(PLUGINS_ENV, "").split(os.pathsep)):
        if item in _plugins_loaded:
            continue
        _plugins_loaded.add(item)
        p = Path(item)
        if p.suffix == ".py" or p.exists():
            if not p.is_file():
                from mer.common.errors import UsageError

                raise UsageError(f"${PLUGINS_ENV}: {item}: no such file")
            _import_path(p)
        else:
            importlib.import_module(item)
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGINS_GROUP):
        key = f"ep:{ep.value}"
        if key not in _plugins_loaded:
            _plugins_loaded.add(key)
            ep.load()


def modules_mentioning(package: str, marker: str | None) -> list[str]:
    """Names of the modules of ``package`` whose source contains ``marker`` (all when None)."""
    pkg = importlib.import_module(package)
    out = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        if marker is not None:
            src = Path(pkg.__path__[0]) / f"{info.name}.py"
            try:
                if marker not in src.read_text(encoding="utf-8"):
                    continue
            except OSError:
                pass  # not a plain source file (zip import): import it to be safe
        out.append(f"{package}.{info.name}")
    return sorted(out)


class Registry(Generic[T]):
    """Name -> object mapping filled by a decorator.

    ``package``/``marker``: where entries are discovered (see the module docstring); the
    modules are imported on first use, so importing the registry itself stays cheap (no
    torch, no librosa at CLI start-up).
    """

    def __init__(self, kind: str, package: str | None = None, marker: str | None = None,
                 name_attr: str | None = None):
        self.kind = kind
        # Registries of classes that know their own name (extractors, store formats): the
        # decorator sets ``cls.<name_attr>``, so the name is written once, in register().
        self.name_attr = name_attr
        self.package = package
        self.marker = marker
        self._loaded = False
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            if self.name_attr:
                own = vars(obj).get(self.name_attr)
                if own is not None and own != name:
                    raise ValueError(f"{self.kind} {name!r}: the class says its name is {own!r}")
                setattr(obj, self.name_attr, name)
            self._entries[name] = obj
            return obj

        return deco

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True
            if self.package:
                for mod in modules_mentioning(self.package, self.marker):
                    importlib.import_module(mod)
            load_plugins()

    def get(self, name: str) -> T:
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            from mer.common.errors import MerError

            raise MerError(
                f"unknown {self.kind} {name!r}; choose one of: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        self._load()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
