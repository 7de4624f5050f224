"""Neural extractors: bert, openl3, dvector, wav2vec, and their shared torch plumbing.

Run on a GPU with ``pytest --device cuda tests/test_neural.py`` (see tests/conftest.py).
Parity tolerances are stated where they are asserted.
"""
from __future__ import annotations

import ctypes
import os
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mer.common.device import choose  # noqa: E402
from mer.common.errors import MerError, UsageError  # noqa: E402
from mer.extract.base import EXTRACTORS, Utterance  # noqa: E402
from mer.extract import torchutil as tu  # noqa: E402

CPU_ATOL = 1e-5        # fp32 on CPU: same weights, same maths, only summation order differs
GPU_ATOL = 1e-3        # fp32 on CUDA: cuDNN/TF32 kernels differ from the CPU reference

TEXTS = [
    "I can't believe you did that!",
    "ok",
    "",
    "Well, you know, I was thinking that maybe we could go to the beach tomorrow if the weather holds up.",
    "No.",
]


def atol(device: str) -> float:
    return CPU_ATOL if device == "cpu" else GPU_ATOL


def texts(ts=TEXTS):
    return [Utterance(f"u{i}", text=t) for i, t in enumerate(ts)]


# ============================================================================ torchutil


def test_pick_device_and_dtype():
    assert choose("cpu") == "cpu"
    assert choose("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(UsageError):
        choose("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            choose("cuda")
    assert tu.resolve_dtype("cpu", "auto") == torch.float32
    with pytest.raises(UsageError, match="GPUs only"):
        tu.resolve_dtype("cpu", "bfloat16")
    with pytest.raises(UsageError):
        tu.resolve_dtype("cpu", "int8")


def test_oom_batcher_halves_and_keeps_order():
    calls = []

    def fn(chunk):
        calls.append(len(chunk))
        if len(chunk) > 3:  # a "GPU" that fits at most 3 items
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [x * 10 for x in chunk]

    b = tu.OOMBatcher(16)
    assert b(fn, list(range(10))) == [x * 10 for x in range(10)]
    assert b.batch_size == 2 and b.shrinks == [(16, 8), (8, 4), (4, 2)]
    assert calls[:3] == [10, 8, 4]          # 10 items at 16, then retried at 8 and 4
    calls.clear()
    assert b(fn, list(range(5))) == [0, 10, 20, 30, 40]
    assert calls == [2, 2, 1]               # the reduced size sticks for the next batch

    def never_fits(chunk):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(MerError, match="utt-7: out of GPU memory even with a batch size of 1"):
        tu.OOMBatcher(4, describe=lambda it: it[0])(never_fits, [("utt-7", 1)])

    def broken(chunk):
        raise ValueError("not an OOM")

    with pytest.raises(ValueError):   # other errors are never swallowed
        tu.OOMBatcher(4)(broken, [1, 2])


def test_hashing_and_shared_model(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"a" * 100)
    (d / "README.md").write_text("docs")
    h1 = tu.hash_model_dir(d)
    (d / "README.md").write_text("other docs")          # not a weight/config file
    assert tu.hash_model_dir(d) == h1
    (d / "model.safetensors").write_bytes(b"b" * 100)    # same size, new content
    os.utime(d / "model.safetensors", ns=(1, 1))
    assert tu.hash_model_dir(d) != h1

    n = []
    key = ("test", str(tmp_path))
    a = tu.shared_model(key, lambda: n.append(1) or object())
    assert tu.shared_model(key, lambda: n.append(1) or object()) is a and n == [1]


def test_unknown_model_id_is_actionable(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))   # an empty Hugging Face cache
    with pytest.raises(MerError, match=r"not found locally.*huggingface-cli download no-such-org/no-such-model"):
        EXTRACTORS.get("bert")(EXTRACTORS.get("bert").Config(model="no-such-org/no-such-model"))
    with pytest.raises(MerError, match="huggingface-cli download"):
        EXTRACTORS.get("wav2vec")(EXTRACTORS.get("wav2vec").Config(model="facebook/wav2vec2-base"))
    with pytest.raises(MerError, match="needs a model"):
        EXTRACTORS.get("wav2vec")()


# ============================================================================ bert


@pytest.fixture(scope="module")
def minilm():
    from mer.extract.text import packaged_minilm_dir

    d = packaged_minilm_dir()
    tok = transformers.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(d), local_files_only=True).eval()
    return tok, model


