"""MSP-Podcast, CREMA-D, RAVDESS and EmoDB adapters on tiny corpora in the releases' exact
layouts (tests/corpus_fixtures_ser.py): class counts, speakers, splits and folds against the
fixture tables; broken files dropped and named in the report; impossible values raise with
the file named."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from corpus_fixtures_ser import (
    CREMAD_ACTORS,
    CREMAD_EMPTY,
    CREMAD_FILES,
    EMODB_FILES,
    EMODB_SPEAKERS,
    MSP_ROWS,
    MSP_TEXTS,
    RAVDESS_FILES,
    make_cremad,
    make_emodb,
    make_msp_podcast,
    make_ravdess,
    msp_classes,
)
from mer.common import schemes
from mer.common.datasets import DATASETS
from mer.common.datasets.prepare import prepare
from mer.common.errors import CorpusError
from mer.train.protocols import make_folds, protocol_spec


def run(dataset: str, root: Path, tmp: Path):
    out = tmp / "out" / "manifest.parquet"
    m, _ = prepare(dataset, root, out=out, quiet=True, workers=2)
    rep = json.loads(out.with_name("manifest.report.json").read_text())
    return m.df.set_index("id"), rep, m


def dropped(rep: dict) -> dict[str, str]:
    return {d["id"]: d["reason"] for d in rep["dropped"]}


def notes(rep: dict) -> dict[str, str]:
    return {n["reason"]: n["detail"] for n in rep["notes"]}


def folds_of(dataset: str, df, protocol: str | None = None):
    """The default scheme's labelled rows and the folds the protocol builds on them."""
    sch = schemes.scheme(dataset)
    lab, classes = sch.apply(df.reset_index())
    keep = lab.notna().to_numpy()
    sub = df.reset_index()[keep].reset_index(drop=True)
    y = np.array([classes.index(v) for v in lab[keep]])
    return sub, make_folds(protocol_spec(dataset, protocol, sub), sub, y, seed=0)


def test_registry_lists_the_new_adapters():
    assert {"msp-podcast", "crema-d", "ravdess", "emodb"} <= set(DATASETS.names())
    assert DATASETS.get("crema-d").text_kind == "scripted" and DATASETS.get("msp-podcast").text_kind == "transcript"


# --- MSP-Podcast --------------------------------------------------------------------------


def test_msp_podcast_happy_path(tmp_path):
    df, rep, m = run("msp-podcast", make_msp_podcast(tmp_path), tmp_path)
    assert sorted(df.index) == sorted(r[0][:-4] for r in MSP_ROWS)
    assert rep["dropped"] == []
    # Class counts and splits, against the fixture's table.
    assert dict(Counter(df["emotion"].dropna())) == msp_classes()
    assert dict(Counter(df["split"])) == dict(Counter(r[7] for r in MSP_ROWS))
    for split in ("Train", "Development", "Test1"):
        assert dict(Counter(df.loc[df["split"] == split, "emotion"])) == msp_classes(split)
    r = df.loc["MSP-PODCAST_0002_0001"]
    name, emo, a, v, d, spk, gen, split = MSP_ROWS[0]
    assert (r.emotion, r.speaker, r.gender, r.split) == (emo, spk, gen[0], split)
    assert (r.activation, r.valence, r.dominance) == pytest.approx((a, v, d), abs=0.051)
    assert r.text == MSP_TEXTS["MSP-PODCAST_0002_0001"] and Path(r.audio).parent.name == "Audios"
    # "Unknown" speakers are null, counted once; known speakers are the release's ids.
    n_unknown = sum(r[5] == "Unknown" for r in MSP_ROWS)
    assert df["speaker"].isna().sum() == n_unknown
    assert notes(rep)["speaker Unknown (kept, no speaker id)"] == f"{n_unknown} rows"
    assert set(df["speaker"].dropna()) == {r[5] for r in MSP_ROWS} - {"Unknown"}
    # The unlabelled test set is kept for prediction, counted, and left out by every scheme.
    test2 = df[df["split"] == "Test2"]
    assert len(test2) == 3 and test2["emotion"].isna().all() and test2["valence"].isna().all()
    assert notes(rep)["split without labels kept for prediction"] == "3 rows"
    for name in ("emo4", "emo8", "arousal"):
        lab, _ = schemes.scheme("msp-podcast", name).apply(df)
        assert lab[df["split"] == "Test2"].isna().all()
    assert m.meta["text_kind"] == "transcript"


def test_msp_podcast_official_protocol_is_the_release_partition(tmp_path):
    df, _, _ = run("msp-podcast", make_msp_podcast(tmp_path), tmp_path)
    sub, (fold,) = folds_of("msp-podcast", df)
    sp = sub["split"].to_numpy()
    assert set(sp[fold.train]) == {"Train"} and set(sp[fold.valid]) == {"Development"} and set(sp[fold.test]) == {"Test1"}
    # emo4 keeps A S H N only: U C O X rows of Train are out.
    assert len(fold.train) == sum(msp_classes("Train")[c] for c in "ASHN")
    assert len(fold.test) == sum(msp_classes("Test1").values())


