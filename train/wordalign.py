"""Audio pooled per text token from real word times (IEMOCAP's ``.wdseg`` forced alignments).

CM-BERT-style models (``masked``) attend over text tokens with one audio vector per token.
Without an alignment ``mer`` resamples each utterance's frames uniformly to its token count
(``mer.train.models_masked.align_to_tokens``). Where the manifest has word times (its
``words`` column), ``word_aligned`` replaces each ragged audio input of such a model by one
row per token: the mean of the audio frames inside the token's word, computed once per run
before normalisation. The model then sees as many audio rows as tokens, which its resampling
passes through unchanged (n_a = n_t makes every bin one frame).

Token -> word -> time:
1. the transcript is re-tokenized with the bert store's own tokenizer (its model and
   max_tokens, from the store config) to get each token's character span; the ids must equal
   the stored ``token_ids``, else that utterance falls back to resampling (counted);
2. transcript words (whitespace-separated, upper-cased, punctuation and brackets stripped:
   ``[LAUGHTER]`` -> ``LAUGHTER``) are matched to the alignment's words (pronunciation suffix
   ``(1)`` stripped, ``++NOISE++`` -> ``NOISE``) in order with difflib; a transcript word
   without a match gets the gap between its matched neighbours, shared evenly;
3. a word piece takes its word's span ([CLS]/[SEP] and other special tokens take the whole
   utterance); frames ``[floor(start * rate), ceil(end * rate))``, at least one frame, clipped
   to the utterance.
Which was used (word times or resampling, and for how many utterances) goes into the run's
``config.yaml`` as ``audio_to_tokens``.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
from difflib import SequenceMatcher

import numpy as np

_VARIANT = re.compile(r"\(\d+\)$")
_KEEP = re.compile(r"[^0-9A-Z']+")


def norm_word(w: str) -> str:
    return _KEEP.sub("", _VARIANT.sub("", str(w)).upper())


def transcript_words(text: str) -> list[tuple[str, int, int]]:
    """(normalised word, char start, char end) for each whitespace-separated word with letters."""
    out = []
    for m in re.finditer(r"\S+", text or ""):
        w = norm_word(m.group())
        if w:
            out.append((w, m.start(), m.end()))
    return out


def word_times(text: str, aligned: list) -> list[tuple[int, int, float, float]] | None:
    """(char start, char end, t0, t1) per transcript word, times from the alignment's words;
    None when no word matches at all."""
    tw = transcript_words(text)
    aw = [(norm_word(w), float(s), float(e)) for w, s, e in aligned]
    aw = [a for a in aw if a[0]]
    if not tw or not aw:
        return None
    times: list[list | None] = [None] * len(tw)
    sm = SequenceMatcher(None, [w for w, _, _ in tw], [w for w, _, _ in aw], autojunk=False)
    for blk in sm.get_matching_blocks():
        for k in range(blk.size):
            times[blk.a + k] = [aw[blk.b + k][1], aw[blk.b + k][2]]
    if all(t is None for t in times):
        return None
    # Unmatched words share the gap between their matched neighbours.
    i = 0
    while i < len(times):
        if times[i] is not None:
            i += 1
            continue
        j = i
        while j < len(times) and times[j] is None:
            j += 1
        lo = times[i - 1][1] if i > 0 else (times[j][0] if j < len(times) else 0.0)
        hi = times[j][0] if j < len(times) else lo
        if hi < lo:
            hi = lo
        step = (hi - lo) / (j - i)
        for k in range(i, j):
            a = lo + (k - i) * step
            times[k] = [a, a + step] if step > 0 else [lo, max(lo, times[i - 1][1] if i > 0 else lo)]
        i = j
    return [(c0, c1, t[0], t[1]) for (_, c0, c1), t in zip(tw, times)]


def token_spans(offsets, special, words: list[tuple[int, int, float, float]], duration: float) -> np.ndarray:
    """[T, 2] seconds per token: its word's span; special tokens (and pieces outside every
    word, such as punctuation split off a word) the whole utterance."""
    out = np.empty((len(offsets), 2))
    for j, ((c0, c1), sp) in enumerate(zip(offsets, special)):
        span = None
        if not sp and c1 > c0:
            for w0, w1, t0, t1 in words:
                if w0 <= c0 < w1:
                    span = (t0, t1)
                    break
        out[j] = span if span is not None else (0.0, duration)
    return out


def frame_ranges(spans: np.ndarray, rate: float, n_frames: int) -> np.ndarray:
    """[T, 2] frame index ranges [start, end) for spans in seconds, each at least one frame."""
    start = np.floor(spans[:, 0] * rate).astype(np.int64)
    end = np.ceil(spans[:, 1] * rate).astype(np.int64)
    start = np.clip(start, 0, max(n_frames - 1, 0))
    end = np.clip(np.maximum(end, start + 1), 1, n_frames)
    return np.stack([start, end], 1)


def uniform_ranges(n_tokens: int, n_frames: int) -> np.ndarray:
    """Today's resampling as frame ranges: bins of adaptive average pooling (as in
    models_masked.align_to_tokens: [floor(j na / nt), ceil((j + 1) na / nt)))."""
    j = np.arange(n_tokens)
    return np.stack([(j * n_frames) // n_tokens, -((-(j + 1) * n_frames) // n_tokens)], 1)


def pool(frames: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    cs = np.concatenate([np.zeros((1, frames.shape[1])), np.cumsum(np.asarray(frames, np.float64), 0)])
    return ((cs[ranges[:, 1]] - cs[ranges[:, 0]]) / (ranges[:, 1] - ranges[:, 0])[:, None]).astype(np.float32)


def _tokenizer(fs):
    from mer.extract.text import resolve_text_model

    import transformers

    return transformers.AutoTokenizer.from_pretrained(str(resolve_text_model(fs.config.get("model") or "all-MiniLM-L6-v2")),
                                                      local_files_only=True)


def word_aligned(data, fcache):
    """``data`` with every ragged audio input re-cut to one row per text token (word times
    where the manifest has them, uniform resampling elsewhere), and ``data.alignment`` saying
    which was used. Unchanged (except ``alignment``) when no utterance has word times."""
    import pandas as pd

    from mer.train.data import Arrays

    text = [s for s in data.sources if s.modality == "text" and s.kind == "ragged"]
    audio = [s for s in data.sources if s.modality == "audio" and s.kind == "ragged"]
    words_col = data.meta["words"] if "words" in data.meta else pd.Series([None] * len(data))
    has_words = words_col.notna().to_numpy()
    info = {"method": "resampled", "word_times": 0, "resampled": int(len(data)),
            "why": "no word alignments in the manifest"}
    if not text or not audio:
        info["why"] = "no token sequence and audio frame sequence to align"
        return dataclasses.replace(data, alignment=info)
    if not has_words.any():
        return dataclasses.replace(data, alignment=info)
    ts = text[0]
    fs_t = fcache.get(ts.feature)
    if "token_ids" not in fs_t.ragged:
        info["why"] = f"store {fs_t.where} has no token_ids to map tokens to words"
        return dataclasses.replace(data, alignment=info)
    rates = {s.key: (fcache.get(s.feature).outputs[s.output].get("frame_rate")) for s in audio}
    audio = [s for s in audio if rates[s.key]]
    if not audio:
        info["why"] = "the audio sequences declare no frame rate"
        return dataclasses.replace(data, alignment=info)

    tok = _tokenizer(fs_t)
    max_tokens = int(fs_t.config.get("max_tokens") or 512)
    keep_special = bool(fs_t.config.get("special_tokens", True))
    ids_vals, ids_offs = fs_t.ragged["token_ids"]
    store_row = pd.Index(fs_t.ids).get_indexer(data.ids)
    ta = data.arrays[ts.key]
    n_tok = np.diff(ta.offsets)
    texts = data.meta["text"].astype(object).tolist()
    durs = data.meta["duration"].astype(float).to_numpy()

    spans: list[np.ndarray | None] = []
    mismatched = 0
    for i in range(len(data)):
        if not has_words[i]:
            spans.append(None)
            continue
        wt = word_times(str(texts[i] or ""), json.loads(words_col.iloc[i]))
        if wt is None:
            spans.append(None)
            continue
        enc = tok(str(texts[i]), truncation=True, max_length=max_tokens, return_offsets_mapping=True,
                  return_special_tokens_mask=True)
        ids, offs, spec = enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"]
        if not keep_special:
            keep = [k for k, s in enumerate(spec) if not s]
            ids, offs, spec = [ids[k] for k in keep], [offs[k] for k in keep], [spec[k] for k in keep]
        r = store_row[i]
        stored = np.asarray(ids_vals[ids_offs[r] : ids_offs[r + 1]]).reshape(-1).tolist()
        if stored != list(ids) or len(ids) != n_tok[i]:
            mismatched += 1
            spans.append(None)
            continue
        dur = durs[i] if math.isfinite(durs[i]) else max(t1 for _, _, _, t1 in wt)
        spans.append(token_spans(offs, spec, wt, dur))

    arrays = dict(data.arrays)
    for s in audio:
        a = data.arrays[s.key]
        out = []
        for i in range(len(data)):
            frames = a.values[a.offsets[i] : a.offsets[i + 1]]
            rng_ = (frame_ranges(spans[i], rates[s.key], len(frames)) if spans[i] is not None
                    else uniform_ranges(int(n_tok[i]), len(frames)))
            out.append(pool(frames, rng_))
        vals = np.concatenate(out) if out else np.zeros((0, a.values.shape[1]), np.float32)
        offs = ta.offsets.copy()
        arrays[s.key] = Arrays("ragged", values=vals, offsets=offs, lengths=np.diff(offs))
    n_aligned = sum(sp is not None for sp in spans)
    info = {"method": "word times" if n_aligned else "resampled", "word_times": int(n_aligned),
            "resampled": int(len(data) - n_aligned),
            "source": "manifest column words (IEMOCAP sentences/ForcedAlignment/*.wdseg)",
            "audio_inputs": [s.key for s in audio], "text_input": ts.key}
    if mismatched:
        info["token_mismatch"] = int(mismatched)
    return dataclasses.replace(data, arrays=arrays, alignment=info)
