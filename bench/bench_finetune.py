"""Benchmark: the cost of fine-tuning the text encoder against training on its frozen store,
in one script, on the same synthetic corpus, folds and head.

Both sides train `concat` on a text input with `run_train` (protocol random, one fold):
- frozen: all-MiniLM-L6-v2's mean vectors computed once (the extraction is timed on its own,
  as `mer extract` would pay it once), then the head trained on them;
- tuned: `--finetune bert` with the same head (the encoder's forward and backward in every
  step).

Reported per side: seconds per training utterance-pass (training seconds over rows trained,
from history.json's train_rows), and peak memory (the process's peak RSS after each side, and
CUDA's peak allocation on a GPU). Each side runs in its own process (so RSS peaks do not mix).

``--shape`` picks the encoder: ``minilm`` (the packaged all-MiniLM-L6-v2, the default), or a
model built from a transformers config with random weights, nothing downloaded (what a GPU
check measures throughput with): ``bert-base`` (BertConfig's defaults: 12 layers, 768 wide,
with a small generated WordPiece vocabulary as its tokenizer), ``wav2vec2-base``
(Wav2Vec2Config's defaults: wav2vec 2.0 base), and ``bert-tiny`` / ``wav2vec2-tiny`` (2
layers, for a CPU dry run). The wav2vec2 shapes fine-tune ``--finetune wav2vec`` on tones of
2-4 s (16 kHz wavs written once) whose pitch carries the label; the frozen side extracts the
same encoder's mean vectors first.

    python bench/bench_finetune.py [--n 1000] [--epochs 2] [--device cpu] [--shape minilm] [--quick] [--json F]

`--quick` (64 utterances, one epoch) checks that the script works; do not take figures from
it on a loaded machine.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


SHAPES = ("minilm", "bert-base", "bert-tiny", "wav2vec2-base", "wav2vec2-tiny")


def build_shape(shape: str, folder: Path) -> str | None:
    """A model folder of ``shape`` built from its transformers config (random weights, no
    download); None for the packaged MiniLM. Built once per folder."""
    if shape == "minilm":
        return None
    if (folder / "config.json").is_file():
        return str(folder)
    import torch
    import transformers

    torch.manual_seed(0)
    folder.mkdir(parents=True, exist_ok=True)
    if shape.startswith("bert"):
        small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
        transformers.BertModel(transformers.BertConfig(**(small if shape == "bert-tiny" else {}))).save_pretrained(folder)
        # A WordPiece vocabulary of letters and the corpus's words: any text tokenises, offline.
        letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,'!?-")
        words = ["the", "was", "today", "wonderful", "and", "exciting", "dull", "slow"] + WORDS
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + letters + ["##" + c for c in letters]
        (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
        transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True).save_pretrained(folder)
    else:
        small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
        transformers.Wav2Vec2Model(transformers.Wav2Vec2Config(**(small if shape == "wav2vec2-tiny" else {}))
                                   ).save_pretrained(folder)
    return str(folder)


WORDS = ["dog", "cat", "cow", "goat", "bird", "fish"]


def audio_corpus(n: int, folder: Path):
    """n IEMOCAP-shaped utterances as 16 kHz tones of 2-4 s: high pitch for ang/hap, low for
    sad/neu (written once per folder)."""
    import numpy as np
    import soundfile as sf

    from mer.common.manifest import Manifest, content_hashes
    from mer.train.synthetic_features import synthetic

    man, _ = synthetic(n, seed=0, ragged=False)
    y = man.df["emotion"].isin(["ang", "hap"]).to_numpy()
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths, durs = [], []
    for uid, high in zip(man.df["id"], y):
        dur = float(rng.uniform(2.0, 4.0))
        f0 = float(rng.uniform(800, 1600) if high else rng.uniform(120, 300))
        path = folder / f"{uid}.wav"
        if not path.exists():
            t = np.arange(int(dur * 16000)) / 16000
            sf.write(path, (0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32),
                     16000)
        paths.append(str(path))
        durs.append(dur)
    man.df["audio"], man.df["duration"], man.df["audio_hash"] = paths, durs, [f"{u}-tone" for u in man.df["id"]]
    return Manifest(man.df, {"dataset": "iemocap", **content_hashes(man.df)}, None)


def corpus(n: int):
    """n IEMOCAP-shaped utterances whose transcripts carry the label's text bit."""
    import numpy as np

    from mer.common.manifest import Manifest, content_hashes
    from mer.train.synthetic_features import synthetic

    man, _ = synthetic(n, seed=0, ragged=False)
    y = man.df["emotion"].isin(["ang", "hap"]).to_numpy()
    words = np.random.default_rng(0).choice(WORDS, n)
    man.df["text"] = [f"the {w} was {'wonderful and exciting' if b else 'dull and slow'} today" for w, b in zip(words, y)]
    return Manifest(man.df, {"dataset": "iemocap", **content_hashes(man.df)}, None)


