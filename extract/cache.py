"""The content-addressed feature cache: keys, lookup, listing, verification, export.

A store's key is the SHA-256 of (manifest modality hash, extractor name, extractor config,
extractor identity, storage dtype, store layout version) as canonical JSON; its first 16 hex
digits name the store: ``<cache>/<dataset>/features/<feature>-<key16>.<zarr|h5>``. The same
inputs find the same store (nothing is recomputed); any change (a transcript edit for text
features, an audio file's bytes, a config field, other model weights) gives a new key and a
new store, and the old one stays until ``mer cache rm``.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from mer.common import paths
from mer.common.errors import MerError
from mer.extract.store import STORE_VERSION, STORES, StoreReader, format_for, open_store, remove_store, suffixes

PARTIAL = ".partial"   # staging folder of an unfinished run: <store>.partial/


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def store_key(manifest_hash: str, feature: str, config: dict, identity: dict, dtype: str, limits: dict | None = None) -> str:
    """``limits``: run settings that decide which rows are valid (``{"max_seconds": 600.0}``
    for audio features), so a run with another limit never reuses the store."""
    from mer.extract.base import RUNTIME_FIELDS

    payload = {
        "mer_store_version": STORE_VERSION,
        "manifest_hash": manifest_hash,
        "feature": feature,
        "config": {k: v for k, v in config.items() if k not in RUNTIME_FIELDS},
        "identity": identity,
        "dtype": str(np.dtype(dtype)),
    }
    if limits:
        payload["limits"] = {k: float(v) for k, v in sorted(limits.items())}
    return hashlib.sha256(canonical(payload).encode()).hexdigest()


def store_path(dataset: str, feature: str, key: str, fmt: str = "zarr", cache=None) -> Path:
    return paths.features_dir(dataset, cache) / f"{feature}-{key[:16]}{STORES.get(fmt).suffix}"


def report_stem(store: Path) -> Path:
    """``<store>.report`` -> <store>.report.json / .report.txt next to the store."""
    return Path(str(store) + ".report")


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


def _is_store(p: Path) -> bool:
    return any(p.name.endswith(STORES.get(n).suffix) for n in STORES.names()) and not p.name.endswith(PARTIAL)


def list_stores(dataset: str | None = None, cache=None) -> list[dict]:
    """Every store under the cache (or one dataset): path, dataset, feature, key, format,
    complete, n, valid, outputs (name -> kind/dim), bytes, created. Unreadable stores are
    listed with ``error`` set rather than hidden; unfinished runs with ``partial`` set."""
    root = paths.cache_root(cache)
    dsets = [dataset] if dataset else sorted(d.name for d in root.iterdir() if (d / "features").is_dir()) if root.exists() else []
    out: list[dict] = []
    for ds in dsets:
        fdir = paths.features_dir(ds, cache)
        if not fdir.is_dir():
            continue
        for p in sorted(fdir.iterdir()):
            if p.name.endswith(PARTIAL) and p.is_dir():
                st = _read_json(p / "staging.json")
                done = len(list(p.glob("batch-*.npz")))
                out.append({
                    "path": p, "dataset": ds, "feature": st.get("feature", p.name.split("-")[0]), "key": st.get("key", ""),
                    "format": "partial", "complete": False, "n": st.get("n"), "valid": None, "outputs": st.get("outputs", {}),
                    "bytes": _size(p), "created": st.get("created", ""), "partial": f"{done}/{st.get('n_batches', '?')} batches",
                })
                continue
            if not _is_store(p):
                continue
            info = {"path": p, "dataset": ds, "feature": p.name.rsplit("-", 1)[0], "key": "", "format": format_for(p).name,
                    "complete": False, "n": None, "valid": None, "outputs": {}, "bytes": _size(p), "created": ""}
            try:
                with open_store(p) as r:
                    a = r.attrs
                    info.update(feature=a.get("feature", info["feature"]), key=a.get("key", ""), complete=bool(a.get("complete")),
                                n=a.get("n"), outputs=a.get("outputs", {}), created=a.get("created", ""),
                                manifest_hash=a.get("manifest_hash"), modality=a.get("modality"), valid=int(r.valid.sum()),
                                config=dict(a.get("config") or {}), limits=dict(a.get("limits") or {}),
                                dtype=str(a.get("dtype") or "float32"),
                                failed=int((a.get("failed") or {}).get("rows") or 0))
            except Exception as e:  # listed, not hidden: `mer cache verify` says what is wrong
                info["error"] = f"{type(e).__name__}: {e}"
            out.append(info)
    return out


def _read_json(p: Path) -> dict:
    try:
        return json.loads(Path(p).read_text())
    except (OSError, ValueError):
        return {}


def _manifest(dataset: str, cache, manifest):
    from mer.common import manifest as mf

    if manifest is None or isinstance(manifest, (str, os.PathLike)):
        return mf.load(dataset, cache, manifest=manifest)
    return manifest


def _text(k, v) -> str:
    """A setting as compared: numbers by value (``2`` is ``2.0``), a model directory or .conf
    file by its name (a recipe's ``roberta-large`` is the user's ``/models/roberta-large``),
    the rest as lower-case text."""
    v = Path(v).name if k in ("model", "config") and isinstance(v, str) and v else v
    try:
        return repr(float(v)) if not isinstance(v, bool) else str(v).lower()
    except (TypeError, ValueError):
        return str(v).lower()


def _config_matches(stored: dict, wanted: dict) -> bool:
    """``stored`` (a store's settings) has the ``wanted`` values (``--store bert.layer=all``)."""
    return all(k in stored and _text(k, stored[k]) == _text(k, v) for k, v in wanted.items())


def store_settings(s: dict) -> dict:
    """What a listed store was built with beyond the manifest, flat: its extractor config
    (runtime fields left out), its row limits (``max_seconds``) and its dtype. ``--store
    mfcc.max_seconds=2`` picks by any of them."""
    from mer.extract.base import RUNTIME_FIELDS

    out = {k: v for k, v in (s.get("config") or {}).items() if k not in RUNTIME_FIELDS}
    out.update(s.get("limits") or {})
    out["dtype"] = s.get("dtype") or "float32"
    return out


def default_settings(feature: str, modality: str | None) -> dict | None:
    """The settings a plain ``mer extract --features <feature>`` builds with (None when the
    extractor is not registered here)."""
    from mer.extract.base import DEFAULT_DTYPE, DEFAULT_MAX_SECONDS, EXTRACTORS, make_config

    try:
        cls = EXTRACTORS.get(feature)
    except Exception:   # an extractor registered by a plugin that is not loaded now
        return None
    limits = {"max_seconds": float(DEFAULT_MAX_SECONDS)} if (modality or cls.modality) == "audio" else {}
    return store_settings({"config": make_config(cls, None).to_dict(), "limits": limits, "dtype": DEFAULT_DTYPE})


def _differences(stores: list[dict]) -> list[str]:
    """Which settings tell the stores apart, as ``k=v`` text, one entry per store."""
    sets = [store_settings(s) for s in stores]
    keys = sorted({k for d in sets for k in d if len({_text(k, x.get(k)) for x in sets}) > 1})
    return [", ".join(f"{k}={d.get(k)}" for k in keys) or "same settings" for d in sets]


def _pick(feature: str, dataset: str, hits: list[dict]) -> dict:
    """Of several complete stores for the current manifest, the one with the default
    settings; else a MerError naming each candidate, what tells them apart and --store.
    Choosing the newest silently trained on a 2-second-limited store (issue 21)."""
    mod = hits[0].get("modality")
    dflt = default_settings(feature, mod)
    if dflt is not None:
        same = [s for s in hits if _config_matches(store_settings(s), dflt)]
        if same:   # several: one key in two formats; identical rows, the newest is as good
            return same[-1]
    diffs = _differences(hits)
    if all(d == "same settings" for d in diffs):
        # the same settings, other identity (an edited .conf file, other weights): the
        # newest was built from the files as they are now
        return hits[-1]
    cands = "; ".join(f"{Path(s['path']).name} ({d}, {s.get('valid')} of {s.get('n')} rows valid)" for s, d in zip(hits, diffs))
    first = diffs[0].split(", ")[0]
    raise MerError(f"{len(hits)} complete {feature!r} stores for {dataset!r} were built with different settings and "
                   f"none with the defaults: {cands}; pick one with `mer train --store {feature}.{first}` "
                   f"(or remove the others with `mer cache rm`)")


def find_store(dataset: str, feature: str, cache=None, manifest=None, where: dict | None = None) -> Path:
    """The COMPLETE store of extractor ``feature`` built from the current manifest (its
    modality hash), else a MerError naming the `mer extract` command to run. When several
    exist, the one with the default settings (``_pick``), else a MerError naming them.
    ``where``: {config field: value} the store's extractor config must have (``mer train
    --store bert.layer=all`` when stores of several configurations exist)."""
    m = _manifest(dataset, cache, manifest)
    hits = []
    for s in list_stores(dataset, cache):
        if s["feature"] != feature or not s["complete"] or s.get("error") or s["format"] == "partial":
            continue
        mod = s.get("modality") or "audio"
        if s.get("manifest_hash") == m.modality_hash(mod):
            hits.append(s)
    if hits and where:
        def fits(s):
            return _config_matches(store_settings(s), where)

        chosen = [s for s in hits if fits(s)]
        if not chosen:
            have = "; ".join(", ".join(f"{k}={store_settings(s).get(k)}" for k in where) for s in hits)
            want = ", ".join(f"{feature}.{k}={v}" for k, v in where.items())
            raise MerError(f"no {feature!r} store for {dataset!r} has {want} (the current ones have: {have}); "
                           f"extract it with `mer extract --dataset {dataset} --features {feature} "
                           + " ".join(f"--{feature}.{k} {v}" for k, v in where.items()) + "`")
        hits = chosen
    if not hits:
        _unknown_feature(dataset, feature, cache)
        others = [s for s in list_stores(dataset, cache) if s["feature"] == feature]
        why = (f"{len(others)} store(s) of {feature!r} exist but none is complete and built from the current manifest"
               if others else f"no {feature!r} features for {dataset!r} in {paths.cache_root(cache)}")
        cache_opt = f" --cache {cache}" if cache else ""
        raise MerError(f"{why}; run `mer extract --dataset {dataset} --features {feature}{cache_opt}`")
    hits.sort(key=lambda s: (s["created"], s["path"].stat().st_mtime))
    return Path((hits[0] if len(hits) == 1 else _pick(feature, dataset, hits))["path"])


def _unknown_feature(dataset: str, feature: str, cache) -> None:
    """A MerError for a feature name no extractor has (a typo): the stores that exist and
    the closest valid name. Suggesting `mer extract --features <typo>` sent users to a
    command that fails in turn (issue 21)."""
    import difflib

    from mer.extract.base import EXTRACTORS

    known = list(EXTRACTORS.names())
    if feature in known:
        return
    have = sorted({s["feature"] for s in list_stores(dataset, cache) if s["complete"] and not s.get("error")})
    close = difflib.get_close_matches(feature, have, n=1) or difflib.get_close_matches(feature, known, n=1)
    cache_opt = f" --cache {cache}" if cache else ""
    if close and close[0] in have:
        hint = f"did you mean {close[0]!r}? e.g. `mer train --dataset {dataset} --features {close[0]}{cache_opt}`"
    elif close:
        hint = f"did you mean {close[0]!r}? extract it with `mer extract --dataset {dataset} --features {close[0]}{cache_opt}`"
    else:
        hint = f"extractors: {', '.join(known)}"
    stores = f"stores for {dataset!r}: {', '.join(have)}" if have else f"no complete stores for {dataset!r} yet"
    raise MerError(f"no feature {feature!r}: no extractor has that name ({stores}); {hint}")


def resolve(dataset: str | None, feature: str | None, path=None, cache=None) -> list[Path]:
    """Stores named by path, or by dataset (+ feature): the CLI's way of picking stores."""
    if path:
        p = Path(path)
        if not p.exists():
            raise MerError(f"no feature store at {p}")
        return [p]
    if not dataset:
        raise MerError("say which stores: --dataset D [--feature F] or a store path")
    stores = [s for s in list_stores(dataset, cache) if feature is None or s["feature"] == feature]
    if not stores:
        raise MerError(f"no stores for dataset {dataset!r}" + (f" and feature {feature!r}" if feature else "") + f" in {paths.cache_root(cache)}"
                       + paths.demo_hint(cache))
    return [Path(s["path"]) for s in stores]


def verify_store(path, manifest=None, check_values: bool = True, check_name: bool = True, require_complete: bool = True, report=None) -> list[str]:
    """Problems found in a store ([] = good): completeness, key and file name agree with
    the attributes, every chunk's checksum equals the one recorded at write time (and every
    array's), every row present with consistent shapes/offsets, every skipped row listed in
    the report, no NaN/inf, and (when a manifest is given) ids and manifest hash equal the
    current manifest's. Never raises for a broken store: each problem is one string."""
    path = Path(path)
    try:
        r = open_store(path)
    except MerError as e:
        return [str(e)]
    except Exception as e:  # noqa: BLE001 - a broken store is a finding, not a crash
        return [f"cannot open: {type(e).__name__}: {e}"]
    with r:
        try:
            return _verify_open(r, path, manifest, check_values, check_name, require_complete, report)
        except Exception as e:  # noqa: BLE001
            return [f"{type(e).__name__}: {e}"]


def _verify_open(r, path, manifest, check_values, check_name, require_complete, report) -> list[str]:
    from mer.extract.store import StoreCorrupt

    probs: list[str] = []
    a = r.attrs
    n = int(a.get("n", -1))
    if require_complete and not a.get("complete"):
        probs.append("not marked complete (an unfinished or failed extraction)")
    key = store_key(a.get("manifest_hash", ""), a.get("feature", ""), a.get("config", {}), a.get("identity", {}),
                    a.get("dtype", "float32"), a.get("limits") or None)
    if key != a.get("key"):
        probs.append(f"key {a.get('key', '')[:16]} does not match its attributes (recomputed {key[:16]})")
    if check_name and not path.name.startswith(f"{a.get('feature')}-{str(a.get('key', ''))[:16]}"):
        probs.append(f"file name does not match feature/key {a.get('feature')}-{str(a.get('key', ''))[:16]}")
    # Every array once, chunk by chunk: a corrupt array is named and the others still checked.
    scanned, broken = {}, set()
    for name in r.arrays():
        try:
            scanned[name] = r.scan_array(name)
        except StoreCorrupt as e:
            broken.add(name)
            probs.append(str(e).split(": ", 1)[1] if str(e).startswith(str(r.path)) else str(e))
    if {"ids", "valid"} & broken:
        return probs
    ids, valid = r.ids, r.valid
    if len(ids) != n or len(valid) != n:
        probs.append(f"{len(ids)} ids / {len(valid)} valid flags for n={n}")
    if len(set(ids.tolist())) != len(ids):
        probs.append("duplicate ids")
    for name, o in r.outputs.items():
        d = int(o["dim"])
        if o["kind"] == "fixed":
            arr = r.array(name)
            if tuple(arr.shape) != (n, d):
                probs.append(f"{name}: shape {tuple(arr.shape)}, expected {(n, d)}")
            arrs = [name]
        else:
            vals = r.array(f"{name}/values")
            if f"{name}/offsets" not in broken:
                off = r.read_offsets(name)
                if len(off) != n + 1 or off[0] != 0 or np.any(np.diff(off) < 0):
                    probs.append(f"{name}: offsets are not {n + 1} non-decreasing values from 0")
                elif off[-1] != vals.shape[0]:
                    probs.append(f"{name}: offsets end at {off[-1]} but values hold {vals.shape[0]} frames")
                elif len(valid) == n and np.any(np.diff(off)[~valid] != 0):
                    probs.append(f"{name}: skipped rows with frames")
            if vals.ndim != 2 or vals.shape[1] != d:
                probs.append(f"{name}/values: shape {tuple(vals.shape)}, dim should be {d}")
            arrs = [f"{name}/values"]
        if check_values:
            for arr in arrs:
                bad = scanned[arr][1] if arr in scanned else 0
                if bad:
                    probs.append(f"{name}: {bad} NaN/inf values")
    rep = _read_json(Path(report) if report else Path(str(report_stem(path)) + ".json"))
    skipped = set(ids[~valid].tolist()) if len(valid) == len(ids) else set()
    listed = {i["id"] for i in rep.get("dropped", [])}
    if skipped - listed:
        probs.append(f"{len(skipped - listed)} skipped rows not listed in the report (e.g. {sorted(skipped - listed)[0]})")
    rec = a.get("checksums") or {}
    if not rec:
        probs.append("no checksums recorded")
    else:
        for k, (v, _) in scanned.items():
            if rec.get(k) != v:
                probs.append(f"{k}: checksum {v[:12]} differs from the one recorded at write time ({str(rec.get(k))[:12]})")
    if manifest is not None:
        mod = a.get("modality") or "audio"
        if a.get("manifest_hash") != manifest.modality_hash(mod):
            probs.append(f"built from another manifest ({mod} hash differs): stale for the current {a.get('dataset')} manifest")
        elif list(ids) != manifest.df["id"].astype(str).tolist():
            probs.append("ids differ from the current manifest's order")
    return probs


def _inside(p: Path, root: Path) -> bool:
    try:
        Path(os.path.realpath(p)).relative_to(os.path.realpath(root))
        return True
    except ValueError:
        return False


def export_store(path, out, compress: bool = False) -> Path:
    """Write ``ids``, ``valid``, every stored array (ragged as ``<name>/values`` +
    ``<name>/offsets``), ``config`` and ``attrs`` (JSON strings) to one .npz file.
    ``out`` may not lie inside a store (it would overwrite the store's own files)."""
    out = Path(out)
    path = Path(path)
    for parent in [out, *out.parents]:
        if _is_store(parent) or parent.name.endswith(PARTIAL) or parent == path:
            raise MerError(f"--out {out}: inside the feature store {parent}; write the export somewhere else")
    if _inside(out, path):
        raise MerError(f"--out {out}: inside the feature store {path}; write the export somewhere else")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_store(path) as r:
        arrays = {"ids": r.ids, "valid": r.valid}
        for name in r.arrays()[2:]:
            arrays[name] = r.read(name)
        arrays["config"] = np.array(json.dumps(r.attrs.get("config", {})))
        arrays["attrs"] = np.array(json.dumps(r.attrs, default=str))
    tmp = out.with_name(out.name + ".tmp.npz")
    (np.savez_compressed if compress else np.savez)(tmp, **arrays)
    os.replace(tmp, out)
    return out


def check_removable(path, cache=None) -> Path:
    """``path`` if it is a mer store (or an unfinished run's staging folder) inside the cache
    root's ``<dataset>/features/``; else a MerError saying why it is left alone."""
    p = Path(path)
    root = paths.cache_root(cache)
    if p.is_symlink() or not _inside(p, root) or p.parent.name != "features" or not _inside(p.parent.parent, root):
        raise MerError(f"{p}: not inside the cache's feature folders ({root}/<dataset>/features); not removed")
    if p.name.endswith(PARTIAL):
        if not (p / "staging.json").is_file():
            raise MerError(f"{p}: no staging.json, not a mer staging folder; not removed")
        return p
    if not _is_store(p):
        raise MerError(f"{p}: not a mer feature store (name must end in {suffixes()}); not removed")
    if p.exists():
        try:
            with open_store(p):
                pass
        except MerError as e:
            # A store mer wrote but cannot read (corrupt attributes) may go; a folder that
            # merely ends in .zarr and holds no zarr metadata may not.
            if not (format_for(p).looks_written(p) or p.is_file()):
                raise MerError(f"{p}: not a mer feature store ({e}); not removed") from None
    return p


def remove(path, cache=None) -> None:
    """Remove one store (or staging folder) and its reports, holding its lock: a store a
    running extraction writes is refused (its lock is held), never deleted under it."""
    from mer.extract.lock import StoreLock

    p = check_removable(path, cache)
    store = Path(str(p)[: -len(PARTIAL)]) if p.name.endswith(PARTIAL) else p
    with StoreLock(store, wait=False):
        if p.name.endswith(PARTIAL):
            import shutil

            shutil.rmtree(p, ignore_errors=True)
        else:
            remove_store(p)
        # The .lock file stays: deleting a lock file another run holds would let a third one in.
        for extra in (Path(str(report_stem(p)) + ".json"), Path(str(report_stem(p)) + ".txt")):
            extra.unlink(missing_ok=True)


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


__all__ = ["store_key", "store_path", "list_stores", "find_store", "verify_store", "export_store", "remove", "StoreReader"]
