"""What the benchmark harness and the peer comparison share: rows, threads, scenario names.

A leaf module: it imports nothing else of ``dcb_store.bench``, so the harness, the scenarios,
the report and the peer can all build on it without importing each other.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import psycopg
from psycopg import sql
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError

__all__ = [
    "analyze",
    "APPEND",
    "APPEND_CONDITION",
    "APPEND_AUTOCOMMIT",
    "APPEND_CONDITION_AUTOCOMMIT",
    "APPEND_CONDITION_CONNECTION",
    "APPEND_CONNECTION",
    "APPEND_LOCK",
    "BASELINE",
    "CONTENDED",
    "DECISION_MODEL",
    "HOT_TAG",
    "HOT_TAG_NEAR_END",
    "HOT_TAG_FOLLOWER_POLL",
    "HOT_TAG_POLL",
    "HOT_TAG_START",
    "PEER",
    "PEER_APPEND",
    "PEER_APPEND_CONDITION",
    "PEER_APPEND_CONDITION_GENERIC",
    "PEER_READ_ONE_TAG",
    "READ_ONE_TAG",
    "SESSION_BASELINE",
    "STREAM_ALL",
    "WARM_UP_READS",
    "Row",
    "Run",
    "backend_cpu",
    "backend_pids",
    "fmt",
    "percentile_ms",
    "recreate_database",
    "run_threads",
    "settle",
]

# The scenarios, as the rows, the JSON and the plot name them.
BASELINE = "plain INSERT+COMMIT"
SESSION_BASELINE = "INSERT+COMMIT via Session"
APPEND = "append"
APPEND_CONDITION = "append + condition"
APPEND_LOCK = "append + condition + lock: tags"
APPEND_CONNECTION = "append (Connection)"
APPEND_CONDITION_CONNECTION = "append + condition (Connection)"
# a Connection at AUTOCOMMIT: each append its own transaction, in one round trip
APPEND_AUTOCOMMIT = "append (autocommit Connection)"
APPEND_CONDITION_AUTOCOMMIT = "append + condition (autocommit Connection)"
CONTENDED = "contended (one tag)"
DECISION_MODEL = "decision model (3 projections)"
READ_ONE_TAG = "read one tag's 10 events"
HOT_TAG = "tenant:hot"  # the tag every seeded event carries
HOT_TAG_NEAR_END = "hot tag: page of 100 near the end"
HOT_TAG_START = "hot tag: page of 100 from the start"
HOT_TAG_POLL = "hot tag: caught-up poll (after = head)"
HOT_TAG_FOLLOWER_POLL = "hot tag: a subscription's caught-up poll"
STREAM_ALL = "stream all events (pages of 5,000)"
PEER = "peer: "  # the prefix of the peer library's scenarios
PEER_APPEND = PEER + "eventsourcing append"
PEER_APPEND_CONDITION = PEER_APPEND + " + condition"
# the peer at its best: its database set to plan_cache_mode = force_generic_plan (its check
# statement is otherwise planned again on every call once its tables are analyzed)
PEER_APPEND_CONDITION_GENERIC = PEER_APPEND_CONDITION + ", generic plans"
PEER_READ_ONE_TAG = PEER + READ_ONE_TAG


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
    #: CPU one op (one append) cost: this process (all threads), and the server backends of the
    #: scenario's database (None when the server does not run on this machine).
    client_us_per_op: float | None = None
    server_us_per_op: float | None = None

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


class Run(NamedTuple):
    """What one ``run_threads`` measured; the CPU seconds cover the timed span only."""

    ops: int
    events: int
    elapsed: float
    client_s: float
    server_s: float | None


_TICK = os.sysconf("SC_CLK_TCK")


def backend_cpu(pids: list[int]) -> float | None:
    """CPU seconds (user + system) the given server processes have used so far.

    None when none of them is a PostgreSQL process of this machine (a remote server).
    """
    total, seen = 0, False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                comm, fields = f.read().split(" (", 1)[1].rsplit(")", 1)
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        if comm.startswith("postgres"):
            rest = fields.split()
            total += int(rest[11]) + int(rest[12])
            seen = True
    return total / _TICK if seen else None


def backend_pids(url: str, database: str) -> list[int]:
    """The pids of the client backends on ``database``, except the one asking."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'",
            (database,),
        ).fetchall()
    return [r[0] for r in rows]


