"""``--normalize speaker``: standardise each speaker's audio features with statistics from that
speaker's own utterances, before the per-fold normalisation.

This is common practice in speech emotion recognition (e.g. Busso et al. 2013, "Iterative
feature normalization scheme for automatic emotion detection from speech"; Schuller et al.'s
speaker-wise z-normalisation in the INTERSPEECH challenges; many IEMOCAP LOSO papers): a
speaker's voice (pitch range, loudness, timbre) shifts every acoustic feature, and removing
the speaker's mean and scale leaves what varies with emotion. The statistics of a speaker are
computed from all of that speaker's utterances, test utterances included, WITHOUT their
labels: the test speaker's audio is used, unlabelled, as a deployed system that enrolls a
speaker would. Runs that must not see any test-speaker audio keep the default
(``--normalize fold``: statistics from the training rows only).

Fixed inputs: mean and std per speaker and dimension over the speaker's rows. Frame sequences:
over every frame of the speaker's utterances. Text inputs are left alone. A dimension that is
constant for a speaker is only centred. Utterances without a speaker id keep their values
(counted in ``info``).
"""
from __future__ import annotations

import dataclasses

import numpy as np


def speaker_normalized(data):
    """``data`` with every audio input standardised per speaker; ``data.alignment`` untouched."""
    from mer.common.errors import MerError
    from mer.train.data import Arrays

    if "speaker" not in data.meta or data.meta["speaker"].isna().all():
        raise MerError("--normalize speaker: the manifest has no speaker ids")
    spk = data.meta["speaker"].astype(object).to_numpy()
    known = np.array([s is not None and s == s for s in spk])
    groups = {s: np.flatnonzero(spk == s) for s in dict.fromkeys(spk[known])}
    arrays = dict(data.arrays)
    for src in data.sources:
        if src.modality != "audio":
            continue
        a = data.arrays[src.key]
        if a.kind == "fixed":
            x = np.array(a.fixed, np.float32, copy=True)
            for rows in groups.values():
                seg = x[rows].astype(np.float64)
                mu, sd = seg.mean(0), seg.std(0)
                x[rows] = ((seg - mu) / np.where(sd < 1e-8, 1.0, sd)).astype(np.float32)
            arrays[src.key] = Arrays("fixed", fixed=x)
        else:
            v = np.array(a.values, np.float32, copy=True)
            for rows in groups.values():
                idx = np.concatenate([np.arange(a.offsets[r], a.offsets[r + 1]) for r in rows])
                seg = v[idx].astype(np.float64)
                mu, sd = seg.mean(0), seg.std(0)
                v[idx] = ((seg - mu) / np.where(sd < 1e-8, 1.0, sd)).astype(np.float32)
            arrays[src.key] = Arrays("ragged", values=v, offsets=a.offsets, lengths=a.lengths)
    return dataclasses.replace(data, arrays=arrays), {"speakers": len(groups), "without_speaker": int((~known).sum())}
