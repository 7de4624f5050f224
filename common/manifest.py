"""The manifest: one row per utterance, the contract between every stage of `mer`.

Format: Parquet (``manifest.parquet``, read with ``pandas.read_parquet``), one row per
utterance, with these columns (missing values are null/NaN):

=============  =======  =============================================================
column         type     meaning
=============  =======  =============================================================
id             str      stable utterance id, unique in the corpus (e.g. Ses01F_impro01_F000)
dataset        str      adapter name
audio          str      absolute path of the audio (or audio-bearing video) file
start, end     float    span in seconds inside ``audio``; NaN = the whole file
duration       float    seconds of audio the utterance covers (from the file header)
text           str      transcript as the corpus gives it (repairs are reported)
emotion        str      raw categorical emotion label of the corpus (null if none)
sentiment      str      raw categorical sentiment label (null if none)
score          float    continuous sentiment (MOSI/MOSEI: [-3, 3]); NaN if none
valence, activation, dominance  float   dimensional labels (IEMOCAP: 1..5)
speaker        str      speaker id (IEMOCAP: session + gender, e.g. Ses01_F)
gender         str      F/M where known
session        str      recording session / fold group (IEMOCAP: Ses01..Ses05)
dialog         str      dialog / video id
split          str      official split (train/dev/test) where the corpus defines one
audio_hash     str      blake2b of the audio file's bytes
words          str      word-level alignment where the corpus ships one (IEMOCAP .wdseg):
                        JSON ``[[word, start_s, end_s], ...]``, seconds from the utterance start
=============  =======  =============================================================

Label schemes (which raw labels map to which classes) and protocols (folds, splits) are
named data in ``manifests/<dataset>.yaml``, applied at training time, never baked in here.

A corpus may lack a modality (a lab's ``path,label`` CSV has no transcripts, a text-only
CSV no audio): the column is then null throughout, and ``manifest.meta.json`` records the
modalities present as ``modalities`` (e.g. ``["audio"]``); extraction skips features of a
missing modality and training refuses them, saying so.

``manifest.meta.json`` next to it records the content hashes: ``hash`` (all columns),
``audio_hash`` (ids + audio content + spans) and ``text_hash`` (ids + text). Feature stores
key on the modality hash they depend on, so editing a transcript never invalidates MFCCs.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from mer.common.errors import MerError

COLUMNS: dict[str, str] = {
    "id": "string",
    "dataset": "string",
    "audio": "string",
    "start": "float64",
    "end": "float64",
    "duration": "float64",
    "text": "string",
    "emotion": "string",
    "sentiment": "string",
    "score": "float64",
    "valence": "float64",
    "activation": "float64",
    "dominance": "float64",
    "speaker": "string",
    "gender": "string",
    "session": "string",
    "dialog": "string",
    "split": "string",
    "audio_hash": "string",
    "words": "string",
}

FORMAT_VERSION = 1


def to_frame(rows: list[dict]) -> pd.DataFrame:
    """Rows (dicts with any subset of COLUMNS) -> a DataFrame with every column, typed."""
    df = pd.DataFrame(rows)
    for col, dtype in COLUMNS.items():
        if col not in df:
            df[col] = pd.NA if dtype == "string" else np.nan
        df[col] = df[col].astype(dtype)
    return df[list(COLUMNS)].reset_index(drop=True)


def _hash_frame(df: pd.DataFrame, cols: list[str]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(cols).encode())
    # Stable, dtype-independent serialisation: repr of each value, row by row.
    for row in df[cols].itertuples(index=False, name=None):
        h.update(
            "\x1f".join("" if (v is pd.NA or (isinstance(v, float) and np.isnan(v))) else repr(v) for v in row).encode()
        )
        h.update(b"\x1e")
    return h.hexdigest()


def content_hashes(df: pd.DataFrame) -> dict[str, str]:
    return {
        "hash": _hash_frame(df, [c for c in COLUMNS if c != "audio"]),
        # Paths are left out on purpose: moving a corpus does not change its features.
        "audio_hash": _hash_frame(df, ["id", "audio_hash", "start", "end"]),
        "text_hash": _hash_frame(df, ["id", "text"]),
    }


MODALITIES = ("audio", "text")


def modalities_of(df: pd.DataFrame) -> list[str]:
    """The modalities a manifest's rows carry: audio where rows name audio, text where rows
    have a transcript."""
    out = []
    if df["audio"].notna().any():
        out.append("audio")
    if df["text"].notna().any():
        out.append("text")
    return out


@dataclass
class Manifest:
    """A loaded manifest: the table plus its metadata."""

    df: pd.DataFrame
    meta: dict
    path: Path | None = None

    @property
    def dataset(self) -> str:
        return self.meta["dataset"]

    @property
    def hash(self) -> str:
        return self.meta["hash"]

    @property
    def modalities(self) -> list[str]:
        got = self.meta.get("modalities")
        return list(got) if got is not None else modalities_of(self.df)

    def lacks(self, modality: str) -> str | None:
        """None if the corpus has ``modality``, else a sentence saying it has not."""
        if modality in self.modalities:
            return None
        return (f"the {self.dataset} corpus has no {modality} (its manifest records modalities: "
                f"{', '.join(self.modalities) or 'none'})")

    def modality_hash(self, modality: str) -> str:
        return self.meta[{"audio": "audio_hash", "text": "text_hash"}[modality]]

    def __len__(self) -> int:
        return len(self.df)


def write(df: pd.DataFrame, path: Path, dataset: str, root: str | None, extra_meta: dict | None = None) -> Manifest:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = to_frame(df.to_dict("records")) if list(df.columns) != list(COLUMNS) else df
    if df["id"].duplicated().any():
        dup = df.loc[df["id"].duplicated(), "id"].iloc[0]
        raise MerError(f"duplicate utterance id {dup!r} in the {dataset} manifest")
    meta = {
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "audio_stat": audio_stats(df),
        "root": str(root) if root else None,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "n": int(len(df)),
        "modalities": modalities_of(df),
        **content_hashes(df),
        **(extra_meta or {}),
    }
    tmp = path.with_suffix(".parquet.tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)  # atomic: a crash never leaves half a manifest behind
    meta_path(path).write_text(json.dumps(meta, indent=1))
    return Manifest(df, meta, path)


def _stat(path) -> list[int] | None:
    import os

    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return [int(st.st_size), int(st.st_mtime_ns)]


def audio_stats(df: pd.DataFrame) -> dict[str, list[int]]:
    """{audio file: [size, mtime_ns]} of every hashed audio file when the manifest is written:
    ``changed_audio`` rehashes only files whose size or mtime moved since."""
    rows = df.loc[df["audio_hash"].notna() & df["audio"].notna(), "audio"].astype(str).unique()
    return {a: st for a in rows if (st := _stat(a)) is not None}


def changed_audio(m: "Manifest") -> list[tuple[str, str]]:
    """(id, file) of rows whose audio file's content is no longer the manifest's ``audio_hash``
    (edited or replaced after ``mer prepare``). Cheap: a file whose size and mtime are those
    recorded at prepare time is not read; the others are hashed. Missing files are left to
    the extraction, which reports them per row. Manifests written before the stats were
    recorded have none: every file is then hashed (the extraction reads them all anyway)."""
    from mer.common.audio import file_hash

    df = m.df
    stats = m.meta.get("audio_stat") or {}
    out, hashed = [], {}
    for uid, audio, h in zip(df["id"], df["audio"], df["audio_hash"]):
        if audio is None or h is None or (isinstance(h, float) and np.isnan(h)) or (isinstance(audio, float)):
            continue
        st = _stat(audio)
        if st is None or stats.get(str(audio)) == st:
            continue
        if audio not in hashed:
            hashed[audio] = file_hash(audio)
        if hashed[audio] != h:
            out.append((str(uid), str(audio)))
    return out


def meta_path(path: Path) -> Path:
    return Path(path).with_name(Path(path).stem + ".meta.json")


def read(path: Path) -> Manifest:
    path = Path(path)
    if not path.exists():
        raise MerError(f"no manifest at {path}")
    df = pd.read_parquet(path)
    mp = meta_path(path)
    if mp.exists():
        meta = json.loads(mp.read_text())
    else:  # a manifest written by someone else: recompute what we need
        meta = {"dataset": str(df["dataset"].iloc[0]) if len(df) else path.parent.name, **content_hashes(df)}
    return Manifest(to_frame(df.to_dict("records")), meta, path)


def load(dataset: str, cache=None, manifest: str | Path | None = None) -> Manifest:
    """Find a prepared manifest by dataset name (or an explicit path)."""
    from mer.common import paths

    p = Path(manifest) if manifest else paths.manifest_path(dataset, cache)
    if not p.exists():
        # only `mer prepare` has --root; other commands take a manifest file or a cache root
        raise MerError(
            f"no manifest for dataset {dataset!r} at {p}; run `mer prepare --dataset {dataset} --root <corpus>` "
            "(or pass --manifest <file> or --cache <dir> to this command)"
            + ("" if manifest else paths.demo_hint(cache))
        )
    return read(p)
