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


def test_the_audit_flags_a_protocol_that_leaks_a_speaker():
    """A speaker recorded in two sessions: LOSO by session then tests on a speaker it trained on."""
    import numpy as np
    import pandas as pd

    from mer.train.audit import check_folds
    from mer.train.protocols import make_folds

    n = 120
    sess = np.repeat(["Ses01", "Ses02", "Ses03"], n // 3)
    spk = np.array([f"{s}F" for s in sess], dtype=object)
    spk[:5] = "Ses02F"             # five Ses01 utterances carry a Ses02 speaker
    df = pd.DataFrame({"id": [f"u{i}" for i in range(n)], "session": sess, "speaker": spk})
    y = np.arange(n) % 4
    spec = {"name": "loso", "kind": "group_folds", "group": "session"}
    folds = {0: make_folds(spec, df, y, seed=0)}
    parts, problems = check_folds(spec, df, y, ["a", "b", "c", "d"], folds)
    assert any("fold Ses01: speaker Ses02F in test and in training" in p for p in problems), problems
    assert any("fold Ses02: speaker Ses02F in test and in training" in p for p in problems), problems
    assert not any("Ses03" in p for p in problems)
    ses3 = next(p for p in parts if p["fold"] == "Ses03")
    assert ses3["test_speakers_disjoint"] and ses3["test_sessions_disjoint"]
    assert sum(ses3["test"].values()) == 40 and set(ses3["valid"]) == {"a", "b", "c", "d"}
    # a clean protocol passes
    df["speaker"] = [f"{s}F" for s in sess]
    assert check_folds(spec, df, y, ["a", "b", "c", "d"], folds)[1] == []


def test_every_run_carries_the_audit_and_mer_runs_shows_it(tmp_path, capsys):
    import json

    from mer.train.rundir import runs_table
    from mer.train.synthetic_features import synthetic
    from mer.train.trainer import TrainConfig, run_train

    man, sets = synthetic(160, seed=3, text_dim=6, audio_dim=5, noise=0.5)
    (res,) = run_train("iemocap", "mfcc", "concat", protocol="loso", manifest=man, feature_sets=sets, out=tmp_path,
                       config=TrainConfig(epochs=3), device="cpu", plots=False, quiet=False)
    a = json.loads((res.path / "metrics.json").read_text())["audit"]
    assert a["ok"], a["problems"]
    assert a["metrics_recomputed_max_diff"] < 1e-9 and len(a["label_map_hash"]) == 16
    assert "session" in a["disjoint_columns"] and len(a["folds"]) == 5
    assert all(f["valid_from"] == "utterance" for f in a["folds"])
    assert "of 160 labelled utterances used" in capsys.readouterr().err
    assert list(runs_table([tmp_path])["audit"]) == ["ok"]
    from mer.common.cli import main

    capsys.readouterr()
    main(["runs", str(tmp_path)])
    out = capsys.readouterr()
    assert "audit" in out.out and "mean ± std over folds" in out.err   # which UA (not pooled)
    # a tampered metric is caught by the recomputation
    m = json.loads((res.path / "metrics.json").read_text())
    from mer.train.audit import recheck_metrics

    m["folds"][0]["ua"] += 0.1
    worst, probs = recheck_metrics(res.path / "predictions.csv", m["folds"], m["classes"], False)
    assert probs and "recomputed from predictions.csv" in probs[0]


def test_after_the_demo_other_commands_say_where_its_cache_is(tmp_path, monkeypatch, capsys):
    """`mer demo` keeps its own cache root (<cache>/demo); runs/train/cache ls/cache verify
    looked in the plain cache and found nothing without saying why; train suggested --root."""
    from mer.common.cli import main

    root = tmp_path / "cache"
    (root / "demo" / "runs").mkdir(parents=True)
    (root / "demo" / "iemocap").mkdir()
    monkeypatch.setenv("MER_CACHE", str(root))
    monkeypatch.chdir(tmp_path)
    for args in (["cache", "ls"], ["cache", "verify"]):
        main(args)
        assert f"add --cache {root / 'demo'}" in capsys.readouterr().out
    for args, want in ((["train", "-d", "iemocap", "-f", "mfcc"], f"add --cache {root / 'demo'}"),
                       (["runs"], f"mer runs {root / 'demo' / 'runs'}")):
        with pytest.raises(SystemExit):
            main(args)
        err = capsys.readouterr().err
        assert want in err, err
        assert "pass --root to this command" not in err


def test_a_misspelt_feature_lists_the_stores_and_a_valid_command(tmp_path, capsys):
    from mer.common.cli import main
    from mer.extract.engine import run_extract

    cache = tmp_path / "cache"
    write_manifest(cache, make_corpus(tmp_path / "audio", n=6))
    run_extract("iemocap", ["mfcc"], cache=cache, **KW)
    with pytest.raises(SystemExit):
        main(["train", "-d", "iemocap", "-f", "mfc", "--cache", str(cache)])
    err = capsys.readouterr().err
    assert "no feature 'mfc'" in err and "stores for 'iemocap': mfcc" in err, err
    assert f"`mer train --dataset iemocap --features mfcc --cache {cache}`" in err
    assert "mer extract --dataset iemocap --features mfc" not in err


def test_ctrl_c_during_extract_says_in_one_line_that_a_rerun_resumes(tmp_path, monkeypatch, capsys):
    from mer.common.cli import main
    from mer.extract import engine

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "run_extract", interrupted)
    with pytest.raises(SystemExit) as e:
        main(["extract", "-d", "iemocap", "-f", "mfcc", "--cache", str(tmp_path)])
    assert e.value.code == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "run the same `mer extract` command again to resume" in err[0], err


