"""Fixtures for the run-task tests: a real run-task service on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from taskservice import TaskService


@pytest.fixture
async def task_service(nursery: trio.Nursery) -> AsyncIterator[TaskService]:
    """A run-task service serving for the test's duration (its nursery is the test's)."""
    service: TaskService = await nursery.start(TaskService().serve)
    yield service
