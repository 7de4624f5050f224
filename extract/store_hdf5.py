"""The HDF5 store format (one file: gzip + shuffle, so plain h5py reads it without the hdf5plugin filter); registered as ``--format hdf5``.

See ``mer.extract.store`` for the layout every format writes.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mer.extract.store import JSON_ATTRS, STORES, StoreFormat, jsonable


@STORES.register("hdf5")
class HDF5Format(StoreFormat):
    suffix = ".h5"
    thread_safe = False

    def __init__(self, path, mode):
        super().__init__(path, mode)
        import h5py

        self._h5py = h5py
        self.f = h5py.File(str(path), {"w": "w", "r": "r", "r+": "r+"}[mode])

    def create_array(self, name, shape, dtype, chunks):
        h5 = self._h5py
        if dtype is str:
            self.f.create_dataset(name, shape=shape, dtype=h5.string_dtype(), chunks=chunks if shape[0] else None)
            return
        kw = {"compression": "gzip", "compression_opts": 4, "shuffle": True} if shape and shape[0] else {}
        self.f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks if shape and shape[0] else None, fillvalue=0, **kw)

    def write(self, name, sl, data):
        if data.dtype.kind in "UO":
            data = np.asarray(data, dtype=object)
        self.f[name][sl] = data

    def set_attrs(self, attrs):
        for k, v in jsonable(attrs).items():
            self.f.attrs[k] = json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else v)

    def get_attrs(self):
        out = {}
        for k, v in self.f.attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, np.generic):
                v = v.item()
            if isinstance(v, str) and (k in JSON_ATTRS or v[:1] in "{["):
                try:
                    v = json.loads(v)
                except ValueError:
                    pass
            out[k] = v
        return out

    def array(self, name):
        d = self.f[name]
        return d.asstr() if d.dtype.kind == "O" else d

    def has(self, name):
        return name in self.f

    def close(self):
        self.f.close()

    @staticmethod
    def remove(path):
        Path(path).unlink(missing_ok=True)
