"""CLI for extraction (being written)."""
import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def extract(args):
    """Extract features into content-keyed stores (not built yet)."""
    from mer.common.errors import MerError

    raise MerError("`mer extract` is not built yet")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def cache(args):
    """Manage feature stores (not built yet)."""
    from mer.common.errors import MerError

    raise MerError("`mer cache` is not built yet")
