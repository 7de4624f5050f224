"""`mer extract --dry-run` (issue 22): rows to compute, estimated disk and time, nothing written;
the estimates within a factor of 2 of the measured run on a synthetic corpus."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    pytest.importorskip("espeakng_loader")
    from mer.common.datasets.prepare import prepare
    from mer.common.synth import generate

    d = tmp_path_factory.mktemp("dryrun")
    generate(d / "corpus", layout="iemocap", per_class=3, sessions=1, seed=0, quiet=True)
    prepare("iemocap", d / "corpus", cache=d / "manifest-cache", quiet=True)
    return d


def _fresh(code: str) -> str:
    """Run ``code`` in a fresh Python process (as a user's command: nothing imported or
    loaded yet); its stdout."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_dry_run_estimates_within_2x_of_the_measured_run(corpus, tmp_path):
    """The dry run and the run each in a fresh process, as a user runs them one after the other."""
    pytest.importorskip("transformers")
    from mer.common.paths import manifest_path
    from mer.extract import cache as C

    man = manifest_path("iemocap", corpus / "manifest-cache")
    cache = tmp_path / "cache"
    args = f"'iemocap', 'mfcc,bert', cache={str(cache)!r}, manifest={str(man)!r}, workers=0"
    d = json.loads(_fresh(f"import json; from mer.extract.estimate import dry_run; d = dry_run({args}, sample=8); "
                          "print(json.dumps({'seconds': d.seconds, 'startup': d.startup, "
                          "'est': {e.feature: [e.rows, e.bytes, e.seconds, e.status] for e in d.estimates}}))"))
    assert not (cache / "iemocap" / "features").exists()          # nothing written
    n = len(__import__("pandas").read_parquet(man))
    assert {f: (v[0], v[3]) for f, v in d["est"].items()} == {"mfcc": (n, "to compute"), "bert": (n, "to compute")}
    assert d["startup"] > 0

    t0 = time.perf_counter()
    _fresh(f"from mer.extract.engine import run_extract; run_extract({args}, quiet=True)")
    measured = time.perf_counter() - t0
    sizes = {s["feature"]: s["bytes"] for s in C.list_stores("iemocap", cache)}
    for f, v in d["est"].items():
        assert 0.5 <= v[1] / sizes[f] <= 2.0, (f, v[1], sizes[f])
    print(f"dry-run estimate {d['seconds']:.1f} s (start-up {d['startup']:.1f} s), measured run {measured:.1f} s")
    assert 0.5 <= d["seconds"] / measured <= 2.0, (d, measured)

    # Now every store is complete: nothing is left to compute.
    from mer.extract.estimate import dry_run

    again = dry_run("iemocap", "mfcc,bert", cache=cache, manifest=man, workers=0, sample=8)
    assert [(e.rows, e.status, e.seconds) for e in again.estimates] == [(0, "reused", 0.0)] * 2


def test_dry_run_cli_prints_the_table(corpus, tmp_path):
    from mer.common.cli import cli
    from mer.common.paths import manifest_path

    man = manifest_path("iemocap", corpus / "manifest-cache")
    r = CliRunner().invoke(cli, ["extract", "-d", "iemocap", "-f", "mfcc", "--manifest", str(man), "--cache",
                                 str(tmp_path / "c"), "--workers", "0", "--dry-run", "--sample", "4"])
    assert r.exit_code == 0, r.output
    assert "rows to compute" in r.output and "est. disk" in r.output and "mfcc" in r.output
    assert not (tmp_path / "c" / "iemocap" / "features").exists()
