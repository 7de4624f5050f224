"""CLI for training: `mer train`, `mer runs`, `mer predict`.

Each command parses options and calls one function (mer.train.trainer.run_train,
mer.train.rundir.runs_table, mer.train.predict.predict_items).
"""
from __future__ import annotations

import shlex
import sys

import click

from mer.common.cli import cache_option, dataset_choice
from mer.train.config import MONITORS, NORMALIZE, OPTIMIZERS, PRECISIONS, SCHEDULES, parse_list
from mer.train.fusion import CONTEXTS
from mer.train.protocols import VALID_BY


def _fusion_names() -> list[str]:
    from mer.train.fusion import FUSIONS

    return FUSIONS.names()


def _check_fusions(ctx, param, value):
    names = [v.strip() for v in value.split(",") if v.strip()]
    known = _fusion_names()
    bad = [n for n in names if n not in known]
    if bad or not names:
        raise click.BadParameter(f"unknown fusion {', '.join(bad) or '(none)'}; choose from: {', '.join(known)}")
    return names


def _stores(ctx, param, value):
    """--store bert.layer=all -> {"bert": {"layer": "all"}}."""
    out: dict[str, dict] = {}
    for v in value:
        k, sep, val = v.partition("=")
        feat, dot, fld = k.strip().partition(".")
        if not sep or not dot or not feat or not fld:
            raise click.BadParameter(f"{v!r}: expected feature.field=value, e.g. bert.layer=all")
        out.setdefault(feat, {})[fld] = val.strip()
    return out


def _options(ctx, param, value):
    out = {}
    for v in value:
        k, sep, val = v.partition("=")
        if not sep or not k:
            raise click.BadParameter(f"{v!r}: expected name=value, e.g. hidden=128")
        out[k.strip()] = val.strip()
    return out


def _check_optimizer(ctx, param, value):
    if value not in OPTIMIZERS:
        raise click.BadParameter(f"unknown optimizer {value!r}; choose from: {', '.join(OPTIMIZERS)}")
    return value


def _check_track(ctx, param, value):
    if not value:
        return ()
    from mer.train.tracking import TRACKERS

    bad = [v for v in value if v not in TRACKERS.names()]
    if bad:
        raise click.BadParameter(f"unknown tracker {', '.join(bad)}; choose from: {', '.join(TRACKERS.names())}")
    return tuple(value)


class _FusionHelp(click.Option):
    """--fusion's help lists the registry's names, computed only when help is shown, and
    without importing the models (torch): ``mer train --help`` stays fast."""

    def get_help_record(self, ctx):
        from mer.train.fusion import names_for_help

        self.help = "Fusion model(s), comma separated; one run each. Choices: " + ", ".join(names_for_help()) + "."
        return super().get_help_record(ctx)


@click.command()
@click.option("--dataset", "-d", type=dataset_choice(), required=True, help="Corpus (its manifest must be prepared).")
@click.option("--features", "-f", multiple=True,
              help="Comma list of stores[.output], e.g. bert,mfcc or bert.tokens,mfcc.frames. Repeat for several feature sets.")
@click.option("--fusion", cls=_FusionHelp, default="concat", show_default=True, callback=_check_fusions)
@click.option("--protocol", "-p", default=None, help="Protocol from manifests/<dataset>.yaml (loso, si, sd, official, random; default: the dataset's).")
@click.option("--scheme", default=None, help="Label scheme from manifests/<dataset>.yaml (e.g. emo4, emo6, sent3, regression; default: the dataset's).")
@click.option("--seeds", default="0", show_default=True, help="Comma list of seeds; mean and std are reported across them.")
@click.option("--seed", type=int, default=None, help="One seed (same as --seeds N).")
@cache_option
@click.option("--manifest", type=click.Path(dir_okay=False), default=None, help="Use this manifest instead of the cache's.")
@click.option("--out", "-o", type=click.Path(file_okay=False), default="runs", show_default=True, help="Folder the run directories go into.")
@click.option("--run-id", default=None, help="Name of the run directory (one run only; default: dataset-features-fusion-protocol-time).")
@click.option("--epochs", type=int, default=60, show_default=True)
@click.option("--batch-size", type=int, default=0, show_default=True,
              help="Utterances per batch, as the papers count them; 0: auto, training rows / 32 between 8 and 64 (enough "
                   "optimizer steps an epoch on a small corpus). With --context dialog, whole dialogues packed to about "
                   "this many utterances (a longer dialogue is a batch of its own).")
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--optimizer", default="adamw", show_default=True, callback=_check_optimizer,
              help=f"One of {', '.join(OPTIMIZERS)}: adamw (decoupled weight decay), adam (weight decay as an L2 term, "
                   "as seeds 002/004), sgd (momentum 0.9).")
