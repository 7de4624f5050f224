"""Issue 21: what a run trained on is never a silent choice (store choice, data line)."""
from __future__ import annotations

import pytest
from test_extract import make_corpus, write_manifest

from mer.common.errors import MerError

KW = dict(workers=0, quiet=True, batch_size=4)


def _valid(path) -> int:
    from mer.extract.store import open_store

    with open_store(path) as r:
        return int(r.valid.sum())


def test_a_newer_store_with_a_length_limit_is_not_picked_silently(tmp_path):
    """The repro: extract mfcc, then mfcc --max-seconds short; plain training used the newer
    store (a quarter of the rows). The default-settings store is used; with only non-default
    stores the choice is refused, naming the candidates, their difference and --store."""
    from mer.extract.cache import find_store
    from mer.extract.engine import run_extract

    cache = tmp_path / "cache"
    write_manifest(cache, make_corpus(tmp_path / "audio", n=10, min_s=0.4, max_s=1.0))
    full = run_extract("iemocap", ["mfcc"], cache=cache, **KW)["mfcc"]
    short = run_extract("iemocap", ["mfcc"], cache=cache, max_seconds=0.7, **KW)["mfcc"]
    assert short != full and _valid(short) < _valid(full) == 10
    assert find_store("iemocap", "mfcc", cache) == full
    # --store picks by the row limit too
    assert find_store("iemocap", "mfcc", cache, where={"max_seconds": "0.7"}) == short

    from mer.extract.cache import remove

    remove(full, cache)
    other = run_extract("iemocap", ["mfcc"], cache=cache, max_seconds=0.8, **KW)["mfcc"]
    with pytest.raises(MerError, match=r"2 complete 'mfcc' stores.*max_seconds=0\.7.*max_seconds=0\.8.*--store mfcc\.max_seconds"):
        find_store("iemocap", "mfcc", cache)
    assert find_store("iemocap", "mfcc", cache, where={"max_seconds": 0.8}) == other


def test_the_data_line_counts_used_and_dropped_utterances():
    from mer.common.report import Report
    from mer.train.data import DROP_WARN_SHARE, usage_line

    rep = Report("training data: iemocap")
    rep.counts.update({"manifest utterances": 320, "without a label under the scheme": 114, "used for training": 51})
    for i in range(155):
        rep.drop(f"u{i}", "store", "skipped by extractor", "mfcc")
    line, share = usage_line(rep)
    assert "51 of 206 labelled utterances used" in line and "155 skipped by extractor (mfcc)" in line
    assert share > DROP_WARN_SHARE