def side(kind: str, n: int, epochs: int, device: str, out: Path, shape: str = "minilm") -> dict:
    import resource

    import numpy as np

    from mer.train.config import TrainConfig
    from mer.train.data import FeatureSet
    from mer.train.trainer import run_train

    model = build_shape(shape, out.parent / "models" / shape)
    audio = shape.startswith("wav2vec2")
    feat = "wav2vec" if audio else "bert"
    man = audio_corpus(n, out.parent / f"tones-{n}") if audio else corpus(n)
    sets, t_extract = None, 0.0
    tc = dict(epochs=epochs, patience=epochs, batch_size=32, threads=1 if device == "cpu" else 0)
    if audio:   # the frame budget would split 32 tones of up to 4 s; the batch is 32 utterances
        tc.update(batch_size=16, batch_frames=0)
    if kind == "frozen":
        from mer.extract.base import Utterance

        t0 = time.perf_counter()
        if audio:
            from mer.common.audio import load
            from mer.extract.ssl import Wav2VecConfig, Wav2VecExtractor

            ext = Wav2VecExtractor(Wav2VecConfig(model=model), device=device)
            utts = [Utterance(id=r.id, audio=load(r.audio, 16000), sample_rate=16000) for r in man.df.itertuples()]
        else:
            from mer.extract.text import BertConfig, BertExtractor

            ext = BertExtractor(BertConfig(model=model) if model else None, device=device)
            utts = [Utterance(id=r.id, text=r.text) for r in man.df.itertuples()]
        outs = ext.process(utts)
        mean = np.stack([o["mean"] for o in outs]).astype(np.float32)
        t_extract = time.perf_counter() - t0
        sets = {feat: FeatureSet(feat, "audio" if audio else "text", man.df["id"].to_numpy(),
                                 {"mean": {"kind": "fixed", "dim": mean.shape[1]}}, {"mean": mean}, key="frozen")}
        config = TrainConfig(**tc)
    else:
        config = TrainConfig(**tc, finetune=(feat,), encoder_model=model)
    t0 = time.perf_counter()
    [run] = run_train("iemocap", feat, "concat", protocol="random", manifest=man, feature_sets=sets, out=out,
                      run_id=kind, quiet=True, config=config, device=device, plots=False)
    wall = time.perf_counter() - t0
    m = json.loads((run / "metrics.json").read_text())
    hist = json.loads((run / "history.json").read_text())
    rows = sum(e["train_rows"] for h in hist for e in h["epochs"])
    res = {"side": kind, "shape": shape, "n": n, "epochs": epochs, "device": device, "extract_s": round(t_extract, 2),
           "train_s": round(m["train_seconds"], 2), "run_s": round(wall, 2), "rows_trained": rows,
           "ms_per_utterance": round(1000 * m["train_seconds"] / max(rows, 1), 2), "ua": round(m["mean"]["ua"], 3),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.startswith("cuda"):
        import torch

        res["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="/tmp/mer-bench-finetune")
    ap.add_argument("--shape", choices=SHAPES, default="minilm",
                    help="the encoder: the packaged MiniLM, or a config-built bert-base / wav2vec2-base (or -tiny)")
    ap.add_argument("--json", default=None, help="also write both sides' figures to this JSON file")
    ap.add_argument("--quick", action="store_true", help="64 utterances, one epoch: a smoke run, not a figure")
    ap.add_argument("--side", choices=("frozen", "tuned"), help=argparse.SUPPRESS)   # one side, in a child process
    args = ap.parse_args()
    if args.quick:
        args.n, args.epochs = 64, 1
    out = Path(args.out)
    if args.side:
        print(json.dumps(side(args.side, args.n, args.epochs, args.device, out / args.side, args.shape)))
        return
    import shutil

    for sub in ("frozen", "tuned"):   # runs from an earlier call; built models and tones are kept
        shutil.rmtree(out / sub, ignore_errors=True)
    results = []
    for s in ("frozen", "tuned"):
        cmd = [sys.executable, __file__, "--side", s, "--n", str(args.n), "--epochs", str(args.epochs),
               "--device", args.device, "--out", str(out), "--shape", args.shape]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(f"{s} side failed:\n{p.stderr[-3000:]}")
        results.append(json.loads(p.stdout.strip().splitlines()[-1]))
    print("| side | shape | n | epochs | device | extract s | train s | ms / utterance-pass | peak RSS MB | CUDA peak MB | UA |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['side']} | {r['shape']} | {r['n']} | {r['epochs']} | {r['device']} | {r['extract_s']} | {r['train_s']} | "
              f"{r['ms_per_utterance']} | {r['peak_rss_mb']} | {r.get('cuda_peak_mb', '-')} | {r['ua']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    f, t = results
    print(f"fine-tuning costs {t['ms_per_utterance'] / max(f['ms_per_utterance'], 1e-9):.1f}x the frozen head per "
          f"utterance-pass ({'--quick: a smoke run, not a figure' if args.quick else 'this machine'})")


if __name__ == "__main__":
    main()