def _reference(tok, model, ts, max_tokens=128, device="cpu"):
    """all-MiniLM run directly through transformers: padded batch, masked mean, first token."""
    model = model.to(device)
    enc = tok(ts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt").to(device)
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
    m = enc["attention_mask"].unsqueeze(-1).float()
    mean = (out.last_hidden_state * m).sum(1) / m.sum(1)
    return enc, out, mean.cpu().numpy(), out.last_hidden_state[:, 0].cpu().numpy()


def test_bert_pooled_parity_with_transformers(minilm, device):
    tok, model = minilm
    cls = EXTRACTORS.get("bert")
    e = cls(cls.Config(dtype="float32"), device)
    assert e.outputs()["mean"].dim == 384 and e.outputs()["token_ids"].dtype == "int32"
    res = e.process(texts())
    enc, out, mean, first = _reference(tok, model, TEXTS, device=device)
    tol = atol(device)
    for i, r in enumerate(res):
        np.testing.assert_allclose(r["mean"], mean[i], atol=tol, rtol=0)
        np.testing.assert_allclose(r["cls"], first[i], atol=tol, rtol=0)
        # Token level: ids equal the tokenizer's, the mask is rebuilt from the ragged length,
        # and the vectors equal the reference's rows under that mask.
        n = int(enc["attention_mask"][i].sum())
        assert r["tokens"].shape == (n, 384) and r["token_ids"].shape == (n, 1)
        assert r["token_ids"][:, 0].tolist() == enc["input_ids"][i, :n].tolist()
        np.testing.assert_allclose(r["tokens"], out.last_hidden_state[i, :n].cpu().numpy(), atol=tol, rtol=0)
    assert res[2]["token_ids"][:, 0].tolist() == [tok.cls_token_id, tok.sep_token_id]  # empty text


def test_bert_sorted_batches_equal_one_by_one(device):
    cls = EXTRACTORS.get("bert")
    e = cls(cls.Config(dtype="float32", batch_size=2), device)   # forces several sorted sub-batches
    batched = e.process(texts())
    single = [e.process([u])[0] for u in texts()]
    for a, b in zip(batched, single):
        for k in ("tokens", "cls", "mean"):
            np.testing.assert_allclose(a[k], b[k], atol=atol(device), rtol=0)
        assert np.array_equal(a["token_ids"], b["token_ids"])


def test_bert_last4_layer_index_truncation_and_special_tokens(minilm, device):
    tok, model = minilm
    cls = EXTRACTORS.get("bert")
    enc, out, _, _ = _reference(tok, model, TEXTS, max_tokens=12, device=device)
    e4 = cls(cls.Config(layer="last4", max_tokens=12, dtype="float32"), device)
    assert e4.outputs()["tokens"].dim == 4 * 384
    r4 = e4.process(texts())
    cat = torch.cat(out.hidden_states[-4:], dim=-1).cpu().numpy()
    e2 = cls(cls.Config(layer="2", max_tokens=12, dtype="float32"), device)
    r2 = e2.process(texts())
    ea = cls(cls.Config(layer="all", max_tokens=12, dtype="float32"), device)
    assert ea.outputs()["tokens"].dim == 7 * 384 and ea.outputs()["mean"].layers == 7   # embeddings + 6 layers
    ra = ea.process(texts())
    every = torch.cat(out.hidden_states, dim=-1).cpu().numpy()
    for i in range(len(TEXTS)):
        n = int(enc["attention_mask"][i].sum())
        assert n <= 12
        np.testing.assert_allclose(r4[i]["tokens"], cat[i, :n], atol=atol(device), rtol=0)
        np.testing.assert_allclose(ra[i]["tokens"], every[i, :n], atol=atol(device), rtol=0)
        # per-layer means: block j of "mean" is the mean of layer j over the real tokens
        np.testing.assert_allclose(ra[i]["mean"].reshape(7, 384)[6], every[i, :n].mean(0).reshape(7, 384)[6],
                                   atol=atol(device), rtol=0)
        np.testing.assert_allclose(r2[i]["tokens"], out.hidden_states[2][i, :n].cpu().numpy(), atol=atol(device), rtol=0)
    # The long text was cut to 12 tokens: recorded, not silent.
    assert [ev[1] for ev in e4.events if ev[2] == "text truncated to max_tokens"] == ["u3"]

    ns = cls(cls.Config(special_tokens=False, dtype="float32"), device)
    full = cls(cls.Config(dtype="float32"), device).process(texts())
    r = ns.process(texts())
    for a, b in zip(r, full):
        assert a["token_ids"][:, 0].tolist() == b["token_ids"][1:-1, 0].tolist()   # [CLS] ... [SEP] removed
        np.testing.assert_allclose(a["tokens"], b["tokens"][1:-1], atol=atol(device), rtol=0)
        np.testing.assert_allclose(a["mean"], b["mean"], atol=atol(device), rtol=0)
    assert ns.identity()["special_tokens_included"] is False
    with pytest.raises(UsageError):
        cls(cls.Config(layer="top"))
    with pytest.raises(MerError, match="x: no transcript"):
        cls(cls.Config()).process([Utterance("x", text=None)])


def test_bert_identity_distinguishes_encoders(tmp_path, minilm):
    tok, _ = minilm
    cls = EXTRACTORS.get("bert")
    default = cls()
    ident = default.identity()
    assert ident["model"] == "all-MiniLM-L6-v2" and len(ident["weights_hash"]) == 32
    # A second (tiny, config-built) BERT in a local directory, sharing the tokenizer.
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=4,
                                  num_attention_heads=2, intermediate_size=64)
    d = tmp_path / "tiny-bert"
    transformers.BertModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    tiny = cls(cls.Config(model=str(d)))
    assert tiny.identity()["weights_hash"] != ident["weights_hash"]
    r = tiny.process(texts())
    assert r[0]["mean"].shape == (32,) and tiny.outputs()["cls"].dim == 32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="half precision runs on CUDA only")
