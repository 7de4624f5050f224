"""Synthetic corpora with real synthesized speech, in the layouts of real releases.

``generate(out, layout="iemocap" | "meld" | "csv", per_class=20, sessions=5, seed=0)`` (or
``generate(out, SynthConfig(...))``) writes
a small corpus that the real adapters read exactly as they read the real thing, so the whole
pipeline (prepare -> extract -> train) can be run and tested without any download.

Speech is synthesized by espeak-ng (the library bundled in the ``espeakng-loader`` wheel,
driven through ctypes) at 22,050 Hz and resampled with soxr. Emotion lives in BOTH
modalities, as in acted corpora:

- voice: espeak's rate, pitch, pitch range, volume and word gap depend on the emotion
  (angry: loud, fast, wide range; sad: slow, low, quiet, flat; happy/excited: high, wide;
  neutral: flat), with per-utterance jitter and per-speaker offsets so classes overlap;
- words: per-emotion phrase lists joined with shared fillers ("well", "you know"), with
  occasional phrases from another emotion, so text alone is informative but not perfect.

About 30% of the non-neutral utterances carry their emotion in ONE modality only (neutral
voice + emotional words, or emotional voice + neutral words; the label is the emotion), as
in seed paper 003: a fusion of both modalities can beat either one alone. A small fraction
(``label_noise``, 2%) get a label from another class. White noise is added at 20-30 dB SNR.

``context=0.4`` (iemocap and meld layouts) makes emotion depend on context, for
conversation-level models (``mer train --context dialog``): labels come in stretches of one
emotion (3-6 turns), and that share of the emotional turns that follow a turn of the same
emotion is spoken and worded neutrally but keeps its label (kind ``context`` in
``synth_info.json``): only the neighbouring turns tell what it is.

Determinism: the same arguments give the same bytes. espeak-ng keeps internal state from
one utterance to the next (random seed, pitch flutter phase) that survives even
``espeak_Terminate``/``espeak_Initialize``, so every batch of utterances is synthesized in a
fresh process (spawned, one batch per process) in a fixed order; everything random on the
Python side comes from one seeded numpy Generator. ``synth_info.json`` in the corpus root
records the parameters, counts and the utterances the adapter is expected to drop.

The package, by job: ``config`` (``SynthConfig``, validated once), ``emotions`` (prosody
and word tables), ``plan`` (speakers and utterances, every random draw), ``espeak`` (the
synthesizer and its worker processes), ``writers`` (audio post-processing, wav/mp4/word
alignment files), and one module per corpus layout (``iemocap``, ``meld``, ``csv_layout``).
"""
from __future__ import annotations

import json
import os
from dataclasses import fields, replace
from pathlib import Path

import numpy as np

from mer.common.errors import MerError, UsageError, require
from mer.common.synth.config import GENERATOR_VERSION, INFO_FILE, LAYOUTS, SynthConfig
from mer.common.synth.csv_layout import write_csv
from mer.common.synth.iemocap import write_iemocap
from mer.common.synth.meld import write_meld

__all__ = ["GENERATOR_VERSION", "INFO_FILE", "LAYOUTS", "SynthConfig", "generate", "read_info"]

WRITERS = {"iemocap": write_iemocap, "meld": write_meld, "csv": write_csv}


def read_info(out) -> dict | None:
    p = Path(out) / INFO_FILE
    return json.loads(p.read_text()) if p.exists() else None


def generate(out, config: SynthConfig | None = None, *, workers: int | None = None, quiet: bool = True,
             **fields_) -> Path:
    """Write a synthetic corpus under ``out`` and return ``out``.

    The corpus is described by ``config`` or by SynthConfig's fields given as keywords
    (``layout="meld", per_class=3``; with ``config`` too, they override its values).
    ``out`` must be empty or absent (a corpus is never written over other files). The same
    config gives byte-identical files whatever ``workers`` is.
    """
    if config is not None and not isinstance(config, SynthConfig):
        raise UsageError(f"generate: config must be a SynthConfig, not {type(config).__name__} "
                         f"(give the layout as layout={config!r})")
    known = {f.name for f in fields(SynthConfig)}
    bad = sorted(set(fields_) - known)
    if bad:
        raise UsageError(f"generate: unknown synthetic corpus fields {bad}; valid: {', '.join(sorted(known))}")
    cfg = replace(config, **fields_) if config is not None else SynthConfig(**fields_)
    # Fail here, with the pip command, rather than inside a worker process.
    require("espeakng_loader", "synth")
    require("soxr", "audio")
    if cfg.layout == "meld":
        require("av", "audio")
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise MerError(f"{out}: not empty; a synthetic corpus is only written into an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, LAYOUTS.index(cfg.layout), GENERATOR_VERSION]))
    workers = workers if workers is not None else min(4, os.cpu_count() or 1)
    summary = WRITERS[cfg.layout](out, cfg, rng, workers, quiet)
    info = {"generator": "mer.common.synth", "params": cfg.params(), **summary}
    (out / INFO_FILE).write_text(json.dumps(info, indent=1, ensure_ascii=False) + "\n")
    return out
