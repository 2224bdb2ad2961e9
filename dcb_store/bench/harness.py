"""The benchmark harness.

Append throughput against a plain INSERT+COMMIT baseline on the same server, contended
appends, reads and streaming over a large store, a three-projection decision model.

Results are ratios measured in one run (this library vs the baseline), because absolute numbers
on a shared machine are noise. Writes a table to stdout, JSON and a PNG plot.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    ConcurrencyError,
    Event,
    EventStore,
    Projection,
    Query,
    migrations,
)
from dcb_store.bench.seed import seed_events

__all__ = ["add_arguments", "run", "run_from_cli"]

BENCH_DB = "dcb_store_bench"


@dataclass
class Row:
    """One measured scenario."""

    scenario: str
    connections: int
    batch: int
    ops_per_s: float
    events_per_s: float
    baseline_events_per_s: float | None = None
    conflict_rate: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    session_baseline_events_per_s: float | None = None

    @property
    def ratio(self) -> float | None:
        """Events/s relative to the plain INSERT+COMMIT baseline (bare driver)."""
        if not self.baseline_events_per_s:
            return None
        return self.events_per_s / self.baseline_events_per_s

    @property
    def session_ratio(self) -> float | None:
        """Events/s relative to the same INSERT+COMMIT run through a SQLAlchemy Session."""
        if not self.session_baseline_events_per_s:
            return None
        return self.events_per_s / self.session_baseline_events_per_s


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


def _threads(
    n: int, duration: float, make_op: Callable[[int], Callable[[], int]]
) -> tuple[int, int, float]:
    """Run ``n`` threads for ``duration`` s; each op returns events written (0 = conflict)."""
    ops = [0] * n
    events = [0] * n
    conflicts = [0] * n
    barrier = threading.Barrier(n + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        op = make_op(i)
        barrier.wait()
        while not stop.is_set():
            written = op()
            ops[i] += 1
            if written:
                events[i] += written
            else:
                conflicts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return sum(ops), sum(events), elapsed


_PLAIN_INSERT = (
    "INSERT INTO bench_plain (type, tags, data) "
    "SELECT 'Registered', ARRAY[t], '{\"x\": 1}'::jsonb FROM unnest(%s::text[]) t"
)


def _baseline_op(engine: Engine, batch: int) -> Callable[[int], Callable[[], int]]:
    """The physical baseline: the same rows through the bare driver, then COMMIT."""

    def make(_i: int) -> Callable[[], int]:
        raw = engine.raw_connection()
        cur = raw.cursor()

        def op() -> int:
            cur.execute(_PLAIN_INSERT, ([f"s:{uuid.uuid4()}" for _ in range(batch)],))
            raw.commit()
            return batch

        return op

    return make


def _session_baseline_op(engine: Engine, batch: int) -> Callable[[int], Callable[[], int]]:
    """The same INSERT+COMMIT through a SQLAlchemy Session, the client stack the store runs on.

    The store cannot be faster than its host's Session; the ratio to this baseline is what the
    library itself costs.
    """
    statement = text(_PLAIN_INSERT.replace("%s", "CAST(:tags AS text[])"))

    def make(_i: int) -> Callable[[], int]:
        session = Session(engine)

        def op() -> int:
            session.execute(statement, {"tags": [f"s:{uuid.uuid4()}" for _ in range(batch)]})
            session.commit()
            return batch

        return op

    return make


def _append_op(
    engine: Engine, batch: int, kind: str, *, on_connection: bool = False
) -> Callable[[int], Callable[[], int]]:
    """Appends of unrelated events; through a Session, or a bare Connection when asked."""

    def make(_i: int) -> Callable[[], int]:
        session: Session | Connection = engine.connect() if on_connection else Session(engine)
        store = EventStore(session)

        def op() -> int:
            tags = [f"s:{uuid.uuid4()}" for _ in range(batch)]
            prefix = "lock:" if kind == "lock" else ""
            events = [Event("Registered", {"x": 1}, [prefix + t]) for t in tags]
            cond = None if kind == "none" else AppendCondition(Query.of(tags=[tags[0]]))
            store.append(events, cond)
            session.commit()
            return batch

        return op

    return make


def _commit_or_conflict(session: Session, append: Callable[[], object]) -> int:
    """Append and commit: 1 event written, or 0 when the decision lost a race."""
    try:
        append()
        session.commit()
        return 1
    except ConcurrencyError:
        session.rollback()
        return 0


def _contended_op(engine: Engine, tag: str) -> Callable[[int], Callable[[], int]]:
    def make(i: int) -> Callable[[], int]:
        session = Session(engine)
        store = EventStore(session, lock_timeout=10)
        query = Query.of(tags=[tag])

        def op() -> int:
            head = store.read(query, backwards=True, limit=1).head
            return _commit_or_conflict(
                session,
                lambda: store.append(
                    Event("Bumped", {"w": i}, [tag]), AppendCondition(query, head)
                ),
            )

        return op

    return make


def _decision_op(engine: Engine) -> Callable[[int], Callable[[], int]]:
    """Three projections answered by one read: course capacity, seats taken, student load."""

    def make(i: int) -> Callable[[], int]:
        session = Session(engine)
        store = EventStore(session, lock_timeout=10)

        def op() -> int:
            course = f"course:{random.randint(0, 999)}"
            student = f"student:{i}-{random.randint(0, 99_999)}"
            capacity = Projection(
                Query.of(types=["CourseDefined"], tags=[course]),
                10**6,
                lambda _c, e: e.data["capacity"],
            )
            seats = Projection(
                Query.of(types=["StudentSubscribed"], tags=[course]), 0, lambda n, _e: n + 1
            )
            load = Projection(
                Query.of(types=["StudentSubscribed"], tags=[student]), 0, lambda n, _e: n + 1
            )
            (cap, taken, mine), condition = store.project([capacity, seats, load])
            if taken >= cap or mine >= 10:  # the decision
                session.rollback()
                return 0
            return _commit_or_conflict(
                session,
                lambda: store.append(Event("StudentSubscribed", {}, [course, student]), condition),
            )

        return op

    return make


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
        ("plain INSERT+COMMIT", _baseline_op),
        ("INSERT+COMMIT via Session", _session_baseline_op),
        ("append", lambda e, b: _append_op(e, b, "none")),
        ("append + condition", lambda e, b: _append_op(e, b, "cond")),
        ("append + condition + lock: tags", lambda e, b: _append_op(e, b, "lock")),
    ]
    rows = []
    for batch in batches:
        for n in conns:
            runs: dict[str, list[tuple[int, int, float]]] = {name: [] for name, _ in scenarios}
            for _round in range(ROUNDS):
                for name, make in scenarios:
                    _reset(engine)
                    runs[name].append(_threads(n, duration / ROUNDS, make(engine, batch)))
            rate = {}
            for name, measured in runs.items():
                ops, events, elapsed = (sum(column) for column in zip(*measured, strict=True))
                rate[name] = (ops / elapsed, events / elapsed)
            base = rate["plain INSERT+COMMIT"][1]
            session_base = rate["INSERT+COMMIT via Session"][1]
            for name, _ in scenarios:
                ops_per_s, events_per_s = rate[name]
                rows.append(Row(name, n, batch, ops_per_s, events_per_s, base))
                if name != "plain INSERT+COMMIT":
                    rows[-1].session_baseline_events_per_s = session_base
                log(_fmt(rows[-1]))
    return rows


def measure_connection_appends(
    engine: Engine, conns: list[int], duration: float, log: Callable[[str], None]
) -> list[Row]:
    """One-event appends through a bare SQLAlchemy Connection instead of a Session.

    The peer library runs on bare pooled connections; this is the same client shape for us.
    """
    rows = []
    for kind, name in (
        ("none", "append (Connection)"),
        ("cond", "append + condition (Connection)"),
    ):
        for n in conns:
            _reset(engine)
            ops, events, elapsed = _threads(
                n, duration, _append_op(engine, 1, kind, on_connection=True)
            )
            rows.append(Row(name, n, 1, ops / elapsed, events / elapsed))
            log(_fmt(rows[-1]))
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
        ops, events, elapsed = _threads(n, duration, make_op(n))
        conflict_rate = 1 - events / max(ops, 1)
        rows.append(Row(name, n, 1, ops / elapsed, events / elapsed, None, conflict_rate))
        log(_fmt(rows[-1]))
    return rows


def measure_contention(
    engine: Engine, conns: list[int], duration: float, log: Callable[[str], None]
) -> list[Row]:
    """Many writers deciding on one tag: throughput and conflict rate."""
    return _measure_deciders(
        "contended (one tag)",
        lambda n: _contended_op(engine, f"hot:{n}"),
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
        "decision model (3 projections)",
        lambda n: _decision_op(engine),
        engine,
        conns,
        duration,
        log,
    )


#: Reads made and not timed before latencies are recorded (plans cached, connection warm).
WARM_UP_READS = 50


def settle(engine: Engine) -> None:
    """VACUUM (ANALYZE) a freshly loaded database, then CHECKPOINT when allowed.

    Reads are then timed in a steady state (hint bits and the visibility map set, statistics
    current, no checkpoint of the load in the middle), the same for this library and the peer.
    """
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE)"))
        with contextlib.suppress(DBAPIError):  # a role without pg_checkpoint settles without
            conn.execute(text("CHECKPOINT"))


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
        "stream all events (pages of 5,000)",
        1,
        5000,
        streamed / elapsed / 5000,
        streamed / elapsed,
        extra={"events": streamed, "seconds": round(elapsed, 2)},
    )
    log(_fmt(stream_row))
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
    latencies.sort()
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[int(len(latencies) * 0.99)] * 1000
    read_row = Row(
        "read one tag's 10 events",
        1,
        10,
        samples / sum(latencies),
        10 * samples / sum(latencies),
        extra={"p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "store_events": n_events},
    )
    log(_fmt(read_row))
    return [read_row, stream_row]


def _fmt(row: Row) -> str:
    ratio = f"{row.ratio:6.0%}" if row.ratio is not None else "     -"
    if row.session_ratio is not None:
        ratio += f" (via Session {row.session_ratio:4.0%})"
    conflict = f"{row.conflict_rate:5.0%}" if row.conflict_rate is not None else "    -"
    extra = " ".join(f"{k}={v}" for k, v in row.extra.items())
    return (
        f"{row.scenario:<38} conns={row.connections:>2} batch={row.batch:>4} "
        f"{row.ops_per_s:9.0f} ops/s {row.events_per_s:9.0f} ev/s  "
        f"vs baseline {ratio}  conflicts {conflict} {extra}"
    )


def _bench_engine(url: str, pool: int) -> Engine:
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{BENCH_DB}"'))
    admin.dispose()
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
        from dcb_store.bench.peer import measure_peer

        rows += measure_peer(url, conns, duration, n_events, log)
    engine.dispose()
    if out:
        write_report(rows, Path(out))
    return rows


def write_report(rows: list[Row], out: Path) -> None:
    """JSON with every row and the machine, and a PNG of throughput against connections."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": __import__("os").cpu_count(),
        },
        "rows": [
            {
                **asdict(r),
                "ratio_to_baseline": r.ratio,
                "ratio_to_session_baseline": r.session_ratio,
            }
            for r in rows
        ],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - the bench extra is optional
        return
    fig, ax = plt.subplots(figsize=(10, 5.5))
    scenarios = sorted(
        {
            r.scenario
            for r in rows
            if r.batch == 1 and len({x.connections for x in rows if x.scenario == r.scenario}) > 1
        }
    )
    colors = iter(plt.get_cmap("tab10")(i) for i in range(10))
    for scenario in scenarios:
        points = sorted(
            (r.connections, r.events_per_s) for r in rows if r.scenario == scenario and r.batch == 1
        )
        # baselines black, the peer dotted, this library solid in colour
        if "INSERT+COMMIT" in scenario:
            style: dict[str, Any] = {
                "color": "black",
                "linestyle": "-" if "plain" in scenario else "--",
            }
        else:
            dotted = scenario.startswith("peer")
            style = {"color": next(colors), "linestyle": ":" if dotted else "-"}
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        ax.plot(xs, ys, marker="o", label=scenario, **style)
    ax.set_xlabel("connections")
    ax.set_ylabel("events/s (one event per append)")
    ax.set_title("dcb_store append throughput vs plain INSERT+COMMIT, same server")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)


