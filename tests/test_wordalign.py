"""IEMOCAP word alignments (.wdseg) into the manifest, and `masked` pooling audio per token
from them (falling back to uniform resampling where there are none)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from corpus_fixtures import make_iemocap
from mer.common.errors import CorpusError
from mer.train import wordalign as W


def test_adapter_reads_wdseg_into_word_spans(tmp_path):
    from mer.common.datasets.prepare import prepare

    root = make_iemocap(tmp_path)
    m, _ = prepare("iemocap", root, out=tmp_path / "m.parquet", quiet=True, workers=2)
    df = m.df.set_index("id")
    # The fixture's file: <s> 0-31, <sil> 32-62, EXCUSE(1) 63-79 (10 ms frames, inclusive).
    assert json.loads(df.loc["Ses01F_impro01_F000", "words"]) == [["EXCUSE(1)", 0.63, 0.8]]
    assert pd.isna(df.loc["Ses01F_impro01_M000", "words"])          # no .wdseg for this one
    bad = root / "Session1" / "sentences" / "ForcedAlignment" / "Ses01F_impro01" / "Ses01F_impro01_F000.wdseg"
    bad.write_text("\tSFrm  EFrm    SegAScr Word\n\t63    x      -91264  EXCUSE(1)\n")
    with pytest.raises(CorpusError, match=r"Ses01F_impro01_F000\.wdseg:2: cannot parse"):
        prepare("iemocap", root, out=tmp_path / "m2.parquet", quiet=True, workers=2)


def test_word_pieces_take_their_words_frames():
    from mer.extract.text import packaged_minilm_dir

    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(packaged_minilm_dir()), local_files_only=True)
    text = "Excuse me, [LAUGHTER] hyperventilating!"
    words = [["EXCUSE(1)", 0.10, 0.50], ["ME", 0.50, 0.70], ["++LAUGHTER++", 0.70, 0.95], ["HYPERVENTILATING", 1.00, 1.60]]
    wt = W.word_times(text, words)
    assert [(round(a, 2), round(b, 2)) for _, _, a, b in wt] == [(0.1, 0.5), (0.5, 0.7), (0.7, 0.95), (1.0, 1.6)]
    enc = tok(text, return_offsets_mapping=True, return_special_tokens_mask=True)
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    spans = W.token_spans(enc["offset_mapping"], enc["special_tokens_mask"], wt, duration=1.8)
    got = {p: tuple(s) for p, s in zip(pieces, spans)}
    assert got["[CLS]"] == (0.0, 1.8) and got["[SEP]"] == (0.0, 1.8)
    assert got["excuse"] == (0.1, 0.5) and got[","] == (0.5, 0.7)       # punctuation: its word's span
    assert len([p for p in pieces if p.startswith("##")]) >= 1           # "hyperventilating" is split...
    for p, s in zip(pieces, spans):
        if p.startswith("##") or p == "hyper":
            assert tuple(s) == (1.0, 1.6)                                # ...and every piece gets its word
    r = W.frame_ranges(spans, 100.0, 180)
    assert r[pieces.index("excuse")].tolist() == [10, 50]
    frames = np.arange(180, dtype=np.float32)[:, None]
    pooled = W.pool(frames, r)
    assert pooled[pieces.index("me")][0] == pytest.approx(np.mean(np.arange(50, 70)))
    # Unmatched words share the gap between matched neighbours.
    wt = W.word_times("one two three four", [["ONE", 0.0, 0.2], ["FOUR", 0.8, 1.0]])
    assert [(round(a, 2), round(b, 2)) for _, _, a, b in wt] == [(0.0, 0.2), (0.2, 0.5), (0.5, 0.8), (0.8, 1.0)]
    assert W.word_times("hello", [["GOODBYE", 0.0, 1.0]]) is None
    # Without word times the bins are exactly models_masked.align_to_tokens'.
    import torch

    from mer.train.models_masked import align_to_tokens

    x = torch.randn(1, 13, 3)
    ref = align_to_tokens(x, torch.ones(1, 13, dtype=torch.bool), torch.ones(1, 5, dtype=torch.bool))[0].numpy()
    np.testing.assert_allclose(W.pool(x[0].numpy(), W.uniform_ranges(5, 13)), ref, atol=1e-6)


def test_masked_uses_wdseg_word_times_and_says_so(tmp_path):
    """Synthesized IEMOCAP-layout corpus with .wdseg files -> prepare -> mfcc + bert -> masked:
    the run config says word times were used for every utterance, and the audio the model got
    for a token is the mean of its word's frames."""
    from mer.common.cli import main
    from mer.common.synth import generate
    from mer.train.data import FeatureCache, build_data, parse_features, resolve_inputs
    from mer.train.trainer import load_labels

    root = generate(tmp_path / "corpus", per_class=2, sessions=5, seed=3, workers=1)
    cache = tmp_path / "cache"
    main(["prepare", "-d", "iemocap", "-r", str(root), "--cache", str(cache)])
    main(["extract", "-d", "iemocap", "--cache", str(cache), "--features", "mfcc,bert", "--workers", "0", "-q"])
    runs = tmp_path / "runs"
    main(["train", "-d", "iemocap", "--cache", str(cache), "-f", "bert.tokens,mfcc.frames", "--fusion", "masked",
          "--epochs", "2", "--out", str(runs), "--run-id", "m", "-q", "--no-plots"])
    cfg = yaml.safe_load((runs / "m" / "config.yaml").read_text())
    al = cfg["audio_to_tokens"]
    n = json.loads((runs / "m" / "metrics.json").read_text())["n_utterances"]
    assert al["method"] == "word times" and al["word_times"] == n and al["resampled"] == 0

    man, sch, labels, classes = load_labels("iemocap", None, cache)
    fc = FeatureCache("iemocap", cache, man)
    src = resolve_inputs(parse_features("bert.tokens,mfcc.frames"), fc, "sequence")
    data = build_data(man.df, labels, classes, src, fc)
    aligned = W.word_aligned(data, fc)
    a, t = aligned.arrays["mfcc.frames"], aligned.arrays["bert.tokens"]
    assert np.array_equal(a.offsets, t.offsets)                     # one audio row per token
    i = 0
    words = json.loads(data.meta["words"].iloc[i])
    frames = data.arrays["mfcc.frames"].values[data.arrays["mfcc.frames"].offsets[i]: data.arrays["mfcc.frames"].offsets[i + 1]]
    # token 1 is the first word's first piece: its audio is the mean of that word's frames (100 Hz)
    s, e = int(np.floor(words[0][1] * 100)), int(np.ceil(words[0][2] * 100))
    np.testing.assert_allclose(a.values[a.offsets[i] + 1], frames[s:e].mean(0), rtol=1e-5, atol=1e-5)

    # Without word times: today's resampling, recorded as such.
    data.meta["words"] = None
    plain = W.word_aligned(data, fc)
    assert plain.alignment["method"] == "resampled" and plain.arrays is data.arrays
