"""Frame sequences streamed from the store's chunks (mer.train.streaming) instead of loaded.

What must hold: training sees exactly the frames the store holds; the data layer keeps no
copy of the frames (only offsets); a pass over a fold decodes each chunk about once even when
the chunk cache is far smaller than the data; the prefetching thread keeps order and hands
errors (a corrupt chunk) to the training loop.
"""
import numpy as np
import pytest

from mer.train.data import Batcher, FeatureSet, Normalizer, build_data, parse_features, resolve_inputs, FeatureCache
from mer.train.streaming import ChunkedFrames, StreamedRows
from mer.train.synthetic_features import synthetic, write_stores


@pytest.fixture
def stores(tmp_path, monkeypatch):
    import mer.extract.store as st

    monkeypatch.setattr(st, "CHUNK_BYTES", 4096)   # many small chunks: 85 frames of 12 floats
    man, sets = synthetic(120, seed=3, text_dim=8, audio_dim=12, noise=0.7)
    paths = write_stores(man, sets, tmp_path / "cache")
    return man, sets, paths, tmp_path / "cache"


def _aligned(man, sets, fcache):
    from mer.common.schemes import scheme

    labels, classes = scheme("iemocap", None).apply(man.df)
    src = resolve_inputs(parse_features("bert.tokens,mfcc.frames"), fcache, "sequence")
    return build_data(man.df, labels, classes, src, fcache)


def test_chunked_frames_read_back_exactly_with_a_bounded_cache(stores):
    man, sets, paths, cache = stores
    fs = FeatureSet.from_store(paths["mfcc"])
    vals, offs = fs.ragged["frames"]
    assert isinstance(vals, ChunkedFrames)           # not loaded: read by chunks
    mem_vals, mem_offs = sets["mfcc"].ragged["frames"]
    pos = {u: i for i, u in enumerate(sets["mfcc"].ids)}
    for r, u in enumerate(fs.ids[:40]):
        m = pos[u]
        np.testing.assert_array_equal(vals[offs[r]:offs[r + 1]], mem_vals[mem_offs[m]:mem_offs[m + 1]])
    small = ChunkedFrames(paths["mfcc"], "frames/values", cache_bytes=3 * vals.chunk_bytes)
    whole = np.asarray(vals)
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = int(rng.integers(0, len(whole)))
        b = int(min(len(whole), a + rng.integers(1, 400)))
        np.testing.assert_array_equal(small[a:b], whole[a:b])
        assert len(small._cache) <= small.capacity == 3


def test_streamed_batches_equal_in_memory_batches(stores):
    man, sets, paths, cache = stores
    streamed = _aligned(man, sets, FeatureCache("iemocap", cache, man))
    memory = _aligned(man, sets, FeatureCache("iemocap", None, man, sets=sets))
    assert isinstance(streamed.arrays["mfcc.frames"].values, StreamedRows)
    assert isinstance(memory.arrays["mfcc.frames"].values, np.ndarray)
    assert list(streamed.ids) == list(memory.ids)
    rows = np.arange(len(streamed))
    ns, nm = Normalizer.fit(streamed, rows), Normalizer.fit(memory, rows)
    for k in ns.stats:
        np.testing.assert_allclose(ns.stats[k][0], nm.stats[k][0], rtol=1e-6)
    bs, bm = Batcher(streamed, nm), Batcher(memory, nm)
    for r in (rows[:7], rows[[5, 90, 3, 44]], rows[::-1][:16]):
        xs, ys = bs.batch(r)
        xm, ym = bm.batch(r)
        assert set(xs) == set(xm)
        for k in xs:
            assert np.array_equal(xs[k].numpy(), xm[k].numpy()), k
        assert np.array_equal(ys.numpy(), ym.numpy())


def test_a_shuffled_pass_covers_every_row_once_and_decodes_each_chunk_about_once(stores):
    man, sets, paths, cache = stores
    data = _aligned(man, sets, FeatureCache("iemocap", cache, man))
    v = data.arrays["mfcc.frames"].values
    v.frames.capacity = 4                     # a cache far smaller than the data (~30 chunks)
    n_chunks = -(-v.frames.shape[0] // v.frames.chunk)
    b = Batcher(data, Normalizer.fit(data, np.arange(len(data))))
    b.pool_rows = 12                          # what the cache holds
    v.frames.decoded = 0
    seen = []
    for r, x, y in b.iterate(np.arange(len(data)), 8, shuffle=True, rng=np.random.default_rng(1)):
        seen += list(r)
    assert sorted(seen) == list(range(len(data)))
    local = v.frames.decoded
    # the same pass in a plain random order (what the batcher does with in-memory arrays)
    b.streamed = []
    v.frames.decoded = 0
    for _ in b.iterate(np.arange(len(data)), 8, shuffle=True, rng=np.random.default_rng(1)):
        pass
    # store-local pools: each chunk decoded by the few pools whose runs touch it; a random
    # order with this cache decodes about one chunk per row
    assert local <= 3 * n_chunks, (local, n_chunks)
    assert local * 2 < v.frames.decoded, (local, v.frames.decoded)


def test_prefetcher_keeps_order_and_raises_where_the_item_failed():
    from mer.train.data import Prefetcher

    assert list(Prefetcher(lambda i: i * i, range(10), 2)) == [i * i for i in range(10)]

    def make(i):
        if i == 3:
            raise ValueError("bad item 3")
        return i

    got = []
    with pytest.raises(ValueError, match="bad item 3"):
        for x in Prefetcher(make, range(10), 2):
            got.append(x)
    assert got == [0, 1, 2]
    it = iter(Prefetcher(lambda i: i, range(1000), 2))   # leaving early stops the thread
    assert next(it) == 0
    it.close()


def test_a_corrupt_chunk_stops_training_naming_the_store(stores, tmp_path):
    from mer.extract.store import StoreCorrupt
    from mer.train.trainer import TrainConfig, run_train

    man, sets, paths, cache = stores
    store = paths["mfcc"]
    chunk = sorted(p for p in (store / "frames" / "values").rglob("*") if p.is_file() and p.name[0].isdigit())
    chunk = chunk[len(chunk) // 2]
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    chunk.write_bytes(bytes(raw))
    with pytest.raises(StoreCorrupt, match="frames/values"):
        run_train("iemocap", "bert.tokens,mfcc.frames", "weighted", protocol="loso", cache=cache,
                  out=tmp_path / "runs", config=TrainConfig(epochs=1), device="cpu", plots=False, quiet=True)
