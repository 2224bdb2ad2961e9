"""The read scenarios over the seeded store: streaming, one tag's events, a hot tag.

Every seeded event carries ``entity:<i>`` (10 events per tag), a tag of its own, and the hot
tag ``tenant:hot`` (on every event, as a tenant tag would be). The hot-tag reads are the pages a
reader asks for: 100 events near the end, 100 from the start, and a caught-up poll after the
head (nothing to return), both as a Session's read and as a subscription's own poll.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from dcb_store import EventStore, Query
from dcb_store.bench._common import (
    HOT_TAG,
    HOT_TAG_FOLLOWER_POLL,
    HOT_TAG_NEAR_END,
    HOT_TAG_POLL,
    HOT_TAG_START,
    READ_ONE_TAG,
    STREAM_ALL,
    WARM_UP_READS,
    Row,
    fmt,
    percentile_ms,
    settle,
)
from dcb_store.following import subscribe

__all__ = ["measure_hot_tag", "measure_reads"]


def _latency_row(
    name: str, read: Callable[[], int], session: Session | None, samples: int, n_events: int
) -> Row:
    """Time ``read`` (which returns the events it got): p50 and p99 over ``samples`` calls.

    ``session`` is rolled back after each read, untimed (None: the read ends its own work).
    """
    for _ in range(WARM_UP_READS):
        read()
        if session is not None:
            session.rollback()
    latencies, got = [], 0
    for _ in range(samples):
        started = time.perf_counter()
        got += read()
        latencies.append(time.perf_counter() - started)
        if session is not None:
            session.rollback()
    total = sum(latencies)
    return Row(
        name,
        1,
        got // samples,
        samples / total,
        got / total,
        extra={
            "p50_ms": percentile_ms(latencies, 0.5),
            "p99_ms": percentile_ms(latencies, 0.99),
            "store_events": n_events,
        },
    )


def measure_reads(
    engine: Engine, n_events: int, samples: int, log: Callable[[str], None]
) -> list[Row]:
    """Streaming the seeded store, then the latency of reading one tag's 10 events out of it.

    The stream goes first: it reads every page once, so the reads that follow find the store
    in memory, as a store that fits in RAM is in steady state (the peer's smaller store always
    is). Without it the first touch of each page is timed too.
    """
    settle(engine)
    started = time.perf_counter()
    streamed = 0
    with Session(engine) as session:
        for _event in EventStore(session).stream(batch_size=5000):
            streamed += 1
    elapsed = time.perf_counter() - started
    stream_row = Row(
        STREAM_ALL,
        1,
        5000,
        streamed / elapsed / 5000,
        streamed / elapsed,
        extra={"events": streamed, "seconds": round(elapsed, 2)},
    )
    log(fmt(stream_row))
    tags = max(1, n_events // 10)
    with Session(engine) as session:
        store = EventStore(session)

        def one_tag() -> int:
            tag = f"entity:{random.randrange(tags)}"
            result = store.read(Query.of(tags=[tag]))
            assert len(result) == 10, (tag, len(result))
            return len(result)

        read_row = _latency_row(READ_ONE_TAG, one_tag, session, samples, n_events)
    log(fmt(read_row))
    return [read_row, stream_row]


def measure_hot_tag(
    engine: Engine, n_events: int, samples: int, log: Callable[[str], None]
) -> list[Row]:
    """Pages of 100 on the tag every event carries: near the end, from the start, after head."""
    rows = []
    hot = Query.of(tags=[HOT_TAG])
    with Session(engine) as session:
        store = EventStore(session)
        head = session.execute(text("SELECT max(position) FROM dcb.events")).scalar_one()
        session.rollback()
        reads: list[tuple[str, int | None, int]] = [
            (HOT_TAG_NEAR_END, head - 1000, 100),
            (HOT_TAG_START, None, 100),
            (HOT_TAG_POLL, head, 0),
        ]
        for name, after, expected in reads:

            def read(after: int | None = after, expected: int = expected) -> int:
                got = len(store.read(hot, after=after, limit=100))
                assert got == expected, (after, got)
                return got

            rows.append(_latency_row(name, read, session, samples, n_events))
            rows[-1].batch = 100  # the page asked for
            log(fmt(rows[-1]))
    # what a follower pays: a subscription's own poll (one statement at AUTOCOMMIT), timed
    # without the wait for a notification that follows it
    subscription = subscribe(engine, hot, after=head, batch_size=100)
    try:

        def poll() -> int:
            page, _busy = subscription._fetch()
            assert not page, page
            return 0

        rows.append(_latency_row(HOT_TAG_FOLLOWER_POLL, poll, None, samples, n_events))
        rows[-1].batch = 100
        log(fmt(rows[-1]))
    finally:
        subscription.close()  # its listening connection (stop() alone ends only an iteration)
    return rows
