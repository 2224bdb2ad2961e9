"""The benchmark harness.

Append throughput against a plain INSERT+COMMIT baseline on the same server, contended
appends, reads and streaming over a large store, a three-projection decision model.

Results are ratios measured in one run (this library vs the baseline), because absolute numbers
on a shared machine are noise. Writes a table to stdout, JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

from dcb_store import EventStore, Query, migrations
from dcb_store.bench._common import (
    APPEND,
    APPEND_CONDITION,
    APPEND_CONDITION_CONNECTION,
    APPEND_CONNECTION,
    APPEND_LOCK,
    BASELINE,
    CONTENDED,
    DECISION_MODEL,
    READ_ONE_TAG,
    SESSION_BASELINE,
    STREAM_ALL,
    WARM_UP_READS,
    Row,
    fmt,
    percentile_ms,
    recreate_database,
    run_threads,
    settle,
)
from dcb_store.bench.report import summary, write_report
from dcb_store.bench.scenarios import (
    append_op,
    baseline_op,
    contended_op,
    decision_op,
    session_baseline_op,
)
from dcb_store.bench.seed import seed_events

__all__ = ["add_arguments", "run", "run_from_cli"]

BENCH_DB = "dcb_store_bench"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``dcb-store bench``."""
    parser.add_argument("--quick", action="store_true", help="seconds, not minutes (CI smoke run)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--connections", default="1,4,8,16")
    parser.add_argument("--batches", default="1,10,100")
    parser.add_argument("--events", type=int, default=1_000_000, help="store size for read/stream")
    parser.add_argument("--out", default="bench-results", help="directory for JSON and PNG")
    parser.add_argument("--no-peer", action="store_true", help="skip the eventsourcing comparison")
    parser.add_argument(
        "--embedded",
        action="store_true",
        help="run on an embedded PostgreSQL; otherwise --url is required (the benchmark drops "
        f"and recreates the database {BENCH_DB} there; $DATABASE_URL is never used)",
    )


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("SELECT dcb.allow_erasure_v1()"))  # the benchmark's own store
        conn.execute(text("TRUNCATE dcb.events, dcb.key_clocks, bench_plain"))


ROUNDS = 3


def measure_appends(
    engine: Engine,
    conns: list[int],
    batches: list[int],
    duration: float,
    log: Callable[[str], None],
) -> list[Row]:
    """Baseline vs append (no condition / condition / lock: tags) per connections and batch.

    The scenarios of one point take turns, ROUNDS times ``duration / ROUNDS`` seconds each, so a
    slow minute on the shared machine weighs on all of them alike instead of on one.
    """
    scenarios: list[tuple[str, Callable[[Engine, int], Callable[[int], Callable[[], int]]]]] = [
        (BASELINE, baseline_op),
        (SESSION_BASELINE, session_baseline_op),
        (APPEND, lambda e, b: append_op(e, b, "none")),
        (APPEND_CONDITION, lambda e, b: append_op(e, b, "cond")),
        (APPEND_LOCK, lambda e, b: append_op(e, b, "lock")),
    ]
    rows = []
    for batch in batches:
        for n in conns:
            runs: dict[str, list[tuple[int, int, float]]] = {name: [] for name, _ in scenarios}
            for _round in range(ROUNDS):
                for name, make in scenarios:
                    _reset(engine)
                    runs[name].append(run_threads(n, duration / ROUNDS, make(engine, batch)))
            rate = {}
            for name, measured in runs.items():
                ops, events, elapsed = (sum(column) for column in zip(*measured, strict=True))
                rate[name] = (ops / elapsed, events / elapsed)
            base = rate[BASELINE][1]
            session_base = rate[SESSION_BASELINE][1]
            for name, _ in scenarios:
                ops_per_s, events_per_s = rate[name]
                rows.append(Row(name, n, batch, ops_per_s, events_per_s, base))
                if name != BASELINE:
                    rows[-1].session_baseline_events_per_s = session_base
                log(fmt(rows[-1]))
    return rows


def measure_connection_appends(
    engine: Engine, conns: list[int], duration: float, log: Callable[[str], None]
) -> list[Row]:
    """One-event appends through a bare SQLAlchemy Connection instead of a Session.

    The peer library runs on bare pooled connections; this is the same client shape for us.
    """
    rows = []
    for kind, name in (
        ("none", APPEND_CONNECTION),
        ("cond", APPEND_CONDITION_CONNECTION),
    ):
        for n in conns:
            _reset(engine)
            ops, events, elapsed = run_threads(
                n, duration, append_op(engine, 1, kind, on_connection=True)
            )
            rows.append(Row(name, n, 1, ops / elapsed, events / elapsed))
            log(fmt(rows[-1]))
    return rows