def test_bert_half_precision_close_to_fp32(minilm):
    cls = EXTRACTORS.get("bert")
    ref = cls(cls.Config(dtype="float32"), "cuda").process(texts())
    half = cls(cls.Config(dtype="auto"), "cuda").process(texts())
    for a, b in zip(ref, half):
        cos = float(a["mean"] @ b["mean"] / np.linalg.norm(a["mean"]) / np.linalg.norm(b["mean"]))
        assert cos > 0.999


# ============================================================================ openl3


def audio_utts(sr, seconds, seed=0, prefix="a"):
    rng = np.random.default_rng(seed)
    out = []
    for i, s in enumerate(seconds):
        t = np.arange(int(s * sr)) / sr
        x = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.05 * rng.standard_normal(t.size)
        out.append(Utterance(f"{prefix}{i}", audio=x.astype(np.float32), sample_rate=sr))
    return out


def test_openl3_missing_weights_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.delenv("MER_OPENL3_WEIGHTS", raising=False)
    cls = EXTRACTORS.get("openl3")
    with pytest.raises(MerError, match=r"--openl3.weights FILE or set MER_OPENL3_WEIGHTS"):
        cls()
    ok, why = cls.available()
    assert not ok and "openl3 left out" in why
    monkeypatch.setenv("MER_OPENL3_WEIGHTS", str(tmp_path / "nope.safetensors"))
    with pytest.raises(MerError, match="nope.safetensors: OpenL3 weight file not found"):
        cls()
    h5 = tmp_path / "openl3_audio_mel256_music.h5"
    h5.write_bytes(b"\x89HDF")
    with pytest.raises(MerError, match="convert it once"):
        cls(cls.Config(weights=str(h5), random_weights=False)).load()


