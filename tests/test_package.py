"""Packaging: one installed namespace, `mer`; nothing called common/extract/train in site-packages."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
    )
    (whl,) = out.glob("mer-*.whl")
    return whl


def test_wheel_has_only_the_mer_namespace(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top == {"mer"}, top
    for pkg in ("mer/common/cli.py", "mer/extract/base.py", "mer/train/fusion.py", "mer/manifests/iemocap.yaml"):
        assert pkg in names, pkg


def test_wheel_installs_and_runs(wheel, tmp_path):
    # Install the wheel (no deps: they are already in this environment) into a scratch target
    # and import from there only, so the editable checkout cannot answer for it.
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], check=True)
    assert not any((target / n).exists() for n in ("common", "extract", "train"))
    code = (
        "import sys; sys.path.insert(0, %r); import mer.extract, mer.common.cli, mer.train;"
        "assert mer.extract.__file__.startswith(%r), mer.extract.__file__;"
        "from mer.common.cli import main; main(['--help'])" % (str(target), str(target))
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "prepare" in r.stdout and "train" in r.stdout


def test_cli_help_everywhere():
    from click.testing import CliRunner

    from mer.common.cli import COMMANDS, cli

    runner = CliRunner()
    for name in COMMANDS:
        r = runner.invoke(cli, [name, "--help"])
        assert r.exit_code == 0, (name, r.output)


def test_errors_are_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", "from mer.common.cli import main; main(['prepare','--dataset','iemocap','--root',%r])" % str(tmp_path)],
        capture_output=True, text=True,
    )
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error:") and "EmoEvaluation" in r.stderr
