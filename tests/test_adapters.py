"""Corpus adapters on tiny corpora in the releases' exact layouts (tests/corpus_fixtures.py).

Each adapter: the happy path (counts, ids, labels, speakers, splits, spans, durations), the
broken inputs its corpus is known for (dropped and counted in manifest.report.json), and the
impossible values that must fail at once with the utterance id in the message.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from corpus_fixtures import (
    CSV_LONG_SECONDS,
    CSV_ROWS,
    CSV_SECONDS,
    IEMOCAP_STRAY_ID,
    IEMOCAP_UNLABELLED,
    IEMOCAP_UTTS,
    MELD_ROWS,
    MELD_SECONDS,
    MMSA_ROWS,
    SLUE_ROWS,
    SLUE_SECONDS,
    iemocap_duration,
    make_csv_corpus,
    make_iemocap,
    make_meld,
    make_mmsa,
    make_slue,
    write_mp4,
)
from mer.common import manifest as mf
from mer.common.audio import file_hash, load, probe
from mer.common.datasets import DATASETS
from mer.common.datasets.meld import decode_bytes, fix_mojibake
from mer.common.datasets.prepare import prepare
from mer.common.errors import CorpusError, MerError


def run(dataset: str, root: Path, tmp: Path, **options):
    """prepare() into tmp/out; returns (manifest frame indexed by id, report JSON, manifest)."""
    out = tmp / "out" / "manifest.parquet"
    m, _ = prepare(dataset, root, out=out, quiet=True, workers=2, **options)
    rep_path = out.with_name("manifest.report.json")
    assert rep_path.exists(), "the report must be written next to the manifest as manifest.report.json"
    assert out.with_name("manifest.report.txt").exists()
    rep = json.loads(rep_path.read_text())
    return m.df.set_index("id"), rep, m


def dropped(rep: dict) -> dict[str, str]:
    """id -> reason of every dropped utterance."""
    return {d["id"]: d["reason"] for d in rep["dropped"]}


def test_registry_lists_every_adapter():
    assert {"iemocap", "meld", "mosi", "mosei", "slue-voxceleb", "csv"} <= set(DATASETS.names())


# --- IEMOCAP ----------------------------------------------------------------------------


def test_iemocap_happy_path(tmp_path):
    root = make_iemocap(tmp_path)
    df, rep, m = run("iemocap", root, tmp_path)
    assert sorted(df.index) == sorted(u[0] for u in IEMOCAP_UTTS)
    for uid, s, e, emo, (v, a, d), text in IEMOCAP_UTTS:
        r = df.loc[uid]
        assert r.emotion == emo and r.text == text
        assert (r.valence, r.activation, r.dominance) == (v, a, d)
        assert r.duration == pytest.approx(iemocap_duration(uid), abs=1e-3)
        # The wav is the utterance: no span inside it.
        assert math.isnan(r.start) and math.isnan(r.end)
    # Speaker = session + the letter before the number, not the dialog's F/M.
    assert df.loc["Ses01F_impro01_M000", "speaker"] == "Ses01_M"
    assert df.loc["Ses02M_script01_1_F000", "speaker"] == "Ses02_F"
    assert df.loc["Ses02M_script01_1_M011", "session"] == "Ses02"
    assert df.loc["Ses02M_script01_1_M011", "dialog"] == "Ses02M_script01_1"
    assert "[LAUGHTER]" in df.loc["Ses01F_impro01_M001", "text"]
    # Per-annotator files in EmoEvaluation/Categorical are not labels.
    assert IEMOCAP_STRAY_ID not in df.index
    assert df.loc["Ses01F_impro01_F000", "emotion"] == "neu"
    # Unlabelled transcript lines are counted as notes, not dropped.
    notes = [n for n in rep["notes"] if n["id"] in IEMOCAP_UNLABELLED]
    assert len(notes) == 1 and "without a label" in notes[0]["reason"]
    assert rep["dropped"] == [] and rep["counts"] == {"found": 7, "kept": 7, "dropped": 0, "repaired": 0}
    # Read-back equals what was written; audio hashes are the files' content hashes.
    back = mf.read(tmp_path / "out" / "manifest.parquet")
    assert back.hash == m.hash and len(back) == 7
    wav = root / "Session1/sentences/wav/Ses01F_impro01/Ses01F_impro01_F000.wav"
    assert back.df.set_index("id").loc["Ses01F_impro01_F000", "audio_hash"] == file_hash(wav)
    assert back.meta["report"] == "manifest.report.json"
    summary = (tmp_path / "out" / "manifest.summary.txt").read_text()
    assert "Ses01" in summary and "Ses02" in summary


def test_iemocap_broken_inputs_are_dropped_and_counted(tmp_path):
    root = make_iemocap(
        tmp_path,
        overrides={
            "Ses01F_impro01_F000": {"wav": "missing"},
            "Ses01F_impro01_M000": {"wav": "truncated"},
            "Ses01F_impro01_F001": {"text": ""},
            "Ses02M_script01_1_F000": {"emotion": "zzz"},
            "Ses02M_script01_1_M011": {"wav": "empty"},
        },
    )
    df, rep, _ = run("iemocap", root, tmp_path)
    assert sorted(df.index) == ["Ses01F_impro01_M001", "Ses02M_script01_1_F001"]
    assert dropped(rep) == {
        "Ses01F_impro01_F000": "missing audio",
        "Ses01F_impro01_M000": "unreadable audio",
        "Ses01F_impro01_F001": "empty transcript",
        "Ses02M_script01_1_F000": "unknown label",
        "Ses02M_script01_1_M011": "empty file",
    }
    assert rep["counts"] == {"found": 7, "kept": 2, "dropped": 5, "repaired": 0}
    assert rep["summary"]["dropped"]["missing audio"] == 1
    trunc = next(d for d in rep["dropped"] if d["id"] == "Ses01F_impro01_M000")
    assert "truncated" in trunc["detail"]


@pytest.mark.parametrize(
    "override, words",
    [
        ({"vad": (7.0, 2.5, 2.5)}, "valence 7.0"),
        ({"vad": (2.5, 0.5, 2.5)}, "activation 0.5"),
        ({"start": 9.0, "end": 8.0}, "impossible span"),
    ],
)
def test_iemocap_impossible_values_raise_with_id(tmp_path, override, words):
    root = make_iemocap(tmp_path, overrides={"Ses01F_impro01_M000": override})
    with pytest.raises(CorpusError) as e:
        run("iemocap", root, tmp_path)
    assert "Ses01F_impro01_M000" in str(e.value) and words in str(e.value)
    assert "Ses01F_impro01.txt" in str(e.value)  # names the file too


def test_mer_prepare_cli_on_iemocap(tmp_path):
    from click.testing import CliRunner

    from mer.common.cli import cli

    root = make_iemocap(tmp_path)
    cache = tmp_path / "cache"
    res = CliRunner().invoke(cli, ["prepare", "--dataset", "iemocap", "--root", str(root), "--cache", str(cache), "--workers", "2"])
    assert res.exit_code == 0, res.output
    d = cache / "iemocap"
    assert (d / "manifest.parquet").exists() and (d / "manifest.meta.json").exists()
    rep = json.loads((d / "manifest.report.json").read_text())
    assert rep["counts"]["kept"] == len(IEMOCAP_UTTS)
    assert len(pd.read_parquet(d / "manifest.parquet")) == len(IEMOCAP_UTTS)


def test_mer_prepare_cli_reports_corpus_error_in_one_line(tmp_path):
    import subprocess
    import sys

    root = make_iemocap(tmp_path, overrides={"Ses02M_script01_1_F001": {"vad": (3.0, 3.0, 9.0)}})
    mer = Path(sys.executable).with_name("mer")
    p = subprocess.run([str(mer), "prepare", "-d", "iemocap", "-r", str(root), "--cache", str(tmp_path / "c")],
                       capture_output=True, text=True)
    assert p.returncode == CorpusError.exit_code
    assert "Ses02M_script01_1_F001" in p.stderr and "dominance 9.0" in p.stderr
    assert "Traceback" not in p.stderr


# --- MELD -------------------------------------------------------------------------------


def test_mp4_fixture_decodes_with_mer_audio(tmp_path):
    p = write_mp4(tmp_path / "x.mp4", 0.5, sr=48000, freq=440.0)
    info = probe(p)
    assert info.sample_rate == 48000 and info.channels == 2
    assert info.duration == pytest.approx(0.5, abs=0.05)
    y = load(p, sample_rate=16000)
    assert len(y) / 16000 == pytest.approx(0.5, abs=0.05)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak = np.fft.rfftfreq(len(y), 1 / 16000)[spec.argmax()]
    assert abs(peak - 440.0) < 10, f"decoded audio peaks at {peak} Hz, expected the 440 Hz tone"


@pytest.mark.parametrize("faststart", [False, True])
def test_truncated_mp4_is_refused(tmp_path, faststart):
    from corpus_fixtures import truncate

    from mer.common.audio import AudioError

    p = write_mp4(tmp_path / "x.mp4", 2.0, faststart=faststart)
    assert probe(p).duration == pytest.approx(2.0, abs=0.05)
    truncate(p)
    # With the index in front the container still declares 2 s: probe must decode the end.
    with pytest.raises(AudioError) as e:
        probe(p)
    assert e.value.reason == "unreadable audio"


def test_meld_happy_path(tmp_path):
    root = make_meld(tmp_path)
    df, rep, _ = run("meld", root, tmp_path)
    expected = {f"{s}_dia{d}_utt{u}": (t, spk, emo, sen, s, d) for s, rows in MELD_ROWS.items() for t, spk, emo, sen, d, u in rows}
    assert sorted(df.index) == sorted(expected)
    # dia0_utt0 exists in all three splits: ids and dialogs stay distinct.
    assert {"train_dia0_utt0", "dev_dia0_utt0", "test_dia0_utt0"} <= set(df.index)
    for uid, (text, spk, emo, sen, split, d) in expected.items():
        r = df.loc[uid]
        assert (r.text, r.speaker, r.emotion, r.sentiment, r.split, r.dialog) == (text, spk, emo, sen, split, f"{split}_dia{d}")
        assert math.isnan(r.start) and math.isnan(r.end)
        assert r.duration == pytest.approx(MELD_SECONDS, abs=0.05)
    assert df.loc["test_dia0_utt0", "audio"].endswith("output_repeated_splits_test/dia0_utt0.mp4")
    # Curly apostrophes are faithful text: kept, not "repaired".
    assert "company’s" in df.loc["train_dia0_utt0", "text"]
    assert rep["repaired"] == [] and rep["dropped"] == []
    assert pd.Series(df["split"]).value_counts().to_dict() == {"train": 4, "dev": 2, "test": 2}


def test_meld_encoding_repairs_are_reported(tmp_path):
    root = make_meld(
        tmp_path,
        overrides={
            # Double-encoded: UTF-8 of ’ “ ” read as cp1252 and saved again as UTF-8.
            "train_dia0_utt2": {"text": "Thatâ€™s â€œgreatâ€\x9d"},
            # A line saved in Windows-1252: ’ is the single byte 0x92.
            "dev_dia0_utt1": {"encoding": "cp1252"},
        },
    )
    df, rep, _ = run("meld", root, tmp_path)
    assert df.loc["train_dia0_utt2", "text"] == "That’s “great”"
    assert df.loc["dev_dia0_utt1", "text"] == "No, it’s fine."
    rep_ids = sorted(r["id"] for r in rep["repaired"])
    assert rep_ids == ["dev_dia0_utt1", "train_dia0_utt2"]
    assert rep["summary"]["repaired"] == {"text encoding repaired": 2}
    moj = next(r for r in rep["repaired"] if r["id"] == "train_dia0_utt2")
    assert "â€™" in moj["detail"] and "->" in moj["detail"] and "That’s" in moj["detail"]
    assert rep["counts"]["repaired"] == 2 and rep["counts"]["kept"] == 8


def test_fix_mojibake_rule():
    assert fix_mojibake("companyâ€™s") == "company’s"
    assert fix_mojibake("cafÃ©") == "café"
    assert fix_mojibake("Ã¢â‚¬â„¢") == "’"  # encoded twice
    for ok in ("company’s", "café", "“quoted”", "plain ASCII", "Ã"):
        assert fix_mojibake(ok) == ok
    text, n = decode_bytes("it’s ".encode() + b"it\x92s")
    assert text == "it’s it’s" and n == 1


def test_meld_missing_orphan_and_broken_files(tmp_path):
    root = make_meld(
        tmp_path,
        overrides={
            "train_dia0_utt1": {"video": "missing"},
            "dev_dia0_utt0": {"video": "missing"},
            "test_dia1_utt0": {"video": "truncated"},
            "train_dia1_utt0": {"emotion": "happy"},
            "dev_dia0_utt1": {"text": ""},
        },
        extra_videos=(("train", "dia7_utt3"), ("test", "dia5_utt0")),
    )
    df, rep, _ = run("meld", root, tmp_path)
    assert dropped(rep) == {
        "train_dia0_utt1": "missing audio",
        "dev_dia0_utt0": "missing audio",
        "test_dia1_utt0": "unreadable audio",
        "train_dia1_utt0": "unknown label",
        "dev_dia0_utt1": "empty transcript",
    }
    assert len(df) == 3
    notes = rep["summary"]["notes"]
    assert notes["mp4 not named by any CSV row: ignored"] == 2
    assert notes["CSV rows whose mp4 is missing"] == 2  # one per split that has missing files
    orphans = {n["id"] for n in rep["notes"] if n["reason"].startswith("mp4 not named")}
    assert orphans == {"dia7_utt3", "dia5_utt0"}


def test_meld_found_below_root(tmp_path):
    # Users unpack MELD.Raw.tar.gz one level deeper, and the split archives beside the CSVs.
    make_meld(tmp_path / "downloads")
    df, _, _ = run("meld", tmp_path / "downloads", tmp_path)
    assert len(df) == sum(len(r) for r in MELD_ROWS.values())


# --- MOSI / MOSEI -----------------------------------------------------------------------


@pytest.mark.parametrize("dataset, folder", [("mosi", "MOSI"), ("mosei", "MOSEI")])
def test_mmsa_happy_path(tmp_path, dataset, folder):
    root = make_mmsa(tmp_path, folder)
    df, rep, m = run(dataset, root, tmp_path)
    assert m.dataset == dataset
    assert sorted(df.index) == sorted(f"{v}_{c}" for v, c, *_ in MMSA_ROWS)
    for vid, clip, text, label, _, mode in MMSA_ROWS:
        r = df.loc[f"{vid}_{clip}"]
        assert (r.text, r.score, r.split, r.speaker, r.dialog) == (text, float(label), mode, vid, vid)
        assert r.duration == pytest.approx(0.4, abs=0.05)
        assert Path(r.audio).parts[-3:] == ("Raw", vid, f"{clip}.mp4")
    assert rep["dropped"] == []


@pytest.mark.parametrize("label", ["3.5", "-3.01", "nan", "very"])
def test_mmsa_impossible_score_raises_with_id(tmp_path, label):
    root = make_mmsa(tmp_path, overrides={"0h-zjBukYpk_3": {"label": label}})
    with pytest.raises(CorpusError) as e:
        run("mosi", root, tmp_path)
    assert "0h-zjBukYpk_3" in str(e.value) and "label.csv" in str(e.value)


def test_mmsa_broken_inputs(tmp_path):
    root = make_mmsa(
        tmp_path,
        overrides={
            "03bSnISJMiM_2": {"video": "missing"},
            "0h-zjBukYpk_1": {"label": ""},
            "0h-zjBukYpk_3": {"text": "  "},
            "1DmNV9C1hbY_10": {"video": "empty"},
        },
        extra_videos=("03bSnISJMiM/99",),
    )
    df, rep, _ = run("mosi", root, tmp_path)
    assert list(df.index) == ["03bSnISJMiM_1"]
    assert dropped(rep) == {
        "03bSnISJMiM_2": "missing audio",
        "0h-zjBukYpk_1": "no label",
        "0h-zjBukYpk_3": "empty transcript",
        "1DmNV9C1hbY_10": "empty file",
    }
    assert rep["summary"]["notes"]["mp4 not named by label.csv: ignored"] == 1


def test_mmsa_picks_its_corpus_below_a_shared_root(tmp_path):
    make_mmsa(tmp_path / "data", "MOSI")
    make_mmsa(tmp_path / "data", "MOSEI", overrides={"03bSnISJMiM_1": {"text": "FROM MOSEI"}})
    df, _, _ = run("mosei", tmp_path / "data", tmp_path)
    assert df.loc["03bSnISJMiM_1", "text"] == "FROM MOSEI" and "/MOSEI/Raw/" in df.loc["03bSnISJMiM_1", "audio"]
    df, _, _ = run("mosi", tmp_path / "data", tmp_path)
    assert df.loc["03bSnISJMiM_1", "text"] == "A LOT OF SAD PARTS"
    make_mmsa(tmp_path / "two", "copy_a")
    make_mmsa(tmp_path / "two", "copy_b")
    with pytest.raises(MerError, match="several label.csv.*copy_a.*copy_b"):
        run("mosi", tmp_path / "two", tmp_path)


def test_mmsa_unknown_mode_raises(tmp_path):
    root = make_mmsa(tmp_path, overrides={"03bSnISJMiM_1": {"mode": "training"}})
    with pytest.raises(CorpusError, match="03bSnISJMiM_1"):
        run("mosi", root, tmp_path)


# --- SLUE-VoxCeleb ----------------------------------------------------------------------


def test_slue_happy_path(tmp_path):
    root = make_slue(tmp_path)
    df, rep, _ = run("slue-voxceleb", root, tmp_path)
    labelled = {u: (t, spk, sen, s, e, split) for split in ("fine-tune", "dev") for u, t, spk, sen, s, e in SLUE_ROWS[split]}
    assert sorted(df.index) == sorted(labelled)
    for uid, (text, spk, sen, s, e, split) in labelled.items():
        r = df.loc[uid]
        assert (r.text, r.speaker, r.sentiment, r.split) == (text, spk, sen, split)
        assert (r.start, r.end) == (s, e)
        assert r.duration == pytest.approx(e - s)
        assert Path(r.audio).parent.name == f"{split}_raw"
    # Quotes in transcripts are text (the tsv is not CSV-quoted).
    assert '"opportunity"' in df.loc["id10059_229vKIGbxrI_00001", "text"]
    # The blind test file is skipped with its row count, not dropped row by row.
    blind = [n for n in rep["notes"] if "blind" in n["reason"]]
    assert len(blind) == 1 and blind[0]["detail"] == f"{len(SLUE_ROWS['test'])} rows"
    assert rep["dropped"] == []
    # The span really is a span of the flac: loading it gives (end - start) seconds.
    r = df.loc["id10090_8mbbkCHtwR4_00004"]
    assert len(load(r.audio, 16000, r.start, r.end)) == int((r.end - r.start) * 16000)


def test_slue_older_header_read_by_name(tmp_path):
    root = make_slue(tmp_path, old_header=True)
    df, _, _ = run("slue-voxceleb", root, tmp_path)
    assert len(df) == len(SLUE_ROWS["fine-tune"]) + len(SLUE_ROWS["dev"])
    r = df.loc["id10090_8mbbkCHtwR4_00003"]
    assert (r.sentiment, r.speaker, r.text) == ("Negative", "id10090", "that was a disaster")
    # No span columns: the whole file is the utterance.
    assert math.isnan(r.start) and r.duration == pytest.approx(SLUE_SECONDS, abs=1e-3)


def test_slue_broken_inputs(tmp_path):
    root = make_slue(
        tmp_path,
        overrides={
            "id10059_229vKIGbxrI_00001": {"flac": "missing"},
            "id10059_229vKIGbxrI_00002": {"flac": "truncated"},
            "id10090_8mbbkCHtwR4_00003": {"sentiment": "Happy"},
            "id10012_0AXjxNXiEzo_00001": {"start": 2.0, "end": 9.0},
            "id10012_0AXjxNXiEzo_00002": {"text": ""},
        },
    )
    df, rep, _ = run("slue-voxceleb", root, tmp_path)
    assert list(df.index) == ["id10090_8mbbkCHtwR4_00004"], rep["dropped"]
    got = dropped(rep)
    assert got["id10059_229vKIGbxrI_00001"] == "missing audio"
    assert got["id10090_8mbbkCHtwR4_00003"] == "unknown label"
    assert got["id10012_0AXjxNXiEzo_00001"] == "span beyond end of audio"
    assert got["id10012_0AXjxNXiEzo_00002"] == "empty transcript"
    # A flac cut in half still has a header promising the full length: probe must notice.
    assert got["id10059_229vKIGbxrI_00002"] == "unreadable audio"
    assert "truncated" in next(d for d in rep["dropped"] if d["id"] == "id10059_229vKIGbxrI_00002")["detail"]
    assert rep["counts"] == {"found": 6, "kept": 1, "dropped": 5, "repaired": 0}


def test_slue_impossible_span_raises_with_id(tmp_path):
    root = make_slue(tmp_path, overrides={"id10012_0AXjxNXiEzo_00002": {"start": 2.0, "end": 1.0}})
    with pytest.raises(CorpusError) as e:
        run("slue-voxceleb", root, tmp_path)
    assert "id10012_0AXjxNXiEzo_00002" in str(e.value) and "slue-voxceleb_dev.tsv" in str(e.value)


# --- csv / jsonl ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_csv_happy_path(tmp_path, fmt):
    root = make_csv_corpus(tmp_path, fmt=fmt, absolute=(1,))
    df, rep, _ = run("csv", root, tmp_path)
    # ids: explicit where given, else the path stem, numbered where two files share a stem.
    assert sorted(df.index) == sorted(["a_1", "b", "a_2", "long_1st", "long_2nd"])
    assert df.loc["a_1", "audio"] == str((root / "audio/spk1/a.wav").resolve())
    assert df.loc["a_2", "audio"] == str((root / "audio/spk2/a.wav").resolve())
    assert df.loc["b", "audio"] == str((root / "audio/spk1/b.wav").resolve())  # the absolute path
    assert list(df["emotion"].loc[["a_1", "b", "a_2", "long_1st", "long_2nd"]]) == [r[2] for r in CSV_ROWS]
    assert df.loc["a_2", "speaker"] == "spk2" and df.loc["a_2", "split"] == "dev"
    assert (df.loc["long_2nd", "start"], df.loc["long_2nd", "end"]) == (0.5, 1.25)
    assert df.loc["long_2nd", "duration"] == pytest.approx(0.75)
    assert df.loc["b", "duration"] == pytest.approx(CSV_SECONDS, abs=1e-3)
    assert math.isnan(df.loc["b", "start"])
    numbered = sorted(n["id"] for n in rep["notes"] if n["reason"].startswith("id from path stem"))
    assert numbered == ["a_1", "a_2"]
    assert CSV_LONG_SECONDS > 1.25


def test_csv_file_choice(tmp_path):
    root = make_csv_corpus(tmp_path, name="labels.csv")
    df, _, _ = run("csv", root, tmp_path)  # the only .csv in the folder
    assert len(df) == len(CSV_ROWS)
    (root / "other.jsonl").write_text('{"path": "audio/spk1/b.wav", "text": "x", "label": "y"}\n')
    with pytest.raises(MerError) as e:
        run("csv", root, tmp_path)
    assert "labels.csv" in str(e.value) and "other.jsonl" in str(e.value)
    df, _, _ = run("csv", root, tmp_path, manifest_file="other.jsonl")
    assert list(df.index) == ["b"] and df.loc["b", "emotion"] == "y"


def test_csv_broken_inputs(tmp_path):
    root = make_csv_corpus(tmp_path, overrides={0: {"wav": "truncated"}, 1: {"wav": "missing"}, 2: {"text": ""}, 3: {"label": ""}})
    df, rep, _ = run("csv", root, tmp_path)
    assert list(df.index) == ["long_2nd"]
    assert dropped(rep) == {"a_1": "unreadable audio", "b": "missing audio", "a_2": "empty transcript", "long_1st": "no label"}


def test_csv_impossible_values_raise(tmp_path):
    root = make_csv_corpus(tmp_path, overrides={4: {"start": 1.0, "end": 0.5}})
    with pytest.raises(CorpusError, match="long_2nd.*impossible span"):
        run("csv", root, tmp_path)
    root = make_csv_corpus(tmp_path / "b", overrides={1: {"id": "long_1st"}})
    with pytest.raises(CorpusError, match="long_1st"):
        run("csv", root, tmp_path)
    root = make_csv_corpus(tmp_path / "c")
    (root / "metadata.csv").write_text("path,text\naudio/spk1/b.wav,hi\n")
    with pytest.raises(CorpusError, match="missing column.*label"):
        run("csv", root, tmp_path)


def test_csv_header_only_is_a_clear_error(tmp_path):
    """A header and no rows was reported as "missing column(s) label (has: )" (issue 21)."""
    root = make_csv_corpus(tmp_path)
    (root / "metadata.csv").write_text("path,text,label\n\n")
    with pytest.raises(CorpusError, match=r"metadata\.csv: no utterance rows \(a header only"):
        run("csv", root, tmp_path)
