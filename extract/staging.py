"""Staging and finishing: a run's parts on disk, and the store assembled from them.

Each finished batch is a part file ``<store>.partial/batch-NNNNNN.npz`` (written to a
temporary name and renamed, so a part is whole or absent): that is what makes a run
resumable after Ctrl-C, kill -9 or a crashed worker. ``staging.json`` records the key, the
row count and the batch size, so a resumed run cuts the corpus the same way. A part also
lists its failed rows (see ``mer.extract.worker``): the next run recomputes exactly those.

``finalize`` streams the parts in row order into the store (sequential, chunk-aligned
writes), writes the report, reads the store back in full and verifies it (checksums per
chunk, NaN/inf, shapes and offsets), and only then marks it complete and moves it in place.
The result is byte-for-byte the same whether or not the run was interrupted.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from mer.common import console
from mer.common.errors import MerError
from mer.extract import cache as C
from mer.extract.work import Job, Options

def part_path(job: Job, b: int) -> Path:
    return job.staging / f"batch-{b:06d}.npz"


def write_part(job: Job, b: int, part: dict) -> None:
    arrays = {k: v for k, v in part.items() if k not in ("skips", "failures", "events")}
    arrays["skips"] = np.array(json.dumps([list(s) for s in part["skips"]]))
    arrays["failures"] = np.array(json.dumps([list(s) for s in part.get("failures", [])]))
    arrays["events"] = np.array(json.dumps(part.get("events", [])))
    tmp = job.staging / f".batch-{b:06d}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, part_path(job, b))  # atomic: a part is whole or absent


def read_part(job: Job, b: int, what: str = "all") -> dict:
    """A part as written: arrays, and ``skips``/``failures``/``events`` as lists."""
    with np.load(part_path(job, b), allow_pickle=False) as z:
        if what == "lengths":
            return {k: z[k] for k in z.files if k.endswith(".lengths") or k == "valid"}
        if what == "failures":
            return {"failures": json.loads(str(z["failures"])) if "failures" in z.files else []}
        p = {k: z[k] for k in z.files}
    for k in ("skips", "failures", "events"):
        p[k] = [tuple(x) for x in json.loads(str(p[k]))] if k in p else []
    return p


def open_staging(job: Job, n: int, batch_size: int, rows_hash: str) -> None:
    """Find the parts a previous run left (same key, same rows), or start a staging folder."""
    st = job.staging
    meta = C._read_json(st / "staging.json")
    if meta and (meta.get("key") != job.key or meta.get("n") != n or meta.get("rows_hash") != rows_hash):
        shutil.rmtree(st, ignore_errors=True)  # parts of something else: start over
        meta = {}
    if meta:
        job.batch_size = int(meta["batch_size"])
    else:
        st.mkdir(parents=True, exist_ok=True)
        job.batch_size = batch_size
        meta = {"key": job.key, "feature": job.feature, "n": n, "batch_size": batch_size, "rows_hash": rows_hash,
                "n_batches": math.ceil(n / batch_size), "outputs": job.outputs, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        (st / "staging.json").write_text(json.dumps(meta, indent=1))
    for p in st.glob(".batch-*.tmp.npz"):  # half-written by a killed run
        p.unlink(missing_ok=True)
    job.n_batches = math.ceil(n / job.batch_size)
    job.done = {int(p.stem.split("-")[1]) for p in st.glob("batch-*.npz")}
    job.resumed_batches = len(job.done)
    job.retry = {}
    for b in sorted(job.done):
        f = read_part(job, b, "failures")["failures"]
        if f:
            job.retry[b] = sorted(int(x[0]) for x in f)


def collect_failures(job: Job, ids: list[str], files: list[str]) -> list[tuple]:
    out = []
    for b in range(job.n_batches):
        for i, reason, detail in read_part(job, b, "failures")["failures"]:
            r = b * job.batch_size + int(i)
            out.append((r, ids[r], files[r], reason, detail))
    job.failures = out
    return out


# --------------------------------------------------------------------------- finishing --


def finalize(job: Job, m, fmt: str, dtype: str, dataset: str) -> dict:
    """Stream the parts into the store, verify the read-back, mark complete, move in place.

    Rows that failed (``job.failures``) are only ever in a complete store when the user
    accepted them (``--accept-failures``): then they are recorded in the store (``failed``
    attribute, report) and the parts stay, so a later run without the flag retries them."""
    from mer.common.report import Report
    from mer.extract.store import STORE_VERSION, STORES, StoreWriter, open_store, replace_dir_or_file, set_attrs
    from mer.extract.summary import counts

    n = len(m.df)
    ids = m.df["id"].astype(str).tolist()
    files = m.df["audio"].astype(str).tolist() if job.modality == "audio" else ["(text)"] * n
    totals = {name: 0 for name, o in job.outputs.items() if o["kind"] == "ragged"}
    for b in range(job.n_batches):
        p = read_part(job, b, "lengths")
        for name in totals:
            totals[name] += int(p[f"{name}.lengths"].sum())
    tmp = job.staging / f"store{STORES.get(fmt).suffix}"
    w = StoreWriter(tmp, fmt, ids, job.outputs, dtype, totals)
    report = Report(f"mer extract --dataset {dataset} --features {job.feature}: {job.path.name}")
    file_of = dict(zip(ids, files))
    try:
        for b in range(job.n_batches):
            p = read_part(job, b)
            base = b * job.batch_size
            for i, reason, detail in p["skips"]:
                report.drop(ids[base + i], files[base + i], reason, detail)
            for i, reason, detail in p["failures"]:
                report.drop(ids[base + i], files[base + i], f"failed (accepted): {reason}", detail)
            for kind, uid, reason, detail in p["events"]:
                getattr(report, kind)(uid, file_of.get(uid, job.feature), reason, detail)
            data = {}
            for name, o in job.outputs.items():
                data[name] = p[name] if o["kind"] == "fixed" else (p[f"{name}.values"], p[f"{name}.lengths"])
            w.add(p["valid"], data)
        e = job.extractor
        attrs = {
            "mer_store_version": STORE_VERSION,
            "dataset": dataset,
            "feature": job.feature,
            "key": job.key,
            "config": e.config.to_dict(),
            "identity": e.identity(),
            "versions": {**base_versions(), **e.versions()},
            "manifest_hash": job.manifest_hash,
            "modality": job.modality,
            "outputs": {k: {kk: v[kk] for kk in ("kind", "dim", "frame_rate", "dtype", "layers") if kk in v}
                        for k, v in job.outputs.items()},
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "complete": False,
            "format": fmt,
            "limits": job.limits,
            "failed": {"rows": len(job.failures), "reasons": counts(f[3] for f in job.failures)} if job.failures else {},
        }
        w.finish(attrs)
    except BaseException:
        w.abort()
        raise
    with open_store(tmp) as r:
        valid = int(r.valid.sum())
    report.counts = {"rows": n, "valid": valid, "skipped": n - valid}
    if job.failures:
        report.counts["failed (accepted)"] = len(job.failures)
    rep_json = Path(str(C.report_stem(job.path)) + ".json")
    rep_txt = Path(str(C.report_stem(job.path)) + ".txt")
    rep_json.write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False))
    rep_txt.write_text(report.to_text())
    probs = C.verify_store(tmp, m, check_name=False, require_complete=False, report=rep_json)
    if probs:
        raise MerError(f"{job.path.name}: the written store failed verification, not marked complete: {'; '.join(probs)}")
    set_attrs(tmp, {"complete": True})
    replace_dir_or_file(tmp, job.path)
    if not job.failures:  # with accepted failures the parts stay: a later run retries those rows
        shutil.rmtree(job.staging, ignore_errors=True)
    return {"valid": valid, "skipped": n - valid, "reasons": dict(report.reasons("dropped")), "failed": len(job.failures)}


def finalize_all(m, pending: list[Job], o: Options) -> dict[str, dict]:
    """Assemble and verify the stores that may be finished, side by side (compression and
    file I/O release the GIL); the others are left incomplete, their failures counted."""
    from concurrent.futures import ThreadPoolExecutor

    from mer.extract.staging import collect_failures, finalize
    from mer.extract.summary import counts

    n = len(m.df)
    ids = m.df["id"].astype(str).tolist()
    files = m.df["audio"].astype(str).tolist()
    for j in pending:
        collect_failures(j, ids, files if j.modality == "audio" else ["(text)"] * n)
    ready = [j for j in pending if o.accept_failures or not j.failures]
    for j in ready:
        console.info(f"{j.feature}: writing and verifying {j.path.name}")
    with ThreadPoolExecutor(max(1, min(len(ready), os.cpu_count() or 1))) as pool:
        done = {j.feature: pool.submit(finalize, j, m, o.fmt, o.dtype, o.dataset) for j in ready}
    results = {j.feature: done[j.feature].result() for j in ready}
    for j in pending:
        if j not in ready:
            j.status = "incomplete (failed rows)"
            results[j.feature] = {"valid": None, "skipped": None, "failed": len(j.failures),
                                  "reasons": counts(f"failed: {f[3]}" for f in j.failures)}
    return results


def base_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "numpy": np.__version__}
    for pkg in ("mer", "zarr", "h5py", "dask", "distributed"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