def test_msp_podcast_older_release_spelling_and_partitions_file(tmp_path):
    df, rep, _ = run("msp-podcast", make_msp_podcast(tmp_path, old_release=True), tmp_path)
    assert dict(Counter(df["split"])) == dict(Counter(r[7] for r in MSP_ROWS))
    assert rep["dropped"] == []


def test_msp_podcast_broken_inputs_are_dropped_and_named(tmp_path):
    root = make_msp_podcast(tmp_path, overrides={
        "MSP-PODCAST_0002_0001": {"wav": "missing"},
        "MSP-PODCAST_0002_0002": {"wav": "truncated"},
        "MSP-PODCAST_0002_0003": {"wav": "empty"},
        "MSP-PODCAST_0002_0004": {"transcript": "missing"},
        "MSP-PODCAST_0002_0005": {"EmoClass": "Z"},
        # A training row without any label is not a blind test row: dropped.
        "MSP-PODCAST_0002_0006": {"EmoClass": "", "EmoAct": None, "EmoVal": None, "EmoDom": None},
    })
    (root / "Audios" / "MSP-PODCAST_9999_0001.wav").write_bytes((root / "Audios" / "MSP-PODCAST_0002_0007.wav").read_bytes())
    df, rep, _ = run("msp-podcast", root, tmp_path)
    got = dropped(rep)
    assert got == {
        "MSP-PODCAST_0002_0001": "missing audio",
        "MSP-PODCAST_0002_0002": "unreadable audio",
        "MSP-PODCAST_0002_0003": "empty file",
        "MSP-PODCAST_0002_0004": "empty transcript",
        "MSP-PODCAST_0002_0005": "unknown label",
        "MSP-PODCAST_0002_0006": "no label",
    }, got
    assert all(d["file"] for d in rep["dropped"])
    assert rep["counts"] == {"found": len(MSP_ROWS), "kept": len(MSP_ROWS) - 6, "dropped": 6, "repaired": 0}
    assert any(n["id"] == "MSP-PODCAST_9999_0001" and "not named" in n["reason"] for n in rep["notes"])
    assert len(df) == len(MSP_ROWS) - 6


@pytest.mark.parametrize("col,value", [("EmoAct", 9.0), ("EmoVal", 0.5), ("EmoDom", "high")])
def test_msp_podcast_impossible_attribute_raises_with_id(tmp_path, col, value):
    root = make_msp_podcast(tmp_path, overrides={"MSP-PODCAST_0003_0002": {col: value}})
    with pytest.raises(CorpusError) as e:
        run("msp-podcast", root, tmp_path)
    assert "MSP-PODCAST_0003_0002" in str(e.value) and "labels_consensus.csv" in str(e.value) and col in str(e.value)


# --- CREMA-D ------------------------------------------------------------------------------


def test_cremad_happy_path_and_the_empty_release_file(tmp_path):
    df, rep, m = run("crema-d", make_cremad(tmp_path), tmp_path)
    assert sorted(df.index) == sorted(CREMAD_FILES)
    assert dict(Counter(df["emotion"])) == dict(Counter(f.split("_")[2] for f in CREMAD_FILES))
    assert set(df["speaker"]) == set(CREMAD_ACTORS)
    for actor, (_, sex) in CREMAD_ACTORS.items():
        assert set(df.loc[df["speaker"] == actor, "gender"]) == {sex[0]}
    assert df.loc["1001_IEO_ANG_HI", "text"] == "It's eleven o'clock"
    # The release's 0-byte file is dropped and named.
    assert dropped(rep) == {CREMAD_EMPTY: "empty file"}
    assert next(d for d in rep["dropped"] if d["id"] == CREMAD_EMPTY)["file"].endswith(f"AudioWAV/{CREMAD_EMPTY}.wav")
    assert m.meta["text_kind"] == "scripted"
    assert "texts are the corpus's scripted sentences (from the sentence code)" in notes(rep)


def test_cremad_broken_and_odd_files(tmp_path):
    stem = CREMAD_FILES[3]
    root = make_cremad(tmp_path, overrides={stem: {"wav": "truncated"}},
                       extra=("1001_XYZ_ANG_XX", "1001_DFA_BOR_XX", "notes"))
    df, rep, _ = run("crema-d", root, tmp_path)
    assert dropped(rep) == {stem: "unreadable audio", "1001_DFA_BOR_XX": "unknown label", CREMAD_EMPTY: "empty file"}
    n = {x["id"]: x["reason"] for x in rep["notes"]}
    assert n["1001_XYZ_ANG_XX"] == "unknown sentence code: ignored"
    assert n["notes"].startswith("file name not <actor>_<sentence>_<emotion>_<level>.wav")
    assert len(df) == len(CREMAD_FILES) - 1


