"""prepare: corpus on disk -> validated manifest + report, for any registered adapter.

Validation happens at three levels (as in lhotse's qa module):
1. impossible values (a span that ends before it starts, valence 9 on a 1..5 scale) raise
   ``CorpusError`` at once, naming the utterance and file: the corpus itself is broken;
2. unusable utterances (missing/unreadable/empty audio, empty transcript, unknown label)
   are dropped, each one counted and listed with its reason in ``manifest.report.{json,txt}``;
3. corpus-level counts (per class and split/session) are printed as a table and saved.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from mer.common import manifest as mf
from mer.common import paths, schemes
from mer.common.audio import AudioError, file_hash, probe
from mer.common.datasets import DATASETS
from mer.common.errors import MerError
from mer.common.progress import progress
from mer.common.report import Report

# Raw label columns: a row with none of them has no label.
LABEL_COLUMNS = ("emotion", "sentiment", "score", "valence", "activation", "dominance")
# How far a span may run past the end of its file before it is "beyond the audio" (s).
SPAN_TOLERANCE = 0.5


def _check_file(path: str):
    """(info, content hash, None) or (None, None, AudioError): never raises, so one bad item
    (a folder named x.wav, a file without read permission) is reported, not fatal."""
    p = Path(path)
    if p.is_dir():
        return None, None, AudioError(path, "not a file", "a directory where an audio file should be")
    if p.exists() and not os.access(p, os.R_OK):
        return None, None, AudioError(path, "unreadable file", "no read permission")
    try:
        info = probe(path)
        return info, file_hash(path), None
    except AudioError as e:
        return None, None, e
    except OSError as e:
        return None, None, AudioError(path, "unreadable file", f"{type(e).__name__}: {e.strerror or e}")
    except Exception as e:  # noqa: BLE001 - a decoder crash on one file must not stop prepare
        return None, None, AudioError(path, "unreadable audio", f"{type(e).__name__}: {str(e)[:160]}")


def prepare(
    dataset: str,
    root,
    cache=None,
    out=None,
    workers: int = 8,
    quiet: bool = False,
    **options,
) -> tuple[mf.Manifest, Report]:
    adapter = DATASETS.get(dataset)
    root = Path(root).expanduser()
    if not root.exists():
        raise MerError(f"corpus root {root} does not exist")
    report = Report(f"mer prepare --dataset {dataset} --root {root}")
    rows = adapter.scan(root.resolve(), report, **options)
    if not rows:
        raise MerError(f"no utterances found for {dataset} under {root}")
    n_found = len(rows)

    # A corpus without transcripts (or without audio) is fine: that modality is then simply
    # absent (recorded in the manifest's meta), and rows are not dropped for lacking it.
    has_text = any(_present(r.get("text")) for r in rows)
    has_audio = any(r.get("audio") for r in rows)

    # Level 2a: labels and text.
    known = schemes.raw_labels(dataset)
    unlabelled_ok = set(schemes.dataset_spec(dataset).get("unlabelled_splits") or [])
    n_unlabelled: dict[str, int] = {}
    kept = []
    where: dict[str, str] = {}  # id -> the row's own place (file:line), for reports
    for r in rows:
        src = r.pop("_source", r.get("audio", ""))
        where[r["id"]] = src
        bad = next(
            (f"unknown {col} label {r.get(col)!r}" for col, ok in known.items() if r.get(col) is not None and r.get(col) not in ok),
            None,
        )
        if bad:
            report.drop(r["id"], src, "unknown label", bad)
            continue
        if all(r.get(c) is None or (isinstance(r.get(c), float) and math.isnan(r.get(c))) for c in LABEL_COLUMNS):
            # Test sets released without labels (MSP-Podcast) stay, for prediction; every
            # scheme leaves them out of training. Counted per split below.
            if r.get("split") in unlabelled_ok:
                n_unlabelled[r["split"]] = n_unlabelled.get(r["split"], 0) + 1
            else:
                report.drop(r["id"], src, "no label")
                continue
        if has_text and not _present(r.get("text")):
            report.drop(r["id"], src, "empty transcript")
            continue
        if has_audio and not r.get("audio"):
            report.drop(r["id"], src, "no audio file named")
            continue
        kept.append(r)

    for split, n in sorted(n_unlabelled.items()):
        report.note(split, root, "split without labels kept for prediction", f"{n} rows")

    # Level 2b: audio, once per distinct file, in threads (I/O bound).
    files = sorted({r["audio"] for r in kept if r.get("audio")})
    checked: dict[str, tuple] = {}
    with ThreadPoolExecutor(max(1, workers)) as ex, progress(len(files), "checking audio", disable=quiet) as bar:
        for f, res in zip(files, ex.map(_check_file, files)):
            checked[f] = res
            bar.update(1)
    good = []
    for r in kept:
        if not has_audio:
            r["duration"], r["audio_hash"], r["dataset"] = float("nan"), None, dataset
            good.append(r)
            continue
        info, h, err = checked[r["audio"]]
        # The row's own path (a symlink is named as the row names it, not by its target),
        # with the row's line when the adapter gave one.
        own = r["audio"] if where.get(r["id"], r["audio"]) == r["audio"] else f"{r['audio']} ({where[r['id']]})"
        if os.path.islink(r["audio"]):
            report.note(r["id"], own, "symlink", f"-> {os.path.realpath(r['audio'])}")
        if not _inside(r["audio"], root):
            report.note(r["id"], own, "audio outside the corpus root")
        if err is not None:
            report.drop(r["id"], own, err.reason, err.detail)
            continue
        start = r.get("start")
        end = r.get("end")
        if start is not None and end is not None and not (isinstance(start, float) and math.isnan(start)):
            if end > info.duration + SPAN_TOLERANCE and info.duration > 0:
                report.drop(r["id"], r["audio"], "span beyond end of audio", f"[{start:.2f}, {end:.2f}] in {info.duration:.2f} s")
                continue
            r["duration"] = float(end) - float(start)
        else:
            r["duration"] = info.duration
        r["audio_hash"] = h
        r["dataset"] = dataset
        good.append(r)
    target = manifest_target(out) if out else paths.manifest_path(dataset, cache)
    stem = target.with_name(target.stem + ".report")
    if not good:
        # The report is what tells the user why: written before stopping.
        report.counts = {"found": n_found, "kept": 0, "dropped": len(report.dropped), "repaired": len(report.repaired)}
        _, report_txt = report.write(stem)
        raise MerError(f"every one of the {n_found} utterances of {dataset} under {root} was dropped; see {report_txt}")

    df = mf.to_frame(good)
    report.counts = {"found": n_found, "kept": len(df), "dropped": len(report.dropped), "repaired": len(report.repaired)}
    m = mf.write(df, target, dataset, str(root), {"report": target.stem + ".report.json", "text_kind": adapter.text_kind})
    _, report_txt = report.write(stem)
    table = summary_table(m)
    (target.with_name(target.stem + ".summary.txt")).write_text(table.to_string())
    if not quiet:
        from rich.console import Console

        c = Console(stderr=True)
        c.print(f"[bold]{dataset}[/]: {n_found} utterances found, {len(df)} kept, {len(report.dropped)} dropped, "
                f"{len(report.repaired)} repaired; modalities: {', '.join(m.modalities)}")
        for reason, n in sorted(report.reasons("dropped").items()):
            c.print(f"  dropped {n:5d}  {reason}")
        for reason, n in sorted(report.reasons("repaired").items()):
            c.print(f"  repaired {n:4d}  {reason}")
        c.print(table.to_string())
        c.print(f"manifest: {target}\nreport:   {report_txt}")
    return m, report


def _inside(path: str, root: Path) -> bool:
    """Whether the file's real location is below the corpus root (labs keep audio elsewhere:
    allowed, but counted in the report)."""
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(root))
        return True
    except ValueError:
        return False


def _present(text) -> bool:
    # NaN counts as empty: pandas-read tables give NaN, not None, for a blank cell.
    return not (text is None or (isinstance(text, float) and math.isnan(text)) or not str(text).strip())


def manifest_target(out) -> Path:
    """``--out``: a ``.parquet`` file path, or a folder (existing, or named without a suffix)
    that gets ``manifest.parquet`` inside, next to its meta, report and summary files."""
    p = Path(out).expanduser()
    if p.is_dir() or (not p.exists() and p.suffix.lower() != ".parquet"):
        return p / "manifest.parquet"
    if p.suffix.lower() != ".parquet":
        raise MerError(f"--out {p}: an existing file that is not a .parquet manifest; give a folder or a .parquet path")
    return p


def summary_table(m: mf.Manifest) -> pd.DataFrame:
    """Counts per class (default scheme) by split, or by session where there are no splits."""
    sch = schemes.scheme(m.dataset)
    df = m.df
    by = "split" if df["split"].notna().any() else ("session" if df["session"].notna().any() else None)
    if sch.is_regression:
        lab = pd.Series("all", index=df.index)
    else:
        lab, _ = sch.apply(df)
        lab = lab.fillna(f"(not in {sch.name})")
    cols = df[by].fillna("-") if by else pd.Series("all", index=df.index)
    t = pd.crosstab(lab.rename(f"{sch.name}"), cols.rename(by or ""), margins=True, margins_name="total")
    return t
