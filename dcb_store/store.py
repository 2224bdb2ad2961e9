"""The synchronous event store: runs on the caller's SQLAlchemy Session or Connection."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, scoped_session

from dcb_store._impl import driver, rows
from dcb_store._impl import statements as st
from dcb_store._impl.binds import require_postgresql
from dcb_store._impl.errors import raise_driver_error
from dcb_store._impl.guards import guarded_append
from dcb_store._impl.replica import (
    Cursor,
    check_not_standby,
    check_replica,
    read_page,
    safe_bound,
)
from dcb_store.breaker import CircuitBreaker
from dcb_store.conditions import AppendCondition
from dcb_store.deciding import Projection, fold, union
from dcb_store.events import Event, SequencedEvent
from dcb_store.locks import LockInfo
from dcb_store.observing import observed
from dcb_store.queries import Query
from dcb_store.reading import ReadResult
from dcb_store.timeouts import DEFAULT, _Default, resolve_lock_timeout

__all__ = ["DEFAULT", "EventStore"]


class EventStore:
    """A DCB event store inside the caller's transaction.

    Every statement runs on ``session.connection()`` (or the given Connection): the same
    transaction, isolation level and commit as the application's own writes. The store never
    commits, never rolls back the caller's work and never changes the isolation level.

    ``lock_timeout`` (seconds, or None for the session's own setting) bounds each wait for an
    advisory lock; a per-call value overrides it. ``schema``: the store's schema, ``dcb`` unless
    several stores share the database (docs/usage.md, "Several stores in one database").
    """

    def __init__(
        self,
        bind: Session | scoped_session[Session] | Connection,
        *,
        lock_timeout: float | None = 5.0,
        breaker: CircuitBreaker | None = None,
        schema: str = "dcb",
    ) -> None:
        if not isinstance(bind, (Session, scoped_session, Connection)):
            raise TypeError("EventStore takes a sqlalchemy Session, scoped_session or Connection")
        require_postgresql(bind)
        st.timeout_ms(lock_timeout)  # validate now, not at the first append
        self._bind = bind
        self.lock_timeout = lock_timeout
        self.breaker = breaker
        #: the store's schema (``dcb``, or another store of the database: docs/usage.md)
        self.schema = schema
        self._st = st.for_schema(schema)

    def _connection(self) -> Connection:
        if isinstance(self._bind, Connection):
            return self._bind
        return (
            self._bind.connection()
        )  # a Session, or a scoped_session (Flask-SQLAlchemy's db.session)

    def append(
        self,
        events: Event | Iterable[Event],
        condition: AppendCondition | None = None,
        *,
        lock_timeout: float | None | _Default = DEFAULT,
    ) -> int:
        """Append events atomically, if ``condition`` holds; return the last event's position.

        Raises :class:`ConditionFailedError` or :class:`LockTimeoutError` (both
        :class:`ConcurrencyError`) having stored nothing; the caller's transaction stays usable.
        """
        timeout = resolve_lock_timeout(lock_timeout, self.lock_timeout)
        call = st.prepare_append(events, condition, timeout)
        with guarded_append(self.breaker, condition is not None) as info:
            try:
                (row,) = driver.execute(self._connection(), self._st.APPEND, call.params)
            except DBAPIError as exc:
                raise_driver_error(exc, timeout)
            return st.append_result(call, row, info)

    def read(
        self,
        query: Query | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> ReadResult:
        """Read events matching ``query`` (all events if None) after position ``after``."""
        call = st.prepare_read(query, after, limit, backwards)
        with observed("read", st.read_attributes(call)):
            return rows.read_result(call, self._execute_read(call))

    def _execute_read(self, call: st.ReadCall) -> Sequence[Any]:
        try:
            return driver.execute(self._connection(), self._st.READ, call.params)
        except DBAPIError as exc:
            raise_driver_error(exc)

    def stream(
        self,
        query: Query | None = None,
        *,
        after: int | None = None,
        batch_size: int = 1000,
        replica: Engine | None = None,
        replica_timeout: float = 30.0,
    ) -> Iterator[SequencedEvent]:
        """Iterate any number of events in position order, ``batch_size`` at a time.

        Keyset pages of :meth:`read`: memory stays bounded, and each page stops at a safe head,
        so the stream never skips an event that commits late with a lower position.

        ``replica``: an Engine of a hot standby of this store's database. Each page's safe head
        is taken here (the primary), the events are read on the standby once it has replayed
        past them (at most ``replica_timeout`` seconds, else :class:`ReplicaLagError`).
        Streaming a store whose session is on a standby, without a primary, raises
        :class:`StandbyWithoutPrimaryError`.
        """
        st.check_batch_size(batch_size)
        timeout = check_replica(replica, replica_timeout)
        if replica is not None:
            yield from self._stream_replica(query, after, batch_size, replica, timeout)
            return
        check_not_standby(self._connection(), "store's session")
        while True:
            call = st.prepare_read(query, after, batch_size, False)
            with observed("read", st.read_attributes(call)):
                page = rows.StreamPage(self._execute_read(call))
            yield from page
            if page.count < batch_size:
                return
            after = page.last

    def _stream_replica(
        self,
        query: Query | None,
        after: int | None,
        batch_size: int,
        replica: Engine,
        timeout: float,
    ) -> Iterator[SequencedEvent]:
        cursor = Cursor()
        while True:
            bound = cursor.reusable(after) or safe_bound(self._connection(), query, self.schema)
            call = st.prepare_read(query, after, batch_size, False)
            with observed("read", st.read_attributes(call)):
                page = read_page(
                    self._connection().engine,
                    replica,
                    query,
                    after,
                    batch_size,
                    bound,
                    timeout,
                    schema=self.schema,
                )
            cursor.record(bound, page, batch_size)
            yield from page
            if len(page) < batch_size:
                return
            after = page[-1].position

    def project(self, projections: Sequence[Projection[Any]]) -> tuple[list[Any], AppendCondition]:
        """Answer several projections with one read; return their states and the condition.

        The condition is the union of the projections' queries with ``after`` = the read's
        head: pass it to :meth:`append` for the decision made from these states.
        """
        result = self.read(union(projections))
        return fold(projections, result)

    def head(self, query: Query | None = None) -> int | None:
        """The current safe head (for ``query``, or for all events)."""
        # a read of no event (limit 0) returns one row: the safe head
        (row,) = self._execute_read(st.prepare_read(query, None, 0, False))
        return row[0]  # type: ignore[no-any-return]

    def lock_count(self) -> int:
        """How many advisory locks of this library are held or awaited in this database."""
        try:
            return int(self._connection().execute(self._st.LOCK_COUNT).scalar_one())
        except DBAPIError as exc:
            raise_driver_error(exc)

    def lock_stats(self) -> list[LockInfo]:
        """Every advisory lock of this library in this database, held or awaited."""
        try:
            rows = self._connection().execute(self._st.LOCK_STATS).all()
        except DBAPIError as exc:
            raise_driver_error(exc)
        return [LockInfo.from_row(r) for r in rows]
