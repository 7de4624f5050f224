"""The worker's job: one batch of manifest rows -> one part payload per feature.

``run_batch`` is what a Dask task (or ``mer predict``, or a ``workers=0`` run) executes: it
decodes each utterance ONCE per sample rate (mono, resampled), checks it, runs every
extractor of the batch on it, checks each output against the extractor's declared outputs,
and packs the results as arrays plus, per row, why it has no features.

Every row without features is one of two kinds (the completeness rule, README "Cache"):
- ``skips``: a property of the input itself (silent, empty, NaN samples, too long for the
  store's limit, undecodable bytes, an empty transcript, an extractor's ``InputError`` such as
  "too short"). A rerun would give the same answer, so a store may be complete with them.
- ``failures``: anything a rerun could fix (the file missing or unreadable now, an extractor
  exception, malformed output, a worker crash not pinned on this utterance). They keep the
  store incomplete and are retried on the next run, row by row.
"""
from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from mer.extract.base import EXTRACTORS, Extractor, InputError, Utterance, make_config
from mer.extract.cache import canonical
from mer.extract.work import Spec

FLOAT16_MAX = 65504.0


_EXTRACTORS_LOADED: dict[str, Extractor] = {}


def worker_extractor(spec: Spec | dict) -> Extractor:
    """One extractor instance per (name, config, device) per worker process: models and
    filterbanks are loaded once (``setup()``) and reused for every later batch."""
    spec = Spec.of(spec)
    k = _key(spec)
    e = _EXTRACTORS_LOADED.get(k)
    if e is None:
        if spec.module and spec.feature not in EXTRACTORS:
            # An extractor registered outside mer (a plugin, a notebook, a test): import its
            # module; if that module registers it only at run time (the worker may have been
            # forked before), register the class found there under the same name.
            import importlib

            mod = importlib.import_module(spec.module)
            if spec.feature not in EXTRACTORS and spec.qualname:
                obj = mod
                for part in spec.qualname.split("."):
                    obj = getattr(obj, part)
                EXTRACTORS.register(spec.feature)(obj)
        cls = EXTRACTORS.get(spec.feature)
        e = cls(make_config(cls, spec.config), device=spec.device)
        e.setup()
        _EXTRACTORS_LOADED[k] = e
    return e


def _key(spec: Spec) -> str:
    return canonical([spec.feature, spec.config, spec.device, spec.identity])


def adopt(spec: Spec | dict, ext: Extractor) -> None:
    """Use an extractor already set up in this process for ``spec`` (``mer predict`` builds
    and checks one before extracting), instead of loading its model a second time."""
    _EXTRACTORS_LOADED[_key(Spec.of(spec))] = ext


def check_audio(x: np.ndarray, sr: int, max_seconds: float) -> tuple[str, str] | None:
    if x.size == 0:
        return "empty audio", "0 samples"
    if not np.all(np.isfinite(x)):
        return "NaN/inf samples", f"{int(x.size - np.isfinite(x).sum())} non-finite samples"
    if not np.any(x):
        return "silent audio", "all samples are zero"
    if x.size / sr > max_seconds:
        return "too long", f"{x.size / sr:.1f} s > max {max_seconds:g} s"
    return None


def check_out(out: dict, outputs: dict[str, dict], dtype: str) -> tuple[str, str, bool] | None:
    """(reason, detail, is_failure) for an output that cannot be stored, else None. A missing
    or misshapen output is the extractor's fault (a failure); NaN/inf or float16 overflow is
    what this extractor deterministically gives for this input (a skip)."""
    for name, o in outputs.items():
        if name not in out:
            return "extractor failed", f"no output {name!r}", True
        a = np.asarray(out[name])
        want = (int(o["dim"]),) if o["kind"] == "fixed" else (None, int(o["dim"]))
        if a.ndim != len(want) or a.shape[-1] != want[-1]:
            return "extractor failed", f"{name}: shape {a.shape}, expected {want}", True
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            return "NaN/inf in features", f"{name}: {int(a.size - np.isfinite(a).sum())} non-finite values", False
        if o.get("dtype") == "float16" and a.dtype.kind == "f" and a.size and np.abs(a).max() > FLOAT16_MAX:
            return "out of float16 range", f"{name}: max |x| = {np.abs(a).max():.4g}; use --dtype float32", False
    return None


