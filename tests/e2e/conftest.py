"""Fixtures that start the real server as a subprocess on a loopback port."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.harness import RunningServer, make_config, running_server

_names = itertools.count(1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server for a test module; tests use fresh user names (``new_user``)."""
    config = make_config(tmp_path_factory.mktemp("server"))
    with running_server(config) as s:
        yield s
    assert "Traceback" not in s.log_text(), s.log_text()


@pytest.fixture
def new_user() -> str:
    return f"user{next(_names)}"
