"""The `mer` command line. Kept thin: each command parses options and calls one function.

Commands live in the package that owns them (prepare/recipes here, extract/cache in
mer.extract.cli, train/runs/predict in mer.train.cli, demo in mer.train.demo) and are imported only when run, so
`mer --help` starts without importing torch.
"""
from __future__ import annotations

import importlib
import sys

import click

from mer.common import __version__
from mer.common.errors import MerError

# The one command table: name -> ("module:function", short help). The order is the order
# --help shows. Targets are strings, resolved only when a command runs, so `mer --help`
# imports no command module (and none of torch); they are data, not imports: common/ still
# imports neither extract nor train.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("mer.train.demo:demo", "Synthesize a small corpus, then prepare, extract and train on it."),
    "prepare": ("mer.common.cli:prepare", "Read a corpus in its official layout and write a validated manifest."),
    "extract": ("mer.extract.cli:extract", "Extract features into content-keyed stores in the cache."),
    "cache": ("mer.extract.cli:cache", "List, verify, export or remove feature stores."),
    "recipes": ("mer.common.cli:recipes",
                "The seed papers' recipes (features, model, training settings) and their figures."),
    "train": ("mer.train.cli:train", "Train fusion models on cached features and write a run directory."),
    "tune": ("mer.train.cli_tune:tune",
             "Search hyper-parameters (Optuna, trials in parallel on Dask); best configuration as a recipe."),
    "runs": ("mer.train.cli:runs", "Compare run directories as a table (and CSV/Markdown/PNG)."),
    "compare": ("mer.train.cli:compare", "Paired significance tests between runs on the same folds (table + PNG)."),
    "predict": ("mer.train.cli:predict", "Predict labels for new audio/text with a trained run."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        mod, attr = COMMANDS[name][0].split(":")
        return getattr(importlib.import_module(mod), attr)

    def format_commands(self, ctx, formatter):
        # Short help without importing every command module.
        with formatter.section("Commands"):
            formatter.write_dl([(n, h) for n, (_, h) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.version_option(__version__, prog_name="mer")
@click.pass_context
def cli(ctx, debug):
    """mer: multimodal (speech + text) emotion recognition.

    Extract features once (`mer extract`), train fusion models many times (`mer train`).
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def dataset_choice():
    from mer.common.datasets import DATASETS

    return click.Choice(DATASETS.names())


cache_option = click.option(
    "--cache", type=click.Path(file_okay=False), default=None, envvar="MER_CACHE", show_envvar=True,
    help="Cache root for manifests and feature stores (default: per-user cache dir).",
)


@click.command()
@click.option("--dataset", "-d", type=dataset_choice(), required=True, help="Corpus adapter.")
@click.option("--root", "-r", type=click.Path(exists=True, file_okay=False), required=True, help="Corpus folder, as unpacked.")
@cache_option
@click.option("--out", type=click.Path(), default=None,
              help="Write the manifest here instead of the cache: a .parquet file, or a folder (gets manifest.parquet).")
@click.option("--workers", type=int, default=8, show_default=True, help="Threads for checking and hashing audio.")
@click.option("--option", "-o", "options", multiple=True, metavar="KEY=VALUE",
              help="Adapter option, e.g. -o manifest_file=labels.jsonl for --dataset csv.")
def prepare(dataset, root, cache, out, workers, options):
    """Read a corpus in its official layout and write a validated manifest.

    Writes manifest.parquet, manifest.meta.json (content hashes) and manifest.report.{json,txt}
    (every dropped or repaired utterance with its reason) under <cache>/<dataset>/.
    """
    from mer.common.datasets.prepare import prepare as run

    from mer.common.errors import UsageError

    opts = {}
    for o in options:
        if "=" not in o:
            raise UsageError(f"--option {o!r}: expected KEY=VALUE")
        k, v = o.split("=", 1)
        opts[k.strip()] = v.strip()
    run(dataset, root, cache=cache, out=out, workers=workers, **opts)


@click.command()
def recipes():
    """The seed papers' recipes with the figures they report (run one with
    `mer extract --recipe NAME -d D` then `mer train --recipe NAME -d D`)."""
    from mer.common.recipes import table

    rows = table()
    cols = ["recipe", "seed", "dataset", "fusion", "context", "protocol", "scheme", "features", "metric", "paper figure"]
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    click.echo("  ".join(c.ljust(width[c]) for c in cols))
    for r in rows:
        click.echo("  ".join(str(r[c]).ljust(width[c]) for c in cols))
    click.echo("")
    for r in rows:
        click.echo(f"{r['recipe']}: {r['reported as']}")


def _interrupted(argv: list[str]) -> str:
    """The one line printed on Ctrl-C; `mer extract` keeps each finished batch on disk
    (extract/staging.py), so a rerun resumes, and the user should know it."""
    if next((a for a in argv if not a.startswith("-")), None) == "extract":
        return "interrupted: finished batches are kept; run the same `mer extract` command again to resume"
    return "interrupted"


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        cli.main(args=argv, prog_name="mer", standalone_mode=False)
    except click.exceptions.Abort as e:   # click turns a KeyboardInterrupt into Abort
        click.echo(_interrupted(argv) if isinstance(e.__cause__, KeyboardInterrupt) else "aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except MerError as e:
        if debug:
            raise
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo(_interrupted(argv), err=True)
        sys.exit(130)
    except Exception as e:  # anything unexpected: one line, the traceback behind --debug
        if debug:
            raise
        click.echo(f"error: {type(e).__name__}: {e} (run `mer --debug ...` for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
