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
from pathlib import Path


def cache_root(cache: str | os.PathLike | None = None) -> Path:
    if cache:
        return Path(cache).expanduser()
    env = os.environ.get("MER_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mer"))


def dataset_dir(dataset: str, cache: str | os.PathLike | None = None) -> Path:
    return cache_root(cache) / dataset


def manifest_path(dataset: str, cache: str | os.PathLike | None = None) -> Path:
    return dataset_dir(dataset, cache) / "manifest.parquet"


def features_dir(dataset: str, cache: str | os.PathLike | None = None) -> Path:
    return dataset_dir(dataset, cache) / "features"
