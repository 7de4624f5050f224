"""What the extraction driver asks of stores already written, and how it reports a run.

- ``is_complete`` / ``mark_reused``: whether a job's store can be reused as it is;
- ``reused_result``: the counts of a reused store, for the summary;
- ``report``: the run's last stage: the table ``mer extract`` prints at the end
  (``summary_table``, on stderr through ``mer.common.console``), and the error naming the
  stores left incomplete (``failure_line``) or that nothing usable was extracted.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from mer.common import console
from mer.common.errors import MerError
from mer.extract import cache as C
from mer.extract.work import Job, Options


def is_complete(j: Job, accept_failures: bool) -> bool:
    """Reusable as it is: complete, every chunk's checksum right, and no accepted failures
    unless this run accepts them too (else they are retried)."""
    if not j.path.exists():
        return False
    from mer.extract.store import StoreCorrupt, open_store

    try:
        with open_store(j.path) as r:
            if not r.attrs.get("complete"):
                return False
            if (r.attrs.get("failed") or {}).get("rows") and not accept_failures:
                console.info(f"{j.feature}: {j.path.name} has {r.attrs['failed']['rows']} failed rows (accepted earlier); retrying them")
                return False
            r.scan()  # every chunk read and checked once: reuse never hands on corrupt data
            return True
    except StoreCorrupt as e:
        raise MerError(f"{e}") from None
    except MerError:
        return False


def mark_reused(j: Job) -> None:
    j.status = "reused"
    # Left over when a run died between moving its store in place and cleaning up (but the
    # parts of accepted failures stay, for a run that retries them).
    if not (store_attrs(j.path).get("failed") or {}).get("rows"):
        shutil.rmtree(j.staging, ignore_errors=True)


def store_attrs(path) -> dict:
    """A store's attributes ({} if it cannot be read)."""
    from mer.extract.store import open_store

    try:
        with open_store(path) as r:
            return dict(r.attrs)
    except MerError:
        return {}


def reused_result(j: Job, n: int) -> dict:
    from mer.extract.store import open_store

    with open_store(j.path) as r:
        v = int(r.valid.sum())
        failed = int((r.attrs.get("failed") or {}).get("rows") or 0)
    return {"valid": v, "skipped": n - v, "failed": failed, "reasons": dict(_reasons(j.path))}


def _reasons(path: Path) -> dict:
    from mer.common.report import Report

    p = Path(str(C.report_stem(path)) + ".json")
    return Report.read(p).reasons("dropped") if p.exists() else {}


def summary_table(jobs: list[Job], results: dict, n: int, dataset: str, seconds: float) -> str:
    """The run's table, rendered for stderr (colours only when stderr is a terminal)."""
    import io
    import sys

    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"mer extract: {dataset} ({n} utterances, {seconds:.1f} s)")
    for col in ("feature", "status", "valid", "skipped", "reasons", "store"):
        t.add_column(col)
    for j in jobs:
        r = results[j.feature]
        status = {"reused": "up to date (reused, nothing computed)",
                  "resumed": f"resumed ({j.resumed_batches}/{j.n_batches} batches were done)"}.get(j.status, j.status)
        if r.get("failed"):
            status += f", {r['failed']} failed" + (" (accepted)" if not j.status.startswith("incomplete") else "")
        reasons = ", ".join(f"{k}: {v}" for k, v in sorted(r["reasons"].items())) or "-"
        t.add_row(j.feature, status, str(r["valid"] if r["valid"] is not None else "-"),
                  str(r["skipped"] if r["skipped"] is not None else "-"), reasons, str(j.path))
    buf = io.StringIO()
    Console(file=buf, width=200, force_terminal=sys.stderr.isatty()).print(t)
    return buf.getvalue().rstrip("\n")


def counts(xs) -> dict:
    out: dict = {}
    for x in xs:
        out[x] = out.get(x, 0) + 1
    return out


def failure_line(j: Job) -> str:
    """``mfcc: 64 of 320 rows failed (missing audio: 64), e.g. Ses05F_x (/data/...wav): ...``"""
    by = ", ".join(f"{k}: {v}" for k, v in sorted(counts(f[3] for f in j.failures).items()))
    _, uid, file, reason, detail = j.failures[0]
    return f"{j.feature}: {len(j.failures)} rows failed ({by}), e.g. {uid} ({file}): {reason}" + (f" - {detail}" if detail else "")


def report(jobs: list[Job], results: dict, n: int, o: Options, seconds: float) -> None:
    console.info(summary_table(jobs, results, n, o.dataset, seconds))
    failed = [j for j in jobs if j.status.startswith("incomplete")]
    if failed:
        raise MerError("; ".join(failure_line(j) for j in failed)
                       + ". These stores stay incomplete and the next run retries exactly these rows"
                       " (or pass --accept-failures to finalize them with the failures recorded)")
    if all(results[j.feature]["valid"] == 0 for j in jobs):
        raise MerError(f"nothing usable was extracted for {o.dataset}: every utterance was skipped (see the reports next to the stores)")