@pytest.mark.parametrize("input_repr,size", [("mel128", 512), ("mel256", 6144)])
def test_openl3_random_weights_shapes_batching_determinism(input_repr, size, device):
    cls = EXTRACTORS.get("openl3")
    cfg = dict(random_weights=True, input_repr=input_repr, embedding_size=size, hop=0.5, dtype="float32")
    e = cls(cls.Config(**cfg, batch_size=64), device)
    assert "RANDOM" in e.identity()["weights"] and e.sample_rate == 48000
    assert e.outputs()["frames"].frame_rate == 2.0
    utts = audio_utts(48000, [1.1, 0.4])
    r = e.process(utts)
    for u, x in zip(utts, r):
        # openl3's framing: half a window of zeros in front, end padded to whole hops.
        n = len(u.audio) + 24000
        want = 1 if n <= 48000 else int(np.ceil((n - 48000) / 24000)) + 1
        assert x["frames"].shape == (want, size)
        assert x["mean"].shape == (size,) and x["std"].shape == (size,)
        np.testing.assert_allclose(x["mean"], x["frames"].mean(0), rtol=1e-5, atol=1e-5)
    # Another instance, a different sub-batch size, the utterances one at a time: same numbers.
    e2 = cls(cls.Config(**cfg, batch_size=2), device)
    again = [e2.process([u])[0] for u in utts]
    for a, b in zip(r, again):
        np.testing.assert_allclose(a["frames"], b["frames"], rtol=1e-4, atol=1e-4 * float(np.abs(a["frames"]).max()))
    assert not np.allclose(r[0]["frames"][0], r[1]["frames"][0])   # different audio, different output


def test_openl3_frontend_matches_kapre_reference():
    """Log-mel front end (float32 torch) vs a float64 numpy/librosa rendering of Kapre's
    Melspectrogram, within a tolerance that holds on any x86-64 CPU.

    Why the tolerance depends on the level: the float32 STFT's rounding leaves an absolute
    error of about K * eps32 * a_max in each mel amplitude (a_max: the loudest one), so a bin
    ``ref`` dB below the maximum (dB = 10 log10 of the amplitude here, as in Kapre) has a
    relative error K * eps32 * 10^(-ref/10), i.e. 20/ln(10) * K * eps32 * 10^(-ref/10) dB. A
    fixed 1e-3 dB held on AMD EPYC and failed on an Intel Xeon (1.14e-3 dB, one value ~45 dB
    down in an almost empty mel256 band), because the summation order of the FFT (SIMD width)
    differs between CPUs. Measured here K <= 2.1; the bound for a radix-2 FFT of n = 2048
    grows like log2(n) = 11, so K = 16 holds whatever order the CPU sums in. The 1e-4 dB
    floor is 10x float32's resolution of values up to 80 dB (80 * eps32 = 1e-5)."""
    import librosa

    from mer.extract.openl3 import build_network

    rng = np.random.default_rng(1)
    t = np.arange(48000) / 48000
    x = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(48000)).astype(np.float32)
    for repr_, n_mels in (("mel128", 128), ("mel256", 256)):
        net = build_network(repr_, 512)
        with torch.no_grad():
            ours = net.frontend(torch.from_numpy(x)[None])[0, 0].numpy()
        xp = np.pad(x.astype(np.float64), (982, 982))   # Keras 'same' padding for 199 frames
        power = np.abs(librosa.stft(xp, n_fft=2048, hop_length=242, window="hann", center=False)) ** 2
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)   # mel256 at n_fft 2048 has empty low bands
            fb = librosa.filters.mel(sr=48000, n_fft=2048, n_mels=n_mels, htk=True, norm="slaney", dtype=np.float64)
        db = 10 * np.log10(np.maximum(np.sqrt(fb @ power), 1e-10))
        ref = np.maximum(db - db.max(), -80.0)
        assert ours.shape == ref.shape == (n_mels, 199)
        k, eps = 16.0, float(np.finfo(np.float32).eps)
        tol = 1e-4 + 20 / np.log(10) * k * eps * 10.0 ** (-ref / 10)
        err = np.abs(ours.astype(np.float64) - ref)
        assert np.all(err <= tol), f"{repr_}: worst {err.max():.3g} dB at {ref.flat[np.argmax(err / tol)]:.1f} dB (tol there {tol.flat[np.argmax(err / tol)]:.3g})"


