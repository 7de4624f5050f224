"""The MELD release layout (split CSVs and per-utterance mp4 clips)."""
from __future__ import annotations

import csv
from pathlib import Path

from mer.common.synth.emotions import MELD_FOLDERS, MELD_HEADER, MELD_PROFILE, MELD_SENTIMENT, MELD_SPEAKERS
from mer.common.synth.espeak import synthesize
from mer.common.synth.plan import _context_turn, _modalities, _render, _speaker, _stretches
from mer.common.synth.writers import finish_audio, write_mp4


def _meld_time(t: float) -> str:
    ms = int(round(t * 1000))
    return f"{ms // 3600000:02d}:{ms // 60000 % 60:02d}:{ms // 1000 % 60:02d},{ms % 1000:03d}"


def _meld_text_traps(rng, text: str) -> tuple[str, str | None]:
    """Curly apostrophes/quotes in some texts, and mojibake (UTF-8 read as cp1252) in a few."""
    trap = None
    if "'" in text and rng.random() < 0.5:
        text = text.replace("'", "\u2019")
        trap = "curly"
    elif rng.random() < 0.08:
        text = "\u201c" + text + "\u201d"
        trap = "curly"
    if trap == "curly" and "\u2019" in text and "\u201c" not in text and rng.random() < 0.25:
        text = text.encode("utf-8").decode("cp1252")  # ’ -> â€™, exactly as in the release
        trap = "mojibake"
    return text, trap


def write_meld(out: Path, cfg, rng, workers: int, quiet: bool) -> dict:
    pc = cfg.per_class
    speakers = [_speaker(rng, name, g, i) for i, (name, g) in enumerate(MELD_SPEAKERS)]
    emos = [e for e in MELD_PROFILE for _ in range(pc)]
    emos = [emos[i] for i in rng.permutation(len(emos))]
    # Split per emotion, 60/20/20 in a cycle that gives every split every emotion as soon as
    # per_class >= 3.
    cycle = ["train", "test", "dev", "train", "train"]
    seen: dict[str, int] = {}
    split_of = []
    if cfg.context > 0:
        # stretches of one emotion, each stretch in one split, so dialogues (cut from each
        # split in order) hold them
        emos = _stretches(rng, emos)
        starts = [i for i in range(len(emos)) if i == 0 or emos[i] != emos[i - 1]]
        for k, a in enumerate(starts):
            b = starts[k + 1] if k + 1 < len(starts) else len(emos)
            split_of += [cycle[k % 5]] * (b - a)
    else:
        for e in emos:
            k = seen.get(e, 0)
            seen[e] = k + 1
            split_of.append(cycle[k % 5])
    utts = []
    last: dict[str, str] = {}
    for i, (e, split) in enumerate(zip(emos, split_of)):
        prof = MELD_PROFILE[e]
        if prof != "neu" and _context_turn(rng, e, last.get(split), cfg.context):
            v, te, kind = "neu", "neu", "context"
        else:
            v, te, kind, _ = _modalities(rng, prof, cfg.one_modality, 0.0, [])
        last[split] = e
        spk = speakers[int(rng.integers(len(speakers)))]
        u = _render(rng, i, "", e, v, te, kind, spk, tokens=False)
        text, trap = _meld_text_traps(rng, u.text)
        sent = MELD_SENTIMENT.get(e) or ("positive" if rng.random() < 0.5 else "negative")
        u.text = text
        u.extra = {"split": split, "sentiment": sent, "trap": trap}
        utts.append(u)
    audio = synthesize([utts[i : i + 40] for i in range(0, len(utts), 40)], workers, quiet)
    sr = 48000
    expected_drop, traps, counts = [], {"curly": 0, "mojibake": 0}, {}
    orphans = []
    for split, folder in MELD_FOLDERS.items():
        rows = [u for u in utts if u.extra["split"] == split]
        dia, uttn = 0, 0
        dlen = int(rng.integers(2, 6))
        t = float(rng.uniform(60, 1200))
        season, episode = int(rng.integers(1, 11)), int(rng.integers(1, 25))
        recs = []
        for sr_no, u in enumerate(rows, 1):
            if uttn >= dlen:
                dia, uttn, dlen = dia + 1, 0, int(rng.integers(2, 6))
                t = float(rng.uniform(60, 1200))
                season, episode = int(rng.integers(1, 11)), int(rng.integers(1, 25))
            samples, _ = audio[u.idx]
            x = finish_audio(u, samples, sr)
            dur = len(x) / sr
            u.uid = f"dia{dia}_utt{uttn}"
            recs.append([sr_no, u.text, u.speaker.key, u.label, u.extra["sentiment"], dia, uttn, season, episode,
                         _meld_time(t), _meld_time(t + dur)])
            missing = cfg.defects and split == "train" and sr_no == 2
            if missing:
                expected_drop.append({"id": f"{split}_{u.uid}", "reason": "missing audio"})  # the adapter's id
            else:
                write_mp4(out / folder / f"{u.uid}.mp4", x, sr, video=cfg.video, shade=40 + 30 * speakers.index(u.speaker))
            if u.extra["trap"]:
                traps[u.extra["trap"]] += 1
            counts[f"{split}/{u.label}"] = counts.get(f"{split}/{u.label}", 0) + 1
            t += dur + float(rng.uniform(0.2, 2.0))
            uttn += 1
        if cfg.defects and split == "train" and rows:
            # A file in the folder that no CSV row names (the release has these too).
            u = rows[0]
            write_mp4(out / folder / f"dia{dia + 7}_utt0.mp4", finish_audio(u, audio[u.idx][0], sr), sr, video=cfg.video)
            orphans.append(f"{folder}/dia{dia + 7}_utt0.mp4")
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{split}_sent_emo.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(MELD_HEADER)
            w.writerows(recs)
    return {"labels": dict(sorted(counts.items())), "text_traps": traps, "expected_drops": expected_drop,
            "unlisted_files": orphans, "n_utterances": len(utts)}
