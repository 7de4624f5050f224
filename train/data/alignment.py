"""Every input aligned, by utterance id, to the labelled rows of the manifest."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mer.common.errors import MerError
from mer.common.report import Report
from mer.train.data.stores import FeatureCache, gather_ragged, row_means
from mer.train.fusion import InputSpec

@dataclass
class Arrays:
    """One input aligned to the dataset rows: fixed [N, D] or ragged values + offsets."""

    kind: str
    fixed: np.ndarray | None = None
    values: np.ndarray | None = None
    offsets: np.ndarray | None = None    # [N+1] into values
    lengths: np.ndarray | None = None
    # Values the model consumes as they are (token ids of a fine-tuned encoder,
    # mer.train.finetune): per-fold z-scoring leaves them unchanged.
    raw: bool = False
    # Values per model frame (raw 16 kHz audio into a wav2vec encoder: 320); the batch
    # budget and bucketing count frames, so a budget means the same with raw input.
    step: int = 1


@dataclass
class TrainData:
    """Labelled utterances with every input aligned by id (rows = utterances)."""

    ids: np.ndarray
    y: np.ndarray                      # int class index, or float target for regression
    classes: list[str]
    sources: list[InputSpec]
    arrays: dict[str, Arrays]
    meta: "object"                      # pandas DataFrame of the manifest rows (same order)
    regression: bool = False
    # How audio was cut to text tokens for models that align them (mer.train.wordalign):
    # written to the run's config.yaml as audio_to_tokens; None for other models.
    alignment: dict | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def specs(self):
        return list(self.sources)



def build_data(manifest_df, labels, classes: list[str], sources: list[InputSpec], cache: FeatureCache,
               regression: bool = False, report: Report | None = None) -> TrainData:
    """Align every input to the manifest rows that have a label; drop (and report) the rest."""
    import pandas as pd

    df = manifest_df.reset_index(drop=True)
    # Multi-target regression: a DataFrame of targets; a row is labelled when all are there.
    multi = isinstance(labels, pd.DataFrame)
    labels = labels.reset_index(drop=True) if multi else pd.Series(labels).reset_index(drop=True)
    report = report if report is not None else Report("training data")
    has_label = labels.notna().all(axis=1).to_numpy() if multi else labels.notna().to_numpy()
    report.counts["manifest utterances"] = int(len(df))
    report.counts["without a label under the scheme"] = int((~has_label).sum())
    keep = has_label.copy()
    ids = df["id"].astype(str).to_numpy()
    rows_of: dict[str, np.ndarray] = {}
    for feat in dict.fromkeys(s.feature for s in sources):
        fs = cache.get(feat)
        pos = pd.Index(fs.ids).get_indexer(ids)
        ok = pos >= 0
        ok_valid = ok.copy()
        ok_valid[ok] = fs.valid[pos[ok]]
        for i in np.flatnonzero(keep & ~ok):
            report.drop(ids[i], fs.where, "missing from feature store", feat)
        for i in np.flatnonzero(keep & ok & ~ok_valid):
            report.drop(ids[i], fs.where, "skipped by extractor", feat)
        keep &= ok_valid
        rows_of[feat] = pos
    sel = np.flatnonzero(keep)
    if len(sel) == 0:
        raise MerError("no labelled utterance has every requested feature; see the run's data report")
    if regression:
        y = labels.iloc[sel].astype(float).to_numpy(np.float32, copy=True)   # [n] or [n, targets]; writable for torch
    else:
        cidx = {c: i for i, c in enumerate(classes)}
        lab = labels.iloc[sel].astype(str).to_numpy()
        unknown = sorted(set(lab) - set(cidx))
        if unknown:
            raise MerError(f"labels {unknown} are not among the scheme's classes {classes}")
        y = np.array([cidx[v] for v in lab], np.int64)
    arrays: dict[str, Arrays] = {}
    for s in sources:
        fs = cache.get(s.feature)
        rows = rows_of[s.feature][sel]
        if s.kind == "fixed" and not s.pooled_here:
            arrays[s.key] = Arrays("fixed", fixed=np.ascontiguousarray(fs.fixed[s.output][rows], dtype=np.float32))
            continue
        vals, offs = fs.ragged[s.output]
        v, o = gather_ragged(vals, offs, rows)
        lengths = np.diff(o)
        empty = np.flatnonzero(lengths == 0)
        if len(empty):
            # An empty sequence has nothing to attend to; say so instead of producing NaNs.
            raise MerError(f"store {fs.where}: output {s.output!r} is empty for utterance {ids[sel][empty[0]]} "
                           f"({len(empty)} such); re-extract or drop them")
        if s.pooled_here:
            arrays[s.key] = Arrays("fixed", fixed=row_means(v, o))
        else:
            arrays[s.key] = Arrays("ragged", values=v, offsets=o, lengths=lengths)
    report.counts["used for training"] = int(len(sel))
    return TrainData(ids[sel], y, list(classes), list(sources), arrays, df.iloc[sel].reset_index(drop=True), regression)



DROP_WARN_SHARE = 0.05   # more than this share of the labelled utterances dropped: said loudly


def usage_line(report: Report) -> tuple[str, float]:
    """(one line: utterances used of how many labelled, the drops by reason; dropped share).

    A run once trained on 51 of 206 labelled utterances and said so only inside its
    data_report.txt (issue 21): ``mer train`` prints this line before training."""
    from collections import Counter

    c = report.counts
    labelled = int(c.get("manifest utterances", 0)) - int(c.get("without a label under the scheme", 0))
    used = int(c.get("used for training", 0))
    drops = Counter(f"{i.reason} ({i.detail})" if i.detail else i.reason for i in report.dropped)
    line = f"{report.title}: {used} of {labelled} labelled utterances used"
    if drops:
        line += "; dropped: " + ", ".join(f"{n} {why}" for why, n in drops.most_common())
    return line, (labelled - used) / labelled if labelled else 0.0
