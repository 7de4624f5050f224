"""Issue 12's repros, one test each: paths stay inside, test stores verify, shared helpers.

(The cache/store repros, which need extraction, are in tests/test_cache_trust.py.)
"""
from __future__ import annotations

import numpy as np
import pytest

from mer.common.errors import UsageError


# ------------------------------------------------------------------ repro 4: --run-id confined
@pytest.mark.parametrize("bad", ["../../x", "..", "/tmp/elsewhere", "a/b", ".hidden", ""])
def test_run_id_must_be_a_name(bad, tmp_path, monkeypatch):
    from mer.train.trainer import run_train

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    with pytest.raises(UsageError, match="--run-id"):
        # refused before any data is read: the dataset need not even exist
        run_train("iemocap", "bert", "concat", cache=tmp_path / "cache", out=out, run_id=bad, quiet=True)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_run_id_refused_by_the_cli(tmp_path):
    from mer.common.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "-d", "iemocap", "-f", "bert", "--cache", str(tmp_path), "--out", str(tmp_path / "runs"),
              "--run-id", "../../x", "-q"])
    assert e.value.code == 2
    assert not (tmp_path / "runs").exists()


def test_write_run_refuses_a_path_as_run_id(tmp_path):
    from mer.train.rundir import write_run

    with pytest.raises(UsageError, match="--run-id"):
        write_run(tmp_path, "../x", dataset="d", manifest=None, scheme=None, protocol={"name": "p"}, seeds=[0],
                  fusion="concat", model_cfg=None, train_cfg=None, requests=[], sources=[], fcache=None, data=None,
                  results=[], report=None, seconds=0)
    assert not (tmp_path.parent / "x").exists()


# ------------------------------------------------------ repro 6: test helpers' stores verify
def test_synthetic_stores_pass_verify_store(tmp_path):
    import numpy as np

    from mer.common import manifest as mf
    from mer.extract.cache import verify_store
    from mer.train.synthetic_features import synthetic, write_stores

    man, sets = synthetic(60, seed=3, text_dim=4, audio_dim=3)
    sets["mfcc"].valid[[1, 7]] = False  # skipped rows must be listed in the report
    paths = write_stores(man, sets, tmp_path)
    m = mf.load("iemocap", tmp_path)
    for feat, p in paths.items():
        assert verify_store(p, manifest=m) == [], feat
    assert np.count_nonzero(~sets["mfcc"].valid) == 2


def test_train_data_holds_no_test_helpers():
    import mer.train.data as d

    assert not hasattr(d, "synthetic") and not hasattr(d, "write_stores")


# ------------------------------------------------------------- one config coercion, one device
def test_one_coercion_for_extractor_and_fusion_configs():
    from mer.extract.base import EXTRACTORS, make_config
    from mer.train.fusion import FUSIONS, model_config

    cfg = make_config(EXTRACTORS.get("mfcc"), {"n_mfcc": "13", "deltas": "true"})
    assert cfg.n_mfcc == 13 and cfg.deltas is True
    with pytest.raises(UsageError, match="--mfcc.n_mfcc"):
        make_config(EXTRACTORS.get("mfcc"), {"n_mfcc": "many"})
    with pytest.raises(UsageError, match="unknown config option nope"):
        make_config(EXTRACTORS.get("mfcc"), {"nope": "1"})
    att = model_config(FUSIONS.get("attention"), {"cnn_channels": "8:16", "n": "32", "other_fusions_field": "x"})
    assert att.cnn_channels == (8, 16) and att.n == 32
    with pytest.raises(UsageError, match="--set n"):
        model_config(FUSIONS.get("attention"), {"n": "1.5"})


def test_one_device_choice():
    from mer.common import device
    from mer.extract import engine, neural, torchutil
    from mer.train import predict, run, trainer

    assert neural.choose is device.choose
    # no second name for the one helper, on either side
    assert not hasattr(torchutil, "pick_device") and not hasattr(engine, "resolve_device")
    assert not any(hasattr(m, n) for m in (trainer, run, predict) for n in ("pick_device", "resolve_device"))
    assert device.choose("cpu") == "cpu"
    with pytest.raises(UsageError, match="choose auto, cpu, cuda"):
        device.choose("tpu")
    if not device.cuda_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            device.choose("cuda")


# ------------------------------------------------- repro 5: every bad corpus item is reported
def _csv_corpus(root, names):
    import soundfile as sf

    root.mkdir(parents=True, exist_ok=True)
    t = np.arange(16000) / 16000
    lines = ["path,text,label"]
    for i, name in enumerate(names):
        p = root / name
        if not p.exists() and not p.is_symlink():
            sf.write(p, (0.3 * np.sin(2 * np.pi * (200 + 20 * i) * t)).astype(np.float32), 16000)
        lines.append(f"{name},utterance {i},neu")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def _report(cache):
    import json

    return json.loads((cache / "csv" / "manifest.report.json").read_text())


def test_prepare_reports_a_directory_and_a_symlink_by_the_rows_own_path(tmp_path):
    import os

    from mer.common.datasets.prepare import prepare

    root = tmp_path / "corpus"
    root.mkdir()
    (root / "x.wav").mkdir()                      # a directory where a file should be
    os.symlink("/etc/passwd", root / "y.wav")     # a symlink to something that is not audio
    _csv_corpus(root, ["good.wav", "x.wav", "y.wav"])
    m, _ = prepare("csv", root, cache=tmp_path / "cache", quiet=True)  # was: IsADirectoryError, no report
    assert m.df["id"].tolist() == ["good"]
    rep = _report(tmp_path / "cache")
    got = {d["id"]: d for d in rep["dropped"]}
    assert got["x"]["reason"] == "not a file" and "directory" in got["x"]["detail"]
    assert got["y"]["file"].startswith(str(root / "y.wav")) and "metadata.csv:4" in got["y"]["file"]
    assert "passwd" not in got["y"]["file"]
    notes = {(n["id"], n["reason"]) for n in rep["notes"]}
    assert ("y", "symlink") in notes and ("y", "audio outside the corpus root") in notes


def test_prepare_writes_its_report_when_nothing_is_usable(tmp_path):
    from mer.common.datasets.prepare import prepare

    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.wav").mkdir()
    (root / "b.wav").write_bytes(b"not audio at all")
    _csv_corpus(root, ["a.wav", "b.wav"])
    from mer.common.errors import MerError

    with pytest.raises(MerError, match="was dropped; see .*manifest.report.txt"):
        prepare("csv", root, cache=tmp_path / "cache", quiet=True)
    rep = _report(tmp_path / "cache")
    assert {d["id"] for d in rep["dropped"]} == {"a", "b"} and rep["counts"]["kept"] == 0


def test_prepare_reports_unreadable_permissions(tmp_path, monkeypatch):
    """Read permission is checked with os.access (simulated: the suite may run as root)."""
    import os

    from mer.common.datasets import prepare as P

    root = _csv_corpus(tmp_path / "corpus", ["a.wav", "b.wav"])
    real = os.access
    monkeypatch.setattr(P.os, "access", lambda p, mode: False if str(p).endswith("b.wav") else real(p, mode))
    m, _ = P.prepare("csv", root, cache=tmp_path / "cache", quiet=True)
    assert m.df["id"].tolist() == ["a"]
    got = {d["id"]: (d["reason"], d["detail"]) for d in _report(tmp_path / "cache")["dropped"]}
    assert got == {"b": ("unreadable file", "no read permission")}
