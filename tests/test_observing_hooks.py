"""Observing never changes an outcome: a hook that raises or swallows errors, around real appends.

Before, a hook raising on leaving an append turned a stored append into a raised one, which the
caller's commit then stored (found by review); a hook whose exit returned True swallowed a
failed condition, and the append returned None.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine

from dcb_store import AppendCondition, ConditionFailedError, Event, EventStore, Query
from dcb_store.observing import add_hook, remove_hook
from tests.helpers import count_tagged


@pytest.fixture
def hooked() -> Iterator[list[Any]]:
    """Installs the hooks a test appends to the list; removes them after it."""
    hooks: list[Any] = []
    yield hooks
    for hook in hooks:
        remove_hook(hook)


def _install(hooked: list[Any], hook: Any) -> None:
    add_hook(hook)
    hooked.append(hook)


@pytest.mark.parametrize("when", ["entering", "leaving"])
def test_a_hook_that_raises_changes_nothing(
    engine: Engine, hooked: list[Any], when: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    @contextmanager
    def failing(operation: str, _attributes: dict[str, Any]) -> Iterator[None]:
        if when == "entering":
            raise RuntimeError("exporter down")
        yield
        raise RuntimeError("exporter down")

    @contextmanager
    def counting(operation: str, _attributes: dict[str, Any]) -> Iterator[None]:
        yield
        seen.append(operation)

    _install(hooked, failing)
    _install(hooked, counting)  # the other hooks still run
    tag = f"hooked:{when}"
    with caplog.at_level(logging.ERROR, logger="dcb_store.observing"), engine.connect() as conn:
        store = EventStore(conn)
        position = store.append(Event("E", {}, [tag]))
        assert store.read(Query.of(tags=[tag])).head == position
        conn.commit()
    assert count_tagged(engine, tag) == 1
    assert seen == ["append", "read"]
    assert "exporter down" in caplog.text and f"failed on {when}" in caplog.text


def test_a_hook_cannot_swallow_the_operations_error(engine: Engine, hooked: list[Any]) -> None:
    class Swallowing:
        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc_info: object) -> bool:
            return True  # would hide any error

    _install(hooked, lambda _operation, _attributes: Swallowing())
    with engine.connect() as conn:
        store = EventStore(conn)
        first = store.append(Event("E", {}, ["swallow"]))
        stale = AppendCondition(Query.of(tags=["swallow"]), after=first - 1)
        with pytest.raises(ConditionFailedError):
            store.append(Event("E", {}, ["swallow"]), condition=stale)
        conn.rollback()
