"""Where `mer` keeps manifests, feature stores and runs.

Cache root: ``--cache`` if given, else ``$MER_CACHE``, else the per-user cache directory
(``platformdirs.user_cache_dir("mer")``, e.g. ``~/.cache/mer`` on Linux).

Layout under the cache root::

    <cache>/<dataset>/manifest.parquet        the manifest (see mer.common.manifest)
    <cache>/<dataset>/manifest.meta.json      content hashes, source root, counts
    <cache>/<dataset>/manifest.report.json    what was dropped or repaired, and why
    <cache>/<dataset>/manifest.report.txt     the same, for people
    <cache>/<dataset>/features/<feature>-<key>.<zarr|h5>   feature stores (mer.extract)
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from mer.common.errors import UsageError

# A name that becomes one path component (a dataset, a run id): letters, digits and ._+@-,
# not starting with a dot. Anything else could climb out of its folder (``..``, ``a/../..``)
# or replace it (an absolute path).
_NAME = re.compile(r"[A-Za-z0-9_+@-][A-Za-z0-9_.+@-]*")


def check_name(name, what: str) -> str:
    """``name`` if it is a plain folder name, else a UsageError naming ``what`` (e.g. --run-id)."""
    s = str(name)
    if not _NAME.fullmatch(s) or len(s) > 200:
        raise UsageError(
            f"{what} {s!r}: must be a plain name (letters, digits, and . _ + @ -, not starting with a dot; "
            "no / or ..), so it stays inside its folder"
        )
    return s


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    if cache:
        return Path(cache).expanduser()
    env = os.environ.get("MER_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mer"))


def dataset_dir(dataset: str, cache: str | os.PathLike | None = None) -> Path:
    return cache_root(cache) / check_name(dataset, "dataset")


def manifest_path(dataset: str, cache: str | os.PathLike | None = None) -> Path:
    return dataset_dir(dataset, cache) / "manifest.parquet"


def features_dir(dataset: str, cache: str | os.PathLike | None = None) -> Path:
    return dataset_dir(dataset, cache) / "features"


def demo_hint(cache: str | os.PathLike | None = None, what: str = "cache") -> str:
    """`` ...; `mer demo` wrote ... there: add --cache <root>/demo`` when the demo's cache
    root (``<cache>/demo``, kept apart so its synthetic "iemocap" never replaces a real one)
    holds data and this command looked elsewhere; else "". ``what``: "cache" or "runs"."""
    demo = cache_root(cache) / "demo"
    if not demo.is_dir():
        return ""
    if what == "runs":
        return f"; `mer demo` wrote its runs under {demo / 'runs'}: `mer runs {demo / 'runs'}`" if (demo / "runs").is_dir() else ""
    return f"; `mer demo` keeps its own cache root: add --cache {demo}"
