"""Poison events and expensive requests (issue 13, items 4, 5 and 7).

Limits are enforced when an event, a query or a call is built (InvalidInputError, nothing
sent), again by the events table for writers that bypass Python, and a reader never dies on a
row that slipped in before the table checked it: it names the row's position.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    AsyncEventStore,
    Event,
    EventStore,
    InvalidInputError,
    ProjectionRunner,
    Query,
    QueryItem,
    subscribe,
)
from dcb_store.errors import UnreadableEventError
from dcb_store.limits import (
    MAX_DATA_BYTES,
    MAX_JSON_DEPTH,
    MAX_METADATA_BYTES,
    MAX_POSITION,
    MAX_QUERY_ITEMS,
    MAX_TAGS_PER_EVENT,
    MAX_TAGS_PER_ITEM,
    MAX_TYPES_PER_ITEM,
)
from dcb_store.testing import InMemoryEventStore


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def test_json_depth_is_limited_at_construction_and_the_limit_round_trips(
    session: Session,
) -> None:
    for depth in (MAX_JSON_DEPTH + 1, 1000, 5000):
        with pytest.raises(InvalidInputError, match="deeper than 64"):
            Event("Deep", nested(depth))
        with pytest.raises(InvalidInputError, match="deeper than 64"):
            Event("Deep", metadata={"m": nested(depth - 1)})
    with pytest.raises(InvalidInputError):
        Event("Deep", nested(MAX_JSON_DEPTH, leaf=[]))  # an empty container counts as a level
    store = EventStore(session)
    deepest = nested(MAX_JSON_DEPTH)
    store.append(Event("Deep", deepest, metadata={"m": nested(MAX_JSON_DEPTH - 1)}))
    assert store.read(backwards=True, limit=1)[0].data == deepest


def test_data_and_metadata_size_are_limited(session: Session) -> None:
    filler = "x" * (MAX_DATA_BYTES - len('{"s":""}'))
    exactly = {"s": filler}
    assert len(json.dumps(exactly, separators=(",", ":"))) == MAX_DATA_BYTES
    EventStore(session).append(Event("Big", exactly))  # at the limit: stored (the table agrees)
    with pytest.raises(InvalidInputError, match="bytes of JSON"):
        Event("Big", {"s": filler + "x"})
    with pytest.raises(InvalidInputError, match="bytes of JSON"):
        Event("Big", {"s": "é" * (MAX_DATA_BYTES // 2)})  # counted in UTF-8 bytes
    with pytest.raises(InvalidInputError, match="bytes of JSON"):
        Event("Big", [0] * (MAX_DATA_BYTES // 2 + 1))  # the cheap bound is not enough here
    with pytest.raises(InvalidInputError, match="bytes of JSON"):
        Event("Big", metadata={"s": "x" * MAX_METADATA_BYTES})
    with pytest.raises(InvalidInputError, match="4,000 digits"):
        Event("Huge", {"n": 10**5000})


def test_tags_and_query_shapes_are_limited() -> None:
    with pytest.raises(InvalidInputError, match="tags per event"):
        Event("T", tags=[f"t:{i}" for i in range(MAX_TAGS_PER_EVENT + 1)])
    with pytest.raises(InvalidInputError, match="tags per event"):
        Event("T", tags=[f"t:{i}" for i in range(10**6)])
    with pytest.raises(InvalidInputError, match="items per query"):
        Query([QueryItem(tags=[f"t:{i}"]) for i in range(MAX_QUERY_ITEMS + 1)])
    with pytest.raises(InvalidInputError, match="items per query"):
        Query([{"tags": [f"t:{i}"]} for i in range(10_000)])
    with pytest.raises(InvalidInputError, match="types per query item"):
        Query.of(types=[f"T{i}" for i in range(MAX_TYPES_PER_ITEM + 1)])
    with pytest.raises(InvalidInputError, match="tags per query item"):
        QueryItem(tags=[f"t:{i}" for i in range(MAX_TAGS_PER_ITEM + 1)])
    # identical items count once (a decision model's union often repeats one)
    assert len(Query([QueryItem(tags=["t:1"])] * (MAX_QUERY_ITEMS + 5)).items) == 1
    for bad in (lambda: Event("T", tags=["lock:"]), lambda: Event("T", {"x": "\x00"})):
        with pytest.raises(InvalidInputError):
            bad()


def test_positions_beyond_a_bigint_are_bad_input_in_every_store(
    session: Session, shared_engine: Engine
) -> None:
    beyond = MAX_POSITION + 1
    store, memory = EventStore(session), InMemoryEventStore()
    calls: list[Callable[[], object]] = []
    for s in (store, memory):
        calls += [
            lambda s=s: s.read(after=beyond),
            lambda s=s: list(s.stream(after=beyond)),
            lambda s=s: list(s.stream(batch_size=2**31)),
            lambda s=s: s.read(after=-1),
        ]
    calls += [
        lambda: AppendCondition(Query.all(), beyond),
        lambda: AppendCondition(Query.all(), -1),
        lambda: subscribe(shared_engine, after=beyond),
        lambda: subscribe(shared_engine, batch_size=0),
        lambda: ProjectionRunner(shared_engine, "p", lambda s, e: None, batch_size=2**31),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError):
            call()
    assert store.read(after=MAX_POSITION).events == []  # the largest position is fine

    async def main() -> None:
        aengine = create_async_engine(shared_engine.url)
        async with AsyncSession(aengine) as asession:
            with pytest.raises(InvalidInputError):
                await AsyncEventStore(asession).read(after=beyond)
        await aengine.dispose()

    asyncio.run(main())


# Rows that an older schema let in through plain SQL: the table's checks are dropped first (the
# constraints are NOT VALID, so such rows may exist in a store migrated from version 5).
POISON = {
    "deep JSON": "INSERT INTO dcb.events (type, data) VALUES ('P', CAST(:deep AS jsonb))",
    "giant number": "INSERT INTO dcb.events (type, data) VALUES ('P', '1e5000')",
    "NULL tag": "INSERT INTO dcb.events (type, tags, data) VALUES ('P', ARRAY[NULL, '7'], '{}')",
    "empty tag": "INSERT INTO dcb.events (type, tags, data) VALUES ('P', '{\"\"}', '{}')",
    "array metadata": "INSERT INTO dcb.events (type, data, metadata) VALUES ('P', '{}', '[1]')",
    "10,000 tags": "INSERT INTO dcb.events (type, tags, data) "
    "SELECT 'P', array_agg('t:' || i), '{}' FROM generate_series(1, 10000) i",
    "long tag": "INSERT INTO dcb.events (type, tags, data) "
    "VALUES ('P', ARRAY[repeat('x', 2000)], '{}')",
    "lock: tag": "INSERT INTO dcb.events (type, tags, data) VALUES ('P', '{lock:k}', '{}')",
    "2-D tags": "INSERT INTO dcb.events (type, tags, data) VALUES ('P', '{{a,b},{c,d}}', '{}')",
    "huge data": "INSERT INTO dcb.events (type, data) "
    "SELECT 'P', jsonb_agg(i % 10) FROM generate_series(1, 2000000) i",
}
DEEP = "[" * 3000 + "]" * 3000


def test_the_table_refuses_poison_written_through_sql(engine: Engine) -> None:
    for name, statement in POISON.items():
        if name == "giant number":
            continue  # jsonb holds it; readers report it (below)
        with engine.connect() as conn, pytest.raises(DBAPIError) as info:
            conn.execute(text(statement), {"deep": DEEP})
        assert info.value.orig.sqlstate == "23514", name  # type: ignore[union-attr]


def _drop_checks(engine: Engine) -> None:
    with engine.begin() as conn:
        names = (
            conn.execute(
                text(
                    "SELECT conname FROM pg_constraint WHERE conrelid = 'dcb.events'::regclass "
                    "AND contype = 'c' AND NOT convalidated"
                )
            )
            .scalars()
            .all()
        )
        for name in names:
            conn.execute(text(f'ALTER TABLE dcb.events DROP CONSTRAINT "{name}"'))


@pytest.mark.parametrize(
    "poison",
    [
        "deep JSON",
        "giant number",
        "NULL tag",
        "empty tag",
        "array metadata",
        "10,000 tags",
        "long tag",
        "2-D tags",
    ],
)
def test_a_poison_row_is_reported_by_position_never_crashes_a_reader(
    engine: Engine, poison: str
) -> None:
    _drop_checks(engine)
    with engine.begin() as conn:
        EventStore(conn).append([Event("Good", tags=["g:1"]), Event("Good", tags=["g:2"])])
        conn.execute(text(POISON[poison]), {"deep": DEEP})
        bad = conn.execute(text("SELECT max(position) FROM dcb.events")).scalar_one()
        EventStore(conn).append(Event("Good", tags=["g:3"]))
    with Session(engine) as s:
        store = EventStore(s)
        with pytest.raises(UnreadableEventError) as info:
            store.read()
        assert info.value.position == bad and [e.position for e in info.value.preceding] == [1, 2]
        streamed: list[int] = []
        with pytest.raises(UnreadableEventError):
            for event in store.stream(batch_size=2):
                streamed.append(event.position)
        assert streamed == [1, 2]
        assert [e.position for e in store.read(after=bad)] == [bad + 1]
    # a follower delivers what comes before, then stops at the row, every time, until told
    sub = subscribe(engine, poll_interval=0.1)
    assert [next(sub).position, next(sub).position] == [1, 2]
    for _ in range(2):
        with pytest.raises(UnreadableEventError) as info:
            next(sub)
        assert info.value.position == bad and sub.position == 2
    sub.position = info.value.position  # a deliberate skip
    assert next(sub).position == bad + 1
    sub.close()
    seen: list[int] = []
    runner = ProjectionRunner(
        engine, "p", lambda s, events: seen.extend(e.position for e in events)
    )
    with pytest.raises(UnreadableEventError):
        runner.catch_up()
    assert seen == [1, 2] and runner.position() == 2  # applied and committed up to the row


def test_a_deep_row_read_deep_in_the_stack_is_reported_not_a_recursion_error(
    engine: Engine,
) -> None:
    _drop_checks(engine)
    with engine.begin() as conn:  # within what the decoder survives at the top of the stack
        conn.execute(text(POISON["deep JSON"]), {"deep": "[" * 900 + "]" * 900})

    def read_at(depth: int) -> Any:
        if depth:
            return read_at(depth - 1)
        with Session(engine) as s:
            return EventStore(s).read()

    with pytest.raises(UnreadableEventError, match="position 1"):
        read_at(sys.getrecursionlimit() - 200)