@click.option("--weight-decay", type=float, default=1e-4, show_default=True, help="Weight decay (L2 for adam/sgd).")
@click.option("--grad-clip", type=float, default=5.0, show_default=True, help="Clip the gradient's global norm to this (0: no clipping).")
@click.option("--patience", type=int, default=10, show_default=True, help="Early stopping: epochs without validation improvement.")
@click.option("--monitor", type=click.Choice(MONITORS), default="auto",
              show_default=True, help="Validation metric for early stopping (auto: ua, or ccc (mean over targets) for regression).")
@click.option("--balanced/--no-balanced", default=False, show_default=True, help="Class-weighted loss (weights from the training rows); every classification model supports it, regression refuses it.")
@click.option("--max-len", type=int, default=None,
              help="Keep the first N frames/tokens of every sequence input (a fixed crop, as seed 002's fixed-size spectrograms; default: whole sequences).")
@click.option("--bucket/--no-bucket", default=True, show_default=True,
              help="Batch utterances of similar length together, so batches pad little (same models, other batch mixes).")
@click.option("--batch-frames", type=int, default=4096, show_default=True,
              help="With --bucket: at most this many padded frames per batch (rows x longest sequence), which bounds memory; 0: no cap.")
@click.option("--text-source", default=None, metavar="asr:STORE|MODEL",
              help="Train on text features computed from ASR transcripts (mer extract --features asr, then --text-source there too).")
@click.option("--normalize", type=click.Choice(NORMALIZE), default="fold", show_default=True,
              help="speaker: first standardise each speaker's audio features over that speaker's own utterances (test ones too, "
                   "labels unused; common SER practice), then the usual per-fold normalisation.")
@click.option("--store", "stores", multiple=True, callback=_stores, metavar="FEATURE.FIELD=VALUE",
              help="Use the store of FEATURE extracted with that config value when there are several, e.g. --store bert.layer=all.")
@click.option("--context", type=click.Choice(CONTEXTS), default="none", show_default=True,
              help="dialog: batches of whole dialogues in temporal order (the manifest's dialog column), one prediction "
                   "per utterance; --batch-size still counts utterances (whole dialogues packed to about that many) "
                   "(attention, cross).")
@click.option("--valid-by", type=click.Choice(VALID_BY), default="auto", show_default=True,
              help="Validation slices carved from training rows (early stopping): single utterances (stratified), or whole "
                   "dialogues; auto: dialogues with --context dialog, utterances otherwise.")
@click.option("--set", "options", multiple=True, callback=_options, metavar="NAME=VALUE",
              help="Fusion config field, e.g. --set hidden=128 --set dropout=0.2 (applies to every fusion that has it; a name no fusion has is an error).")
@click.option("--finetune", default=None, metavar="FEATURE[,FEATURE]",
              help="Fine-tune these features' encoders end to end on raw input (bert: tokenised transcripts); other inputs come from their stores.")
