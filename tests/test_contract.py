"""The store contract, run against PostgreSQL and against the in-memory store alike."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    ConditionFailedError,
    DuplicateEventIdError,
    Event,
    EventStore,
    InvalidInputError,
    Projection,
    Query,
    QueryItem,
)
from dcb_store.testing import InMemoryEventStore


@pytest.fixture(params=["postgres", "memory"])
def any_store(request: pytest.FixtureRequest, session: Session) -> Any:
    return EventStore(session) if request.param == "postgres" else InMemoryEventStore()


def test_positions_order_and_heads(any_store: Any) -> None:
    assert any_store.read().head is None
    first = any_store.append(Event("A", {"i": 1}, ["k:1"]))
    last = any_store.append([Event("B", tags=["k:2"]), Event("C", tags=["lock:k:1"])])
    assert last == first + 2
    result = any_store.read()
    assert [e.type for e in result] == ["A", "B", "C"] and result.head == last
    assert result[2].tags == ("k:1",)  # lock: stripped
    assert any_store.read(Query.of(tags=["k:1"]), limit=1).head == first
    assert any_store.read(after=last, limit=5).head is None
    assert [e.position for e in any_store.stream(batch_size=2)] == [first, first + 1, last]


def test_conditions(any_store: Any) -> None:
    query = Query([QueryItem(tags=["a:1"]), QueryItem(types=["Closed"])])
    head = any_store.read(query).head
    pos = any_store.append(Event("Opened", tags=["a:1"]), AppendCondition(query, head))
    with pytest.raises(ConditionFailedError) as info:
        any_store.append(Event("Closed"), AppendCondition(query, head))
    assert info.value.position == pos
    assert any_store.append(Event("Other", tags=["b:1"]), AppendCondition(query, pos)) == pos + 1


def test_idempotent_batches(any_store: Any) -> None:
    batch = [Event("A", id=uuid.uuid4()), Event("B", id=uuid.uuid4())]
    last = any_store.append(batch, AppendCondition(Query.all()))
    assert any_store.append(batch, AppendCondition(Query.all())) == last
    assert any_store.append([batch[1]]) == last  # every id stored, same order: a replay
    with pytest.raises(DuplicateEventIdError):  # some stored, some new: a partial overlap
        any_store.append([batch[1], Event("C", id=uuid.uuid4())])


def test_projections(any_store: Any) -> None:
    any_store.append(
        [
            Event("CourseDefined", {"capacity": 2}, ["course:c1"]),
            Event("Subscribed", tags=["course:c1"]),
        ]
    )
    cap = Projection(
        Query.of(types=["CourseDefined"], tags=["course:c1"]), 0, lambda _c, e: e.data["capacity"]
    )
    taken = Projection(Query.of(types=["Subscribed"], tags=["course:c1"]), 0, lambda n, _e: n + 1)
    (c, t), condition = any_store.project([cap, taken])
    assert (c, t) == (2, 1) and condition.after == any_store.read().head
    any_store.append(Event("Subscribed", tags=["course:c1"]), condition)
    with pytest.raises(ConditionFailedError):
        any_store.append(Event("Subscribed", tags=["course:c1"]), condition)


def test_bad_input(any_store: Any) -> None:
    for call in (
        lambda: any_store.append([]),
        lambda: any_store.read(after=-1),
        lambda: any_store.read(limit=2**31),  # beyond a PostgreSQL integer
        lambda: list(any_store.stream(batch_size=0)),
    ):
        with pytest.raises(InvalidInputError):
            call()
    assert len(any_store.read()) == 0
