"""`mer extract` and `mer cache`: thin click wrappers around mer.extract.engine / cache.

Every registered extractor's Config field becomes an option ``--<extractor>.<field>`` (built
from the registry, typed from the dataclass), so a new extractor needs no CLI edit.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from mer.common.cli import cache_option, dataset_choice


def _feature_options(f):
    """Decorate ``f`` with ``--<extractor>.<field>`` for every registered extractor."""
    from mer.common.config import field_types as _field_types
    from mer.extract.base import EXTRACTORS

    for name in reversed(EXTRACTORS.names()):
        cls = EXTRACTORS.get(name)
        types_ = _field_types(cls.Config)
        for fld in reversed(dataclasses.fields(cls.Config)):
            default = fld.default if fld.default is not dataclasses.MISSING else (
                fld.default_factory() if fld.default_factory is not dataclasses.MISSING else None)
            tp = types_.get(fld.name)
            tname = getattr(tp, "__name__", str(tp)).replace("typing.", "")
            opt = click.Option(
                [f"--{name}.{fld.name}", f"opt__{name}__{fld.name}"],
                default=None, metavar=tname.upper() if len(tname) < 12 else "VALUE",
                help=f"{name}: {fld.name} (default: {default!r})",
            )
            f.__click_params__ = getattr(f, "__click_params__", []) + [opt]
    return f


def _store_formats() -> list[str]:
    """--format choices: the store registry's names (a new backend needs no CLI edit)."""
    from mer.extract.store import STORES

    return STORES.names()


def _store_dtypes() -> list[str]:
    from mer.extract.store import DTYPES

    return list(DTYPES)


def _features_help() -> str:
    """--features help: the registered extractors and the defaults, from the registry."""
    from mer.extract.base import DEFAULT_FEATURES, EXTRACTORS

    return (f"Comma-separated extractors, from: {', '.join(EXTRACTORS.names())} (default: "
            f"{','.join(DEFAULT_FEATURES)}, each one that cannot run here left out with a note).")


def _device_help() -> str:
    from mer.common.device import CHOICES

    return f"{'|'.join(CHOICES)} for the tensor extractors (mfcc, mel, neural ones)."


@click.command(context_settings={"max_content_width": 110})
@click.option("--dataset", "-d", type=dataset_choice(), required=True, help="Corpus adapter (its manifest is used).")
@click.option("--root", "-r", type=click.Path(exists=True, file_okay=False), default=None,
              help="Corpus folder: (re)prepare the manifest from it first.")
@cache_option
@click.option("--features", "-f", default=None, help=_features_help())
@click.option("--format", "fmt", type=click.Choice(_store_formats()), default="zarr", show_default=True, help="Store format.")
@click.option("--dtype", type=click.Choice(_store_dtypes()), default="float32", show_default=True, help="Storage dtype of features.")
@click.option("--device", default="auto", show_default=True, help=_device_help())
@click.option("--workers", type=int, default=None, help="Local worker processes (default: one per core, or none when one process finishes sooner: a single task or a single core; 0: no cluster, run in this process).")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="Use an existing dask.distributed scheduler, e.g. tcp://10.0.0.5:8786.")
@click.option("--batch-size", type=int, default=None, help="Utterances per task and per resumable part (default: 16 on CPU workers, 64 on a GPU).")
@click.option("--max-seconds", type=float, default=600.0, show_default=True, help="Skip utterances longer than this (reported as 'too long').")
@click.option("--manifest", type=click.Path(dir_okay=False, exists=True), default=None, help="Use this manifest file instead of the cache's.")
@click.option("--accept-failures", is_flag=True,
              help="Finalize stores even with rows that failed for a reason a rerun could fix (file missing now, "
                   "extractor error); the failures are recorded in the store. Default: such stores stay incomplete "
                   "and the next run retries exactly those rows.")
@click.option("--text-source", default=None, metavar="asr:STORE|MODEL",
              help="Text features from ASR transcripts: an asr store path or the --asr.model it was made with (see --features asr).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary table.")
@click.option("--dry-run", is_flag=True,
              help="Compute nothing: per feature, print the rows to compute, the estimated store size and the estimated "
                   "time on this machine (from a short timed sample, see --sample).")