def test_cremad_speaker_folds_keep_actors_apart(tmp_path):
    df, _, _ = run("crema-d", make_cremad(tmp_path), tmp_path)
    sub, folds = folds_of("crema-d", df)
    assert len(folds) == 5
    spk = sub["speaker"].to_numpy()
    tested = []
    for f in folds:
        assert not (set(spk[f.test]) & (set(spk[f.train]) | set(spk[f.valid])))
        tested += sorted(set(spk[f.test]))
    assert sorted(tested) == sorted(set(spk))   # every actor is tested exactly once


# --- RAVDESS ------------------------------------------------------------------------------


def test_ravdess_happy_path(tmp_path):
    df, rep, m = run("ravdess", make_ravdess(tmp_path, extra={"03-02-05-01-01-01-02": "02", "readme": "01"}), tmp_path)
    assert sorted(df.index) == sorted(RAVDESS_FILES)
    assert rep["dropped"] == []
    assert dict(Counter(df["emotion"])) == {e: len(RAVDESS_FILES) // 8 for e in
                                            ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")}
    assert sorted(set(df["speaker"])) == [f"Actor_{a}" for a in ("01", "02", "03", "04", "05", "06")]
    assert set(df.loc[df["speaker"] == "Actor_01", "gender"]) == {"M"} and set(df.loc[df["speaker"] == "Actor_02", "gender"]) == {"F"}
    r = df.loc["03-01-01-01-02-01-01"]
    assert (r.emotion, r.text) == ("neutral", "Dogs are sitting by the door")
    n = {x["id"]: x["reason"] for x in rep["notes"]}
    assert n["03-02-05-01-01-01-02"].startswith("song") and n["readme"].startswith("file name not")
    assert m.meta["text_kind"] == "scripted"
    sub, folds = folds_of("ravdess", df)
    assert len(folds) == 6 and all(len(set(sub["speaker"].to_numpy()[f.test])) == 1 for f in folds)


@pytest.mark.parametrize("stem,folder,words", [
    ("03-01-05-01-01-01-03", "02", "disagrees with its folder"),
    ("03-01-01-02-01-01-02", "02", "neutral at strong intensity"),
])
def test_ravdess_impossible_names_raise_with_file(tmp_path, stem, folder, words):
    with pytest.raises(CorpusError) as e:
        run("ravdess", make_ravdess(tmp_path, extra={stem: folder}), tmp_path)
    assert stem in str(e.value) and words in str(e.value)


def test_ravdess_broken_files_dropped(tmp_path):
    root = make_ravdess(tmp_path, overrides={RAVDESS_FILES[0]: {"wav": "empty"}, RAVDESS_FILES[9]: {"wav": "truncated"}},
                        extra={"03-01-09-01-01-01-01": "01"})
    df, rep, _ = run("ravdess", root, tmp_path)
    assert dropped(rep) == {RAVDESS_FILES[0]: "empty file", RAVDESS_FILES[9]: "unreadable audio",
                            "03-01-09-01-01-01-01": "unknown label"}


# --- EmoDB --------------------------------------------------------------------------------


def test_emodb_happy_path_and_leave_one_speaker_out(tmp_path):
    df, rep, m = run("emodb", make_emodb(tmp_path, extra=("03a99Wa", "x")), tmp_path)
    assert sorted(df.index) == sorted(EMODB_FILES) and rep["dropped"] == []
    assert dict(Counter(df["emotion"])) == {c: len(EMODB_SPEAKERS) for c in "WLEAFTN"}
    assert dict(Counter(df["speaker"])) == {s: 7 for s in EMODB_SPEAKERS}
    assert dict(zip(df["speaker"], df["gender"])) == {"03": "M", "08": "F", "09": "F", "10": "M"}
    assert df.loc["03a01Wa", "text"] == "Der Lappen liegt auf dem Eisschrank."
    n = {x["id"]: x["reason"] for x in rep["notes"]}
    assert n["03a99Wa"] == "unknown text code: ignored" and n["x"].startswith("file name not")
    assert m.meta["text_kind"] == "scripted"
    sub, folds = folds_of("emodb", df)
    assert [f.name for f in folds] == list(EMODB_SPEAKERS)
    for f in folds:
        assert set(sub["speaker"].to_numpy()[f.test]) == {f.name}
        assert f.name not in set(sub["speaker"].to_numpy()[f.train])


def test_emodb_broken_files_dropped(tmp_path):
    root = make_emodb(tmp_path, overrides={EMODB_FILES[1]: {"wav": "truncated"}}, extra=("03a01Xa",))
    df, rep, _ = run("emodb", root, tmp_path)
    assert dropped(rep) == {EMODB_FILES[1]: "unreadable audio", "03a01Xa": "unknown label"}