def _why(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"


def decode(r: dict, sr: int, max_seconds: float):
    """One row's audio at ``sr``: the array, or (reason, detail, is_failure)."""
    from mer.common.audio import AudioError
    from mer.common.audio import load as load_audio

    dur = r.get("duration")
    if dur is not None and not (isinstance(dur, float) and math.isnan(dur)) and dur > max_seconds:
        return "too long", f"{dur:.1f} s > max {max_seconds:g} s (from the manifest)", False
    path = r.get("audio")
    # The file as the OS sees it now: missing or unreadable (permissions, an unmounted disk,
    # an I/O error) is the moment's state, not the input's property, so never cached.
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except FileNotFoundError:
        return "missing audio", f"{path}: no such file (now)", True
    except OSError as e:
        return "unreadable file", f"{path}: {_why(e)}", True
    try:
        x = load_audio(path, sr, r.get("start"), r.get("end"))
    except AudioError as e:  # the bytes are there and do not decode: the input's own fault
        return e.reason, e.detail, e.reason == "missing audio"
    except Exception as e:  # a decoder crash on one file must not stop the run
        return "decoder error", _why(e), True
    bad = check_audio(x, sr, max_seconds)
    return (*bad, False) if bad else x


def run_batch(rows: list[dict], specs: list[Spec | dict], max_seconds: float, threads: int | None = None) -> dict[str, dict]:
    """The task: decode each utterance once per sample rate, run every extractor of the
    batch, return one part payload per feature (arrays, skips, failures, events)."""
    specs = [Spec.of(s) for s in specs]
    b = len(rows)
    decoded: dict[int, list] = {}
    for sr in sorted({s.sample_rate for s in specs if s.modality == "audio"}):
        decoded[sr] = [decode(r, sr, max_seconds) for r in rows]
    result: dict[str, dict] = {}
    for spec in specs:
        skips: list[tuple[int, str, str]] = []
        fails: list[tuple[int, str, str]] = []
        try:
            ext = worker_extractor(spec)
        except Exception as e:  # a broken library or model: every row failed, the run goes on
            why = f"cannot set up {spec.feature}: {_why(e)}"
            result[spec.feature] = pack(b, {}, [], spec.outputs, spec.dtype, [(i, "extractor failed", why) for i in range(b)])
            continue
        torch = sys.modules.get("torch")  # only if an extractor uses it: never imported here
        if threads and torch is not None and torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        utts: list[Utterance] = []
        idx: list[int] = []
        for i, r in enumerate(rows):
            if spec.modality == "audio":
                x = decoded[spec.sample_rate][i]
                if isinstance(x, tuple):
                    (fails if x[2] else skips).append((i, x[0], x[1]))
                    continue
                utts.append(Utterance(r["id"], audio=x, sample_rate=spec.sample_rate, text=r.get("text")))
            else:
                t = r.get("text")
                if t is None or (isinstance(t, float) and math.isnan(t)) or not str(t).strip():
                    skips.append((i, "empty transcript", ""))
                    continue
                utts.append(Utterance(r["id"], text=str(t)))
            idx.append(i)
        outs: dict[int, dict] = {}
        sub = ext.batch_hint or len(utts) or 1
        for s0 in range(0, len(utts), sub):
            chunk, cidx = utts[s0 : s0 + sub], idx[s0 : s0 + sub]
            try:
                res = ext.process(chunk)
                if len(res) != len(chunk):
                    raise RuntimeError(f"process() returned {len(res)} results for {len(chunk)} utterances")
                pairs = list(zip(cidx, res))
            except Exception:
                # Find the utterance(s) that break the batch; the others are kept.
                pairs = []
                for i, u in zip(cidx, chunk):
                    try:
                        pairs.append((i, ext.process([u])[0]))
                    except InputError as e:  # e.g. too short for this feature: the input's property
                        skips.append((i, e.reason, str(e).splitlines()[0][:200] if str(e) else ""))
                    except Exception as e:
                        fails.append((i, "extractor failed", _why(e)))
            for i, out in pairs:
                bad = check_out(out, spec.outputs, spec.dtype)
                if bad:
                    (fails if bad[2] else skips).append((i, bad[0], bad[1]))
                else:
                    outs[i] = out
        part = pack(b, outs, skips, spec.outputs, spec.dtype, fails)
        # Repairs and notes the extractor made (a truncated text, padded short audio): they
        # go into the store's report with the skips, so nothing is changed silently.
        part["events"] = [list(e) for e in ext.pop_events()]
        result[spec.feature] = part
    return result


def pack(b: int, outs: dict[int, dict], skips, outputs: dict[str, dict], dtype: str, failures=()) -> dict:
    valid = np.zeros(b, bool)
    valid[list(outs)] = True
    part: dict[str, Any] = {"valid": valid, "skips": sorted(skips), "failures": sorted(failures)}
    for name, o in outputs.items():
        d = int(o["dim"])
        dt = np.dtype(o.get("dtype") or dtype)
        if o["kind"] == "fixed":
            a = np.zeros((b, d), dt)
            for i, out in outs.items():
                a[i] = out[name]
            part[name] = a
        else:
            lengths = np.zeros(b, np.int64)
            vals = []
            for i in range(b):
                if i in outs:
                    v = np.asarray(outs[i][name], dtype=dt).reshape(-1, d)
                    lengths[i] = len(v)
                    vals.append(v)
            part[f"{name}.values"] = np.concatenate(vals) if vals else np.zeros((0, d), dt)
            part[f"{name}.lengths"] = lengths
    return part


def unpack(part: dict, outputs: dict[str, dict]) -> dict[int, dict]:
    """Row index -> {output: array} for the valid rows of a part (inverse of ``pack``)."""
    outs: dict[int, dict] = {int(i): {} for i in np.flatnonzero(part["valid"])}
    for name, o in outputs.items():
        if o["kind"] == "fixed":
            for i in outs:
                outs[i][name] = part[name][i]
        else:
            off = np.concatenate([[0], np.cumsum(part[f"{name}.lengths"])])
            for i in outs:
                outs[i][name] = part[f"{name}.values"][off[i] : off[i + 1]]
    return outs


def merge_retry(old: dict, idx: list[int], new: dict, outputs: dict[str, dict], dtype: str) -> dict:
    """A part whose failed rows ``idx`` were run again (``new``: their payload, in idx order)."""
    outs = {i: o for i, o in unpack(old, outputs).items() if i not in set(idx)}
    for k, o in unpack(new, outputs).items():
        outs[idx[k]] = o
    keep = lambda lst: [tuple(x) for x in lst if int(x[0]) not in set(idx)]  # noqa: E731
    skips = keep(old["skips"]) + [(idx[k], r, d) for k, r, d in new["skips"]]
    fails = keep(old.get("failures", [])) + [(idx[k], r, d) for k, r, d in new["failures"]]
    part = pack(len(old["valid"]), outs, skips, outputs, dtype, fails)
    part["events"] = list(old.get("events", [])) + list(new.get("events", []))
    return part


def manifest_rows(m) -> list[dict]:
    df = m.df
    cols = ["id", "audio", "start", "end", "duration", "text"]
    out = []
    for rec in df[cols].itertuples(index=False, name=None):
        d = dict(zip(cols, rec))
        for k in ("start", "end", "duration"):
            v = d[k]
            d[k] = None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
        for k in ("audio", "text", "id"):
            v = d[k]
            d[k] = None if v is None or v is __import__("pandas").NA else str(v)
        out.append(d)
    return out