@click.option("--sample", type=click.IntRange(1), default=16, show_default=True,
              help="With --dry-run: manifest rows timed to make the estimates.")
@click.option("--recipe", default=None, help="Extract exactly a recipe's features with its settings (`mer recipes` lists them); --<feature>.<field> options override them.")
@click.option("--substitute", is_flag=True, help="With --recipe: replace encoders that are not installed by the packaged defaults (recorded; the results are then not the paper's).")
@_feature_options
def extract(dataset, root, cache, features, fmt, dtype, device, workers, scheduler, batch_size, max_seconds, manifest, accept_failures, text_source, quiet,
            dry_run, sample, recipe, substitute, **opts):
    """Extract features into content-keyed stores in the cache.

    One store per feature and configuration: <cache>/<dataset>/features/<feature>-<key>.zarr
    (or .h5). Running again with the same inputs recomputes nothing; an interrupted run
    resumes where it stopped. Skipped utterances are listed in <store>.report.txt.
    Extractor options: --<feature>.<field> VALUE, e.g. --mfcc.n_mfcc 13 --mfcc.deltas true.
    """
    from mer.extract.engine import run_extract

    configs: dict[str, dict] = {}
    for k, v in opts.items():
        if v is None or not k.startswith("opt__"):
            continue
        _, feat, fld = k.split("__", 2)
        configs.setdefault(feat, {})[fld] = v
    if recipe:
        from mer.common import recipes
        from mer.common.errors import UsageError
        from mer.extract.recipes import plan as plan_recipe

        if features:
            raise UsageError("--recipe names the features to extract; drop --features (or drop --recipe)")
        r = recipes.load(recipe)
        if r.dataset != dataset:
            click.echo(f"note: recipe {r.name} is set up for {r.dataset}; extracting it for {dataset}", err=True)
        plan = plan_recipe(r, configs, substitute)
        for sub in plan.substitutions:
            click.echo(f"note: substituted {sub['feature']} {sub['wanted']} -> {sub['used_feature']} {sub['used']} "
                       f"(the results are not the paper's)", err=True)
        features, configs = ",".join(plan.features), plan.features
    elif substitute:
        from mer.common.errors import UsageError

        raise UsageError("--substitute works with --recipe only")
    if not features:
        from mer.extract.base import default_features

        chosen, notices = default_features(configs)
        for n in notices:
            click.echo(f"note: {n}", err=True)
        features = ",".join(chosen)
    if dry_run:
        from mer.extract.estimate import dry_run as estimate

        estimate(dataset, features, cache=cache, root=root, configs=configs, fmt=fmt, workers=workers, dtype=dtype,
                 batch_size=batch_size, max_seconds=max_seconds, manifest=manifest, accept_failures=accept_failures,
                 text_source=text_source, sample=sample, quiet=False)
        return
    paths = run_extract(
        dataset, features, cache=cache, root=root, configs=configs, fmt=fmt, device=device, workers=workers,
        scheduler=scheduler, dtype=dtype, batch_size=batch_size, quiet=quiet, max_seconds=max_seconds, manifest=manifest,
        accept_failures=accept_failures, text_source=text_source,
    )
    for feat, p in paths.items():
        click.echo(f"{feat}\t{p}")


@click.group()
def cache():
    """List, verify, export or remove feature stores."""