def _measure_deciders(
    name: str,
    make_op: Callable[[int], Callable[[int], Callable[[], int]]],
    engine: Engine,
    conns: list[int],
    duration: float,
    log: Callable[[str], None],
) -> list[Row]:
    """Throughput and conflict rate of read-decide-append loops at each connection count."""
    rows = []
    for n in conns:
        ops, events, elapsed = run_threads(n, duration, make_op(n))
        conflict_rate = 1 - events / max(ops, 1)
        rows.append(Row(name, n, 1, ops / elapsed, events / elapsed, None, conflict_rate))
        log(fmt(rows[-1]))
    return rows


def measure_contention(
    engine: Engine, conns: list[int], duration: float, log: Callable[[str], None]
) -> list[Row]:
    """Many writers deciding on one tag: throughput and conflict rate."""
    return _measure_deciders(
        CONTENDED,
        lambda n: contended_op(engine, f"hot:{n}"),
        engine,
        conns,
        duration,
        log,
    )


def measure_decisions(
    engine: Engine, conns: list[int], duration: float, log: Callable[[str], None]
) -> list[Row]:
    """The three-projection decision model, end to end (read, decide, conditional append)."""
    return _measure_deciders(
        DECISION_MODEL,
        lambda n: decision_op(engine),
        engine,
        conns,
        duration,
        log,
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
    latencies = []
    with Session(engine) as session:
        store = EventStore(session)
        for _ in range(WARM_UP_READS):
            store.read(Query.of(tags=[f"entity:{random.randrange(tags)}"]))
            session.rollback()
        for _ in range(samples):
            tag = f"entity:{random.randrange(tags)}"
            started = time.perf_counter()
            result = store.read(Query.of(tags=[tag]))
            latencies.append(time.perf_counter() - started)
            assert len(result) == 10, (tag, len(result))
            session.rollback()
    read_row = Row(
        READ_ONE_TAG,
        1,
        10,
        samples / sum(latencies),
        10 * samples / sum(latencies),
        extra={
            "p50_ms": percentile_ms(latencies, 0.5),
            "p99_ms": percentile_ms(latencies, 0.99),
            "store_events": n_events,
        },
    )
    log(fmt(read_row))
    return [read_row, stream_row]


def _bench_engine(url: str, pool: int) -> Engine:
    recreate_database(url, BENCH_DB)
    bench_url = make_url(url).set(database=BENCH_DB)
    migrations.upgrade(bench_url)
    engine = create_engine(bench_url, pool_size=pool, max_overflow=pool)
    # The baseline's table holds the same rows as dcb.events, with the same columns and indexes
    # (the indexes are part of writing an event that can be found by tag); no triggers, locks
    # or conditions.
    with engine.begin() as conn:
        for statement in (
            "CREATE TABLE bench_plain (position bigserial PRIMARY KEY, "
            "type text NOT NULL CHECK (length(type) BETWEEN 1 AND 255), "
            "tags text[] NOT NULL DEFAULT '{}', data jsonb NOT NULL, metadata jsonb, "
            "id uuid UNIQUE, recorded_at timestamptz NOT NULL DEFAULT now())",
            "CREATE INDEX ON bench_plain USING gin (tags) WITH (fastupdate = off)",
            "CREATE INDEX ON bench_plain (type, position)",
        ):
            conn.execute(text(statement))
    return engine


def run(
    url: str,
    *,
    quick: bool = False,
    duration: float = 3.0,
    conns: list[int] | None = None,
    batches: list[int] | None = None,
    n_events: int = 1_000_000,
    out: str | None = "bench-results",
    peer: bool = True,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """Run every scenario against the server at ``url`` (in a database of its own)."""
    conns = conns or ([1, 4] if quick else [1, 4, 8, 16])
    batches = batches or ([1] if quick else [1, 10, 100])
    duration = 0.5 if quick else duration
    n_events = 20_000 if quick else n_events
    engine = _bench_engine(url, max(conns) + 2)
    rows = measure_appends(engine, conns, batches, duration, log)
    rows += measure_connection_appends(engine, conns, duration, log)
    rows += measure_contention(engine, conns, duration, log)
    rows += measure_decisions(engine, conns, duration, log)
    _reset(engine)
    seed_events(engine, n_events, progress=not quick)
    rows += measure_reads(engine, n_events, 50 if quick else 500, log)
    if peer and not quick:
        from dcb_store.bench.peer import measure_peer  # only when asked: it needs eventsourcing

        rows += measure_peer(url, conns, duration, n_events, log)
    engine.dispose()
    if out:
        write_report(rows, Path(out))
    return rows


def run_from_cli(url: str, args: argparse.Namespace, *, embedded: bool) -> int:
    """``dcb-store bench``."""
    rows = run(
        url,
        quick=args.quick,
        duration=args.duration,
        conns=[int(x) for x in args.connections.split(",")] if not args.quick else None,
        batches=[int(x) for x in args.batches.split(",")] if not args.quick else None,
        n_events=args.events,
        out=args.out,
        peer=not args.no_peer,
    )
    print()
    print(summary(rows))
    print(
        f"\nwrote {args.out}/results.json and {args.out}/throughput.png"
        + (" (embedded server)" if embedded else "")
    )
    return 0
