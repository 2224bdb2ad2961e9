"""Reads of two schema revisions, call by call in turns: a before/after of a change to read_v1.

Two stores hold the same seeded events (``--events``, every one with the hot tag
``tenant:hot``, ten per ``entity:<i>`` tag, as the harness seeds them): one migrated to
``--revision`` (the "before"), one to head. Each scenario alternates the two stores on every
read, through ``EventStore`` on a Session (the harness's client shape, LIFO pool), so a slow
moment of the machine falls on both alike. It prints, per round, each store's p50 and the ratio
head ÷ before; the last line of each scenario is the median of the rounds' ratios.

    python -m benchmarks.reads_paired --url postgresql://postgres@127.0.0.1:5432/postgres \\
        --revision 0009_append_cost
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

from dcb_store import EventStore, Query, migrations
from dcb_store.bench._common import recreate_database
from dcb_store.bench.seed import seed_events

HOT = Query.of(tags=["tenant:hot"])
DATABASES = ("dcb_store_bench_reads_before", "dcb_store_bench_reads_head")


def _store(url: str, name: str, revision: str, events: int) -> Engine:
    recreate_database(url, name)
    target = make_url(url).set(database=name)
    migrations.upgrade(target, revision)
    engine = create_engine(target, pool_use_lifo=True)
    seed_events(engine, events, progress=False, hot_tag="tenant:hot")
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) dcb.events"))
    return engine


def _scenarios(events: int) -> dict[str, Callable[[EventStore], int]]:
    tags = max(1, events // 10)
    return {
        "one tag's 10 events": lambda s: len(
            s.read(Query.of(tags=[f"entity:{random.randrange(tags)}"]))
        ),
        "hot tag, page near the end": lambda s: len(s.read(HOT, after=events - 1000, limit=100)),
        "hot tag, page from the start": lambda s: len(s.read(HOT, limit=100)),
        "hot tag, caught-up poll": lambda s: len(s.read(HOT, after=events, limit=100)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="an admin URL of the server")
    parser.add_argument("--revision", required=True, help="the 'before' revision")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reads", type=int, default=400, help="reads per store per round")
    args = parser.parse_args()
    url = str(make_url(args.url).set(drivername="postgresql+psycopg"))
    engines = [
        _store(url, DATABASES[0], args.revision, args.events),
        _store(url, DATABASES[1], "heads", args.events),
    ]
    sessions = [Session(e) for e in engines]
    stores = [EventStore(s) for s in sessions]
    for name, read in _scenarios(args.events).items():
        ratios = []
        for round_ in range(args.rounds):
            times: list[list[float]] = [[], []]
            for i in range(args.reads * 2):
                which = (i + round_) % 2
                started = time.perf_counter()
                read(stores[which])
                times[which].append(time.perf_counter() - started)
                sessions[which].rollback()
            before, head = (statistics.median(t) * 1000 for t in times)
            ratios.append(head / before)
            print(f"{name}: round {round_ + 1}: {before:.3f} ms before, {head:.3f} ms head")
        print(f"{name}: head ÷ before, median of rounds: {statistics.median(ratios):.3f}")
    for session, engine in zip(sessions, engines, strict=True):
        session.close()
        engine.dispose()


if __name__ == "__main__":
    main()