def _keras_like_h5(path, net):
    """Write a random torch OpenL3 as an official-style Keras weight file (layer order as in
    openl3.models: input, kapre melspectrogram, BN, then conv/BN/activation/pool layers)."""
    import h5py

    from mer.extract.openl3 import conv_and_bn_layers

    convs, bns = conv_and_bn_layers(net)
    layers = [("input_1", {}), ("melspectrogram_1", {"real_kernels": np.zeros((2048, 1, 1025)), "freq2mel": np.zeros((1025, 256))})]
    bn_i = 0

    def bn(b):
        nonlocal bn_i
        bn_i += 1
        return (f"batch_normalization_{bn_i}", {"gamma": b.weight.detach().numpy(), "beta": b.bias.detach().numpy(),
                                                "moving_mean": b.running_mean.numpy(), "moving_variance": b.running_var.numpy()})

    layers.append(bn(bns[0]))
    for i, c in enumerate(convs):
        name = "audio_embedding_layer" if i == len(convs) - 1 else f"conv2d_{i + 1}"
        layers.append((name, {"kernel": c.weight.detach().numpy().transpose(2, 3, 1, 0), "bias": c.bias.detach().numpy()}))
        if i + 1 < len(bns):
            layers.append(bn(bns[i + 1]))
            layers.append((f"activation_{i + 1}", {}))
        if i % 2 == 1 and i < len(convs) - 1:
            layers.append((f"max_pooling2d_{i // 2 + 1}", {}))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [n.encode() for n, _ in layers]
        for n, ws in layers:
            g = f.create_group(n)
            g.attrs["weight_names"] = [f"{n}/{k}:0".encode() for k in ws]
            for k, v in ws.items():
                g.create_dataset(f"{n}/{k}:0", data=np.asarray(v, dtype=np.float32))