def run_threads(
    n: int,
    duration: float,
    make_op: Callable[[int], Callable[[], int]],
    backends: Callable[[], list[int]] | None = None,
    warm: int = 2,
) -> Run:
    """Run ``n`` threads for ``duration`` s; each op returns events written (0 = conflict).

    Each thread first makes ``warm`` untimed ops (its connection open, plans cached); the
    server backends of ``backends()`` are then looked up and their CPU measured.
    """
    ops = [0] * n
    events = [0] * n
    ready = threading.Barrier(n + 1)
    go = threading.Event()
    stop = threading.Event()

    def worker(i: int) -> None:
        op = make_op(i)
        for _ in range(warm):
            op()
        ready.wait()
        go.wait()
        while not stop.is_set():
            written = op()
            ops[i] += 1
            events[i] += written

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    pids = backends() if backends else []
    server0 = backend_cpu(pids)
    client0 = time.process_time()
    started = time.perf_counter()
    go.set()
    time.sleep(duration)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    client = time.process_time() - client0
    server1 = backend_cpu(pids)
    server = server1 - server0 if server0 is not None and server1 is not None else None
    return Run(sum(ops), sum(events), elapsed, client, server)


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


def percentile_ms(seconds: list[float], fraction: float) -> float:
    """The ``fraction`` percentile of latencies in seconds, in milliseconds (3 decimals)."""
    ordered = sorted(seconds)
    return round(ordered[int(len(ordered) * fraction)] * 1000, 3)


def analyze(url: str, names: Iterable[str]) -> None:
    """ANALYZE the databases ``names`` of the server at ``url``, as autovacuum would.

    The benchmarks' tables are new and grow as they run; on a server with autovacuum off (this
    project's machine) nothing else gives the planner statistics, and the peer's tag lookups
    ran as sequential scans. After each round, every store is analyzed alike.
    """
    for name in names:
        engine = create_engine(make_url(url).set(database=name), isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("ANALYZE"))
        engine.dispose()


def recreate_database(url: str, name: str, *, settings: dict[str, str] | None = None) -> None:
    """Drop (forcing its sessions out) and create the database ``name`` on the server at ``url``.

    ``settings`` become the database's own defaults (``ALTER DATABASE ... SET``), in force for
    every session opened on it afterwards.
    """
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    database = sql.Identifier(name)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(database))
        for setting, value in (settings or {}).items():
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    database, sql.Identifier(setting), sql.Literal(value)
                )
            )


def fmt(row: Row) -> str:
    """One row as a line of the table printed while the benchmark runs."""
    ratio = f"{row.ratio:6.0%}" if row.ratio is not None else "     -"
    if row.session_ratio is not None:
        ratio += f" (via Session {row.session_ratio:4.0%})"
    conflict = f"{row.conflict_rate:5.0%}" if row.conflict_rate is not None else "    -"
    extra = " ".join(f"{k}={v}" for k, v in row.extra.items())
    cpu = ""
    if row.client_us_per_op is not None:
        server = "-" if row.server_us_per_op is None else f"{row.server_us_per_op:.0f}"
        cpu = f"  cpu/op client {row.client_us_per_op:.0f} µs server {server} µs"
    return (
        f"{row.scenario:<38} conns={row.connections:>2} batch={row.batch:>4} "
        f"{row.ops_per_s:9.0f} ops/s {row.events_per_s:9.0f} ev/s  "
        f"vs baseline {ratio}  conflicts {conflict}{cpu} {extra}".rstrip()
    )