def test_audio_changed_after_prepare_is_refused(tmp_path):
    """Audio edited after `mer prepare` was extracted silently under the old hash."""
    import os

    import soundfile as sf
    from test_extract import speechlike

    from mer.extract.engine import run_extract

    cache = tmp_path / "cache"
    rows = make_corpus(tmp_path / "audio", n=4)
    write_manifest(cache, rows)
    run_extract("iemocap", ["mfcc"], cache=cache, **KW)
    os.utime(rows[1]["audio"], ns=(1, 1))          # touched, same bytes: rehashed, accepted
    run_extract("iemocap", ["mfcc"], cache=cache, **KW)
    sf.write(rows[2]["audio"], speechlike(0.6, 77), 16000, subtype="PCM_16")   # new content
    with pytest.raises(MerError, match=r"audio changed since `mer prepare`: .*u002\.wav \(utterance Ses01F_impro01_F002\).*1 such"):
        run_extract("iemocap", ["mfcc"], cache=cache, **KW)


def test_auto_batch_gives_a_small_fold_enough_steps_and_is_recorded(tmp_path):
    """Issue 21: with a fixed batch of 64, a ~220-row fold got 4 optimizer steps an epoch and
    `mer train --fusion concat` lost to a logistic regression on its own pooled features
    (bench/bench_baseline_lr.py). --batch-size 0 (the default) sizes batches per fold."""
    import json

    from mer.train.config import AUTO_BATCH, AUTO_STEPS, TrainConfig
    from mer.train.synthetic_features import synthetic
    from mer.train.trainer import run_train

    tc = TrainConfig()
    assert tc.batch_size == 0
    assert tc.batch_for(220) == AUTO_BATCH[0] and tc.batch_for(100_000) == AUTO_BATCH[1]
    assert tc.batch_for(1000) == 1000 // AUTO_STEPS
    assert TrainConfig(batch_size=64).batch_for(220) == 64          # an explicit size is kept
    with pytest.raises(Exception, match="--batch-size -1"):
        TrainConfig(batch_size=-1)
    man, sets = synthetic(160, seed=3, text_dim=6, audio_dim=5, noise=0.5)
    (res,) = run_train("iemocap", "mfcc", "concat", protocol="loso", manifest=man, feature_sets=sets, out=tmp_path,
                       config=TrainConfig(epochs=2), device="cpu", plots=False, quiet=True)
    m = json.loads((res.path / "metrics.json").read_text())
    hist = json.loads((res.path / "history.json").read_text())
    for f, h in zip(m["folds"], hist):
        assert f["batch_size"] == AUTO_BATCH[0]                     # ~100 training rows a fold
        # the batches really were that size (the last one of an epoch may be short)
        assert h["epochs"][0]["effective_batch"] <= AUTO_BATCH[0]
