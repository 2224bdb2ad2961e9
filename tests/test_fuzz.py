"""Property-based: random batches, queries and conditions give the same outcomes on the
PostgreSQL store as on the in-memory reference model."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store import AppendCondition, DcbStoreError, Event, EventStore, Query, QueryItem
from dcb_store.testing import InMemoryEventStore

IDS = [uuid.UUID(int=i + 1) for i in range(3)]
TAGS = ["t:1", "t:2", "t:3", "t:4"]
tags = hs.lists(hs.sampled_from(TAGS), max_size=3, unique=True)
items = hs.builds(
    QueryItem, types=hs.lists(hs.sampled_from("ABC"), max_size=2, unique=True), tags=tags
)
queries = hs.builds(Query, items=hs.lists(items, min_size=1, max_size=3))
events = hs.builds(
    Event,
    type=hs.sampled_from("ABC"),
    data=hs.dictionaries(
        hs.sampled_from("xyz"),
        hs.integers(-5, 5)
        | hs.text(
            # what PostgreSQL text can hold: no NUL, no lone surrogates (both are rejected
            # at construction, tested in test_validation)
            hs.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)),
            max_size=3,
        ),
        max_size=2,
    ),
    tags=hs.lists(hs.sampled_from(TAGS + ["lock:t:1", "lock:t:9"]), max_size=3, unique=True),
    id=hs.none() | hs.sampled_from(IDS),
)
ops = hs.lists(
    hs.tuples(
        hs.lists(events, min_size=1, max_size=3),
        hs.none() | hs.tuples(queries, hs.none() | hs.integers(0, 8)),
    ),
    min_size=1,
    max_size=8,
)


probes = hs.lists(
    hs.tuples(
        hs.none() | queries,
        hs.none() | hs.integers(0, 8),  # after (a model position)
        hs.none() | hs.integers(0, 4),  # limit
        hs.booleans(),  # backwards
    ),
    min_size=1,
    max_size=6,
)


def outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except DcbStoreError as exc:
        return type(exc).__name__, getattr(exc, "position", None)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=ops, probes=probes)
def test_postgres_store_matches_the_reference_model(
    shared_engine: Engine, ops: Any, probes: Any
) -> None:
    model = InMemoryEventStore()
    conn = shared_engine.connect()
    outer = conn.begin()
    try:
        base = conn.execute(
            text(
                "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM dcb.events_position_seq"
            )
        ).scalar_one()
        store = EventStore(Session(bind=conn, join_transaction_mode="create_savepoint"))
        shift = lambda p: None if p is None else p + base  # noqa: E731 - model position -> stored position
        for batch, cond in ops:
            m_cond = pg_cond = None
            if cond is not None:
                m_cond = AppendCondition(cond[0], cond[1])
                pg_cond = AppendCondition(cond[0], shift(cond[1]))
            expected = outcome(lambda: model.append(batch, m_cond))  # noqa: B023
            got = outcome(lambda: store.append(batch, pg_cond))  # noqa: B023
            assert got == (expected[0], shift(expected[1])), (batch, cond)
        for query, after, limit, backwards in probes:
            want = model.read(query, after=after, limit=limit, backwards=backwards)
            have = store.read(query, after=shift(after), limit=limit, backwards=backwards)
            assert [(e.position + base, e.type, e.tags, e.data) for e in want] == [
                (e.position, e.type, e.tags, e.data) for e in have
            ]
            assert shift(want.head) == have.head
    finally:
        outer.rollback()
        conn.close()


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    query=hs.none() | queries,
    after=hs.none() | hs.integers(0, 40),
    limit=hs.none() | hs.integers(0, 6),
    backwards=hs.booleans(),
)
def test_every_read_path_matches_the_reference_model(
    read_fixture: tuple[EventStore, InMemoryEventStore, int],
    query: Query | None,
    after: int | None,
    limit: int | None,
    backwards: bool,
) -> None:
    """One store of 40 events, many reads: tag, type-only, multi-item and all-events paths of
    dcb.read_v1, in both directions, with and without limits."""
    store, model, base = read_fixture
    want = model.read(query, after=after, limit=limit, backwards=backwards)
    have = store.read(
        query, after=None if after is None else after + base, limit=limit, backwards=backwards
    )
    assert [e.position + base for e in want] == [e.position for e in have]
    assert (None if want.head is None else want.head + base) == have.head


@pytest.fixture(scope="module")
def read_fixture(shared_engine: Engine) -> Iterator[tuple[EventStore, InMemoryEventStore, int]]:
    import random

    rng = random.Random(7)
    batch = [
        Event(rng.choice("ABC"), {"i": i}, rng.sample(TAGS, rng.randint(0, 3))) for i in range(40)
    ]
    conn = shared_engine.connect()
    outer = conn.begin()
    session = Session(bind=conn, join_transaction_mode="create_savepoint")
    store = EventStore(session)
    model = InMemoryEventStore()
    model.append(batch)
    last = store.append(batch)
    try:
        yield store, model, last - len(batch)
    finally:
        outer.rollback()
        conn.close()
