"""One way for tests to run a `mer` command in-process: any exit fails with the command line."""
from mer.common.cli import main


def run_mer(*args) -> None:
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        raise AssertionError(f"mer {' '.join(map(str, args))} exited with {e.code}") from None
