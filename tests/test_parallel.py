"""The test suite's own parallel run (pyproject.toml: ``-n auto --dist loadgroup``): the files marked
``xdist_group`` share processes, ports or a module fixture between their tests, so each group must run on one
worker. pytest-xdist 3.8 under pytest 9.2 drops the groups without a word (pytest-dev/pytest-xdist#1386)."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.xdist_group("parallel")


def test_xdist_keeps_each_group_on_one_worker(request):
    if not os.environ.get("PYTEST_XDIST_WORKER") or not request.config.getvalue("loadgroup"):
        pytest.skip("not a --dist loadgroup run")
    # xdist schedules a group as one unit by the "@group" suffix it gives the ids of the group's tests
    assert request.node.nodeid.endswith("@parallel"), (
        f"pytest-xdist did not group {request.node.nodeid}: use the pytest version pyproject.toml pins")
