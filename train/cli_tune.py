"""CLI for `mer tune`: parses options and calls mer.train.tune.run_tune.

The data, feature, fusion, protocol and training options are `mer train`'s own option
objects (same names, help and checks), so the two commands cannot drift apart.
"""
from __future__ import annotations

import shlex
import sys

import click

from mer.train.cli import train as _train

# `mer train` options a study shares (everything but seeds, run naming, plots and --jobs:
# trials run one process each, named by trial number, and the final re-run has its own seeds).
SHARED = ("dataset", "features", "fusion", "protocol", "scheme", "cache", "manifest", "out", "epochs", "batch_size", "lr",
          "optimizer", "weight_decay", "grad_clip", "patience", "monitor", "balanced", "max_len", "bucket",
          "batch_frames", "text_source", "normalize", "valid_by", "stores", "context", "options", "device", "precision", "threads",
          "quiet", "recipe", "substitute", "track", "track_uri")


def _tune(ctx, **kw):
    """Search hyper-parameters with Optuna (TPE, median pruning), trials in parallel on Dask.

    \b
    The objective is the mean over folds of the validation metric; test folds are left out
    of every trial. The best configuration is re-run with --final-seeds on the test folds
    and written as a recipe (<out>/<study>/best.yaml) for `mer train --recipe`.
    Rerunning with a larger --trials adds only the missing trials.

    \b
    Examples:
      mer tune -d iemocap -f bert,mfcc --fusion concat --space lr=1e-4:1e-2:log \\
               --space hidden=64,128,256 --trials 20 --workers 2 --study concat-lr
      mer tune -d iemocap -f egemaps --fusion svm-rbf --space C=0.01:100:log --trials 30 --study svm
      mer tune --recipe hierarchical-ser -d iemocap --substitute --trials 40 --study h003   # the recipe's space
      mer tune ... --scheduler tcp://10.0.0.5:8786 --storage postgresql://user@db/optuna   # across machines
    """
    from mer.common import console
    from mer.common.errors import UsageError
    from mer.train.fusion import FUSIONS
    from mer.train.trainer import TrainConfig
    from mer.train.tune import TuneSpec, check_space, default_space, default_storage, parse_space, run_tune, spec_train_dict

    features, fusion, options = kw["features"], kw["fusion"], kw["options"]
    vals = {k: kw[k] for k in ("protocol", "scheme", "context", "epochs", "batch_size", "lr", "optimizer", "weight_decay",
                               "grad_clip", "patience", "monitor", "balanced", "max_len")}
    store_cfgs, recipe_space = {}, {}
    if kw["recipe"]:
        from click.core import ParameterSource

        from mer.common.recipes import load
        from mer.train import recipes as train_recipes
        from mer.train.recipes import train_setup

        given = {n for n in ctx.params if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE}
        # Trials train on stores: a recipe that fine-tunes an encoder (001, 004, w2v-st-i) is
        # searched in its frozen form, on the store of that feature, and says so.
        params = {**ctx.params, "finetune": ""}
        if train_recipes.finetuned(load(kw["recipe"])):
            console.info(f"note: recipe {kw['recipe']} fine-tunes {', '.join(train_recipes.finetuned(load(kw['recipe'])))}; "
                         "mer tune searches it with that encoder frozen (its extracted store)")
        out, record, store_cfgs = train_setup(kw["recipe"], kw["dataset"], params, given | {"finetune"}, kw["cache"],
                                              kw["manifest"], kw["substitute"])
        features, fusion, options = out["features"], out["fusion"], out["options"]
        vals.update({k: out[k] for k in vals})
        fusion = [fusion] if isinstance(fusion, str) else fusion
        recipe_space = load(kw["recipe"]).space
    elif kw["substitute"]:
        raise UsageError("--substitute works with --recipe only")
    if len(features) != 1:
        raise UsageError("a study searches one feature set: give --features once (e.g. -f bert,mfcc)")
    if len(fusion) != 1:
        raise UsageError("a study searches one fusion: give --fusion once")
    cls = FUSIONS.get(fusion[0])
    if not (kw["space"] or kw["space_file"] or recipe_space):
        recipe_space = default_space(cls)
        console.info(f"note: no --space given; searching {fusion[0]}'s default space: "
                     + " ".join(f"{n}={v}" for n, v in recipe_space.items()))
    space = parse_space(kw["space"], kw["space_file"], recipe_space)
    check_space(space, cls)
    tc = TrainConfig(**{k: vals[k] for k in ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "grad_clip",
                                              "patience", "monitor", "balanced", "max_len", "context")},
                     bucket=kw["bucket"], batch_frames=kw["batch_frames"], device=kw["device"], precision=kw["precision"],
                     threads=kw["threads"], stores=kw["stores"], text_source=kw["text_source"], normalize=kw["normalize"],
                     valid_by=kw["valid_by"])
    from mer.train.fusion import model_config

    model_config(cls, options)   # a bad --set value fails here, not in every trial
    regression = _is_regression(kw["dataset"], vals["scheme"])
    metric = "mae" if regression else (vals["monitor"] if vals["monitor"] in ("ua", "accuracy", "weighted_f1", "macro_f1")
                                       else "ua")
    spec = TuneSpec(
        study=kw["study"], storage=kw["storage"] or default_storage(kw["study"], kw["cache"]), dataset=kw["dataset"],
        features=features[0], fusion=fusion[0], out=str(kw["out"]),
        space={n: vars(p) for n, p in space.items()}, train=spec_train_dict(tc), options=dict(options),
        protocol=vals["protocol"], scheme=vals["scheme"], cache=str(kw["cache"]) if kw["cache"] else None,
        manifest=kw["manifest"], store_configs=store_cfgs, seed=kw["seed"] or 0, metric=metric,
        direction="minimize" if metric == "mae" else "maximize", pruner=kw["pruner"],
        command="mer " + shlex.join(sys.argv[1:]))
    if kw["scheduler"] and spec.storage.startswith("sqlite:"):
        console.info(f"note: trials on {kw['scheduler']} open the study at {spec.storage}: workers on other machines "
                     "need that path on a shared file system, or give --storage a database server URL")
    seeds = [int(s) for s in kw["final_seeds"].split(",") if s.strip()]
    with console.quiet(kw["quiet"]):
        res = run_tune(spec, kw["trials"], workers=kw["workers"], scheduler=kw["scheduler"], final_seeds=seeds,
                       plots=not kw["no_plots"], say=console.info)
        for p in res.plots:
            console.info(f"wrote {p}" if str(p).endswith(".png") else f"note: {p}")
        if kw["track"]:
            from mer.train.tracking import track

            runs = [r["run"] for r in res.trials_run if r.get("run")] + ([res.final_run] if res.final_run else [])
            track(runs, kw["track"], uri=kw["track_uri"], experiment=f"mer-tune-{spec.study}", cache=kw["cache"],
                  tags={"mer.study": spec.study})
            console.info(f"tracked {len(runs)} run(s) with {', '.join(kw['track'])}")
    best = (f"; best trial {res.best['number']}: validation {spec.metric} {res.best['value']:.4f}" if res.best else "")
    final = ""
    if res.final:
        m, sd = res.final["mean"].get(spec.metric), res.final["std"].get(spec.metric)
        final = f"; on the test folds {spec.metric} {m:.4f}" + (f" +- {sd:.4f}" if sd is not None and sd == sd else "")
    console.result(f"study {spec.study}: {res.n_complete} complete, {res.n_pruned} pruned, {res.n_failed} failed"
                   f"{best}{final}; {kw['out']}/{spec.study}/ (study.json, best.yaml)")


