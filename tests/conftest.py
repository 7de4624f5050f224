"""Shared pytest options and fixtures.

``--device``: tests that take a ``device`` argument run once per device given (default cpu), so
the same tests run on CPU in CI and on a GPU by hand: ``pytest --device cuda tests/test_neural.py``
(repeat the option to run both: ``--device cpu --device cuda``).
"""
from __future__ import annotations

import os
import tempfile


def pytest_addoption(parser):
    parser.addoption(
        "--device", action="append", default=None,
        help="device for tests taking a `device` argument: cpu (default), cuda, cuda:N; repeatable",
    )


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", metafunc.config.getoption("device") or ["cpu"])


def pytest_configure(config):
    # A test that calls mer without --cache must not write into the user's own cache
    # (~/.cache/mer): point the default at a throwaway folder unless the caller chose one.
    if not os.environ.get("MER_CACHE"):
        os.environ["MER_CACHE"] = tempfile.mkdtemp(prefix="mer-test-cache-")