@click.option("--encoder-model", default=None, help="With --finetune: the encoder (HF id in the local cache or a folder; default: the extractor's, the packaged MiniLM for bert).")
@click.option("--encoder-layer", default="last", show_default=True, help="With --finetune: last | last4 | all (learned mix) | N, as --bert.layer.")
@click.option("--encoder-lr", type=float, default=2e-5, show_default=True, help="With --finetune: the encoder's learning rate (--lr is the rest's).")
@click.option("--freeze-layers", type=int, default=0, show_default=True, help="With --finetune: keep the embeddings and the lowest N layers frozen.")
@click.option("--max-tokens", type=int, default=128, show_default=True, help="With --finetune: tokens per transcript, special tokens included.")
@click.option("--max-seconds", type=float, default=None,
              help="With --finetune wav2vec: keep the first N seconds of each utterance (default: all; cut ones counted).")
@click.option("--grad-checkpointing", is_flag=True, help="With --finetune: recompute encoder activations in the backward pass (less memory).")
@click.option("--layer-decay", type=float, default=1.0, show_default=True,
              help="With --finetune: layer-wise lr decay; the top layer at --encoder-lr, each lower one F times the one above, embeddings lowest.")
@click.option("--unfreeze-after", type=int, default=0, show_default=True,
              help="With --finetune: keep the encoder frozen for the first K epochs (the head trains alone), then tune it.")
@click.option("--accumulate", type=int, default=1, show_default=True, help="Sum gradients over N batches per optimizer step.")
@click.option("--warmup", type=float, default=0.0, show_default=True, help="Linear learning-rate warm-up over this fraction of the steps.")
@click.option("--schedule", type=click.Choice(SCHEDULES), default="constant", show_default=True, help="Learning-rate decay after the warm-up.")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA if available), cpu, cuda, cuda:1.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="Mixed precision (autocast): bf16 on CPU or GPU, fp16 on CUDA only (with loss scaling).")
@click.option("--threads", type=int, default=0, show_default=True,
              help="torch CPU threads per process (0: the cores left to each of --jobs).")
@click.option("--jobs", "-j", type=int, default=0, show_default=True,
              help="Worker processes over folds and seeds (0: auto, one process with all cores as threads for "
                   "frame/token-sequence models, one per core for pooled ones); results equal --jobs 1 at the same "
                   "--threads and seed. CPU only.")
@click.option("--no-plots", is_flag=True, help="Skip confusion.png and curves.png.")
@click.option("--quiet", "-q", is_flag=True)
@click.option("--recipe", default=None, help="Train a paper's recipe (`mer recipes`); options given here override its values (recorded in the run).")
@click.option("--substitute", is_flag=True, help="With --recipe: use the stores `mer extract --recipe ... --substitute` made with the packaged encoders (recorded; not the paper's numbers).")
@click.option("--track", multiple=True, callback=_check_track, metavar="mlflow|tensorboard",
              help="Log each run to MLflow (local store under the cache unless --track-uri) or as TensorBoard event "
                   "files in the run directory. Repeatable.")