def _is_regression(dataset: str, scheme: str | None) -> bool:
    from mer.common.schemes import scheme as get_scheme

    return get_scheme(dataset, scheme).is_regression


def _own_params() -> list[click.Parameter]:
    return [
        click.Option(["--study"], required=True, help="Study name: its storage (SQLite under the cache by default) and "
                                                       "the folder <out>/<study> of its runs."),
        click.Option(["--trials"], type=int, required=True, help="Total trials the study should have (finished or "
                                                                 "pruned); a rerun adds only the missing ones."),
        click.Option(["--space"], multiple=True, metavar="NAME=SPEC",
                     help="A dimension: lr=1e-5:1e-2:log (float, log scale), layers=1:3 (int), hidden=64,128,256 "
                          "(choices). NAME: a training option or a --set field of the fusion. Repeatable."),
        click.Option(["--space-file"], type=click.Path(dir_okay=False), default=None,
                     help="YAML mapping NAME -> SPEC (a string as above, a list of choices, or {low, high, log})."),
        click.Option(["--workers"], type=int, default=1, show_default=True,
                     help="Trials in parallel on a local Dask cluster of this many worker processes (0: in this process)."),
        click.Option(["--scheduler"], default=None, metavar="tcp://HOST:PORT",
                     help="Run trials on an existing Dask scheduler instead (--out must be on a file system they share)."),
        click.Option(["--storage"], default=None, metavar="URL",
                     help="Optuna storage URL (default sqlite:///<cache>/studies/<study>.db), e.g. postgresql://... "
                          "for a study spanning machines."),
        click.Option(["--seed"], type=int, default=0, show_default=True, help="Seed every trial trains with; the samplers are seeded from it."),
        click.Option(["--final-seeds"], default="0,1,2", show_default=True,
                     help="Seeds of the best configuration's re-run on the test folds (empty: no re-run)."),
        click.Option(["--pruner"], type=click.Choice(["median", "none"]), default="median", show_default=True,
                     help="median: stop a trial whose validation metric at an epoch is below the median of earlier trials' at that epoch."),
        click.Option(["--no-plots"], is_flag=True, help="Skip the study's PNGs."),
    ]


tune = click.Command(
    "tune", callback=click.pass_context(_tune), help=_tune.__doc__,
    params=[p for n in SHARED for p in _train.params if p.name == n] + _own_params(),
)
