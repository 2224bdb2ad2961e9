"""The benchmark harness.

Append throughput against a plain INSERT+COMMIT baseline and the peer library on the same
server (all taking turns in the same rounds, with the CPU each append costs on the client and
the server), contended appends, reads, hot-tag pages and streaming over a large store, a
three-projection decision model.

Results are ratios measured in one run (this library vs the baseline), because absolute numbers
on a shared machine are noise. Writes a table to stdout, JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, create_engine, make_url, text

from dcb_store import migrations
from dcb_store.bench._common import (
    CONTENDED,
    DECISION_MODEL,
    HOT_TAG,
    Row,
    fmt,
    recreate_database,
    run_threads,
)
from dcb_store.bench.appends import measure_appends, reset
from dcb_store.bench.reads import measure_hot_tag, measure_reads
from dcb_store.bench.report import summary, write_report
from dcb_store.bench.scenarios import contended_op, decision_op
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
        ops, events, elapsed, *_cpu = run_threads(n, duration, make_op(n))
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


def _bench_engine(url: str, pool: int) -> Engine:
    recreate_database(url, BENCH_DB)
    bench_url = make_url(url).set(database=BENCH_DB)
    migrations.upgrade(bench_url)
    # LIFO: a unit of work gets the connection the last one used, whose backend is warm
    # (docs/usage.md, "The engine"; FIFO rotates every pooled backend and costs up to a third
    # more server CPU per append)
    engine = create_engine(bench_url, pool_size=pool, max_overflow=pool, pool_use_lifo=True)
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
    the_peer = tuned = None
    if peer:
        from dcb_store.bench.peer import PEER_GENERIC_DB, open_peer  # it needs eventsourcing

        the_peer = open_peer(url, max(conns) + 2, log)
        if the_peer is not None:
            tuned = open_peer(
                url, max(conns) + 2, log, database=PEER_GENERIC_DB, generic_plans=True
            )
    else:
        log("peer: --no-peer given; its rows are skipped")
    try:
        rows = measure_appends(engine, url, conns, batches, duration, log, the_peer, tuned)
        rows += measure_contention(engine, conns, duration, log)
        rows += measure_decisions(engine, conns, duration, log)
        reset(engine)
        seed_events(engine, n_events, progress=not quick, hot_tag=HOT_TAG)
        samples = 50 if quick else 500
        rows += measure_reads(engine, n_events, samples, log)
        rows += measure_hot_tag(engine, n_events, samples, log)
        if the_peer is not None:
            from dcb_store.bench.peer import measure_peer_reads

            rows += measure_peer_reads(the_peer, url, n_events, log)
    finally:
        for opened in (the_peer, tuned):
            if opened is not None:
                opened.datastore.close()
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