def test_openl3_weight_files_round_trip_and_keras_conversion(tmp_path, device):
    from safetensors.torch import save_file

    from mer.extract.openl3 import build_network, convert_keras_h5, main, random_init

    cls = EXTRACTORS.get("openl3")
    net = build_network("mel128", 512)   # the same weights serve mel256: only the front end differs
    random_init(net)
    g = torch.Generator().manual_seed(5)
    for m in net.modules():   # non-trivial BN statistics, so a mix-up of BN tensors would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(1 + 0.2 * torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
    sd = {k: v.contiguous() for k, v in net.state_dict().items()}
    st = tmp_path / "w.safetensors"
    save_file(sd, str(st), metadata={"input_repr": "mel128", "content_type": "music"})
    pt = tmp_path / "w.pt"
    torch.save(sd, pt)
    utts = audio_utts(48000, [1.0], seed=3)
    net.eval()
    with torch.no_grad():
        e0 = cls(cls.Config(random_weights=True, input_repr="mel128", embedding_size=512, hop=0.5))
        want = net(torch.from_numpy(e0.windows(utts[0].audio).astype(np.float32))).numpy()
    outs = []
    for path in (st, pt):
        e = cls(cls.Config(weights=str(path), input_repr="mel128", embedding_size=512, hop=0.5, dtype="float32"), device)
        assert e.identity()["weights_hash"] and "RANDOM" not in str(e.identity())
        outs.append(e.process(utts)[0]["frames"])
        np.testing.assert_allclose(outs[-1], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    # The file says mel128/music; asking for env or mel256 must fail instead of loading the wrong model.
    with pytest.raises(MerError, match="content_type=music"):
        cls(cls.Config(weights=str(st), input_repr="mel128", content_type="env", embedding_size=512)).load()
    with pytest.raises(MerError, match="input_repr=mel128"):
        cls(cls.Config(weights=str(st), input_repr="mel256", embedding_size=512)).load()
    bad = tmp_path / "bad.safetensors"
    save_file({"x": torch.zeros(2)}, str(bad))
    with pytest.raises(MerError, match="not an OpenL3 state_dict"):
        cls(cls.Config(weights=str(bad))).load()

    h5 = tmp_path / "openl3_audio_mel128_music.h5"   # the converter reads repr/content from the name
    _keras_like_h5(h5, net)
    conv = tmp_path / "conv.safetensors"
    assert main(["convert", str(h5), str(conv)]) == 0
    e = cls(cls.Config(weights=str(conv), input_repr="mel128", embedding_size=512, hop=0.5, dtype="float32"), device)
    np.testing.assert_allclose(e.process(utts)[0]["frames"], want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    with pytest.raises(MerError, match="conv and .* batch-norm layers"):
        import h5py

        with h5py.File(h5, "a") as f:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in f.attrs["layer_names"]]
            f.attrs["layer_names"] = [n.encode() for n in names if n != "conv2d_3"]
        convert_keras_h5(h5, tmp_path / "x.safetensors")


# ============================================================================ dvector


class _Espeak:
    """Minimal espeak-ng (espeakng-loader's bundled library) speech for speaker tests."""

    def __init__(self):
        import espeakng_loader

        self.lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self.sr = self.lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)
        self.buf = []
        cb_t = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def cb(wav, n, ev):
            if n > 0:
                self.buf.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._cb = cb_t(cb)   # keep a reference: the C side calls it
        self.lib.espeak_SetSynthCallback(self._cb)

    def say(self, text, voice="en", pitch=50, rate=160):
        import soxr

        self.buf = []
        self.lib.espeak_SetVoiceByName(voice.encode())
        self.lib.espeak_SetParameter(1, rate, 0)
        self.lib.espeak_SetParameter(3, pitch, 0)
        t = text.encode() + b"\0"
        self.lib.espeak_Synth(t, len(t), 0, 1, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        x = np.concatenate(self.buf).astype(np.float32) / 32768.0
        return soxr.resample(x, self.sr, 16000).astype(np.float32)


@pytest.fixture(scope="module")
def speech():
    pytest.importorskip("espeakng_loader")
    es = _Espeak()
    s1 = "The weather is lovely, let us walk in the park."
    s2 = "Please bring me the documents before noon."
    return {
        "A1": es.say(s1, "en", pitch=25), "A2": es.say(s2, "en", pitch=25),
        "B1": es.say(s1, "en+f3", pitch=75), "B2": es.say(s2, "en+f3", pitch=75),
    }


def test_dvector_equals_resemblyzer_and_separates_voices(speech, device):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from resemblyzer import VoiceEncoder, preprocess_wav
    cls = EXTRACTORS.get("dvector")
    e = cls(cls.Config(dtype="float32", batch_size=3), device)   # partials of several utterances per forward
    names = list(speech)
    res = e.process([Utterance(n, audio=speech[n], sample_rate=16000) for n in names])
    assert e.events == []
    enc = VoiceEncoder("cpu", verbose=False)
    for n, r in zip(names, res):
        ref, partials, _ = enc.embed_utterance(preprocess_wav(speech[n]), return_partials=True)
        assert r["utterance"].shape == (256,) and r["partials"].shape == partials.shape
        np.testing.assert_allclose(r["utterance"], ref, atol=atol(device), rtol=0)
        np.testing.assert_allclose(r["partials"], partials, atol=atol(device), rtol=0)
    v = {n: r["utterance"] for n, r in zip(names, res)}
    same = min(v["A1"] @ v["A2"], v["B1"] @ v["B2"])
    other = max(v["A1"] @ v["B1"], v["A2"] @ v["B2"], v["A1"] @ v["B2"], v["A2"] @ v["B1"])
    assert same > other + 0.1, (same, other)   # measured: 0.88 vs 0.66
    assert len(e.identity()["weights_hash"]) == 32
    assert abs(e.outputs()["partials"].frame_rate - 100 / 77) < 1e-9


def test_dvector_records_repairs(device):
    cls = EXTRACTORS.get("dvector")
    e = cls(None, device)
    from mer.common.report import Report

    e.report = Report("test")
    t = np.arange(32000) / 16000               # a slowly modulated tone: the VAD finds no voice
    tone = Utterance("a0", audio=(0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32), sample_rate=16000)
    silent = Utterance("z", audio=np.zeros(16000, np.float32), sample_rate=16000)
    r = e.process([tone, silent])
    assert all(np.isfinite(x["utterance"]).all() for x in r)
    assert {(i.id, i.reason) for i in e.report.repaired} == {("a0", "no voice detected"), ("z", "silent audio")}
    with pytest.raises(MerError, match="needs 16000 Hz"):
        e.process([Utterance("x", audio=np.ones(100, np.float32), sample_rate=8000)])


# ============================================================================ wav2vec


SMALL = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
             conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


@pytest.fixture(scope="module")
def ssl_models(tmp_path_factory):
    """Tiny config-built models saved with save_pretrained: no pretrained weights exist offline."""
    d = tmp_path_factory.mktemp("ssl")
    out = {}
    for name, (C, M, extra) in {
        "w2v2-group": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model, {}),
        "w2v2-layer": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model, dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
        "wavlm": (transformers.WavLMConfig, transformers.WavLMModel, dict(feat_extract_norm="layer")),
    }.items():
        torch.manual_seed(0)
        M(C(**SMALL, **extra)).save_pretrained(d / name)
        out[name] = d / name
    return out


