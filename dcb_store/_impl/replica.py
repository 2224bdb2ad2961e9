"""Following on a hot standby: safe heads from the primary, events from the replica.

A standby cannot compute a safe head (the in-flight markers are advisory locks, which exist only
on the primary) and makes commits visible in WAL order. So each read asks the primary for the
safe head and, in a later evaluation, its WAL insert position (the *fence*); then it waits until
the replica has replayed up to the fence and reads ``after < position <= head`` there. Every
event at or below the head was committed before the head's snapshot was taken, so its commit
record lies below the fence, and a replica snapshot taken after replaying the fence sees it
(docs/consistency.md, "Followers on standbys").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from dcb_store._impl import statements as st
from dcb_store._impl.errors import raise_driver_error
from dcb_store._impl.rows import to_event
from dcb_store.errors import (
    InvalidInputError,
    ReplicaLagError,
    StandbyWithoutPrimaryError,
    UnreadableEventError,
)
from dcb_store.events import SequencedEvent
from dcb_store.queries import Query

__all__ = ["Bound", "Cursor", "check_not_standby", "check_replica", "read_page", "safe_bound"]

# XLOG page headers (MAXALIGNed): a long one opens each segment, a short one every other page.
_LONG_HEADER = 40
_SHORT_HEADER = 24
# the replica is asked again after 1 ms, then 1.5 times longer each time, at most 20 ms: the
# waits cost the replica a cheap statement each, never the primary
_FIRST_SLEEP = 0.001
_MAX_SLEEP = 0.02
# how long a replica may be short of a fence before the primary is asked whether it flushed it
_FLUSH_CHECK_AFTER = 0.05
_FLUSH_CHECK_EVERY = 0.5


def lsn_text(value: int | None) -> str | None:
    """An LSN as PostgreSQL prints it (``0/3000148``)."""
    if value is None:
        return None
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def check_replica(replica: object, timeout: float) -> float:
    """Validate ``replica=`` (an Engine or None) and ``replica_timeout=``."""
    if replica is not None and not isinstance(replica, Engine):
        raise InvalidInputError(
            "replica must be a sqlalchemy Engine (of a standby) or None, "
            f"got {type(replica).__name__}"
        )
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidInputError(
            f"replica_timeout must be a positive number of seconds, got {timeout!r}"
        )
    return float(timeout)


def check_not_standby(conn: Connection, role: str) -> None:
    """Raise :class:`StandbyWithoutPrimaryError` when ``conn`` is on a hot standby."""
    try:
        standby, replayed = conn.execute(st.IN_RECOVERY).one()
    except DBAPIError as exc:
        raise_driver_error(exc)
    if standby:
        raise StandbyWithoutPrimaryError(role, replayed)


@dataclass(frozen=True)
class Bound:
    """What a replica read may return: events up to ``head``, once it has replayed ``fence``."""

    head: int | None
    fence: int


@dataclass
class Cursor:
    """Lets a follower read on past a full page without asking the primary again.

    A safe head stays safe: after a full page ending below the head, the next page up to the
    same head (checked against the same fence by the replica read) is what the primary would
    return. A short page, or a page reaching the head, needs a new bound.
    """

    bound: Bound | None = None
    full_page_end: int | None = None

    def reusable(self, after: int | None) -> Bound | None:
        """The last bound, if the last page was full, ended at ``after``, below the head."""
        bound = self.bound
        if bound is None or bound.head is None or self.full_page_end is None:
            return None
        if self.full_page_end != (after or 0) or bound.head <= self.full_page_end:
            return None
        return bound

    def record(self, bound: Bound, page: list[SequencedEvent], limit: int) -> None:
        """Remember the bound a page was read under, and where a full page ended."""
        self.bound = bound
        self.full_page_end = page[-1].position if page and len(page) >= limit else None


def _usable_fence(insert_lsn: int, block: int, segment: int) -> int:
    """The insert position, moved back over a page header it may point just past.

    Past a page boundary the insert position skips the next page's header, while a standby's
    replay position stops at the end of the last record (the boundary): without this, a fence
    taken while the primary is idle could wait for WAL that never comes.
    """
    in_segment = insert_lsn % segment
    if in_segment == _LONG_HEADER:
        return insert_lsn - _LONG_HEADER
    if in_segment > block and insert_lsn % block == _SHORT_HEADER:
        return insert_lsn - _SHORT_HEADER
    return insert_lsn


def safe_bound(primary: Connection, query: Query | None, schema: str = "dcb") -> Bound:
    """The safe head for ``query`` on the primary, and the fence after it (one statement)."""
    call = st.prepare_read(query, None, 0, False)
    try:
        head, fence, block, segment = primary.execute(
            st.for_schema(schema).SAFE_HEAD_AND_FENCE, {"items": call.params["items"]}
        ).one()
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55000":  # WAL control functions in recovery
            check_not_standby(primary, "primary engine")
        raise_driver_error(exc)
    return Bound(head, _usable_fence(int(fence), int(block), int(segment)))


@contextmanager
def _connection(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn:
        yield conn.execution_options(isolation_level="READ COMMITTED")


def flush_past(primary: Engine, fence: int) -> bool:
    """Make the primary flush its WAL up to ``fence``; False if it already had."""
    try:
        with _connection(primary) as conn:
            if conn.execute(st.WAL_FLUSHED, {"fence": fence}).scalar_one():
                return False
            conn.execute(st.FLUSH_SYNCHRONOUSLY)
            conn.execute(st.WRITE_FLUSH_RECORD)
            conn.commit()
    except DBAPIError as exc:
        raise_driver_error(exc)
    return True


def read_page(
    primary: Engine,
    replica: Engine,
    query: Query | None,
    after: int | None,
    limit: int,
    bound: Bound,
    timeout: float,
    stopped: threading.Event | None = None,
    schema: str = "dcb",
) -> list[SequencedEvent]:
    """Up to ``limit`` events of ``query`` in ``(after, bound.head]``, read on ``replica``.

    Waits (polling, with a short sleep) until the replica has replayed ``bound.fence`` (making
    ``primary`` flush it if the wait is not short: :func:`flush_past`); raises
    :class:`ReplicaLagError` after ``timeout`` seconds. Returns no event when ``stopped`` is
    set while waiting. An unreadable event raises :class:`UnreadableEventError` carrying the
    events before it.
    """
    head = bound.head
    if head is None or head <= (after or 0):
        return []
    call = st.prepare_read(query, after, limit, False)
    params = {
        "items": call.params["items"],
        "after": call.params["after"],
        "limit": limit,
        "fence": bound.fence,
    }
    began = time.monotonic()
    deadline = began + timeout
    flush_check = began + _FLUSH_CHECK_AFTER
    delay = _FIRST_SLEEP
    while True:
        try:
            with _connection(replica) as conn:
                rows = conn.execute(st.for_schema(schema).REPLICA_READ, params).all()
        except DBAPIError as exc:
            raise_driver_error(exc)
        replayed = None if rows[0][0] is None else int(rows[0][0])
        if replayed is not None and replayed >= bound.fence:
            break
        now = time.monotonic()
        if now >= flush_check:
            flush_past(primary, bound.fence)
            flush_check = now + _FLUSH_CHECK_EVERY
        if now >= deadline:
            raise ReplicaLagError(
                lsn_text(bound.fence) or "",
                lsn_text(replayed),
                None if replayed is None else bound.fence - replayed,
                timeout,
            )
        if stopped is not None:
            if stopped.wait(delay):
                return []
        else:
            time.sleep(delay)
        delay = min(delay * 1.5, _MAX_SLEEP)
    events: list[SequencedEvent] = []
    try:
        for row in rows:
            position = row[2]
            if position is None:  # the row that carries only the replica's own head
                continue
            if position > head:  # the replica may hold more: a later read delivers it
                break
            events.append(to_event(row[1:]))
    except UnreadableEventError as exc:
        exc.preceding = tuple(events)
        raise
    return events
