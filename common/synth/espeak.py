"""espeak-ng through ctypes, one fresh worker process per batch of utterances (see the
package docstring for why)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mer.common.errors import MerError, require
from mer.common.synth.plan import Utt


SYNTH_RATE = 22050  # espeak-ng's output rate
_ENGINE = None


class Espeak:
    """libespeak-ng in synchronous mode: ``say`` returns int16 samples at 22,050 Hz and the
    word events (character offset, length, sample) that espeak reports."""

    RATE, VOLUME, PITCH, RANGE, WORDGAP = 1, 2, 3, 4, 7

    def __init__(self):
        import ctypes

        el = require("espeakng_loader", "synth")

        class Event(ctypes.Structure):  # espeak_EVENT from speak_lib.h
            _fields_ = [
                ("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8),
            ]

        lib = ctypes.CDLL(el.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        # 2 = AUDIO_OUTPUT_SYNCHRONOUS: espeak_Synth returns after every callback has run.
        sr = lib.espeak_Initialize(2, 0, el.get_data_path().encode(), 0)
        if sr != SYNTH_RATE:
            raise MerError(f"espeak-ng failed to initialise from {el.get_library_path()} (returned {sr})")
        CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(Event))
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, int]] = []

        def collect(wav, n, ev):
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            if ev:
                i = 0
                while ev[i].type != 0:  # espeakEVENT_LIST_TERMINATED
                    e = ev[i]
                    self._events.append((e.type, e.text_position, e.length, e.sample))
                    i += 1
            return 0

        self._cb = CB(collect)  # keep a reference: ctypes callbacks die with their object
        lib.espeak_SetSynthCallback(self._cb)
        self.lib = lib
        self.sample_rate = sr

    def say(self, text: str, voice: str, rate: int, pitch: int, range: int, volume: int, wordgap: int = 0):
        lib = self.lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise MerError(f"espeak-ng has no voice {voice!r}")
        for p, v in ((self.RATE, rate), (self.VOLUME, volume), (self.PITCH, pitch), (self.RANGE, range), (self.WORDGAP, wordgap)):
            lib.espeak_SetParameter(p, int(v), 0)
        self._chunks.clear()
        self._events.clear()
        b = text.encode("utf-8")
        rc = lib.espeak_Synth(b, len(b) + 1, 0, 0, 0, 1, None, None)  # 1 = espeakCHARS_UTF8
        if rc != 0 or not self._chunks:
            raise MerError(f"espeak-ng could not synthesize {text!r} (error {rc})")
        return np.concatenate(self._chunks), list(self._events)


def _synth_batch(jobs: list[tuple]) -> list[tuple[np.ndarray, list]]:
    """Synthesize ``jobs`` in order in this process (meant to be a fresh one)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Espeak()
    return [_ENGINE.say(*j) for j in jobs]


def _worker_main(jobs_path: str, out_path: str) -> None:
    """``python -m mer.common.synth --worker JOBS.json OUT.npz`` (``__main__.py``): one batch,
    one fresh process."""
    jobs = [tuple(j) for j in json.loads(Path(jobs_path).read_text())]
    res = _synth_batch(jobs)
    arrays = {f"a{i}": x for i, (x, _) in enumerate(res)}
    arrays["events"] = np.frombuffer(json.dumps([ev for _, ev in res]).encode(), dtype=np.uint8)
    np.savez(out_path, **arrays)


def _run_batch(jobs: list[tuple], tmp: Path, k: int) -> list[tuple[np.ndarray, list]]:
    import subprocess
    import sys

    jp, op = tmp / f"batch{k}.json", tmp / f"batch{k}.npz"
    jp.write_text(json.dumps(jobs))
    # A plain subprocess (not multiprocessing): callers need no `if __name__ == "__main__"`
    # guard, and every batch starts from espeak's pristine state.
    r = subprocess.run([sys.executable, "-m", "mer.common.synth", "--worker", str(jp), str(op)],
                       capture_output=True, text=True)
    if r.returncode != 0 or not op.exists():
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise MerError(f"speech synthesis worker failed on batch {k} ({jobs[0][0]!r}...): {tail[0]}")
    with np.load(op) as z:
        events = json.loads(z["events"].tobytes().decode())
        return [(z[f"a{i}"], [tuple(e) for e in events[i]]) for i in range(len(jobs))]


def synthesize(batches: list[list[Utt]], workers: int, quiet: bool = True) -> dict[int, tuple[np.ndarray, list]]:
    """Run espeak over ``batches``, each in its own fresh process (see the module docstring)."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from mer.common.progress import progress

    out: dict[int, tuple[np.ndarray, list]] = {}
    with tempfile.TemporaryDirectory(prefix="mer-synth-") as td, ThreadPoolExecutor(max(1, workers)) as ex, progress(
        sum(map(len, batches)), "synthesizing speech", disable=quiet
    ) as bar:
        futs = [
            (b, ex.submit(_run_batch, [(u.spoken, u.speaker.voice, u.rate, u.pitch, u.range, u.volume, u.wordgap) for u in b], Path(td), k))
            for k, b in enumerate(batches)
        ]
        for b, f in futs:
            for u, res in zip(b, f.result()):
                out[u.idx] = res
            bar.update(len(b))
    return out
