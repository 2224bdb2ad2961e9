"""Reads and hot-tag decisions against the peer, taking turns in the same rounds.

Both stores hold the same events: each carries ``tenant:hot`` (one tag on every event, as a
tenant or a busy account would be) and ``entity:<i>`` (10 events per entity), with one of 10
types. Both are read through their Python APIs (ours: ``EventStore`` on a Connection; the
peer: its recorder), and in each round every scenario runs ``--runs`` times for us, then for the
peer (the order alternates between rounds); the table gives the median latency over all runs.

    python -m benchmarks.reads_vs_peer --url postgresql://postgres@127.0.0.1:5432/postgres

The peer is eventsourcing's PostgreSQL DCB recorder (``pip install 'eventsourcing[postgres]'``).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import create_engine, make_url

from dcb_store import AppendCondition, Event, EventStore, Query, QueryItem, migrations
from dcb_store.bench._common import recreate_database, settle
from dcb_store.bench.peer import open_recorder

OURS_DB = "dcb_store_bench_reads"
PEER_DB = "dcb_store_bench_reads_peer"
TYPES = [f"Type{i}" for i in range(10)]


def _seed_ours(url: str, n: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute("DROP INDEX dcb.events_tags_gin")
        conn.execute("DROP INDEX dcb.events_type_position")
        with conn.cursor().copy("COPY dcb.events (type, tags, data) FROM STDIN") as copy:
            for i in range(n):
                copy.write_row((TYPES[i % 10], ["tenant:hot", f"entity:{i // 10}"], "{}"))
        conn.execute(
            "CREATE INDEX events_tags_gin ON dcb.events USING gin (tags) WITH (fastupdate = off)"
        )
        conn.execute("CREATE INDEX events_type_position ON dcb.events (type, position)")


def _seed_peer(recorder: Any, n: int) -> None:
    from eventsourcing.dcb.api import DCBEvent

    for start in range(0, n, 2000):
        recorder.append(
            [
                DCBEvent(TYPES[i % 10], b"{}", ["tenant:hot", f"entity:{i // 10}"])
                for i in range(start, min(n, start + 2000))
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="an admin URL of the server to use")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    from eventsourcing.dcb.api import DCBAppendCondition, DCBEvent, DCBQuery, DCBQueryItem
    from eventsourcing.persistence import IntegrityError

    n = args.events
    base = make_url(args.url).set(drivername="postgresql")
    admin = base.render_as_string(hide_password=False)
    ours_url = base.set(database=OURS_DB).render_as_string(hide_password=False)
    recreate_database(admin, OURS_DB)
    recreate_database(admin, PEER_DB)
    migrations.upgrade(ours_url)
    started = time.perf_counter()
    _seed_ours(ours_url, n)
    print(f"seeded ours: {n} events in {time.perf_counter() - started:.0f} s", flush=True)
    recorder, datastore = open_recorder(admin, PEER_DB, 4)
    started = time.perf_counter()
    _seed_peer(recorder, n)
    print(f"seeded the peer: {n} events in {time.perf_counter() - started:.0f} s", flush=True)
    engine = create_engine(base.set(drivername="postgresql+psycopg", database=OURS_DB))
    peer_engine = create_engine(base.set(drivername="postgresql+psycopg", database=PEER_DB))
    for e in (engine, peer_engine):
        settle(e)
    peer_engine.dispose()
    conn = engine.connect()
    store = EventStore(conn)
    entities = n // 10
    near_end = n - 1_000

    def entity() -> str:
        return f"entity:{random.randrange(entities)}"

    def ours_stream(query: Query | None, total: int) -> None:
        for got, _event in enumerate(store.stream(query, batch_size=1000), 1):
            if got >= total:
                break

    def peer_stream(items: list[Any], total: int) -> None:
        after, got = 0, 0
        while got < total:
            page = list(recorder.read(DCBQuery(items) if items else None, after=after, limit=1000))
            if not page:
                break
            got += len(page)
            after = page[-1].position

    stream_total = min(n, 100_000)
    hot_tag = "tenant:hot"

    def ours_hot_append() -> None:
        head = store.read(Query.of(tags=[hot_tag]), backwards=True, limit=1).head
        store.append(
            Event(TYPES[0], {}, [hot_tag, entity()]),
            AppendCondition(Query.of(tags=[hot_tag]), head),
        )
        conn.rollback()

    def ours_cold_append() -> None:
        tag = entity()
        head = store.read(Query.of(tags=[tag]), backwards=True, limit=1).head
        store.append(Event(TYPES[0], {}, [tag]), AppendCondition(Query.of(tags=[tag]), head))
        conn.rollback()

    def peer_append(tag: str) -> None:
        query = DCBQuery([DCBQueryItem(tags=[tag])])
        # the peer's way: read what the query matches (the decision folds it) with the head
        response = recorder.read(query)
        list(response)
        with contextlib.suppress(IntegrityError):
            recorder.append(
                [DCBEvent(TYPES[0], b"{}", [tag])], DCBAppendCondition(query, response.head)
            )

    scenarios: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
        "cold tag: its 10 events": (
            lambda: store.read(Query.of(tags=[entity()])),
            lambda: list(recorder.read(DCBQuery([DCBQueryItem(tags=[entity()])]))),
        ),
        "hot tag: page of 100 near the end": (
            lambda: store.read(Query.of(tags=[hot_tag]), after=near_end, limit=100),
            lambda: list(
                recorder.read(DCBQuery([DCBQueryItem(tags=[hot_tag])]), after=near_end, limit=100)
            ),
        ),
        "hot tag: page of 100 from the start": (
            lambda: store.read(Query.of(tags=[hot_tag]), limit=100),
            lambda: list(recorder.read(DCBQuery([DCBQueryItem(tags=[hot_tag])]), limit=100)),
        ),
        "hot tag: caught-up poll (after = head)": (
            lambda: store.read(Query.of(tags=[hot_tag]), after=n, limit=100),
            lambda: list(
                recorder.read(DCBQuery([DCBQueryItem(tags=[hot_tag])]), after=n, limit=100)
            ),
        ),
        "100 items (one entity each)": (
            lambda: store.read(Query([QueryItem(tags=[entity()]) for _ in range(100)])),
            lambda: list(
                recorder.read(DCBQuery([DCBQueryItem(tags=[entity()]) for _ in range(100)]))
            ),
        ),
        "type + hot tag: page of 100": (
            lambda: store.read(Query.of(types=[TYPES[3]], tags=[hot_tag]), limit=100),
            lambda: list(
                recorder.read(DCBQuery([DCBQueryItem(types=[TYPES[3]], tags=[hot_tag])]), limit=100)
            ),
        ),
        "decision on the hot tag (read head, append, rollback)": (
            ours_hot_append,
            lambda: peer_append(hot_tag),
        ),
        "decision on a cold tag (read head, append, rollback)": (
            ours_cold_append,
            lambda: peer_append(entity()),
        ),
        f"stream the hot tag ({stream_total:,} events)": (
            lambda: ours_stream(Query.of(tags=[hot_tag]), stream_total),
            lambda: peer_stream([DCBQueryItem(tags=[hot_tag])], stream_total),
        ),
        f"stream everything ({stream_total:,} events)": (
            lambda: ours_stream(None, stream_total),
            lambda: peer_stream([], stream_total),
        ),
    }
    times: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        for name, (ours, peer) in scenarios.items():
            # the peer's hot-tag decision reads every event of the tag: a few runs say enough
            runs = 3 if name.startswith(("stream", "decision on the hot")) else args.runs
            sides = [("ours", ours), ("peer", peer)]
            if r % 2:
                sides.reverse()
            for side, op in sides:
                op()  # warm
                for _ in range(runs):
                    t0 = time.perf_counter()
                    op()
                    times.setdefault((name, side), []).append(time.perf_counter() - t0)
            conn.rollback()
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    print(f"\n{n:,} events, median latency (ms); streams also in events/s")
    print(f"{'scenario':<56} {'ours':>9} {'peer':>9} {'peer/ours':>9}")
    for name in scenarios:
        ours_ms = statistics.median(times[(name, "ours")]) * 1000
        peer_ms = statistics.median(times[(name, "peer")]) * 1000
        line = f"{name:<56} {ours_ms:9.2f} {peer_ms:9.2f} {peer_ms / ours_ms:9.2f}"
        if name.startswith("stream"):
            line += f"   ours {stream_total / ours_ms * 1000:,.0f} ev/s"
            line += f", peer {stream_total / peer_ms * 1000:,.0f} ev/s"
        print(line)
    conn.close()
    datastore.close()


if __name__ == "__main__":
    main()
