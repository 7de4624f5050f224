"""A tiny Whisper built from a config, with a byte-level BPE tokenizer written here: nothing is
downloaded. Its weights are random; generation is restricted to lower-case letters, the word
separator and end-of-text, so its transcripts are word-like strings that a text encoder can read.
"""
from __future__ import annotations

import json
from pathlib import Path

WORD_MERGES = ["Ġ t", "h e", "Ġt he", "i n", "a n", "e r"]


def make_tiny_whisper(d: Path, seed: int = 0) -> Path:
    import torch
    import transformers
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for m in WORD_MERGES:
        a, b = m.split()
        vocab[a + b] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(WORD_MERGES) + "\n")
    eot = "<|endoftext|>"
    specials = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|translate|>", "<|startoflm|>",
                "<|startofprev|>", "<|nocaptions|>", "<|notimestamps|>"] + [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tok = transformers.WhisperTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), unk_token=eot, bos_token=eot,
                                        eos_token=eot, pad_token=eot)
    tok.add_special_tokens({"additional_special_tokens": specials})
    fe = transformers.WhisperFeatureExtractor(feature_size=80)
    transformers.WhisperProcessor(fe, tok).save_pretrained(str(d))
    ids = tok.convert_tokens_to_ids
    cfg = transformers.WhisperConfig(
        vocab_size=len(tok), d_model=16, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=80, max_source_positions=1500,
        max_target_positions=64, decoder_start_token_id=ids("<|startoftranscript|>"), eos_token_id=ids(eot),
        pad_token_id=ids(eot), bos_token_id=ids(eot))
    torch.manual_seed(seed)
    model = transformers.WhisperForConditionalGeneration(cfg)
    gc = model.generation_config
    gc._from_model_config = False  # else the Whisper-specific fields below are dropped on load
    gc.decoder_start_token_id = ids("<|startoftranscript|>")
    gc.no_timestamps_token_id = ids("<|notimestamps|>")
    gc.lang_to_id = {"<|en|>": ids("<|en|>")}
    gc.task_to_id = {"transcribe": ids("<|transcribe|>"), "translate": ids("<|translate|>")}
    gc.is_multilingual = True
    gc.alignment_heads = [[1, 0], [1, 1]]   # cross-attention heads for word timestamps
    keep = {vocab[c] for c in "abcdefghijklmnopqrstuvwxyz"} | {vocab["Ġ"]} | {vocab[a + b] for a, b in
                                                                            (m.split() for m in WORD_MERGES)}
    keep.add(ids(eot))
    gc.suppress_tokens = [i for i in range(len(tok)) if i not in keep]
    gc.begin_suppress_tokens = [ids(eot)]
    gc.max_length = 64
    model.save_pretrained(str(d))
    return d
