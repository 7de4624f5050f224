"""The IEMOCAP release layout (sessions, dialogues, EmoEvaluation, transcriptions, alignments)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mer.common.synth.config import SynthConfig
from mer.common.synth.emotions import IEMOCAP_NAMES, VAD_CENTRE
from mer.common.synth.espeak import synthesize
from mer.common.synth.plan import _context_turn, _modalities, _render, _speaker, _stretches
from mer.common.synth.writers import _fmt_t, finish_audio, iemocap_length, to_int16, word_segments, write_wav, write_wdseg


def _iemocap_plan(rng, cfg: SynthConfig):
    pc = cfg.per_class
    sessions = []
    idx = 0
    for s in range(1, cfg.sessions + 1):
        spk = {g: _speaker(rng, f"Ses{s:02d}_{g}", g, s - 1) for g in ("F", "M")}
        emos = (["ang"] * pc + ["hap"] * (pc // 2) + ["exc"] * (pc - pc // 2) + ["sad"] * pc + ["neu"] * pc
                + ["fru"] * max(1, pc // 5) + ["sur"] * max(1, pc // 10) + ["xxx"] * max(1, pc // 8))
        emos = [emos[i] for i in rng.permutation(len(emos))]
        if cfg.context > 0:
            emos = _stretches(rng, emos)
        # At least F/M impro and F/M script dialogs in every session, about 14 turns each.
        n_dlg = min(len(emos), max(4, int(round(len(emos) / 14))))
        bounds = np.linspace(0, len(emos), n_dlg + 1).round().astype(int)
        dialogs = []
        for d in range(n_dlg):
            # Each scenario is recorded twice (F, then M wearing the markers), as in the
            # release: Ses01F_impro01, Ses01M_impro01, Ses01F_script01_1, Ses01M_script01_1, ...
            pair, marker = d // 2, "FM"[d % 2]
            k = pair // 2
            name = (f"Ses{s:02d}{marker}_impro{k + 1:02d}" if pair % 2 == 0
                    else f"Ses{s:02d}{marker}_script{k // 3 + 1:02d}_{k % 3 + 1}")
            counters = {"F": 0, "M": 0}
            t = float(rng.uniform(1.5, 6.0))
            utts = []
            prev = None
            for j, emo in enumerate(emos[bounds[d] : bounds[d + 1]]):
                g = "FM"[(j + (d % 2)) % 2] if rng.random() > 0.15 else "FM"[int(rng.integers(2))]
                uid = f"{name}_{g}{counters[g]:03d}"
                counters[g] += 1
                if _context_turn(rng, emo, prev, cfg.context):
                    v, te, kind, label = "neu", "neu", "context", emo
                else:
                    v, te, kind, label = _modalities(rng, emo, cfg.one_modality, cfg.label_noise, ["ang", "hap", "exc", "sad", "neu"])
                prev = emo
                u = _render(rng, idx, uid, label, v, te, kind, spk[g])
                u.extra = {"session": s, "dialog": name, "gender": g, "vad": _vad(rng, label), "gap": float(rng.uniform(0.2, 1.4))}
                utts.append(u)
                idx += 1
            dialogs.append((name, utts, t))
        sessions.append((s, spk, dialogs))
    return sessions


def _vad(rng, label: str):
    c = VAD_CENTRE.get(label, VAD_CENTRE["xxx"])
    n_ann = int(rng.integers(2, 4))
    ann = np.clip(np.round(np.asarray(c)[None, :] + rng.normal(0, 0.6, size=(n_ann, 3))), 1, 5).astype(int)
    return ann  # (annotators, 3) integer ratings


def _categorical(rng, label: str) -> list[str]:
    """Per-evaluator categorical labels whose majority is ``label`` (none for xxx)."""
    names = [k for k in IEMOCAP_NAMES if k != "oth"]
    if label == "xxx":
        picks = rng.choice(names, size=3, replace=False)
        return [IEMOCAP_NAMES[str(p)] for p in picks]
    out = [IEMOCAP_NAMES[label]] * 3
    if rng.random() < 0.35:
        out[int(rng.integers(3))] = IEMOCAP_NAMES[names[int(rng.integers(len(names)))]]
    if rng.random() < 0.15:  # evaluators sometimes tick two boxes
        out[0] = out[0] + "; " + IEMOCAP_NAMES[names[int(rng.integers(len(names)))]]
    return out


def write_iemocap(out: Path, cfg, rng, workers: int, quiet: bool) -> dict:
    import soundfile as sf

    plan = _iemocap_plan(rng, cfg)
    batches = [[u for _, utts, _ in dialogs for u in utts] for _, _, dialogs in plan]
    audio = synthesize(batches, workers, quiet)
    sr = 16000
    expected_drop: list[dict] = []
    notes = 0
    defect_trunc = defect_empty = None
    if cfg.defects:
        first = [u for _, utts, _ in plan[0][2] for u in utts]  # session 1 has >= 7 utterances
        defect_trunc, defect_empty = first[1].uid, first[2].uid
    counts: dict[str, int] = {}
    kinds: dict[str, int] = {}
    for s, spk, dialogs in plan:
        sdir = out / f"Session{s}"
        for name, utts, t in dialogs:
            eval_lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            trans = []
            cat = {e: [] for e in ("e1", "e2", "e3")}
            atr = {e: [] for e in ("e3", "e4")}
            dialog_track = []
            xx = {"F": 0, "M": 0}
            for u in utts:
                samples, events = audio[u.idx]
                x = finish_audio(u, samples, sr, iemocap_length(u) if cfg.lengths == "iemocap" else 0.0)
                dur = len(x) / sr
                start, end = t, t + dur
                wav = sdir / "sentences" / "wav" / name / f"{u.uid}.wav"
                write_wav(wav, x, sr)
                if cfg.alignments:
                    write_wdseg(sdir / "sentences" / "ForcedAlignment" / name / f"{u.uid}.wdseg",
                                word_segments(u, events, len(samples)), dur)
                dialog_track.append((start, u.extra["gender"], x))
                ann = u.extra["vad"]
                v, a, d = ann.mean(axis=0)
                eval_lines.append(f"[{start:.4f} - {end:.4f}]\t{u.uid}\t{u.label}\t[{v:.4f}, {a:.4f}, {d:.4f}]")
                cats = _categorical(rng, u.label)
                for ev, c in zip(("C-E1", "C-E2", "C-E3"), cats):
                    eval_lines.append(f"{ev}:\t{c};\t()")
                for k, row in enumerate(ann):
                    eval_lines.append(f"A-E{k + 1}:\tval {row[0]}; act {row[1]}; dom  {row[2]};\t()")
                eval_lines.append("")
                for (ek, lst), c in zip(cat.items(), cats):
                    lst.append(f"{u.uid} :{'Neutral state' if c == 'Neutral' else c}; ()")
                for (ek, lst), row in zip(atr.items(), ann):
                    lst.append(f"{u.uid} :val {row[0]}; act {row[1]}; dom  {row[2]}; ()")
                text = u.text
                if u.uid == defect_empty:
                    text = ""
                    expected_drop.append({"id": u.uid, "reason": "empty transcript"})
                trans.append(f"{u.uid} [{_fmt_t(start)}-{_fmt_t(end)}]: {text}".rstrip() if text else f"{u.uid} [{_fmt_t(start)}-{_fmt_t(end)}]:")
                # Overlapping back-channel segments: transcribed, never labelled (MXX0 / FXX0).
                if rng.random() < 0.08:
                    g = "M" if u.extra["gender"] == "F" else "F"
                    os_ = end - float(rng.uniform(0.1, 0.4))
                    word = ["Yeah.", "Mm-hmm.", "Okay.", "Right."][int(rng.integers(4))]
                    trans.append(f"{name}_{g}XX{xx[g]} [{_fmt_t(os_)}-{_fmt_t(os_ + 0.6)}]: {word}")
                    xx[g] += 1
                    notes += 1
                if u.uid == defect_trunc:
                    raw = wav.read_bytes()
                    wav.write_bytes(raw[: 44 + (len(raw) - 44) // 3])  # header still declares the full length
                    expected_drop.append({"id": u.uid, "reason": "unreadable audio"})
                counts[u.label] = counts.get(u.label, 0) + 1
                kinds[u.kind] = kinds.get(u.kind, 0) + 1
                t = end + u.extra["gap"]
            ev_dir = sdir / "dialog" / "EmoEvaluation"
            ev_dir.mkdir(parents=True, exist_ok=True)
            (ev_dir / f"{name}.txt").write_text("\n".join(eval_lines) + "\n")
            for ek, lst in cat.items():
                (ev_dir / "Categorical").mkdir(exist_ok=True)
                (ev_dir / "Categorical" / f"{name}_{ek}_cat.txt").write_text("\n".join(lst) + "\n")
            for ek, lst in atr.items():
                (ev_dir / "Attribute").mkdir(exist_ok=True)
                (ev_dir / "Attribute" / f"{name}_{ek}_atr.txt").write_text("\n".join(lst) + "\n")
            tdir = sdir / "dialog" / "transcriptions"
            tdir.mkdir(parents=True, exist_ok=True)
            (tdir / f"{name}.txt").write_text("\n".join(trans) + "\n")
            if cfg.dialog_wavs:
                # Whole dialog, stereo: each actor's headset on its own channel, the other
                # actor audible at a lower level (cross-talk), as in the release.
                total = int(math.ceil((t + 0.5) * sr))
                st = np.zeros((total, 2), np.float32)
                for start, g, x in dialog_track:
                    a = int(round(start * sr))
                    ch = 0 if g == "F" else 1
                    st[a : a + len(x), ch] += x
                    st[a : a + len(x), 1 - ch] += 0.25 * x
                dw = sdir / "dialog" / "wav" / f"{name}.wav"
                dw.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(dw), to_int16(st), sr, subtype="PCM_16", format="WAV")
    return {"labels": dict(sorted(counts.items())), "kinds": dict(sorted(kinds.items())),
            "unlabelled_transcript_lines": notes, "expected_drops": expected_drop,
            "n_utterances": sum(counts.values()), "sessions": cfg.sessions, "speakers": 2 * cfg.sessions}