@click.option("--track-uri", default=None, help="MLflow tracking URI (default sqlite:///<cache>/mlflow/mlflow.db).")
@click.pass_context
def train(ctx, dataset, features, fusion, protocol, scheme, seeds, seed, cache, manifest, out, run_id, epochs, batch_size, lr,
          optimizer, weight_decay, grad_clip, patience, monitor, balanced, max_len, context, bucket, batch_frames, stores, text_source,
          normalize, valid_by, options, device, precision, threads, jobs, no_plots, quiet, recipe, substitute, track, track_uri,
          finetune, **tune):
    """Train fusion models on cached features and write one run directory per
    (feature set, fusion): config.yaml, metrics.json, predictions.csv, weights, plots.

    \b
    Examples:
      mer train -d iemocap -f bert,mfcc --fusion concat,late --protocol loso
      mer train -d iemocap -f bert,mfcc -f bert -f mfcc --seeds 0,1,2   # fusion vs unimodal
      mer train -d mosi -f bert,egemaps --scheme regression
      mer train --recipe cm-roberta -d meld --substitute --epochs 20    # a paper's settings, epochs overridden
    """
    from mer.common.errors import UsageError
    from mer.train.trainer import TrainConfig, run_train

    record = store_cfgs = None
    if recipe:
        from click.core import ParameterSource

        from mer.train.recipes import train_setup

        given = {n for n in ctx.params if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE}
        vals, record, store_cfgs = train_setup(recipe, dataset, dict(ctx.params), given, cache, manifest, substitute)
        features, fusion, protocol, scheme, context, options = (vals[k] for k in ("features", "fusion", "protocol", "scheme",
                                                                                    "context", "options"))
        epochs, batch_size, lr, optimizer, weight_decay, grad_clip, patience, monitor, balanced, max_len = (
            vals[k] for k in ("epochs", "batch_size", "lr", "optimizer", "weight_decay", "grad_clip", "patience",
                              "monitor", "balanced", "max_len"))
        batch_frames = vals["batch_frames"]   # a recipe may set the frame budget (or 0: batches of batch_size)
        tune.update({k: vals[k] for k in ("accumulate", "warmup", "schedule", "encoder_model", "encoder_layer",
                                          "encoder_lr", "freeze_layers", "max_tokens")})
        finetune = vals["finetune"]   # a recipe may fine-tune its text encoder (seeds 001, 004)
        fusion = [fusion] if isinstance(fusion, str) else fusion
        for sub in record["substitutions"]:
            click.echo(f"note: substituted {sub['feature']} -> {sub['used_feature']} {sub['used']} (the results are "
                       f"not the paper's)", err=True)
    elif substitute:
        raise UsageError("--substitute works with --recipe only")
    elif not features:
        raise UsageError("name the features to train on with --features (or train a paper's --recipe)")
    tc = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer, weight_decay=weight_decay,
                     grad_clip=grad_clip, patience=patience, monitor=monitor, balanced=balanced, context=context, max_len=max_len, bucket=bucket,
                     batch_frames=batch_frames, device=device, precision=precision, threads=threads, jobs=jobs,
                     stores=stores, text_source=text_source, normalize=normalize, valid_by=valid_by,
                     finetune=tuple(parse_list(finetune, "--finetune")) if finetune else (), **tune)
    results = run_train(dataset, list(features), fusion, protocol=protocol, scheme=scheme,
                        seeds=[seed] if seed is not None else seeds, cache=cache, out=out, device=device,
                        manifest=manifest, options=options, config=tc, run_id=run_id,
                        command="mer " + shlex.join(sys.argv[1:]), plots=not no_plots, quiet=quiet, recipe=record,
                        store_configs=store_cfgs)
    if not quiet:
        from mer.common import console

        for r in results:
            for line in r.lines():
                console.result(line)
    if track:   # mer.train.tracking: logged from the finished run directories
        from mer.train.tracking import track as log_runs

        log_runs([r.path for r in results], track, uri=track_uri, cache=cache)


@click.command()
@click.argument("roots", nargs=-1, type=click.Path(exists=True))
@click.option("--filter", "filters", multiple=True, metavar="FIELD=PATTERN",
              help="Keep runs whose field matches (wildcards allowed), e.g. --filter fusion=concat --filter dataset=iemocap.")
@click.option("--sort", default=None, help="Sort by this column (a metric such as ua, or run/fusion/...).")
@click.option("--ascending/--descending", default=None, help="Sort order (default: descending for scores, ascending for mae and names).")
@click.option("--metrics", default=None, help="Comma list of metric columns to show (default: every summarised metric).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None, help="Also write the table as CSV.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default=None, help="Also write the table as Markdown.")
@click.option("--plot", "png_path", type=click.Path(dir_okay=False), default=None, help="Bar chart of one metric (--plot-metric) per run.")
@click.option("--plot-metric", default=None, help="Metric for --plot (default: --sort if a metric, else ua or mae).")
@click.option("--baseline", type=click.Path(exists=True, file_okay=False), default=None,
              help="A run directory: add each run's UA difference to it and the paired permutation test's p-value.")
