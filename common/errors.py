"""User-facing errors. The CLI prints them as one line (a traceback only with --debug)."""


class MerError(Exception):
    """An error the user can act on: the message names the file or utterance and the reason."""

    exit_code = 1


class UsageError(MerError):
    """Bad options or arguments."""

    exit_code = 2


class CorpusError(MerError):
    """A corpus on disk has impossible content (fails at once, with the id and file)."""

    exit_code = 3


class MissingDependency(MerError):
    """An optional library is not installed; the message says which extra to install."""

    exit_code = 4


def require(module: str, extra: str):
    """Import an optional heavy library lazily, failing with the pip command that fixes it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MissingDependency(
            f"{module} is not installed ({e}); install it with: pip install 'mer[{extra}]'"
        ) from None
