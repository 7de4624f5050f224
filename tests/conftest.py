"""Shared pytest options and fixtures.

``--device``: tests that take a ``device`` argument run once per device given (default cpu), so
the same tests run on CPU in CI and on a GPU by hand: ``pytest --device cuda tests/test_neural.py``
(repeat the option to run both: ``--device cpu --device cuda``).
"""
from __future__ import annotations


def pytest_addoption(parser):
    parser.addoption(
        "--device", action="append", default=None,
        help="device for tests taking a `device` argument: cpu (default), cuda, cuda:N; repeatable",
    )


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", metafunc.config.getoption("device") or ["cpu"])