def runs(roots, filters, sort, ascending, metrics, csv_path, md_path, png_path, plot_metric, baseline):
    """Compare run directories as a table (ROOTS: run dirs or folders of them; default: runs/)."""
    from pathlib import Path

    from mer.common.errors import MerError
    from mer.train.rundir import runs_table

    roots = roots or ("runs",)
    df = runs_table(roots, list(filters), sort, ascending)
    if len(df) == 0:
        from mer.common.paths import demo_hint

        raise MerError(f"no finished runs under {', '.join(roots)}" + (" matching the filters" if filters else "")
                       + demo_hint(None, "runs"))
    id_cols = ["run", "dataset", "features", "fusion", "protocol", "scheme", "seeds", "folds", "n", "encoders"]
    paper_cols = ["recipe", "paper"]   # the recipe's paper figure, shown when a run has one
    study_cols = ["study", "trial"]    # mer tune's trials, shown when a run is one
    metric_cols = [c for c in df.columns if c not in id_cols + paper_cols + study_cols + ["path", "audit"] and not c.endswith("_std")]
    if "paper" in df.columns and (df["paper"] != "").any():
        id_cols = id_cols + paper_cols
    if "study" in df.columns and (df["study"] != "").any():
        id_cols = id_cols + study_cols
    if baseline:
        from mer.train.compare import baseline_columns

        cols, notes = baseline_columns(baseline, list(df["path"]))
        df["d_ua"] = [cols.get(p, (float("nan"), None))[0] for p in df["path"]]
        df["p_ua"] = [cols.get(p, (None, float("nan")))[1] for p in df["path"]]
        metric_cols = [c for c in metric_cols if c not in ("d_ua", "p_ua")] + ["d_ua", "p_ua"]
        for n in notes:
            click.echo(f"note: {n}", err=True)
    if metrics:
        want = [m.strip() for m in metrics.split(",")]
        bad = [m for m in want if m not in metric_cols]
        if bad:
            raise MerError(f"--metrics: no column {bad}; available: {', '.join(metric_cols)}")
        metric_cols = want
    shown = df[id_cols].copy()
    for m in metric_cols:
        std = df.get(f"{m}_std")
        shown[m] = [f"{v:.4f}" + (f" ± {s:.4f}" if s is not None and s == s else "") if v == v else "nan"
                    for v, s in zip(df[m], std if std is not None else [None] * len(df))]
    shown["audit"] = df["audit"]   # the protocol audit (mer.train.audit): ok, or its first problem
    click.echo(shown.to_string(index=False))
    # `mer compare` pools utterances over folds; this table averages per-fold figures
    click.echo("metrics: mean ± std over folds (or seeds) of each fold's figure, not pooled over utterances "
               "(`mer compare` shows pooled UA)", err=True)
    full = df[id_cols + [c for m in metric_cols for c in (m, f"{m}_std") if c in df.columns] + ["audit", "path"]]
    if csv_path:
        full.to_csv(csv_path, index=False)
        click.echo(f"wrote {csv_path}")
    if md_path:
        Path(md_path).write_text(_markdown(shown) + "\n")
        click.echo(f"wrote {md_path}")
    if png_path:
        from mer.train.plots import runs_bar_png

        pm = plot_metric or (sort if sort in metric_cols else ("ua" if "ua" in df.columns else "mae"))
        if pm not in df.columns:
            raise MerError(f"--plot-metric {pm!r}: no such metric in these runs")
        labels = [f"{r.fusion} [{r.features}] {r.protocol}" for r in df.itertuples()]
        runs_bar_png(labels, df[pm].astype(float).tolist(), df.get(f"{pm}_std", [None] * len(df)).tolist(), pm, Path(png_path))
        click.echo(f"wrote {png_path}")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--plot", "png_path", type=click.Path(dir_okay=False), default="compare.png", show_default=True,
              help="PNG of the differences with their 95% intervals.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Also write every figure as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default=None, help="Also write the table as Markdown.")
