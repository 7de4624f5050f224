"""`mer extract --features asr` on a tiny config-built Whisper (tests/whisper_fixture.py), its
transcripts feeding `bert` through `--text-source`, and the WER against gold transcripts."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from corpus_fixtures import make_modality_csv
from mer.common.cli import main
from mer.extract.asr import pack, word_errors, wer
from mer.extract.base import EXTRACTORS, Utterance
from whisper_fixture import make_tiny_whisper


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    return make_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


def _utts():
    return [Utterance(f"u{i}", audio=(0.3 * np.sin(np.arange(int(16000 * s)) * 0.05 * (i + 1))).astype(np.float32),
                      sample_rate=16000) for i, s in enumerate([1.0, 0.5, 1.6])]


def test_asr_matches_transformers_run_directly(whisper):
    import torch
    import transformers

    cls = EXTRACTORS.get("asr")
    e = cls(cls.Config(model=str(whisper), max_new_tokens=10, dtype="float32", batch_size=2))  # 2 sub-batches
    res = e.process(_utts())
    single = [e.process([u])[0] for u in _utts()]
    proc = transformers.AutoProcessor.from_pretrained(str(whisper))
    model = transformers.WhisperForConditionalGeneration.from_pretrained(str(whisper)).eval()
    for u, r, r1 in zip(_utts(), res, single):
        assert np.array_equal(r["text"], r1["text"]) and np.array_equal(r["words"], r1["words"])  # batching is exact
        text = bytes(r["text"][:, 0].astype(np.uint8)).decode()
        feats = proc.feature_extractor(u.audio, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            ids = model.generate(feats["input_features"], language="en", task="transcribe", max_new_tokens=10)
            timed = model.generate(feats["input_features"], language="en", task="transcribe", max_new_tokens=10,
                                   return_token_timestamps=True, return_dict_in_generate=True)
        ref = proc.tokenizer.batch_decode(ids, skip_special_tokens=True)[0].strip()
        assert text == ref and text
        w = r["words"]
        assert len(w) == len(text.split())
        seq, ts = timed["sequences"][0].tolist(), timed["token_timestamps"][0].tolist()
        first = next(j for j, i in enumerate(seq) if i not in proc.tokenizer.all_special_ids and i < 261)
        assert w[0, 0] == round(ts[first] * 1000)   # the first word starts at its first token's time
        for s, e_, c0, c1 in w.tolist():
            assert text[c0:c1] and " " not in text[c0:c1]
            assert 0 <= s <= e_ <= 30000
    ident = e.identity()
    assert ident["model_type"] == "whisper" and ident["weights_hash"]


def test_pack_and_wer():
    r = pack({"text": " hello big world", "chunks": [{"text": " hello", "timestamp": (0.0, 0.4)},
                                                     {"text": " big", "timestamp": (0.4, None)},
                                                     {"text": " world", "timestamp": (0.9, 1.3)}]}, 2.0)
    text = bytes(r["text"][:, 0].astype(np.uint8)).decode()
    assert text == "hello big world"
    assert r["words"].tolist() == [[0, 400, 0, 5], [400, 900, 6, 9], [900, 1300, 10, 15]]  # missing end: next start
    assert word_errors("The cat sat.", "the bat sat on") == (2, 3)                      # 1 substitution + 1 insertion
    assert wer([("a b c d", "a b c d"), ("x y", "")])["wer"] == pytest.approx(2 / 6)


def test_asr_transcripts_feed_bert_through_text_source(whisper, tmp_path, capsys):
    root = make_modality_csv(tmp_path, ("path", "text", "label"), per_class=3)
    cache, runs = tmp_path / "cache", tmp_path / "runs"
    main(["prepare", "-d", "csv", "-r", str(root), "--cache", str(cache)])
    capsys.readouterr()
    main(["extract", "-d", "csv", "--cache", str(cache), "--features", "asr", "--asr.model", str(whisper),
          "--asr.max_new_tokens", "8", "--workers", "0", "-q"])
    asr_store = capsys.readouterr().out.split("asr\t")[1].split()[0]
    main(["extract", "-d", "csv", "--cache", str(cache), "--features", "bert", "--text-source", f"asr:{whisper}",
          "--workers", "0", "-q"])
    err = capsys.readouterr().err
    assert "text source: 12/12 utterances transcribed" in err and "WER against the corpus transcripts" in err
    main(["extract", "-d", "csv", "--cache", str(cache), "--features", "bert", "--workers", "0", "-q"])
    from mer.extract.cache import list_stores

    berts = [s for s in list_stores("csv", cache) if s["feature"] == "bert"]
    assert len(berts) == 2 and len({s["manifest_hash"] for s in berts}) == 2   # ASR text never mixes with gold

    main(["train", "-d", "csv", "--cache", str(cache), "-f", "bert", "--text-source", f"asr:{asr_store}",
          "--protocol", "random", "--epochs", "2", "--out", str(runs), "--run-id", "asr", "-q", "--no-plots"])
    cfg = yaml.safe_load((runs / "asr" / "config.yaml").read_text())
    assert cfg["train"]["text_source"] == f"asr:{asr_store}"
    assert cfg["text_source"]["store"] == asr_store and 0 <= cfg["text_source"]["wer"]["wer"]
    assert cfg["stores"]["bert"]["path"] != [s for s in berts if s["path"] != cfg["stores"]["bert"]["path"]][0]["path"]
    assert json.loads((runs / "asr" / "metrics.json").read_text())["n_utterances"] == 12

    # An audio-only corpus gets a text modality from its transcripts.
    root2 = make_modality_csv(tmp_path / "b", ("path", "label"), per_class=2)
    cache2 = tmp_path / "cache2"
    main(["prepare", "-d", "csv", "-r", str(root2), "--cache", str(cache2)])
    capsys.readouterr()
    main(["extract", "-d", "csv", "--cache", str(cache2), "--features", "asr,bert", "--asr.model", str(whisper),
          "--asr.max_new_tokens", "6", "--text-source", f"asr:{whisper}", "--workers", "0", "-q"])
    out = capsys.readouterr()
    assert "bert\t" in out.out and "no gold transcripts: no WER" in out.err
