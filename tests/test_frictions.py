"""Three small frictions a new user met (issue 13): `prepare --out DIR`, a grid of feature sets x
fusions with one pair that cannot be built, and progress output into a log file."""
from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from corpus_fixtures import IEMOCAP_UTTS, make_iemocap
from mer.common.cli import main


def _mer(*args):
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        raise AssertionError(f"mer {' '.join(map(str, args))} exited with {e.code}") from None


def test_prepare_out_accepts_a_folder(tmp_path):
    root = make_iemocap(tmp_path)
    for out in (tmp_path / "existing", tmp_path / "new" / "folder"):
        if out.name == "existing":
            out.mkdir()
        _mer("prepare", "-d", "iemocap", "-r", root, "--out", out, "--workers", 2)
        assert len(pd.read_parquet(out / "manifest.parquet")) == len(IEMOCAP_UTTS)
        assert (out / "manifest.meta.json").exists() and (out / "manifest.report.json").exists()
    # A file path still works as before.
    _mer("prepare", "-d", "iemocap", "-r", root, "--out", tmp_path / "m.parquet", "--workers", 2)
    assert (tmp_path / "m.parquet").exists() and (tmp_path / "m.report.json").exists()


def test_grid_skips_a_pair_that_cannot_be_built_and_runs_the_rest(tmp_path, capsys):
    from mer.train.synthetic_features import synthetic, write_stores

    cache = tmp_path / "cache"
    man, sets = synthetic(120, seed=0, text_dim=8, audio_dim=6, ragged=False)
    write_stores(man, sets, cache)
    out = tmp_path / "runs"
    # attention needs an audio and a text input: on bert alone it cannot be built.
    _mer("train", "-d", "iemocap", "-f", "bert", "-f", "bert,mfcc", "--fusion", "concat,attention", "--cache", cache,
         "--out", out, "--epochs", 2, "--protocol", "si", "--no-plots")
    err = capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 3, names
    assert not any("-bert-attention" in n for n in names)
    assert "skipped attention [bert]" in err and "audio" in err
    assert "3 of 4 runs written; 1 skipped" in err
    # The same pair alone is still an error, naming the reason.
    with pytest.raises(SystemExit) as e:
        main(["train", "-d", "iemocap", "-f", "bert", "--fusion", "attention", "--cache", str(cache),
              "--out", str(out), "--epochs", "1", "-q"])
    assert e.value.code == 1
    assert "attention" in capsys.readouterr().err


def test_progress_prints_plain_lines_when_not_a_terminal():
    from mer.common.progress import PlainProgress, progress

    t = [0.0]
    buf = io.StringIO()
    bar = PlainProgress(10, "train x", unit="fold", stream=buf, every=5.0, clock=lambda: t[0])
    for _ in range(10):
        t[0] += 1.0
        bar.update(1)
        bar.set_postfix_str("ua 0.5")
    bar.close()
    lines = buf.getvalue().splitlines()
    # one line per 5 s of work plus the final one; no carriage returns or escape codes
    assert lines == ["train x: 5/10 fold (50%) 1.00 fold/s, eta 5s [ua 0.5]", "train x: 10/10 fold (100%) 1.00 fold/s [ua 0.5]"]
    assert "\r" not in buf.getvalue() and "\x1b" not in buf.getvalue()

    # progress() picks the plain printer for a stream that is not a terminal...
    buf = io.StringIO()
    with progress(3, "stage", stream=buf) as b:
        b.update(3)
        b.set_postfix(skipped=0)
    assert buf.getvalue() == "stage: 3/3 utt (100%) " + buf.getvalue().split("(100%) ")[1]
    assert "\r" not in buf.getvalue() and buf.getvalue().count("\n") == 1

    # ...and tqdm for a terminal (which redraws with carriage returns).
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    with progress(3, "stage", stream=tty) as b:
        b.update(3)
    assert "\r" in tty.getvalue()
