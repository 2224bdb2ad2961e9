"""Following the store: subscriptions and projection runners.

``subscribe(engine, query, after=...)`` iterates every matching event, catching up first and
then following live. It reads as :meth:`EventStore.read` does (safe heads, so it never skips an
event that commits late with a lower position) on connections of its own from the Engine, each
poll one statement at AUTOCOMMIT (the in-flight check and the read: one round trip), and
sleeps on LISTEN/NOTIFY (``dcb_events``, sent at commit) with polling as a fallback. Stop it
with ``stop()`` (from any thread); resume from any stored position with ``after=``. A lost
connection is reconnected; the listening connection is made like the engine's own (its
``connect_args`` apply); an unreadable event stops the subscription at its position
(:class:`~dcb_store.errors.UnreadableEventError`), never skipped silently.

Only one appending transaction at a time notifies (v5_following.sql: notifying commits are
serialized by PostgreSQL), so before each read the subscription asks whether appends are in
flight. If none are, any later append notifies or overlaps one that does, and it sleeps until a
notification (or ``poll_interval``); if some are, it reads again after ``busy_interval``.

``ProjectionRunner`` applies events to a read model with exactly-once effects: each batch, its
effects and its checkpoint row commit in one transaction. An idle runner asks first, in one
statement at AUTOCOMMIT, whether any event follows its checkpoint, and opens no transaction
when none does.

On a hot standby: pass the primary as ``engine`` and the standby as ``replica=``. Each read then
takes the safe head and a WAL fence on the primary, waits until the standby has replayed the
fence (at most ``replica_timeout`` seconds, else :class:`~dcb_store.errors.ReplicaLagError`) and
reads the events there (dcb_store._impl.replica). LISTEN, the in-flight check and checkpoints
stay on the primary. A follower whose engine is a standby raises
:class:`~dcb_store.errors.StandbyWithoutPrimaryError`: it could skip events there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dcb_store._impl import statements as st
from dcb_store._impl.errors import raise_driver_error
from dcb_store._impl.followers import (
    nothing_after_checkpoint,
    poll_in_one_statement,
    read_committed_session,
)
from dcb_store._impl.listening import Listener
from dcb_store._impl.progress import ProgressBar
from dcb_store._impl.replica import (
    Cursor,
    check_not_standby,
    check_replica,
    read_page,
    safe_bound,
)
from dcb_store._impl.stores import channel
from dcb_store._validation import check_position
from dcb_store.errors import ConnectionLostError, InvalidInputError, UnreadableEventError
from dcb_store.events import SequencedEvent
from dcb_store.queries import Query
from dcb_store.store import EventStore

__all__ = ["ProjectionRunner", "Subscription", "subscribe"]

CHANNEL = "dcb_events"
logger = logging.getLogger("dcb_store.following")


def _check_interval(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InvalidInputError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


class Subscription(Iterator[SequencedEvent]):
    """An endless iterator of events (see :func:`subscribe`); ``position`` is the last one seen.

    A lost connection (a restarted server, a terminated session) is reconnected after a capped
    backoff, reading again from ``position``: nothing is skipped or repeated. With
    ``reconnect=False`` it raises :class:`ConnectionLostError` instead. Any other database
    error raises a :class:`DcbStoreError`. An event that cannot be read raises
    :class:`UnreadableEventError` once the events before it are delivered, and again on every
    ``next()``: to move past it deliberately, set ``position = error.position``. With
    ``replica=`` the events are read on that standby (see :func:`subscribe`); ``schema``: the
    store to follow (``dcb``; its own channel, ``<schema>_events``).
    """

    def __init__(
        self,
        engine: Engine,
        query: Query | None = None,
        *,
        after: int | None = None,
        batch_size: int = 500,
        poll_interval: float = 5.0,
        busy_interval: float = 0.05,
        reconnect: bool = True,
        replica: Engine | None = None,
        replica_timeout: float = 30.0,
        schema: str = "dcb",
    ) -> None:
        st.check_batch_size(batch_size)
        self.schema, self._st = schema, st.for_schema(schema)
        self.replica_timeout = check_replica(replica, replica_timeout)
        #: the standby the events are read on (None: read on ``engine``)
        self.replica = replica
        self.engine = engine
        self.query = query
        self.position = check_position(after, "after")
        self.batch_size = batch_size
        self.poll_interval = _check_interval(poll_interval, "poll_interval")
        self.busy_interval = _check_interval(busy_interval, "busy_interval")
        self.reconnect = reconnect
        #: connections lost (and reconnected) so far
        self.reconnects = 0
        self._buffer: list[SequencedEvent] = []
        self._stopped = threading.Event()
        self._listener = Listener(engine, channel(schema))
        self._cursor = Cursor()

    def stop(self) -> None:
        """End the iteration (the next ``next()`` raises StopIteration); safe from any thread."""
        self._stopped.set()

    def _fetch(self) -> tuple[list[SequencedEvent], bool]:
        """The next page, and whether appends were in flight just before it was read."""
        # LISTEN first, then the in-flight check, then the read: a commit after the check either
        # notifies the listener or overlapped an append that was in flight at the check.
        self._listener.open()
        # catching up on a replica past a full page: the same safe head, no primary round trip
        bound = self._cursor.reusable(self.position) if self.replica is not None else None
        busy = True  # without the in-flight check: an empty page polls again soon
        try:
            polled = None
            if bound is None and self.replica is None:
                polled = poll_in_one_statement(
                    self.engine, self._st, self.query, self.position, self.batch_size
                )
            if polled is not None:
                page, busy = polled
            elif bound is None:
                with read_committed_session(self.engine) as session:
                    in_flight, standby = session.execute(self._st.FOLLOWER_CHECK).one()
                    busy = in_flight > 0
                    if standby:
                        role = (
                            "engine given as the primary" if self.replica is not None else "engine"
                        )
                        check_not_standby(session.connection(), role)
                    if self.replica is None:
                        page = (
                            EventStore(session, schema=self.schema)
                            .read(self.query, after=self.position, limit=self.batch_size)
                            .events
                        )
                    else:
                        bound = safe_bound(session.connection(), self.query, self.schema)
            if bound is not None:
                assert self.replica is not None
                page = read_page(
                    self.engine,
                    self.replica,
                    self.query,
                    self.position,
                    self.batch_size,
                    bound,
                    self.replica_timeout,
                    self._stopped,
                    self.schema,
                )
                self._cursor.record(bound, page, self.batch_size)
        except DBAPIError as exc:
            raise_driver_error(exc)
        except UnreadableEventError as exc:
            if not exc.preceding:
                raise
            return list(exc.preceding), False  # type: ignore[arg-type]  # the next read raises
        return page, busy

    def _fetch_or_reconnect(self) -> tuple[list[SequencedEvent], bool]:
        delay = 0.05
        while True:
            try:
                return self._fetch()
            except ConnectionLostError as exc:
                if not self.reconnect or self._stopped.is_set():
                    raise
                self.reconnects += 1
                self._listener.close()
                logger.warning(
                    "dcb_store subscription lost its connection at position %s (%s); "
                    "reconnecting in %.2f s",
                    self.position,
                    exc,
                    delay,
                )
                if self._stopped.wait(delay):
                    return [], False
                delay = min(delay * 2, self.poll_interval, 5.0)

    def __next__(self) -> SequencedEvent:
        if self._stopped.is_set():  # also with events left in the buffer: stop means stop
            self.close()
            raise StopIteration
        while not self._buffer:
            self._buffer, busy = self._fetch_or_reconnect()
            if not self._buffer:
                if not self._stopped.is_set():
                    self._listener.wait(
                        self.busy_interval if busy else self.poll_interval, self._stopped
                    )
                if self._stopped.is_set():
                    self.close()
                    raise StopIteration
        event = self._buffer.pop(0)
        self.position = event.position
        return event

    def close(self) -> None:
        """Release the listening connection."""
        self._listener.close()


def subscribe(
    engine: Engine,
    query: Query | None = None,
    *,
    after: int | None = None,
    batch_size: int = 500,
    poll_interval: float = 5.0,
    busy_interval: float = 0.05,
    reconnect: bool = True,
    replica: Engine | None = None,
    replica_timeout: float = 30.0,
    schema: str = "dcb",
) -> Subscription:
    """Follow the events matching ``query`` after position ``after``: catch up, then live.

    ``poll_interval`` bounds the sleep when no append is in flight (a lost notification costs
    at most that); ``busy_interval`` is the sleep while appends are in flight. A lost
    connection is reconnected (``reconnect=False``: raise :class:`ConnectionLostError`).

    ``replica``: an Engine of a hot standby of ``engine`` (the primary) to read the events on.
    Each read waits until the standby has replayed the primary's WAL past the safe head's
    commits, at most ``replica_timeout`` seconds (:class:`ReplicaLagError`). Following a
    standby without its primary raises :class:`StandbyWithoutPrimaryError`.
    """
    return Subscription(
        engine,
        query,
        after=after,
        batch_size=batch_size,
        poll_interval=poll_interval,
        busy_interval=busy_interval,
        reconnect=reconnect,
        replica=replica,
        replica_timeout=replica_timeout,
        schema=schema,
    )


class ProjectionRunner:
    """Apply events to a read model with exactly-once effects.

    ``handle(session, events)`` writes the read model with ``session``; the runner commits those
    writes together with its checkpoint (``dcb.checkpoints``, row ``name``), so a crash between
    batches never applies a batch twice or loses one. ``engine`` must be the primary (the
    checkpoint and the read model are written there); with ``replica=`` (an Engine of a hot
    standby) the events are read on the standby, as :func:`subscribe` does. ``schema``: the
    store (``dcb``); its checkpoints are ``<schema>.checkpoints``.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        handle: Callable[[Session, Sequence[SequencedEvent]], None],
        query: Query | None = None,
        *,
        batch_size: int = 500,
        replica: Engine | None = None,
        replica_timeout: float = 30.0,
        schema: str = "dcb",
    ) -> None:
        self.schema, self._st = schema, st.for_schema(schema)
        self.replica_timeout = check_replica(replica, replica_timeout)
        self.replica = replica
        self.engine = engine
        self.name = name
        self.handle = handle
        self.query = query
        st.check_batch_size(batch_size)
        self.batch_size = batch_size
        self._cursor = Cursor()

    def position(self) -> int:
        """The checkpoint: the last position whose effects are committed."""
        try:
            with read_committed_session(self.engine) as session:
                value = session.execute(self._st.CHECKPOINT_POSITION, {"n": self.name}).scalar()
        except DBAPIError as exc:
            raise_driver_error(exc)
        return int(value or 0)

    def run_once(self) -> int:
        """Apply one batch after the checkpoint; return how many events it applied.

        Database errors (its own statements, ``handle``'s, the commit) raise a
        :class:`DcbStoreError`. At an unreadable event the events before it are applied and
        committed first; then :class:`UnreadableEventError` is raised (and again on every run)
        until the checkpoint is moved past its position deliberately.
        """
        try:
            return self._run_once()
        except DBAPIError as exc:
            raise_driver_error(exc)

    def _run_once(self) -> int:
        if self.replica is None and nothing_after_checkpoint(
            self.engine, self._st, self.name, self.query
        ):
            return 0
        with read_committed_session(self.engine) as session:
            try:
                session.execute(self._st.CHECKPOINT_ENSURE, {"n": self.name})
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) == "25006":  # a read-only transaction
                    session.rollback()
                    check_not_standby(session.connection(), "engine")
                raise
            after = session.execute(self._st.CHECKPOINT_LOCK, {"n": self.name}).scalar_one()
            try:
                if self.replica is None:
                    events = (
                        EventStore(session, schema=self.schema)
                        .read(self.query, after=after, limit=self.batch_size)
                        .events
                    )
                else:
                    bound = self._cursor.reusable(after) or safe_bound(
                        session.connection(), self.query, self.schema
                    )
                    events = read_page(
                        self.engine,
                        self.replica,
                        self.query,
                        after,
                        self.batch_size,
                        bound,
                        self.replica_timeout,
                        schema=self.schema,
                    )
                    self._cursor.record(bound, events, self.batch_size)
            except UnreadableEventError as exc:
                if not exc.preceding:
                    raise
                events = list(exc.preceding)  # type: ignore[arg-type]
            if events:
                self.handle(session, events)
                saved = {"p": events[-1].position, "n": self.name}
                session.execute(self._st.CHECKPOINT_SAVE, saved)
            session.commit()
            return len(events)

    def catch_up(
        self, progress: Callable[[int], None] | None = None, *, show_progress: bool = False
    ) -> int:
        """Apply batches until none is left; return how many events were applied.

        ``progress(applied_so_far)`` is called after each batch; ``show_progress`` draws a
        progress bar on stderr (tqdm when installed) while a long history replays.
        """
        bar = ProgressBar(f"replaying {self.name}") if show_progress else None
        total = 0
        try:
            while applied := self.run_once():
                total += applied
                if progress:
                    progress(total)
                if bar:
                    bar.update(applied)
        finally:
            if bar:
                bar.close()
        return total
