"""The asynchronous event store: the same API, awaitable, on the caller's AsyncSession."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from dcb_store._impl import driver, rows
from dcb_store._impl import statements as st
from dcb_store._impl.binds import require_postgresql
from dcb_store._impl.errors import raise_driver_error
from dcb_store._impl.guards import guarded_append
from dcb_store.breaker import CircuitBreaker
from dcb_store.conditions import AppendCondition
from dcb_store.deciding import Projection, fold, union
from dcb_store.events import Event, SequencedEvent
from dcb_store.locks import LockInfo
from dcb_store.observing import observed
from dcb_store.queries import Query
from dcb_store.reading import ReadResult
from dcb_store.timeouts import DEFAULT, _Default, resolve_lock_timeout

__all__ = ["AsyncEventStore"]


class AsyncEventStore:
    """The async twin of :class:`~dcb_store.EventStore`; SQL, validation and errors are shared."""

    def __init__(
        self,
        bind: AsyncSession | AsyncConnection,
        *,
        lock_timeout: float | None = 5.0,
        breaker: CircuitBreaker | None = None,
        schema: str = "dcb",
    ) -> None:
        if not isinstance(bind, (AsyncSession, AsyncConnection)):
            raise TypeError("AsyncEventStore takes a sqlalchemy AsyncSession or AsyncConnection")
        require_postgresql(bind)
        st.timeout_ms(lock_timeout)
        self._bind = bind
        self.lock_timeout = lock_timeout
        self.breaker = breaker
        #: the store's schema (``dcb``, or another store of the database: docs/usage.md)
        self.schema = schema
        self._st = st.for_schema(schema)

    async def _connection(self) -> AsyncConnection:
        if isinstance(self._bind, AsyncSession):
            return await self._bind.connection()
        return self._bind

    async def append(
        self,
        events: Event | Iterable[Event],
        condition: AppendCondition | None = None,
        *,
        lock_timeout: float | None | _Default = DEFAULT,
    ) -> int:
        """See :meth:`EventStore.append`."""
        timeout = resolve_lock_timeout(lock_timeout, self.lock_timeout)
        call = st.prepare_append(events, condition, timeout)
        with guarded_append(self.breaker, condition is not None) as info:
            try:
                (row,) = await driver.execute_async(
                    await self._connection(), self._st.APPEND, call.params
                )
            except DBAPIError as exc:
                raise_driver_error(exc, timeout)
            return st.append_result(call, row, info)

    async def read(
        self,
        query: Query | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> ReadResult:
        """See :meth:`EventStore.read`."""
        call = st.prepare_read(query, after, limit, backwards)
        with observed("read", st.read_attributes(call)):
            return rows.read_result(call, await self._execute_read(call))

    async def _execute_read(self, call: st.ReadCall) -> Sequence[Any]:
        try:
            return await driver.execute_async(await self._connection(), self._st.READ, call.params)
        except DBAPIError as exc:
            raise_driver_error(exc)

    async def stream(
        self, query: Query | None = None, *, after: int | None = None, batch_size: int = 1000
    ) -> AsyncIterator[SequencedEvent]:
        """See :meth:`EventStore.stream`."""
        st.check_batch_size(batch_size)
        while True:
            call = st.prepare_read(query, after, batch_size, False)
            with observed("read", st.read_attributes(call)):
                page = rows.StreamPage(await self._execute_read(call))
            for event in page:
                yield event
            if page.count < batch_size:
                return
            after = page.last

    async def project(
        self, projections: Sequence[Projection[Any]]
    ) -> tuple[list[Any], AppendCondition]:
        """Answer several projections with one read; return their states and the condition.

        The condition is the union of the projections' queries with ``after`` = the read's
        head: pass it to :meth:`append` for the decision made from these states.
        """
        result = await self.read(union(projections))
        return fold(projections, result)

    async def head(self, query: Query | None = None) -> int | None:
        """See :meth:`EventStore.head`."""
        (row,) = await self._execute_read(st.prepare_read(query, None, 0, False))
        return row[0]  # type: ignore[no-any-return]

    async def lock_count(self) -> int:
        """See :meth:`EventStore.lock_count`."""
        try:
            result = await (await self._connection()).execute(self._st.LOCK_COUNT)
        except DBAPIError as exc:
            raise_driver_error(exc)
        return int(result.scalar_one())

    async def lock_stats(self) -> list[LockInfo]:
        """See :meth:`EventStore.lock_stats`."""
        try:
            result = await (await self._connection()).execute(self._st.LOCK_STATS)
        except DBAPIError as exc:
            raise_driver_error(exc)
        return [LockInfo.from_row(r) for r in result.all()]
