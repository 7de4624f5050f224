"""CLI for training (being written)."""
import click


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def train(args):
    """Extract features into content-keyed stores (not built yet)."""
    from mer.common.errors import MerError

    raise MerError("`mer train` is not built yet")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def runs(args):
    """Manage feature stores (not built yet)."""
    from mer.common.errors import MerError

    raise MerError("`mer runs` is not built yet")


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def predict(args):
    """Predict with a trained run (not built yet)."""
    from mer.common.errors import MerError

    raise MerError("`mer predict` is not built yet")