@pytest.mark.parametrize("name", ["w2v2-group", "w2v2-layer", "wavlm"])
def test_wav2vec_matches_transformers_and_batches_exactly(ssl_models, name, device):
    path = ssl_models[name]
    cls = EXTRACTORS.get("wav2vec")
    utts = audio_utts(16000, [1.0, 0.5, 1.0, 0.77], seed=2)
    model = transformers.AutoModel.from_pretrained(path).eval().to(device)
    # Every layer choice on one model; the others (same code path) only with the default.
    for layer in (("last", "avg", "1", "all") if name == "w2v2-layer" else ("last",)):
        e = cls(cls.Config(model=str(path), layer=layer, batch_size=4, dtype="float32"), device)
        k = 4 if layer == "all" else 1   # all: the 3 layers' outputs and the transformer input, stacked
        assert e.outputs()["frames"].frame_rate == 50.0 and e.outputs()["mean"].dim == 32 * k
        assert e.outputs()["frames"].layers == k
        res = e.process(utts)
        for u, r in zip(utts, res):
            x = (u.audio - u.audio.mean()) / np.sqrt(u.audio.var() + 1e-7)   # do_normalize
            with torch.no_grad():
                o = model(torch.from_numpy(x[None]).to(device), output_hidden_states=True)
            ref = {"last": o.last_hidden_state, "avg": torch.stack(o.hidden_states[1:]).mean(0),
                   "1": o.hidden_states[1], "all": torch.cat(o.hidden_states, -1)}[layer][0].cpu().numpy()
            assert r["frames"].shape == ref.shape and ref.shape[1] == 32 * k
            np.testing.assert_allclose(r["frames"], ref, atol=10 * atol(device), rtol=0)
            np.testing.assert_allclose(r["std"], ref.std(0), atol=10 * atol(device), rtol=0)
    assert e.identity()["padded_batches"] == (name != "w2v2-group")


def test_wav2vec_identity_follows_weights_and_short_audio_is_recorded(ssl_models, tmp_path):
    cls = EXTRACTORS.get("wav2vec")
    a = cls(cls.Config(model=str(ssl_models["w2v2-group"])))
    b = cls(cls.Config(model=str(ssl_models["w2v2-layer"])))
    assert a.identity()["weights_hash"] != b.identity()["weights_hash"]
    r = a.process([Utterance("tiny", audio=np.full(200, 0.1, np.float32), sample_rate=16000)])
    assert r[0]["frames"].shape == (1, 32)
    assert a.events[0][:3] == ("repair", "tiny", "audio shorter than one frame")
    with pytest.raises(UsageError):
        cls(cls.Config(model=str(ssl_models["w2v2-group"]), layer="9")).outputs()
    with pytest.raises(MerError, match="not a supported speech encoder"):
        bert_dir = tmp_path / "bert"
        transformers.BertModel(transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                                                       intermediate_size=8, vocab_size=10)).save_pretrained(bert_dir)
        cls(cls.Config(model=str(bert_dir))).outputs()


# ============================================================================ end to end


