"""Testing helpers for host applications: an in-memory store with the same contract.

``InMemoryEventStore`` answers ``append``, ``read``, ``stream``, ``head`` and ``project`` like
:class:`~dcb_store.EventStore` (same validation, same errors, same head rules) with no database:
fast unit tests for decision code, and the reference model the property-based tests compare
PostgreSQL with. It has no concurrency and no transactions: prove those against PostgreSQL.

:class:`StoreContract` (from :mod:`dcb_store.contract`) is the suite of scenarios every store
passes alike: subclass it with a ``store`` fixture to run it on a store of your own.
:class:`BlockingStore` drives an async store from synchronous code (and so through the
contract); ``rolled_back_session`` and ``rolled_back_async_session`` give sessions whose work is
rolled back at the end.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Coroutine, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from dcb_store._impl import statements as st
from dcb_store.conditions import AppendCondition
from dcb_store.contract import StoreContract
from dcb_store.deciding import Projection, fold, union
from dcb_store.errors import ConditionFailedError, DuplicateEventIdError
from dcb_store.events import Event, SequencedEvent
from dcb_store.locks import LockInfo
from dcb_store.protocols import AsyncEventStoreLike
from dcb_store.queries import Query
from dcb_store.reading import ReadResult
from dcb_store.timeouts import DEFAULT, _Default, resolve_lock_timeout

__all__ = [
    "BlockingStore",
    "InMemoryEventStore",
    "StoreContract",
    "rolled_back_async_session",
    "rolled_back_session",
]

T = TypeVar("T")


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


@asynccontextmanager
async def rolled_back_async_session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """The async twin of :func:`rolled_back_session`: an AsyncSession rolled back at the end."""
    conn = await engine.connect()
    outer = await conn.begin()
    session = AsyncSession(bind=conn, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        await session.close()
        await outer.rollback()
        await conn.close()


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
        lock_timeout: float | None | _Default = DEFAULT,
    ) -> int:
        """See :meth:`EventStore.append`."""
        batch = [events] if isinstance(events, Event) else list(events)
        timeout = resolve_lock_timeout(lock_timeout, self.lock_timeout)
        st.prepare_append(batch, condition, timeout)  # the same validation and errors
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
        st.prepare_read(query, None, 0, False)  # the same validation and errors
        return self._events[-1].position if self._events else None

    def lock_count(self) -> int:
        """No database, no locks."""
        return 0

    def lock_stats(self) -> list[LockInfo]:
        """No database, no locks."""
        return []


class _Runner(Protocol):
    def run(self, coro: Coroutine[Any, Any, T], /) -> T: ...


class BlockingStore:
    """An async store driven from synchronous code: each call runs to its end on ``runner``.

    ``BlockingStore(AsyncEventStore(session), asyncio.Runner())`` is an
    :class:`~dcb_store.protocols.EventStoreLike`, so the contract and any synchronous decision
    code run on the async store unchanged. ``runner`` is anything with asyncio.Runner's ``run``
    (the loop that made the store's AsyncSession); ``stream`` takes one event per ``run``.
    """

    def __init__(self, store: AsyncEventStoreLike, runner: _Runner) -> None:
        self.store = store
        self.runner = runner

    def append(
        self,
        events: Event | Iterable[Event],
        condition: AppendCondition | None = None,
        *,
        lock_timeout: float | None | _Default = DEFAULT,
    ) -> int:
        """See :meth:`EventStore.append`."""
        return self.runner.run(self.store.append(events, condition, lock_timeout=lock_timeout))

    def read(
        self,
        query: Query | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> ReadResult:
        """See :meth:`EventStore.read`."""
        return self.runner.run(
            self.store.read(query, after=after, limit=limit, backwards=backwards)
        )

    def stream(
        self, query: Query | None = None, *, after: int | None = None, batch_size: int = 1000
    ) -> Iterator[SequencedEvent]:
        """See :meth:`EventStore.stream`."""
        events = self.store.stream(query, after=after, batch_size=batch_size)
        try:
            while True:
                yield self.runner.run(_next(events))
        except StopAsyncIteration:
            return
        except GeneratorExit:  # the consumer stopped early: close the async stream too
            close = getattr(events, "aclose", None)
            if close is not None:
                self.runner.run(close())
            raise

    def project(self, projections: Sequence[Projection[Any]]) -> tuple[list[Any], AppendCondition]:
        """See :meth:`EventStore.project`."""
        return self.runner.run(self.store.project(projections))

    def head(self, query: Query | None = None) -> int | None:
        """See :meth:`EventStore.head`."""
        return self.runner.run(self.store.head(query))

    def lock_count(self) -> int:
        """See :meth:`EventStore.lock_count`."""
        return self.runner.run(self.store.lock_count())

    def lock_stats(self) -> list[LockInfo]:
        """See :meth:`EventStore.lock_stats`."""
        return self.runner.run(self.store.lock_stats())


async def _next(events: AsyncIterator[T]) -> T:
    return await events.__anext__()
