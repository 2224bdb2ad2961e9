"""Following the store: subscriptions and projection runners.

``subscribe(engine, query, after=...)`` iterates every matching event, catching up first and
then following live. It reads through :meth:`EventStore.read` (safe heads, so it never skips an
event that commits late with a lower position) on connections of its own from the Engine, and
sleeps on LISTEN/NOTIFY (``dcb_events``, sent at commit) with polling as a fallback. Stop it
with ``stop()`` (from any thread); resume from any stored position with ``after=``.

Only one appending transaction at a time notifies (v5_following.sql: notifying commits are
serialized by PostgreSQL), so before each read the subscription asks whether appends are in
flight. If none are, any later append notifies or overlaps one that does, and it sleeps until a
notification (or ``poll_interval``); if some are, it reads again after ``busy_interval``.

``ProjectionRunner`` applies events to a read model with exactly-once effects: each batch, its
effects and its checkpoint row commit in one transaction.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store._impl import statements as st
from dcb_store.events import SequencedEvent
from dcb_store.queries import Query
from dcb_store.store import EventStore

__all__ = ["ProjectionRunner", "Subscription", "subscribe"]

CHANNEL = "dcb_events"


def _libpq_dsn(engine: Engine) -> str:
    url = engine.url.set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


class Subscription(Iterator[SequencedEvent]):
    """An endless iterator of events (see :func:`subscribe`); ``position`` is the last one seen."""

    def __init__(
        self,
        engine: Engine,
        query: Query | None = None,
        *,
        after: int | None = None,
        batch_size: int = 500,
        poll_interval: float = 5.0,
        busy_interval: float = 0.05,
    ) -> None:
        self.engine = engine
        self.query = query
        self.position = after
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.busy_interval = busy_interval
        self._buffer: list[SequencedEvent] = []
        self._stopped = threading.Event()
        self._listener: psycopg.Connection | None = None

    def stop(self) -> None:
        """End the iteration (the next ``next()`` raises StopIteration); safe from any thread."""
        self._stopped.set()

    def _listen(self) -> psycopg.Connection | None:
        """The listening connection, opened on first use; None while it cannot be opened."""
        if self._listener is None or self._listener.closed:
            try:
                self._listener = psycopg.connect(_libpq_dsn(self.engine), autocommit=True)
                self._listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            except psycopg.Error:  # fall back to polling; try again next time
                self._drop_listener()
        return self._listener

    def _fetch(self) -> tuple[list[SequencedEvent], bool]:
        """The next page, and whether appends were in flight just before it was read."""
        # LISTEN first, then the in-flight check, then the read: a commit after the check either
        # notifies the listener or overlapped an append that was in flight at the check.
        self._listen()
        with Session(self.engine) as session:
            busy = session.execute(st.APPENDS_IN_FLIGHT).scalar_one() > 0
            page = EventStore(session).read(self.query, after=self.position, limit=self.batch_size)
        return list(page), busy

    def _wait(self, timeout: float) -> None:
        """Sleep until a commit notifies us, ``timeout`` passes, or stop() is called."""
        conn = self._listener
        if conn is None:
            self._stopped.wait(timeout)
            return
        try:
            waited = 0.0
            step = min(0.25, timeout)  # short steps, so that stop() is prompt
            while waited < timeout and not self._stopped.is_set():
                if any(True for _ in conn.notifies(timeout=step, stop_after=1)):
                    return
                waited += step
        except psycopg.Error:  # a lost listener: reconnect before the next read
            self._drop_listener()

    def _drop_listener(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __next__(self) -> SequencedEvent:
        if self._stopped.is_set():  # also with events left in the buffer: stop means stop
            self.close()
            raise StopIteration
        while not self._buffer:
            self._buffer, busy = self._fetch()
            if not self._buffer:
                self._wait(self.busy_interval if busy else self.poll_interval)
                if self._stopped.is_set():
                    self.close()
                    raise StopIteration
        event = self._buffer.pop(0)
        self.position = event.position
        return event

    def close(self) -> None:
        """Release the listening connection."""
        self._drop_listener()


def subscribe(
    engine: Engine,
    query: Query | None = None,
    *,
    after: int | None = None,
    batch_size: int = 500,
    poll_interval: float = 5.0,
    busy_interval: float = 0.05,
) -> Subscription:
    """Follow the events matching ``query`` after position ``after``: catch up, then live.

    ``poll_interval`` bounds the sleep when no append is in flight (a lost notification costs
    at most that); ``busy_interval`` is the sleep while appends are in flight.
    """
    return Subscription(
        engine,
        query,
        after=after,
        batch_size=batch_size,
        poll_interval=poll_interval,
        busy_interval=busy_interval,
    )


class ProjectionRunner:
    """Apply events to a read model with exactly-once effects.

    ``handle(session, events)`` writes the read model with ``session``; the runner commits those
    writes together with its checkpoint (``dcb.checkpoints``, row ``name``), so a crash between
    batches never applies a batch twice or loses one.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        handle: Callable[[Session, Sequence[SequencedEvent]], None],
        query: Query | None = None,
        *,
        batch_size: int = 500,
    ) -> None:
        self.engine = engine
        self.name = name
        self.handle = handle
        self.query = query
        self.batch_size = batch_size

    def position(self) -> int:
        """The checkpoint: the last position whose effects are committed."""
        with Session(self.engine) as session:
            value = session.execute(
                text("SELECT position FROM dcb.checkpoints WHERE name = :n"), {"n": self.name}
            ).scalar()
        return int(value or 0)

    def run_once(self) -> int:
        """Apply one batch after the checkpoint; return how many events it applied."""
        with Session(self.engine) as session:
            session.execute(
                text(
                    "INSERT INTO dcb.checkpoints (name) VALUES (:n) ON CONFLICT (name) DO NOTHING"
                ),
                {"n": self.name},
            )
            # the row lock makes two runners of one name take turns instead of both applying
            after = session.execute(
                text("SELECT position FROM dcb.checkpoints WHERE name = :n FOR UPDATE"),
                {"n": self.name},
            ).scalar_one()
            page = EventStore(session).read(self.query, after=after, limit=self.batch_size)
            if len(page):
                self.handle(session, page.events)
                session.execute(
                    text(
                        "UPDATE dcb.checkpoints SET position = :p, updated_at = now() "
                        "WHERE name = :n"
                    ),
                    {"p": page.events[-1].position, "n": self.name},
                )
            session.commit()
            return len(page)

    def catch_up(
        self, progress: Callable[[int], None] | None = None, *, show_progress: bool = False
    ) -> int:
        """Apply batches until none is left; return how many events were applied.

        ``progress(applied_so_far)`` is called after each batch; ``show_progress`` draws a
        progress bar on stderr (tqdm when installed) while a long history replays.
        """
        bar = _ProgressBar(f"replaying {self.name}") if show_progress else None
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


class _ProgressBar:
    """tqdm when it is installed, else a line on stderr every 10,000 events."""

    def __init__(self, label: str) -> None:
        self.count = 0
        self.label = label
        try:
            from tqdm import tqdm

            self._tqdm: Any = tqdm(desc=label, unit="ev", file=sys.stderr)
        except ImportError:  # pragma: no cover - tqdm comes with the bench extra
            self._tqdm = None

    def update(self, n: int) -> None:
        self.count += n
        if self._tqdm is not None:
            self._tqdm.update(n)
        elif self.count // 10_000 != (self.count - n) // 10_000:  # pragma: no cover
            print(f"{self.label}: {self.count:,} events", file=sys.stderr)

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
