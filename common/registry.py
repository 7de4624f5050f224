"""One registry per kind of thing (datasets, extractors, stores, fusion models).

The CLI builds its choices from these, so adding a corpus or a model never needs a second
list edited somewhere else.
"""
from __future__ import annotations

import importlib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> object mapping filled by a decorator.

    ``modules`` lists the modules that register entries; they are imported on first use so
    that importing the registry itself stays cheap (no torch, no librosa at CLI start-up).
    """

    def __init__(self, kind: str, modules: tuple[str, ...] = (), name_attr: str | None = None):
        self.kind = kind
        # Registries of classes that know their own name (extractors, store formats): the
        # decorator sets ``cls.<name_attr>``, so the name is written once, in register().
        self.name_attr = name_attr
        self._modules = modules
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
            for mod in self._modules:
                importlib.import_module(mod)

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
