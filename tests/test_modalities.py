"""Corpora with one modality: a lab CSV with only ``path,label`` (audio) or ``text,label``
prepares, extracts what applies (one line for each feature skipped) and trains unimodal
models; fusions and features that need the missing modality are refused with the reason."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from corpus_fixtures import make_modality_csv
from mer.common.cli import main


def _mer(*args):
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        raise AssertionError(f"mer {' '.join(map(str, args))} exited with {e.code}") from None


def _fails(capsys, *args) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    assert e.value.code != 0
    return capsys.readouterr().err


def _ua(run) -> float:
    return json.loads((run / "metrics.json").read_text())["mean"]["ua"]


def test_audio_only_csv_prepares_extracts_and_trains(tmp_path, capsys):
    root = make_modality_csv(tmp_path, ("path", "label"), per_class=15)
    cache = tmp_path / "cache"
    _mer("prepare", "-d", "csv", "-r", root, "--cache", cache, "--workers", 2)
    meta = json.loads((cache / "csv" / "manifest.meta.json").read_text())
    assert meta["modalities"] == ["audio"]
    df = pd.read_parquet(cache / "csv" / "manifest.parquet")
    assert len(df) == 60 and df["text"].isna().all()

    capsys.readouterr()
    _mer("extract", "-d", "csv", "--cache", cache, "--features", "mfcc,egemaps,bert", "--workers", 0, "-q")
    out = capsys.readouterr()
    notes = [ln for ln in out.err.splitlines() if ln.startswith("note: skipping")]
    assert notes == ["note: skipping bert: the csv corpus has no text (its manifest records modalities: audio)"]
    assert "mfcc\t" in out.out and "egemaps\t" in out.out and "bert\t" not in out.out

    runs = tmp_path / "runs"
    _mer("train", "-d", "csv", "--cache", cache, "-f", "mfcc", "-f", "egemaps", "--fusion", "concat",
         "--protocol", "random", "--epochs", 40, "--out", runs, "-q", "--no-plots")
    done = sorted(runs.iterdir())
    assert len(done) == 2
    for r in done:  # four pitches, one per class: far above chance (0.25)
        assert _ua(r) > 0.6, (r.name, _ua(r))

    err = _fails(capsys, "train", "-d", "csv", "--cache", cache, "-f", "bert", "--out", runs, "-q")
    assert "bert is a text feature, and the csv corpus has no text" in err
    err = _fails(capsys, "train", "-d", "csv", "--cache", cache, "-f", "mfcc", "--fusion", "attention", "--out", runs, "-q")
    assert "attention" in err and "the csv corpus has no text" in err


def test_text_only_csv_trains_on_bert(tmp_path, capsys):
    root = make_modality_csv(tmp_path, ("text", "label"), per_class=15)
    cache = tmp_path / "cache"
    _mer("prepare", "-d", "csv", "-r", root, "--cache", cache)
    meta = json.loads((cache / "csv" / "manifest.meta.json").read_text())
    assert meta["modalities"] == ["text"]
    df = pd.read_parquet(cache / "csv" / "manifest.parquet")
    assert df["audio"].isna().all() and df["id"].tolist()[:2] == ["line2", "line3"]

    capsys.readouterr()
    _mer("extract", "-d", "csv", "--cache", cache, "--features", "mfcc,bert", "--workers", 0, "-q")
    err = capsys.readouterr().err
    assert "note: skipping mfcc: the csv corpus has no audio" in err
    runs = tmp_path / "runs"
    _mer("train", "-d", "csv", "--cache", cache, "-f", "bert", "--protocol", "random", "--epochs", 40,
         "--out", runs, "--run-id", "t", "-q", "--no-plots")
    assert _ua(runs / "t") > 0.6

    err = _fails(capsys, "extract", "-d", "csv", "--cache", cache, "--features", "mfcc", "--workers", 0, "-q")
    assert "none of --features mfcc applies" in err


def test_csv_without_path_or_text_is_refused(tmp_path):
    from mer.common.datasets.prepare import prepare
    from mer.common.errors import CorpusError

    root = tmp_path / "c"
    root.mkdir()
    (root / "metadata.csv").write_text("label,speaker\nhappy,a\n")
    with pytest.raises(CorpusError, match="needs a path .audio. or a text column"):
        prepare("csv", root, out=tmp_path / "m.parquet", quiet=True)