@cache.command("ls")
@click.option("--dataset", "-d", default=None, help="Only this dataset.")
@cache_option
def cache_ls(dataset, cache):
    """Stores with their feature, key, N, valid rows, outputs (dims), size and state."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from mer.extract import cache as C

    stores = C.list_stores(dataset, cache)
    if not stores:
        click.echo(f"no feature stores in {C.paths.cache_root(cache)}" + (f" for {dataset}" if dataset else "")
                   + C.paths.demo_hint(cache))
        return
    t = Table(title=f"feature stores in {C.paths.cache_root(cache)}")
    for col in ("dataset", "feature", "key", "format", "N", "valid", "outputs (dims)", "size", "state"):
        t.add_column(col)
    total = 0
    for s in stores:
        total += s["bytes"]
        outs = escape(", ".join(f"{k}[{'T,' if o.get('kind') == 'ragged' else ''}{o.get('dim')}]" for k, o in (s.get("outputs") or {}).items()))
        state = "error: " + s["error"] if s.get("error") else (s.get("partial") and "unfinished " + s["partial"]) or ("complete" if s["complete"] else "incomplete")
        if s.get("failed"):
            state += f", {s['failed']} failed rows accepted"
        t.add_row(s["dataset"], s["feature"], str(s["key"])[:16], s["format"], str(s["n"] if s["n"] is not None else "-"),
                  str(s["valid"] if s["valid"] is not None else "-"), outs, C.human_bytes(s["bytes"]), state)
    Console(width=200).print(t)
    click.echo(f"{len(stores)} stores, {C.human_bytes(total)}  (name[D]: fixed [N, D]; name[T,D]: ragged frames per utterance)")


def _pick(dataset, feature, paths, cache):
    from mer.extract import cache as C

    if paths:
        out = []
        for p in paths:
            out += C.resolve(None, None, p, cache)
        return out
    return C.resolve(dataset, feature, None, cache)


@cache.command("rm")
@click.option("--dataset", "-d", default=None)
@click.option("--feature", "-f", default=None)
@click.argument("paths", nargs=-1, type=click.Path())
@cache_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask.")
def cache_rm(dataset, feature, paths, cache, yes):
    """Remove stores (by --dataset [--feature] or by path), with their reports.

    Only mer stores (and unfinished runs' staging folders) inside the cache root are
    removed, each under its lock: a store a running extraction holds is refused."""
    from mer.extract import cache as C

    stores = _pick(dataset, feature, paths, cache)
    for p in stores:
        C.check_removable(p, cache)  # all checked before anything is removed
    for p in stores:
        click.echo(f"  {p}")
    if not yes:
        click.confirm(f"remove these {len(stores)} store(s)?", abort=True)
    for p in stores:
        C.remove(p, cache)
    click.echo(f"removed {len(stores)} store(s)")


@cache.command("verify")
@click.option("--dataset", "-d", default=None)
@click.option("--feature", "-f", default=None)
@click.argument("paths", nargs=-1, type=click.Path())
@cache_option
def cache_verify(dataset, feature, paths, cache):
    """Check stores (every store in the cache when none is named): complete, every chunk's
    checksum, every row present, no NaN/inf, key matches, skipped rows reported, ids equal
    the current manifest. Each failing store is named with its reasons and the next one is
    checked; exit 1 if any failed."""
    from mer.common.errors import MerError
    from mer.extract import cache as C

    if paths or dataset:
        stores = [p for p in _pick(dataset, feature, paths, cache) if not str(p).endswith(C.PARTIAL)]
    else:
        stores = [Path(s["path"]) for s in C.list_stores(None, cache)
                  if s["format"] != "partial" and (feature is None or s["feature"] == feature)]
        if not stores:
            click.echo(f"no feature stores in {C.paths.cache_root(cache)}" + C.paths.demo_hint(cache))
            return
    manifests = {}
    bad = 0
    for p in stores:
        ds = p.parent.parent.name
        if ds not in manifests:
            try:
                from mer.common import manifest as mf

                manifests[ds] = mf.load(ds, cache)
            except MerError:
                manifests[ds] = None
        try:
            probs = C.verify_store(p, manifests[ds])
        except Exception as e:  # noqa: BLE001 - one broken store never stops the others' check
            probs = [f"{type(e).__name__}: {e}"]
        if probs:
            bad += 1
            click.echo(f"FAIL {p}")
            for q in probs:
                click.echo(f"     - {q}")
        else:
            click.echo(f"ok   {p}")
    click.echo(f"{len(stores) - bad} ok, {bad} failed")
    if bad:
        raise MerError(f"{bad} of {len(stores)} store(s) failed verification")


@cache.command("export")
@click.option("--dataset", "-d", required=True)
@click.option("--feature", "-f", required=True)
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="Output .npz file.")
@click.option("--compress", is_flag=True, help="np.savez_compressed instead of np.savez.")
@cache_option
def cache_export(dataset, feature, out, compress, cache):
    """Write ids, valid, every stored array and the config (JSON) to one .npz file."""
    from mer.extract import cache as C

    p = C.find_store(dataset, feature, cache)
    C.export_store(p, out, compress=compress)
    click.echo(f"{p.name} -> {out}")
