"""`mer prepare`, `mer extract` and `mer train` end to end on each new corpus's fixture
(MSP-Podcast, CREMA-D, RAVDESS, EmoDB): the adapter's manifest, its default scheme and its
speaker-independent (or official) protocol work through the whole pipeline. Kept small:
MFCC + MiniLM on 0.4 s clips, 2 epochs."""
from __future__ import annotations

import json

import pytest
import yaml
from click.testing import CliRunner

from corpus_fixtures_ser import make_cremad, make_emodb, make_msp_podcast, make_ravdess

# dataset -> (fixture builder, folds of the default protocol on the fixture, classes)
CASES = {
    "msp-podcast": (make_msp_podcast, ["official"], ["ang", "sad", "hap", "neu"]),
    "crema-d": (make_cremad, [f"fold{i}" for i in range(1, 6)], ["ang", "dis", "fea", "hap", "neu", "sad"]),
    "ravdess": (make_ravdess, [f"fold{i}" for i in range(1, 7)], ["neu", "cal", "hap", "sad", "ang", "fea", "dis", "sur"]),
    "emodb": (make_emodb, ["03", "08", "09", "10"], ["ang", "bor", "dis", "fea", "hap", "sad", "neu"]),
}


def _mer(*args):
    from mer.common.cli import cli

    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def test_prepare_extract_train_each_new_corpus(tmp_path):
    pytest.importorskip("mer.extract.engine")
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    for name, (make, folds, classes) in CASES.items():
        root = make(tmp_path / "corpora")
        _mer("prepare", "-d", name, "--root", root, "--cache", cache, "--workers", "2")
        _mer("extract", "-d", name, "-f", "mfcc,bert", "--cache", cache, "--workers", "0", "-q")
        _mer("train", "-d", name, "-f", "bert,mfcc", "--fusion", "concat", "--cache", cache, "--out", runs,
             "--run-id", name, "--epochs", "2", "--no-plots", "-q")
        m = json.loads((runs / name / "metrics.json").read_text())
        assert [f["fold"] for f in m["folds"]] == folds, name
        assert m["classes"] == classes, name
        assert 0.0 <= m["mean"]["ua"] <= 1.0
        # The adapters' text_kind (scripted sentences) is its own meta key: "text_source"
        # in a run's config means ASR transcripts, and must not appear for corpus text.
        cfg = yaml.safe_load((runs / name / "config.yaml").read_text())
        assert "text_source" not in cfg, name
