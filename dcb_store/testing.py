"""Testing helpers for host applications: an in-memory store with the same contract.

``InMemoryEventStore`` answers ``append``, ``read``, ``stream``, ``head`` and ``project`` like
:class:`~dcb_store.EventStore` (same validation, same errors, same head rules) with no database:
fast unit tests for decision code. The contract tests run the same functions against both, and
property-based tests compare the PostgreSQL store with it as a reference model. It has no
concurrency and no transactions: prove those against PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dcb_store._impl import statements as st
from dcb_store.conditions import AppendCondition
from dcb_store.deciding import Projection, fold, union
from dcb_store.errors import ConditionFailedError, DuplicateEventIdError
from dcb_store.events import Event, SequencedEvent
from dcb_store.locks import LockInfo
from dcb_store.queries import Query
from dcb_store.reading import ReadResult

__all__ = ["InMemoryEventStore", "rolled_back_session"]


@contextmanager
def rolled_back_session(engine: Engine) -> Iterator[Session]:
    """A Session whose work (events included) is rolled back at the end, even if it commits.

    SQLAlchemy's recipe for joining a Session into an external transaction: the session's
    commits release savepoints inside an outer transaction that is rolled back.
    """
    conn = engine.connect()
    outer = conn.begin()
    session = Session(bind=conn, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        outer.rollback()
        conn.close()


class InMemoryEventStore:
    """A single-threaded, in-memory event store with EventStore's contract."""

    def __init__(self, *, lock_timeout: float | None = 5.0) -> None:
        st.timeout_ms(lock_timeout)
        self.lock_timeout = lock_timeout
        self._events: list[SequencedEvent] = []
        self._next = 1

    def append(
        self,
        events: Event | Iterable[Event],
        condition: AppendCondition | None = None,
        *,
        lock_timeout: Any = None,
    ) -> int:
        """See :meth:`EventStore.append`."""
        batch = [events] if isinstance(events, Event) else list(events)
        st.prepare_append(batch, condition, self.lock_timeout)  # the same validation and errors
        ids = [e.id for e in batch if e.id is not None]
        if ids:
            stored = [e for e in self._events if e.event.id in set(ids)]
            if stored:
                if [e.event.id for e in stored] == ids and len(ids) == len(batch):
                    return stored[-1].position  # a replay of a stored batch
                raise DuplicateEventIdError(stored[0].position)
        if condition is not None:
            after = condition.after or 0
            query = condition.fail_if_events_match
            for e in self._events:
                if e.position > after and query.matches(e.type, e.tags):
                    raise ConditionFailedError(e.position, condition.after)
        now = datetime.now(timezone.utc)
        for event in batch:
            stored_event = event.model_copy(update={"tags": event.stored_tags})
            self._events.append(
                SequencedEvent(position=self._next, event=stored_event, recorded_at=now)
            )
            self._next += 1
        return self._next - 1

    def read(
        self,
        query: Query | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> ReadResult:
        """See :meth:`EventStore.read`."""
        st.prepare_read(query, after, limit, backwards)  # the same validation and errors
        selected = [
            e
            for e in self._events
            if (after is None or e.position > after)
            and (query is None or query.matches(e.type, e.tags))
        ]
        if backwards:
            selected.reverse()
        if limit is not None:
            selected = selected[:limit]
        store_head = self._events[-1].position if self._events else None
        if limit is None or backwards:
            return ReadResult(selected, store_head)
        return ReadResult(selected, selected[-1].position if selected else None)

    def stream(
        self, query: Query | None = None, *, after: int | None = None, batch_size: int = 1000
    ) -> Iterator[SequencedEvent]:
        """See :meth:`EventStore.stream`."""
        st.check_batch_size(batch_size)
        yield from self.read(query, after=after)

    def project(self, projections: Sequence[Projection[Any]]) -> tuple[list[Any], AppendCondition]:
        """See :meth:`EventStore.project`."""
        return fold(projections, self.read(union(projections)))

    def head(self, query: Query | None = None) -> int | None:
        """See :meth:`EventStore.head`."""
        return self._events[-1].position if self._events else None

    def lock_count(self) -> int:
        """No database, no locks."""
        return 0

    def lock_stats(self) -> list[LockInfo]:
        """No database, no locks."""
        return []