@click.option("--bootstrap", "n_boot", type=int, default=2000, show_default=True, help="Bootstrap resamples.")
@click.option("--permutations", "n_perm", type=int, default=10000, show_default=True, help="Permutations for the UA test.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the resampling.")
def compare(run_dirs, png_path, json_path, md_path, n_boot, n_perm, seed):
    """Paired tests of runs made with the same folds: RUN_A (the baseline) vs RUN_B [RUN_C ...].

    Differences in UA, WA and weighted F1 with paired bootstrap 95% intervals, McNemar's test
    on correctness, a paired permutation test for UA, a t-test across seeds where there are
    enough; Holm-corrected when more than two runs are compared.
    """
    import json
    from pathlib import Path

    from mer.train.compare import compare_runs, comparison_png, table, to_json

    if len(run_dirs) < 2:
        from mer.common.errors import UsageError

        raise UsageError("give at least two run directories (the first is the baseline)")
    cmp = compare_runs(run_dirs, n_boot=n_boot, n_perm=n_perm, seed=seed)
    t = table(cmp)
    b = cmp.baseline
    click.echo(f"baseline {b.name} ({b.label}): " + ", ".join(
        f"{k} {cmp.rows[0]['bootstrap'][k]['a']:.4f}" for k in ("ua", "accuracy", "weighted_f1")))
    click.echo(t.to_string(index=False))
    for n in cmp.notes:
        click.echo(f"note: {n}")
    comparison_png(cmp, Path(png_path))
    click.echo(f"wrote {png_path}")
    if json_path:
        Path(json_path).write_text(json.dumps(to_json(cmp), indent=1))
        click.echo(f"wrote {json_path}")
    if md_path:
        Path(md_path).write_text(_markdown(t) + "\n")
        click.echo(f"wrote {md_path}")


def _markdown(df) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


@click.command()
@click.option("--run", "run_dir", type=click.Path(exists=True, file_okay=False), required=True, help="A run directory from `mer train`.")
@click.option("--audio", type=click.Path(exists=True, dir_okay=False), default=None, help="Audio file of one utterance.")
@click.option("--text", default=None, help="Transcript of that utterance.")
@click.option("--start", type=float, default=None, help="Span start in seconds inside --audio.")
@click.option("--end", type=float, default=None, help="Span end in seconds inside --audio.")
@click.option("--manifest", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Many utterances: a manifest .parquet or a CSV/TSV/JSONL with audio (or path), text, id, start, end "
                   "(and dialog: runs trained with --context dialog predict each dialogue's utterances together).")
@click.option("--out", "-o", type=click.Path(dir_okay=False), default=None, help="Write predictions as CSV here.")
@click.option("--device", default="auto", show_default=True)
def predict(run_dir, audio, text, start, end, manifest, out, device):
    """Predict labels for new audio/text with a trained run (same feature configs).

    \b
    mer predict --run runs/<id> --audio x.wav --text "I can't believe it"
    mer predict --run runs/<id> --manifest new.csv --out predictions.csv
    """
    import numpy as np
    import pandas as pd

    from mer.common.errors import UsageError
    from mer.train.predict import Item, items_from_table, predict_items

    if manifest:
        if audio or text:
            raise UsageError("give either --manifest or --audio/--text, not both")
        items = items_from_table(manifest)
    else:
        if not audio and text is None:
            raise UsageError("give --audio and/or --text (or --manifest)")
        items = [Item("input", audio, text, start, end)]
    classes, out_arr, cfg = predict_items(run_dir, items, device)
    if cfg.get("regression") and np.ndim(out_arr) == 2:   # multi-target: one column per target
        df = pd.DataFrame({"id": [i.id for i in items],
                           **{f"predicted_{t}": out_arr[:, j].round(4) for j, t in enumerate(classes)}})
    elif cfg.get("regression"):
        df = pd.DataFrame({"id": [i.id for i in items], "predicted": out_arr})
    else:
        df = pd.DataFrame({"id": [i.id for i in items], "predicted": [classes[i] for i in out_arr.argmax(1)]})
        for j, c in enumerate(classes):
            df[f"p_{c}"] = out_arr[:, j].round(4)
    click.echo(df.to_string(index=False))
    if out:
        df.to_csv(out, index=False)
        click.echo(f"wrote {out}")
