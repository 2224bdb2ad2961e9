"""Appends on a Connection at AUTOCOMMIT: each one a transaction of its own, in one round trip.

With no transaction open (SQLAlchemy's ``isolation_level="AUTOCOMMIT"``) the append function
runs as one implicit transaction: it commits when it returns, or stores nothing. This is the
peer's own client shape (docs/usage.md, "Appends outside a unit of work"); the concurrency
matrices race it against every isolation level (tests/test_consistency.py,
tests/test_isolation_matrix.py).
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    ConditionFailedError,
    Event,
    EventStore,
    InvalidInputError,
    Query,
)
from tests.helpers import count_tagged


@pytest.mark.parametrize("echo", [False, True])  # echo: SQLAlchemy's path, not the driver's
def test_an_autocommit_append_commits_alone_or_stores_nothing(
    fresh_db_url: str, echo: bool
) -> None:
    engine = create_engine(fresh_db_url, echo=echo)
    tag = f"auto:{uuid.uuid4()}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        store = EventStore(conn)
        first = store.append(Event("A", {}, [tag]))
        assert count_tagged(engine, tag) == 1  # visible to others at once: committed, no commit()
        with pytest.raises(ConditionFailedError) as refused:
            store.append(Event("B", {}, [tag]), AppendCondition(Query.of(tags=[tag]), None))
        assert refused.value.position == first
        # a batch that the database refuses half-way stores none of it
        duplicate = uuid.uuid4()
        with pytest.raises(InvalidInputError):
            store.append([Event("C", {}, [tag], id=duplicate), Event("C", {}, [tag], id=duplicate)])
        second = store.append(Event("D", {}, [tag]), AppendCondition(Query.of(tags=[tag]), first))
        assert second > first
        # nothing is left open for the next user of the connection
        assert (
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() "
                    "AND locktype = 'advisory'"
                )
            ).scalar_one()
            == 0
        )
    assert count_tagged(engine, tag) == 2
    engine.dispose()


def test_a_session_on_an_autocommit_engine_appends_and_reads(fresh_db_url: str) -> None:
    engine = create_engine(fresh_db_url, isolation_level="AUTOCOMMIT")
    tag = f"auto:{uuid.uuid4()}"
    with Session(engine) as session:
        store = EventStore(session)
        position = store.append(Event("A", {}, [tag]))
        session.rollback()  # nothing to undo: the append committed alone
        result = store.read(Query.of(tags=[tag]))
        assert [e.position for e in result.events] == [position]
        assert result.head is not None and result.head >= position
    assert count_tagged(engine, tag) == 1
    engine.dispose()
