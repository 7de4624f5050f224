"""The synthetic corpus generator (mer.common.synth) and the corpus step of `mer demo`.

The corpora are read back by the real adapters, and their labels must be learnable from
each modality alone and better from both (the reason the generator puts emotion in one
modality only for some utterances).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("espeakng_loader")

from mer.common import schemes  # noqa: E402
from mer.common.datasets import DATASETS  # noqa: E402
from mer.common.datasets.prepare import prepare  # noqa: E402
from mer.common.errors import MerError  # noqa: E402
from mer.common.synth import INFO_FILE, generate, read_info  # noqa: E402

PER_CLASS = 8  # 5 sessions x (4 classes x 8 + 3 extra) = 175 utterances


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def iemocap(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn") / "IEMOCAP_full_release"
    generate(root, layout="iemocap", per_class=PER_CLASS, sessions=5, seed=0)
    return root


@pytest.fixture(scope="module")
def prepared(iemocap, tmp_path_factory):
    out = tmp_path_factory.mktemp("man") / "m.parquet"
    m, report = prepare("iemocap", iemocap, out=out, quiet=True)
    return m, report


# ----------------------------------------------------------------------------- determinism
def test_same_seed_same_bytes_whatever_the_workers(tmp_path):
    a = generate(tmp_path / "a", per_class=2, sessions=2, seed=7, workers=1, dialog_wavs=True)
    b = generate(tmp_path / "b", per_class=2, sessions=2, seed=7, workers=2, dialog_wavs=True)
    c = generate(tmp_path / "c", per_class=2, sessions=2, seed=8, workers=2, dialog_wavs=True)
    da, db, dc = tree_digest(a), tree_digest(b), tree_digest(c)
    assert len(da) > 30 and any(k.endswith(".wav") for k in da)
    assert da == db
    # Another seed changes the audio, not only the names.
    wavs = [k for k in da if k.endswith(".wav") and k in dc]
    assert wavs and any(da[k] != dc[k] for k in wavs)


def test_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(MerError, match="not empty"):
        generate(tmp_path / "x", per_class=1, sessions=1)
    assert (tmp_path / "x" / "keep.txt").read_text() == "mine"


def test_config_is_validated_once_whichever_way_it_is_given(tmp_path):
    """SynthConfig checks itself in __post_init__: a bad value fails the same way as a
    keyword to generate(), as a config passed in, or built directly, before any file."""
    from mer.common.errors import UsageError
    from mer.common.synth import SynthConfig

    with pytest.raises(UsageError, match="lengths 'iemocap'"):
        SynthConfig(layout="meld", lengths="iemocap")
    with pytest.raises(UsageError, match="unknown synthetic layout 'nope'"):
        generate(tmp_path / "a", layout="nope")
    with pytest.raises(UsageError, match="at least 1"):
        generate(tmp_path / "b", SynthConfig(layout="csv"), per_class=0)
    with pytest.raises(UsageError, match=r"unknown synthetic corpus fields \['per_clas'\]"):
        generate(tmp_path / "c", per_clas=2)
    with pytest.raises(UsageError, match="layout='iemocap'"):
        generate(tmp_path / "d", "iemocap")  # the old positional layout names the keyword to use
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- IEMOCAP layout
def test_iemocap_layout_and_formats(iemocap):
    import soundfile as sf

    s1 = iemocap / "Session1"
    evals = sorted((s1 / "dialog" / "EmoEvaluation").glob("*.txt"))
    assert evals and (s1 / "dialog" / "EmoEvaluation" / "Categorical").is_dir()
    assert any((s1 / "dialog" / "EmoEvaluation" / "Categorical").glob("*_cat.txt"))
    lines = evals[0].read_text().splitlines()
    assert lines[0] == "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]" and lines[1] == ""
    first = lines[2].split("\t")
    assert len(first) == 4 and first[0].startswith("[") and first[3].startswith("[")
    assert lines[3].startswith("C-E1:\t") and any(l.startswith("A-E1:\tval ") for l in lines[3:9])
    trans = (s1 / "dialog" / "transcriptions" / evals[0].name).read_text().splitlines()
    assert trans[0].startswith(first[1] + " [") and "]: " in trans[0]
    all_trans = "\n".join(p.read_text() for p in iemocap.glob("Session*/dialog/transcriptions/*.txt"))
    assert "XX0 [" in all_trans  # unlabelled overlap segments
    assert "[LAUGHTER]" in all_trans or "[BREATHING]" in all_trans
    ids = [l.split("\t")[1] for p in iemocap.glob("Session*/dialog/EmoEvaluation/*.txt") for l in p.read_text().splitlines() if l.startswith("[")]
    assert any("_impro" in i for i in ids) and any("_script" in i for i in ids)
    wav = s1 / "sentences" / "wav" / first[1].rsplit("_", 1)[0] / f"{first[1]}.wav"
    info = sf.info(str(wav))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    start, end = (float(v) for v in first[0].strip("[]").split(" - "))
    assert end - start == pytest.approx(info.duration, abs=2e-4)  # spans match the audio
    codes = {l.split("\t")[2] for p in iemocap.glob("Session*/dialog/EmoEvaluation/*.txt") for l in p.read_text().splitlines() if l.startswith("[")}
    assert {"ang", "hap", "exc", "sad", "neu", "fru", "sur", "xxx"} <= codes


def test_adapter_reads_everything(iemocap, prepared):
    m, report = prepared
    info = read_info(iemocap)
    df = m.df
    assert len(df) == info["n_utterances"] == 5 * (4 * PER_CLASS + 3)
    assert report.dropped == [] and report.repaired == []
    # Overlap segments are noted, not dropped, and counted exactly.
    assert len(report.notes) == info["unlabelled_transcript_lines"] > 0
    assert sorted(df["session"].unique()) == [f"Ses0{i}" for i in range(1, 6)]
    assert df["speaker"].nunique() == 10 and set(df["gender"]) == {"F", "M"}
    lab, classes = schemes.scheme("iemocap").apply(df)
    counts = lab.value_counts()
    # fru/sur/xxx are excluded by emo4; ang/hap(+exc)/sad/neu balanced up to 2% label noise.
    assert lab.isna().sum() == df["emotion"].isin(["fru", "sur", "xxx"]).sum() == 15
    assert set(counts.index) == set(classes) and counts.min() >= 5 * PER_CLASS - 6
    # Dimensional labels follow the emotion.
    mean = df.groupby("emotion")[["valence", "activation"]].mean()
    assert mean.loc["ang", "activation"] > mean.loc["sad", "activation"] + 1
    assert mean.loc["hap", "valence"] > mean.loc["ang", "valence"] + 1


def test_intended_defects_are_the_only_drops(tmp_path):
    root = generate(tmp_path / "c", per_class=1, sessions=1, seed=1, defects=True, alignments=False)
    _, report = prepare("iemocap", root, out=tmp_path / "m.parquet", quiet=True)
    want = {(d["id"], d["reason"]) for d in read_info(root)["expected_drops"]}
    assert len(want) == 2
    assert {(i.id, i.reason) for i in report.dropped} == want


# ----------------------------------------------------------------------------- learnability
def _audio_features(paths) -> np.ndarray:
    import librosa

    from mer.common.audio import load

    rows = []
    for p in paths:
        x = load(p, 16000)
        mf = librosa.feature.mfcc(y=x, sr=16000, n_mfcc=20)
        rms = librosa.feature.rms(y=x)[0]
        f0 = librosa.yin(x, fmin=60, fmax=500, sr=16000)
        rows.append(np.concatenate([mf.mean(1), mf.std(1), [np.log(rms.mean() + 1e-8), np.log(rms.std() + 1e-8),
                                                           np.log(np.median(f0)), np.std(np.log(f0)), len(x) / 16000]]))
    return np.stack(rows)


def test_each_modality_learnable_and_fusion_beats_both(prepared):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m, _ = prepared
    lab, _ = schemes.scheme("iemocap").apply(m.df)
    keep = lab.notna().to_numpy()
    df = m.df[keep].reset_index(drop=True)
    y = lab[keep].to_numpy().astype(str)
    A = _audio_features(df["audio"])
    # Prosody is the emotion cue in the voice: loud angry, quiet sad (log RMS is column 40).
    rms = {c: A[y == c, 40].mean() for c in ("ang", "neu", "sad")}
    assert rms["ang"] > rms["neu"] > rms["sad"]
    texts = df["text"].to_numpy()
    hits = {"audio": [], "text": [], "fusion": []}
    for tr, te in LeaveOneGroupOut().split(A, y, df["session"]):  # unseen speakers in every fold
        ma = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=0.5)).fit(A[tr], y[tr])
        tv = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        mt = LogisticRegression(max_iter=3000, C=5.0).fit(tv.fit_transform(texts[tr]), y[tr])
        assert list(ma.classes_) == list(mt.classes_)
        pa, pt = ma.predict_proba(A[te]), mt.predict_proba(tv.transform(texts[te]))
        cl = ma.classes_
        hits["audio"] += list(cl[pa.argmax(1)] == y[te])
        hits["text"] += list(cl[pt.argmax(1)] == y[te])
        hits["fusion"] += list(cl[(pa + pt).argmax(1)] == y[te])  # averaged probabilities
    acc = {k: float(np.mean(v)) for k, v in hits.items()}
    print("leave-one-session-out accuracy (chance 0.25):", acc)
    assert acc["audio"] > 0.45
    assert acc["text"] > 0.55
    assert acc["fusion"] > max(acc["audio"], acc["text"]) + 0.03


# ----------------------------------------------------------------------------- MELD / CSV
def test_meld_files(tmp_path):
    import csv

    from mer.common.audio import load, probe

    root = generate(tmp_path / "MELD.Raw", layout="meld", per_class=3, seed=0, defects=True)
    info = read_info(root)
    rows = {}
    for split in ("train", "dev", "test"):
        with open(root / f"{split}_sent_emo.csv", encoding="utf-8", newline="") as f:
            r = list(csv.reader(f))
        assert r[0] == ["Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
                        "Season", "Episode", "StartTime", "EndTime"]
        assert {x[3] for x in r[1:]} == {"neutral", "joy", "surprise", "anger", "sadness", "disgust", "fear"}
        rows[split] = r[1:]
    text = " ".join(x[1] for v in rows.values() for x in v)
    assert "\u2019" in text or "\u201c" in text  # curly quotes
    assert info["text_traps"]["curly"] > 0
    row = rows["dev"][0]
    mp4 = root / "dev_splits_complete" / f"dia{row[5]}_utt{row[6]}.mp4"
    pi = probe(mp4)
    assert (pi.sample_rate, pi.channels) == (48000, 2)
    assert load(mp4, 16000).std() > 1e-3
    # The intended traps: one CSV row without its file, one file without a CSV row.
    assert len(info["expected_drops"]) == 1 and len(info["unlisted_files"]) == 1
    assert (root / info["unlisted_files"][0]).exists()
    if "meld" not in DATASETS:
        pytest.skip("the MELD adapter is not built yet")
    m, report = prepare("meld", root, out=tmp_path / "meld.parquet", quiet=True)
    assert len(m.df) == 7 * 3 - 1
    assert [(i.id, i.reason) for i in report.dropped] == [(d["id"], d["reason"]) for d in info["expected_drops"]]
    assert set(m.df["split"]) == {"train", "dev", "test"}
    # The mojibake rows are repaired (and reported), the curly quotes kept.
    assert not m.df["text"].str.contains("\u00e2\u20ac", regex=False).any()
    assert len(report.repaired) >= info["text_traps"]["mojibake"]


def test_csv_files(tmp_path):
    import pandas as pd

    root = generate(tmp_path / "lab", layout="csv", per_class=2, sessions=2, seed=0, defects=True)
    meta = pd.read_csv(root / "metadata.csv", keep_default_na=False)
    assert list(meta.columns) == ["path", "text", "label", "speaker", "split"]
    assert len(meta) == 4 * 2 * 2 and set(meta["label"]) == {"angry", "happy", "sad", "neutral"}
    assert meta.groupby("speaker")["split"].nunique().max() == 1  # speaker-disjoint splits
    info = read_info(root)
    if "csv" not in DATASETS:
        pytest.skip("the csv adapter is not built yet")
    m, report = prepare("csv", root, out=tmp_path / "c.parquet", quiet=True)
    assert len(m.df) == len(meta) - 2
    assert sorted(i.reason for i in report.dropped) == sorted(d["reason"] for d in info["expected_drops"])
    assert set(m.df["emotion"]) == {"angry", "happy", "sad", "neutral"}


# ----------------------------------------------------------------------------- demo, corpus step
def test_demo_corpus_is_reused_only_with_the_same_parameters(tmp_path):
    from mer.train.demo import ensure_corpus

    corpus = tmp_path / "demo-corpus"
    info, reused = ensure_corpus(corpus, per_class=1, seed=0, quiet=True)
    assert not reused and (corpus / INFO_FILE).exists()
    before = tree_digest(corpus)
    _, reused = ensure_corpus(corpus, per_class=1, seed=0, quiet=True)
    assert reused and tree_digest(corpus) == before
    info2, reused = ensure_corpus(corpus, per_class=1, seed=1, quiet=True)
    assert not reused and info2["params"]["seed"] == 1
    other = tmp_path / "not-mine"
    other.mkdir()
    (other / "thesis.tex").write_text("x")
    with pytest.raises(MerError, match="not a mer demo corpus"):
        ensure_corpus(other, per_class=1, seed=0, quiet=True)
    assert json.loads((corpus / INFO_FILE).read_text())["params"]["layout"] == "iemocap"
