"""`mer demo --quick` end to end: corpus -> manifest -> features -> runs, through the CLI."""
import json
from pathlib import Path

from click.testing import CliRunner

from mer.common.cli import cli


def test_demo_quick_runs_end_to_end(tmp_path):
    r = CliRunner().invoke(cli, ["demo", "--quick", "--cache", str(tmp_path)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    demo = tmp_path / "demo"
    assert (demo / "iemocap" / "manifest.parquet").exists()
    assert (demo / "iemocap" / "manifest.report.txt").exists()
    runs = sorted(p.parent for p in (demo / "runs").rglob("metrics.json"))
    assert len(runs) >= 3  # fusion(s) + the unimodal baselines
    uas = {}
    for run in runs:
        m = json.loads((run / "metrics.json").read_text())
        assert len(m["folds"]) == 5  # leave-one-session-out
        uas[(m["fusion"], tuple(m["features"]) if isinstance(m["features"], list) else m["features"])] = m["mean"]["ua"]
    # 4 classes: chance is 0.25; every demo model must be well above it.
    assert min(uas.values()) > 0.45, uas
    # Running it again reuses the corpus and the stores.
    r2 = CliRunner().invoke(cli, ["demo", "--quick", "--cache", str(tmp_path)], catch_exceptions=False)
    assert r2.exit_code == 0
    assert "reused" in r2.output