def test_extract_bert_and_dvector_end_to_end(tmp_path, device):
    """`mer extract --dataset iemocap --root <synthetic corpus> --features bert,dvector`, offline:
    the stores read back equal to process() on the same texts/audio (tolerance 1e-5)."""
    pytest.importorskip("espeakng_loader")
    from click.testing import CliRunner

    from mer.common import manifest as mf
    from mer.common.audio import load as load_audio
    from mer.common.cli import cli
    from mer.common.synth import generate
    from mer.extract.store import open_store

    root = generate(tmp_path / "corpus", layout="iemocap", per_class=1, sessions=1, workers=1)
    cache = tmp_path / "cache"
    args = ["extract", "--dataset", "iemocap", "--root", str(root), "--cache", str(cache),
            "--features", "bert,dvector", "--workers", "0", "--device", device, "--quiet"]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    m = mf.load("iemocap", cache)
    df = m.df
    stores = {p.name.split("-")[0]: p for p in (cache / "iemocap" / "features").glob("*.zarr")}
    assert set(stores) == {"bert", "dvector"}

    bert = EXTRACTORS.get("bert")(None, device)
    want = bert.process([Utterance(r.id, text=r.text) for r in df.itertuples()])
    with open_store(stores["bert"]) as r:
        assert r.ids.tolist() == df["id"].tolist() and bool(r.valid.all())
        assert r.attrs["identity"]["weights_hash"] == bert.identity()["weights_hash"]
        mean = r.read_fixed("mean")
        ids, off = r.read_ragged("token_ids")
        assert ids.dtype == np.int32
        for i, w in enumerate(want):
            np.testing.assert_allclose(mean[i], w["mean"], atol=1e-5, rtol=0)
            assert ids[off[i]:off[i + 1], 0].tolist() == w["token_ids"][:, 0].tolist()

    dv = EXTRACTORS.get("dvector")(None, device)
    utts = [Utterance(r.id, audio=load_audio(r.audio, 16000, r.start, r.end), sample_rate=16000) for r in df.itertuples()]
    want = dv.process(utts)
    with open_store(stores["dvector"]) as r:
        assert bool(r.valid.all())
        emb = r.read_fixed("utterance")
        vals, off = r.read_ragged("partials")
        for i, w in enumerate(want):
            np.testing.assert_allclose(emb[i], w["utterance"], atol=1e-5, rtol=0)
            np.testing.assert_allclose(vals[off[i]:off[i + 1]], w["partials"], atol=1e-5, rtol=0)


def test_openl3_and_wav2vec_store_round_trip(tmp_path, ssl_models, device):
    """Random-weight OpenL3 and a config-built wav2vec through run_extract: what the store reads
    back equals process() on the same decoded audio (tolerance 1e-5 relative to the scale)."""
    from test_extract import make_corpus, write_manifest   # the engine tests' tiny corpus helpers

    from mer.common.audio import load as load_audio
    from mer.extract.engine import run_extract
    from mer.extract.store import open_store

    cache = tmp_path / "cache"
    rows = make_corpus(tmp_path / "audio", n=3, min_s=0.4, max_s=1.2)
    write_manifest(cache, rows)
    configs = {
        "openl3": {"random_weights": True, "input_repr": "mel128", "embedding_size": 512, "hop": 0.5},
        "wav2vec": {"model": str(ssl_models["w2v2-layer"]), "layer": "avg"},
    }
    paths = run_extract("iemocap", ["openl3", "wav2vec"], cache=cache, configs=configs, workers=0,
                        quiet=True, device=device)
    for feat, sr, fixed in (("openl3", 48000, "mean"), ("wav2vec", 16000, "std")):
        cls = EXTRACTORS.get(feat)
        e = cls(cls.Config(**configs[feat]), device)
        want = e.process([Utterance(r["id"], audio=load_audio(r["audio"], sr), sample_rate=sr) for r in rows])
        with open_store(paths[feat]) as st:
            assert st.ids.tolist() == [r["id"] for r in rows] and bool(st.valid.all())
            assert st.attrs["identity"] == e.identity()
            vals, off = st.read_ragged("frames")
            fx = st.read_fixed(fixed)
            for i, w in enumerate(want):
                scale = float(np.abs(w["frames"]).max())
                np.testing.assert_allclose(vals[off[i]:off[i + 1]], w["frames"], atol=1e-5 * scale, rtol=0)
                np.testing.assert_allclose(fx[i], w[fixed], atol=1e-5 * scale, rtol=0)
    with open_store(paths["openl3"]) as st:
        assert "RANDOM" in st.attrs["identity"]["weights"]   # can never pass for real OpenL3
