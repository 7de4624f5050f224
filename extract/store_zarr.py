"""The Zarr v3 store format (a folder: Blosc/Zstd with byte shuffle); registered as ``--format zarr``.

See ``mer.extract.store`` for the layout every format writes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from mer.extract.store import STORES, StoreFormat, jsonable


@STORES.register("zarr")
class ZarrFormat(StoreFormat):
    suffix = ".zarr"

    def __init__(self, path, mode):
        super().__init__(path, mode)
        import zarr

        self._zarr = zarr
        self.g = zarr.open_group(str(path), mode=mode, zarr_format=3 if mode == "w" else None)
        self._arrays: dict = {}  # opened once: g[name] reads the array's metadata from disk

    def create_array(self, name, shape, dtype, chunks):
        from zarr.codecs import BloscCodec

        comp = BloscCodec(cname="zstd", clevel=3, shuffle="shuffle") if np.dtype(dtype).kind in "fiub" else None
        kw = {"compressors": comp} if comp is not None else {}
        self._arrays[name] = self.g.create_array(name, shape=shape, dtype=dtype if dtype is not str else str, chunks=chunks, fill_value=None if dtype is str else 0, **kw)

    def write(self, name, sl, data):
        a = self._arrays.get(name)
        if a is None:
            a = self._arrays[name] = self.g[name]
        a[sl] = data

    def set_attrs(self, attrs):
        self.g.attrs.update(jsonable(attrs))

    def get_attrs(self):
        return dict(self.g.attrs)

    def array(self, name):
        return self.g[name]

    def has(self, name):
        return name in self.g

    @staticmethod
    def looks_written(path):
        return (Path(path) / "zarr.json").is_file()

    @staticmethod
    def remove(path):
        shutil.rmtree(path, ignore_errors=True)
