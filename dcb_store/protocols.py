"""One type for "a store": what decision code, projections and tests may rely on.

``EventStoreLike`` is what :class:`~dcb_store.EventStore` and
:class:`~dcb_store.testing.InMemoryEventStore` answer alike; ``AsyncEventStoreLike`` is its
awaitable twin, answered by :class:`~dcb_store.AsyncEventStore`. Type decision code against them
(``def subscribe(store: EventStoreLike, ...)``) and it runs on PostgreSQL in production and on
the in-memory store in unit tests; :class:`~dcb_store.testing.StoreContract` checks that a store
keeps the promises these signatures only name. Both are runtime-checkable (``isinstance`` tests
the method names only).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dcb_store.conditions import AppendCondition
from dcb_store.deciding import Projection
from dcb_store.events import Event, SequencedEvent
from dcb_store.locks import LockInfo
from dcb_store.queries import Query
from dcb_store.reading import ReadResult
from dcb_store.timeouts import DEFAULT, _Default

__all__ = ["AsyncEventStoreLike", "EventStoreLike"]


@runtime_checkable
class EventStoreLike(Protocol):
    """A synchronous store: append, read, stream, project, head, and its advisory locks."""

    def append(
        self,
        events: Event | Iterable[Event],
        condition: AppendCondition | None = None,
        *,
        lock_timeout: float | None | _Default = DEFAULT,
    ) -> int:
        """Append events atomically if ``condition`` holds; the last event's position."""
        ...

    def read(
        self,
        query: Query | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> ReadResult:
        """The events matching ``query`` after ``after``, and the head the read promises."""
        ...

    def stream(
        self, query: Query | None = None, *, after: int | None = None, batch_size: int = 1000
    ) -> Iterator[SequencedEvent]:
        """Every matching event after ``after``, in position order."""
        ...

    def project(self, projections: Sequence[Projection[Any]]) -> tuple[list[Any], AppendCondition]:
        """The projections' states from one read, and the condition for the decision."""
        ...

    def head(self, query: Query | None = None) -> int | None:
        """The current safe head."""
        ...

    def lock_count(self) -> int:
        """How many of the library's advisory locks are held or awaited."""
        ...

    def lock_stats(self) -> list[LockInfo]:
        """The library's advisory locks, held or awaited."""
        ...


@runtime_checkable
class AsyncEventStoreLike(Protocol):
    """The awaitable twin of :class:`EventStoreLike` (``stream`` is an async iterator)."""

    async def append(
        self,
        events: Event | Iterable[Event],
        condition: AppendCondition | None = None,
        *,
        lock_timeout: float | None | _Default = DEFAULT,
    ) -> int:
        """See :meth:`EventStoreLike.append`."""
        ...

    async def read(
        self,
        query: Query | None = None,
        *,
        after: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> ReadResult:
        """See :meth:`EventStoreLike.read`."""
        ...

    def stream(
        self, query: Query | None = None, *, after: int | None = None, batch_size: int = 1000
    ) -> AsyncIterator[SequencedEvent]:
        """See :meth:`EventStoreLike.stream`."""
        ...

    async def project(
        self, projections: Sequence[Projection[Any]]
    ) -> tuple[list[Any], AppendCondition]:
        """See :meth:`EventStoreLike.project`."""
        ...

    async def head(self, query: Query | None = None) -> int | None:
        """See :meth:`EventStoreLike.head`."""
        ...

    async def lock_count(self) -> int:
        """See :meth:`EventStoreLike.lock_count`."""
        ...

    async def lock_stats(self) -> list[LockInfo]:
        """See :meth:`EventStoreLike.lock_stats`."""
        ...


if TYPE_CHECKING:  # mypy (strict, on the package) proves that every store has its type
    import dcb_store.aio
    import dcb_store.store
    import dcb_store.testing

    def _every_store_has_its_type(
        sync: dcb_store.store.EventStore,
        memory: dcb_store.testing.InMemoryEventStore,
        blocking: dcb_store.testing.BlockingStore,
        aio: dcb_store.aio.AsyncEventStore,
    ) -> None:
        _sync: EventStoreLike = sync
        _memory: EventStoreLike = memory
        _blocking: EventStoreLike = blocking
        _aio: AsyncEventStoreLike = aio
