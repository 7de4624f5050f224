"""The default feature list and which config fields key a store."""
from mer.extract import cache as C
from mer.extract.base import DEFAULT_FEATURES, RUNTIME_FIELDS, default_features


def test_default_features_leave_openl3_out_without_weights(monkeypatch):
    monkeypatch.delenv("MER_OPENL3_WEIGHTS", raising=False)
    chosen, notices = default_features()
    assert "openl3" in DEFAULT_FEATURES and "openl3" not in chosen
    assert chosen[:3] == ["mfcc", "mel", "egemaps"] and "bert" in chosen
    assert len(notices) == 1 and "openl3" in notices[0] and "MER_OPENL3_WEIGHTS" in notices[0]


def test_default_features_take_openl3_when_weights_exist(monkeypatch, tmp_path):
    w = tmp_path / "openl3.safetensors"
    w.write_bytes(b"0")
    monkeypatch.setenv("MER_OPENL3_WEIGHTS", str(w))
    chosen, notices = default_features()
    assert "openl3" in chosen and not notices


def test_runtime_fields_do_not_change_the_key_but_settings_do():
    base = {"n_mfcc": 40, "batch_size": 64}
    k = C.store_key("h", "mfcc", base, {}, "float32")
    assert "batch_size" in RUNTIME_FIELDS
    assert C.store_key("h", "mfcc", {**base, "batch_size": 8}, {}, "float32") == k
    assert C.store_key("h", "mfcc", {**base, "n_mfcc": 13}, {}, "float32") != k
    assert C.store_key("h2", "mfcc", base, {}, "float32") != k
    assert C.store_key("h", "mfcc", base, {}, "float16") != k


def test_extractor_notes_reach_the_store_report(tmp_path):
    """bert truncating a text (--bert.max_tokens) is listed in the store's report, per utterance."""
    import json

    from test_extract import make_corpus, write_manifest  # the engine tests' tiny corpus helpers

    from mer.extract.engine import run_extract

    cache = tmp_path / "cache"
    rows = make_corpus(tmp_path / "audio", n=3, min_s=0.4, max_s=0.6)
    write_manifest(cache, rows)
    paths = run_extract("iemocap", ["bert"], cache=cache, configs={"bert": {"max_tokens": 3}}, workers=0, quiet=True)
    rep = json.loads((paths["bert"].parent / (paths["bert"].name + ".report.json")).read_text())
    noted = {n["id"] for n in rep["notes"] if n["reason"] == "text truncated to max_tokens"}
    assert noted == {r["id"] for r in rows}


def test_extractors_say_what_is_missing(tmp_path, monkeypatch):
    """``Extractor.missing(config)``: None when usable, else a message naming the option that
    fixes it (recipes ask it of each feature; `mer extract` without --features too)."""
    from mer.extract.base import EXTRACTORS

    monkeypatch.delenv("MER_OPENL3_WEIGHTS", raising=False)
    assert EXTRACTORS.get("mfcc").missing(None) is None
    assert EXTRACTORS.get("openl3").missing({"random_weights": "true"}) is None
    assert "--openl3.weights" in EXTRACTORS.get("openl3").missing(None)
    assert "--wav2vec.model" in EXTRACTORS.get("wav2vec").missing({})
    assert "--bert.model" in EXTRACTORS.get("bert").missing({"model": str(tmp_path / "no-such-encoder")})
    assert "--smile.config" in EXTRACTORS.get("smile").missing({"config": str(tmp_path / "emo_large.conf")})
    ok, why = EXTRACTORS.get("openl3").available()
    assert not ok and why.startswith("openl3 left out: ") and why.endswith(EXTRACTORS.get("openl3").missing(None))
