"""Least-privilege roles: a writer appends and reads, a reader only reads, neither rewrites."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dcb_store import AppendCondition, DatabaseError, Event, EventStore, Query
from dcb_store.roles import grant_reader, grant_writer


@pytest.fixture
def roles(engine: Engine) -> Iterator[tuple[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    writer, reader = f"dcb_writer_{suffix}", f"dcb_reader_{suffix}"
    with engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{writer}"'))
        conn.execute(text(f'CREATE ROLE "{reader}"'))
        grant_writer(conn, writer)
        grant_reader(conn, reader)
        EventStore(conn).append(Event("Seeded", tags=["k:1"]))
    yield writer, reader
    with engine.begin() as conn:
        for role in (writer, reader):
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))


def as_role(engine: Engine, role: str) -> Session:
    session = Session(engine)
    session.execute(text(f'SET LOCAL ROLE "{role}"'))
    return session


def test_writer_appends_and_reads_but_cannot_rewrite(
    engine: Engine, roles: tuple[str, str]
) -> None:
    writer, _ = roles
    with as_role(engine, writer) as s:
        store = EventStore(s)
        head = store.read(Query.of(tags=["k:1"])).head
        store.append(
            Event("Written", tags=["k:1", "lock:k:1"]),
            AppendCondition(Query.of(tags=["k:1"]), head),
        )
        assert len(store.read()) == 2 and store.lock_count() > 0
        s.commit()
    for statement in ("DELETE FROM dcb.events", "TRUNCATE dcb.events", "DROP TABLE dcb.events"):
        with as_role(engine, writer) as s, pytest.raises(DBAPIError) as info:
            s.execute(text(statement))
        assert info.value.orig.sqlstate == "42501"  # type: ignore[union-attr]


def test_reader_reads_and_monitors_but_cannot_append(
    engine: Engine, roles: tuple[str, str]
) -> None:
    _, reader = roles
    with as_role(engine, reader) as s:
        store = EventStore(s)
        assert [e.type for e in store.read()] == ["Seeded"] and store.head() is not None
        assert store.lock_count() == 0 and store.lock_stats() == []
        # what a follower asks before each read (dcb_store.following)
        assert s.execute(text("SELECT dcb.appends_in_flight_v1()")).scalar_one() == 0
        with pytest.raises(DatabaseError) as info:
            store.append(Event("Nope"))
        assert info.value.sqlstate == "42501"
    with Session(engine) as s:
        assert len(EventStore(s).read()) == 1