def summary(rows: list[Row]) -> str:
    """The target checks of the benchmark issue, from measured rows."""

    def find(s: str, n: int, b: int = 1) -> Row | None:
        return next(
            (r for r in rows if r.scenario == s and r.connections == n and r.batch == b), None
        )

    lines = []
    for n in (1, 8):
        r = find("append + condition", n)
        if r and r.ratio is not None:
            via = f", {r.session_ratio:.0%} of it via Session" if r.session_ratio else ""
            lines.append(
                f"conditional append vs baseline at {n} conn: {r.ratio:.0%}{via} (target >= 80%)"
            )
    r1, r8 = find("append + condition", 1), find("append + condition", 8)
    if r1 and r8:
        lines.append(
            f"8 connections vs 1: {r8.events_per_s / r1.events_per_s:.2f}x (target >= 2.5x)"
        )
    for n in (1, 8):
        c, lk = find("append + condition", n), find("append + condition + lock: tags", n)
        if c and lk:
            lines.append(
                f"lock: tags cost at {n} conn: "
                f"{1 - lk.events_per_s / c.events_per_s:.0%} (target <= 10%)"
            )
    rd = next((r for r in rows if r.scenario.startswith("read one tag")), None)
    if rd:
        lines.append(
            f"read one tag's 10 of {rd.extra['store_events']:,}: p50 {rd.extra['p50_ms']} ms, "
            f"p99 {rd.extra['p99_ms']} ms (target p50 < 1 ms)"
        )
    st = next((r for r in rows if r.scenario.startswith("stream")), None)
    if st:
        lines.append(f"streaming: {st.events_per_s:,.0f} events/s (target >= 100,000)")
    return "\n".join(lines)


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
