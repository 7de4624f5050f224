"""Feature stores: read-back equals written, for both formats, every row, fixed and ragged."""
from __future__ import annotations

import numpy as np
import pytest

from mer.extract.cache import verify_store
from mer.extract.store import StoreWriter, open_store

OUTPUTS = {
    "mean": {"kind": "fixed", "dim": 7, "frame_rate": None, "dtype": "float32"},
    "frames": {"kind": "ragged", "dim": 5, "frame_rate": 100.0, "dtype": "float32"},
    "tok": {"kind": "ragged", "dim": 1, "frame_rate": None, "dtype": "int32"},
}


def _data(n=257, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"utt{i:04d}_é" for i in range(n)]  # non-ASCII on purpose
    valid = rng.random(n) > 0.1
    lengths = np.where(valid, rng.integers(0, 300, n), 0)  # includes valid rows with 0 frames
    fixed = np.where(valid[:, None], rng.standard_normal((n, 7)), 0).astype(np.float32)
    frames = [rng.standard_normal((t, 5)).astype(np.float32) * 100 for t in lengths]
    tok = [rng.integers(0, 30000, (t, 1)).astype(np.int32) for t in lengths]
    return ids, valid, lengths, fixed, frames, tok


def _write(path, fmt, dtype, batch=19):
    ids, valid, lengths, fixed, frames, tok = _data()
    outs = {k: dict(v, dtype=dtype if v["dtype"] == "float32" else v["dtype"]) for k, v in OUTPUTS.items()}
    w = StoreWriter(path, fmt, ids, outs, dtype, {"frames": int(lengths.sum()), "tok": int(lengths.sum())})
    for s in range(0, len(ids), batch):  # uneven batches: writes cross chunk boundaries
        sl = slice(s, s + batch)
        fr = frames[sl]
        w.add(valid[sl], {
            "mean": fixed[sl],
            "frames": (np.concatenate(fr) if fr else np.zeros((0, 5)), lengths[sl]),
            "tok": (np.concatenate(tok[sl]), lengths[sl]),
        })
    w.finish({"mer_store_version": 1, "feature": "t", "config": {"a": [1, 2]}, "outputs": outs, "complete": True})
    return ids, valid, lengths, fixed, frames, tok


@pytest.mark.parametrize("fmt,suffix", [("zarr", ".zarr"), ("hdf5", ".h5")])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_read_back_equals_written(tmp_path, fmt, suffix, dtype, monkeypatch):
    import mer.extract.store as st

    monkeypatch.setattr(st, "CHUNK_BYTES", 4096)  # many small chunks
    p = tmp_path / f"t-0123456789abcdef{suffix}"
    ids, valid, lengths, fixed, frames, tok = _write(p, fmt, dtype)
    with open_store(p) as r:
        assert r.ids.tolist() == ids
        assert np.array_equal(r.valid, valid)
        assert r.attrs["config"] == {"a": [1, 2]} and r.attrs["n"] == len(ids)
        assert r.outputs["frames"]["kind"] == "ragged"
        got = r.read_fixed("mean")
        assert got.dtype == np.dtype(dtype) and got.shape == (len(ids), 7)
        assert np.array_equal(got, fixed.astype(dtype))
        vals, off = r.read_ragged("frames")
        assert off.dtype == np.int64 and len(off) == len(ids) + 1 and off[-1] == len(vals)
        tv, toff = r.read_ragged("tok")
        assert tv.dtype == np.int32 and np.array_equal(toff, off)
        for i in range(len(ids)):  # every row
            assert np.array_equal(vals[off[i] : off[i + 1]], frames[i].astype(dtype)), i
            assert np.array_equal(tv[toff[i] : toff[i + 1]], tok[i]), i
        assert r.checksums() == r.attrs["checksums"]
        # lazy access for dask / xarray users
        ds = r.to_xarray()
        assert np.array_equal(ds["mean"].values, got)
        assert ds["utt"].values.tolist() == ids
        assert np.array_equal(r.to_dask("frames/values").compute(), vals)


def test_plain_library_layout(tmp_path):
    """The documented layout, read without mer."""
    import h5py
    import zarr

    ids, valid, lengths, fixed, frames, _ = _write(tmp_path / "a.zarr", "zarr", "float32")
    _write(tmp_path / "a.h5", "hdf5", "float32")
    g = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    assert g.attrs["n"] == len(ids) and g.attrs["outputs"]["mean"]["dim"] == 7
    assert np.array_equal(g["mean"][:], fixed)
    off = g["frames/offsets"][:]
    assert np.array_equal(g["frames/values"][off[3] : off[4]], frames[3])
    with h5py.File(tmp_path / "a.h5", "r") as f:
        assert f["ids"].asstr()[5] == ids[5]
        assert np.array_equal(f["valid"][:], valid)
        assert np.array_equal(f["frames/values"][f["frames/offsets"][7] : f["frames/offsets"][8]], frames[7])
        assert f["mean"].compression == "gzip"


@pytest.mark.parametrize("fmt,suffix", [("zarr", ".zarr"), ("hdf5", ".h5")])
def test_verify_detects_changed_and_nonfinite_values(tmp_path, fmt, suffix):
    p = tmp_path / f"t{suffix}"
    _write(p, fmt, "float32")
    assert "not marked complete" not in " ".join(verify_store(p, check_name=False))
    if fmt == "zarr":
        import zarr

        g = zarr.open_group(str(p), mode="r+")
        g["mean"][3, 2] = 123.0
        g["frames/values"][10, 0] = np.nan
    else:
        import h5py

        with h5py.File(p, "r+") as f:
            f["mean"][3, 2] = 123.0
            f["frames/values"][10, 0] = np.nan
    probs = " | ".join(verify_store(p, check_name=False))
    # each changed array is named with the chunk that changed (and the other arrays checked)
    assert "array 'mean', chunk 0 (rows 0-" in probs and "checksum differs" in probs
    assert "array 'frames/values', chunk 0" in probs


def test_format_choices_come_from_the_store_registry(tmp_path):
    """`mer extract --format` offers exactly the registered backends, and a backend in a file
    of its own (here a plugin from $MER_PLUGINS) becomes a choice with no other edit."""
    import os
    import subprocess
    import sys

    from mer.extract.cli import extract
    from mer.extract.store import STORES

    from mer.common.registry import modules_mentioning

    (fmt,) = [p for p in extract.params if p.name == "fmt"]
    assert sorted(fmt.type.choices) == STORES.names() and {"zarr", "hdf5"} <= set(STORES.names())
    # each backend is a file of its own, found by the registry (no list of modules anywhere)
    assert {"mer.extract.store_zarr", "mer.extract.store_hdf5"} <= set(modules_mentioning(STORES.package, STORES.marker))
    plugin = tmp_path / "npzdir_store.py"
    plugin.write_text(
        "from mer.extract.store import STORES, StoreFormat\n\n\n"
        "@STORES.register('npzdir')\n"
        "class NpzDir(StoreFormat):\n"
        "    suffix = '.npzdir'\n"
    )
    code = ("from mer.extract.cli import extract; from mer.extract.store import STORES; "
            "(f,) = [p for p in extract.params if p.name == 'fmt']; print(sorted(f.type.choices), STORES.names())")
    env = {**os.environ, "MER_PLUGINS": str(plugin)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("] [")[0] + "]" == "['hdf5', 'npzdir', 'zarr']", out.stdout
