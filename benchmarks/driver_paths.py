"""The store's two paths, in turns: on the psycopg connection, or through ``Connection.execute``.

For each client shape it alternates blocks of appends (and reads) on the driver path with
blocks forced through SQLAlchemy (a no-op ``before_cursor_execute`` listener, which is what
sends a statement there), on one connection, and prints the median client CPU and wall time
per call:

- a sync Connection of an Engine made by ``engine.execution_options(isolation_level=
  "AUTOCOMMIT")`` (it carries an ``engine_connect`` listener; before round eight that alone
  sent its statements through SQLAlchemy);
- an async Connection of ``create_async_engine`` (the async store takes the driver path since
  round eight), in a transaction committed after each call.

    python -m benchmarks.driver_paths --url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from dcb_store import AppendCondition, AsyncEventStore, Event, EventStore, Query, migrations
from dcb_store.bench._common import recreate_database

DB = "dcb_store_bench_driver_paths"
PATHS = ("driver", "SQLAlchemy")


def _noop(*_args: Any) -> None:
    """A listener that only makes SQLAlchemy run the statement."""


def _event() -> tuple[Event, AppendCondition]:
    tag = f"s:{uuid.uuid4()}"
    return Event("Registered", {"x": 1}, [tag]), AppendCondition(Query.of(tags=[tag]))


def _sync_rounds(engine: Engine, rounds: int, n: int) -> dict[tuple[str, str], list[Any]]:
    results: dict[tuple[str, str], list[Any]] = {}
    auto = engine.execution_options(isolation_level="AUTOCOMMIT")
    for _ in range(rounds):
        for path in PATHS:
            if path == "SQLAlchemy":
                event.listen(auto, "before_cursor_execute", _noop)
            with auto.connect() as conn:
                for name, call in _sync_calls(EventStore(conn)).items():
                    results.setdefault((name, path), []).append(_timed(call, n))
            if path == "SQLAlchemy":
                event.remove(auto, "before_cursor_execute", _noop)
    return results


def _sync_calls(store: EventStore) -> dict[str, Callable[[], object]]:
    return {
        "conditional append": lambda: store.append(*_event()),
        "read": lambda: store.read(Query.of(tags=["s:none"])),
    }


def _async_calls(conn: AsyncConnection) -> dict[str, Callable[[], Awaitable[None]]]:
    store = AsyncEventStore(conn)

    async def append() -> None:
        await store.append(*_event())
        await conn.commit()

    async def read() -> None:
        await store.read(Query.of(tags=["s:none"]))
        await conn.commit()

    return {"conditional append": append, "read": read}


def _timed(call: Callable[[], object], n: int) -> tuple[float, float]:
    for _ in range(n // 10):
        call()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        call()
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


async def _async_rounds(url: str, rounds: int, n: int) -> dict[tuple[str, str], list[Any]]:
    results: dict[tuple[str, str], list[Any]] = {}
    engine = create_async_engine(url)
    for _ in range(rounds):
        for path in PATHS:
            if path == "SQLAlchemy":
                event.listen(engine.sync_engine, "before_cursor_execute", _noop)
            async with engine.connect() as conn:
                for name, call in _async_calls(conn).items():
                    results.setdefault((name, path), []).append(await _timed_async(call, n))
            if path == "SQLAlchemy":
                event.remove(engine.sync_engine, "before_cursor_execute", _noop)
    await engine.dispose()
    return results


async def _timed_async(call: Callable[[], Awaitable[None]], n: int) -> tuple[float, float]:
    for _ in range(n // 10):
        await call()
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await call()
    return (time.process_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


def _print(title: str, results: dict[tuple[str, str], list[Any]]) -> None:
    print(title)
    for (name, path), samples in results.items():
        cpu = statistics.median(s[0] for s in samples)
        wall = statistics.median(s[1] for s in samples)
        print(f"  {name:<20} {path:<11} client CPU {cpu:6.0f} µs   wall {wall:6.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="an admin URL of the server")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("-n", type=int, default=300, help="calls per block")
    args = parser.parse_args()
    recreate_database(args.url, DB)
    url = make_url(args.url).set(database=DB).set(drivername="postgresql+psycopg")
    migrations.upgrade(url)
    engine = create_engine(url)
    try:
        _print(
            "sync Connection, engine.execution_options(isolation_level='AUTOCOMMIT')",
            _sync_rounds(engine, args.rounds, args.n),
        )
        _print(
            "async Connection, a transaction per call",
            asyncio.run(_async_rounds(url.render_as_string(False), args.rounds, args.n)),
        )
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
