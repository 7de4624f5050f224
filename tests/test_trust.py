"""Issue 12's repros, one test each: paths stay inside, test stores verify, shared helpers.

(The cache/store repros, which need extraction, are in tests/test_cache_trust.py.)
"""
from __future__ import annotations

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
    from mer.extract import torchutil
    from mer.train import trainer

    assert torchutil.pick_device is device.choose and trainer.pick_device is device.choose
    assert device.choose("cpu") == "cpu"
    with pytest.raises(UsageError, match="choose auto, cpu, cuda"):
        device.choose("tpu")
    if not device.cuda_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            device.choose("cuda")
