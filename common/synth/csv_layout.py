"""A labelled folder of wavs with one metadata.csv (the csv adapter's layout)."""
from __future__ import annotations

import csv
from pathlib import Path

from mer.common.synth.emotions import CSV_LABELS
from mer.common.synth.espeak import synthesize
from mer.common.synth.plan import _modalities, _render, _speaker
from mer.common.synth.writers import finish_audio, write_wav


def write_csv(out: Path, cfg, rng, workers: int, quiet: bool) -> dict:
    pc = cfg.per_class
    n_spk = 2 * cfg.sessions
    speakers = [_speaker(rng, f"spk{i + 1:02d}", "FM"[i % 2], i) for i in range(n_spk)]
    # Speaker-disjoint official splits: the last 20% of speakers test, the 20% before dev.
    n_test = max(1, n_spk // 5)
    split_of = {s.key: ("test" if i >= n_spk - n_test else "dev" if i >= n_spk - 2 * n_test else "train")
                for i, s in enumerate(speakers)}
    utts = []
    for i, emo in enumerate(e for e in CSV_LABELS for _ in range(pc * cfg.sessions)):
        v, te, kind, label = _modalities(rng, emo, cfg.one_modality, cfg.label_noise, list(CSV_LABELS))
        spk = speakers[i % n_spk]
        u = _render(rng, i, f"{spk.key}_{i:04d}", CSV_LABELS[label], v, te, kind, spk, tokens=False)
        utts.append(u)
    order = rng.permutation(len(utts))
    utts = [utts[i] for i in order]
    audio = synthesize([utts[i : i + 60] for i in range(0, len(utts), 60)], workers, quiet)
    sr = 16000
    expected_drop, counts = [], {}
    rows = []
    for j, u in enumerate(utts):
        rel = f"wavs/{u.speaker.key}/{u.uid}.wav"
        text = u.text
        if cfg.defects and j == 0:
            expected_drop.append({"id": u.uid, "reason": "missing audio"})
        else:
            write_wav(out / rel, finish_audio(u, audio[u.idx][0], sr), sr)
        if cfg.defects and j == 1:
            text = ""
            expected_drop.append({"id": u.uid, "reason": "empty transcript"})
        rows.append([rel, text, u.label, u.speaker.key, split_of[u.speaker.key]])
        counts[u.label] = counts.get(u.label, 0) + 1
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "text", "label", "speaker", "split"])
        w.writerows(rows)
    return {"labels": dict(sorted(counts.items())), "expected_drops": expected_drop, "n_utterances": len(utts),
            "speakers": n_spk}
