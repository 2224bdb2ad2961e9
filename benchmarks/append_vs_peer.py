"""Appends against the peer and the INSERT baselines, taking turns in the same rounds.

Every scenario writes one event per unit of work with a unique tag per unit, then commits; the
conditional ones carry an ``AppendCondition`` on that tag (what a decision on a fresh entity
sends). In each round every scenario runs ``--seconds`` at each connection count, in a shuffled
order, so machine noise weighs on all of them alike; the table gives the median over rounds.

Besides events/s, each row gives the CPU one append costs: on the client (this process's CPU
time, all threads) and on the server (the CPU of the scenario's own backends, read from
``/proc/<pid>/stat``, see ``dcb_store.bench._common.backend_cpu``; "-" when the server does not
run on this machine). Background processes (WAL
writer, checkpointer) are not counted, for any scenario.

    python -m benchmarks.append_vs_peer --url postgresql://postgres@127.0.0.1:5432/postgres

The peer is eventsourcing's PostgreSQL DCB recorder (``pip install 'eventsourcing[postgres]'``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from sqlalchemy import URL, Connection, Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

from benchmarks.append_in_server import FLOOR_BODY
from dcb_store import migrations
from dcb_store.bench._common import analyze, backend_pids, recreate_database, run_threads
from dcb_store.bench.peer import append_op, open_peer
from dcb_store.bench.scenarios import appends_on

OURS_DB = "dcb_store_bench_vs_peer"
PEER_DB = "dcb_store_bench_vs_peer_peer"
PEER_GENERIC_DB = "dcb_store_bench_vs_peer_generic"
FLOOR_DB = "dcb_store_bench_vs_peer_floor"
_INSERT = (
    "INSERT INTO bench_plain (type, tags, data) VALUES ('Registered', ARRAY[%s], "
    "'{\"x\": 1}'::jsonb)"
)
_BASELINE_TABLE = """
CREATE TABLE bench_plain (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type text NOT NULL, tags text[] NOT NULL, data jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON bench_plain USING gin (tags);
CREATE INDEX ON bench_plain (type, position);
"""

Op = Callable[[], int]
#: A scenario makes, per thread, an op (and the pid of the backend it uses, when it knows it).
Scenario = Callable[[], tuple[Op, Callable[[], None]]]


@dataclass
class Sample:
    events_per_s: float
    client_us: float
    server_us: float | None  # None: the server does not run on this machine


def _run(admin: str, database: str, n: int, seconds: float, scenario: Scenario) -> Sample:
    made = [scenario() for _ in range(n)]
    try:
        run = run_threads(
            n,
            seconds,
            lambda i: made[i][0],
            backends=lambda: backend_pids(admin, database),
            warm=20,  # plans cached, pool connections open
        )
    finally:
        for _op, close in made:
            close()
    events = max(1, run.events)
    server = None if run.server_s is None else run.server_s / events * 1e6
    return Sample(run.events / run.elapsed, run.client_s / events * 1e6, server)


def _median_or_dash(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    return f"{statistics.median(known):.0f}" if known else "-"


def _closer(owner: Any, engine: Engine) -> Callable[[], None]:
    """Close ``owner``, then the engine's idle connections: a scenario's pool keeps no
    connections between its runs (a dozen scenarios' pools would pass max_connections)."""

    def close() -> None:
        owner.close()
        engine.pool.dispose()  # (engine.dispose() would leave the other threads' to GC)

    return close


def _ours(
    url: str, *, conditional: bool, on_connection: bool, autocommit: bool = False
) -> Scenario:
    """Our appends through a Session or a Connection.

    ``autocommit``: a Connection at AUTOCOMMIT, where each append is a transaction of its own,
    in one round trip.
    """
    engine = create_engine(url, pool_size=10, max_overflow=0, pool_use_lifo=True)
    if autocommit:
        engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    def scenario() -> tuple[Op, Callable[[], None]]:
        owner: Session | Connection = engine.connect() if on_connection else Session(engine)
        return appends_on(owner, 1, "cond" if conditional else "none"), _closer(owner, engine)

    return scenario


def _baseline(url: str, *, session: bool) -> Scenario:
    engine = create_engine(url, pool_size=10, max_overflow=0, pool_use_lifo=True)
    statement = text(_INSERT.replace("%s", ":tag"))

    def scenario() -> tuple[Op, Callable[[], None]]:
        if session:
            s = Session(engine)

            def op() -> int:
                s.execute(statement, {"tag": f"s:{uuid.uuid4()}"})
                s.commit()
                return 1

            return op, _closer(s, engine)
        raw = engine.raw_connection()
        cur = raw.cursor()

        def raw_op() -> int:
            cur.execute(_INSERT, (f"s:{uuid.uuid4()}",))
            raw.commit()
            return 1

        return raw_op, _closer(raw, engine)

    return scenario


_BARE = "SELECT outcome FROM dcb.{fn}(CAST(%s AS jsonb), '{{}}', CAST(%s AS jsonb), NULL)"


def _bare(url: str, fn: str) -> Scenario:
    """A conditional append through bare psycopg calling ``dcb.<fn>``: the SQL function's cost."""
    engine = create_engine(url, pool_size=10, max_overflow=0, pool_use_lifo=True)
    statement = _BARE.format(fn=fn)

    def scenario() -> tuple[Op, Callable[[], None]]:
        raw = engine.raw_connection()
        cur = raw.cursor()

        def op() -> int:
            tag = f"s:{uuid.uuid4()}"
            events = f'[{{"type": "Registered", "tags": ["{tag}"], "data": {{"x": 1}}}}]'
            cur.execute(statement, (events, f'{{"items": [{{"tags": ["{tag}"]}}]}}'))
            row = cur.fetchone()
            assert row is not None
            outcome = row[0]
            raw.commit()
            return int(outcome == "00000")

        return op, _closer(raw, engine)

    return scenario


def _peer(
    url: str, pool: int, database: str, *, generic_plans: bool = False
) -> tuple[Scenario, Scenario, Any] | None:
    opened = open_peer(url, pool + 2, print, database=database, generic_plans=generic_plans)
    if opened is None:
        return None

    def make(conditional: bool) -> Scenario:
        def scenario() -> tuple[Op, Callable[[], None]]:
            return append_op(opened.recorder, conditional), lambda: None

        return scenario

    return make(False), make(True), opened.datastore


def _store(base: URL, name: str, *, revision: str = "heads", sql: str | None = None) -> str:
    """A fresh database ``name`` on ``base``'s server, migrated to ``revision`` and ``sql`` run
    in it; its URL."""
    admin = base.set(drivername="postgresql")
    recreate_database(admin.render_as_string(hide_password=False), name)
    url = base.set(database=name).render_as_string(hide_password=False)
    migrations.upgrade(url, revision)
    if sql is not None:
        dsn = admin.set(database=name).render_as_string(hide_password=False)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql)
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="an admin URL of the server to use")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5)
    parser.add_argument("--conns", default="1,8")
    parser.add_argument(
        "--also-revision",
        default="",
        help="also run our Connection appends on a store migrated only to this revision "
        "(before/after a schema change, in the same rounds)",
    )
    parser.add_argument(
        "--functions",
        default="",
        help="dcb.append_vN functions to compare through bare psycopg, e.g. append_v3,append_v4",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="also run our appends on a store whose append body only inserts (the ceilings)",
    )
    args = parser.parse_args()
    conns = [int(c) for c in args.conns.split(",")]
    base = make_url(args.url).set(drivername="postgresql+psycopg")
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    ours_url = _store(base, OURS_DB, sql=_BASELINE_TABLE)
    scenarios: dict[str, tuple[str, Scenario]] = {
        "INSERT+COMMIT (bare psycopg)": (OURS_DB, _baseline(ours_url, session=False)),
        "INSERT+COMMIT via Session": (OURS_DB, _baseline(ours_url, session=True)),
        "ours plain, Connection": (
            OURS_DB,
            _ours(ours_url, conditional=False, on_connection=True),
        ),
        "ours conditional, Connection": (
            OURS_DB,
            _ours(ours_url, conditional=True, on_connection=True),
        ),
        "ours conditional, Session": (
            OURS_DB,
            _ours(ours_url, conditional=True, on_connection=False),
        ),
        "ours plain, autocommit Connection": (
            OURS_DB,
            _ours(ours_url, conditional=False, on_connection=True, autocommit=True),
        ),
        "ours conditional, autocommit Connection": (
            OURS_DB,
            _ours(ours_url, conditional=True, on_connection=True, autocommit=True),
        ),
    }
    if args.also_revision:
        old_db = OURS_DB + "_old"
        old_url = _store(base, old_db, revision=args.also_revision)
        for conditional in (False, True):
            kind = "conditional" if conditional else "plain"
            scenarios[f"ours {kind}, Connection, {args.also_revision[:4]}"] = (
                old_db,
                _ours(old_url, conditional=conditional, on_connection=True),
            )
    if args.floor:
        floor_url = _store(base, FLOOR_DB, sql=FLOOR_BODY)
        for name, conditional, on_connection, autocommit in (
            ("floor plain, autocommit Connection", False, True, True),
            ("floor conditional, Connection", True, True, False),
            ("floor conditional, Session", True, False, False),
        ):
            scenarios[name] = (
                FLOOR_DB,
                _ours(
                    floor_url,
                    conditional=conditional,
                    on_connection=on_connection,
                    autocommit=autocommit,
                ),
            )
    for fn in filter(None, args.functions.split(",")):
        scenarios[f"bare psycopg, {fn}"] = (OURS_DB, _bare(ours_url, fn))
    peer = _peer(admin, max(conns), PEER_DB)
    tuned = None
    if peer is not None:
        scenarios["peer plain"] = (PEER_DB, peer[0])
        scenarios["peer conditional"] = (PEER_DB, peer[1])
        # The peer at its best: its check statement (PL/pgSQL, parameters) is planned again
        # on every call whenever PostgreSQL's plan cache prefers custom plans, which it does
        # on an analyzed table; one database setting keeps the generic plan.
        tuned = _peer(admin, max(conns), PEER_GENERIC_DB, generic_plans=True)
        if tuned is not None:
            scenarios["peer conditional, generic plans"] = (PEER_GENERIC_DB, tuned[1])
    samples: dict[tuple[str, int], list[Sample]] = {}
    for r in range(args.rounds):
        order = [(name, n) for name in scenarios for n in conns]
        random.shuffle(order)
        for name, n in order:
            database, scenario = scenarios[name]
            samples.setdefault((name, n), []).append(
                _run(admin, database, n, args.seconds, scenario)
            )
        analyze(admin, {database for database, _scenario in scenarios.values()})
        print(f"round {r + 1}/{args.rounds} done", flush=True)
    for opened in (peer, tuned):
        if opened is not None:
            opened[2].close()
    for n in conns:
        print(f"\n{n} connection(s): median of {args.rounds} rounds")
        print(f"{'scenario':<38} {'events/s':>9} {'client µs':>10} {'server µs':>10}")
        med: dict[str, float] = {}
        for name in scenarios:
            got = samples[(name, n)]
            med[name] = statistics.median(s.events_per_s for s in got)
            print(
                f"{name:<38} {med[name]:9.0f} "
                f"{statistics.median(s.client_us for s in got):10.0f} "
                f"{_median_or_dash([s.server_us for s in got]):>10}"
            )
        if "peer conditional" in med:
            print(
                f"ratios: conditional Connection / peer conditional "
                f"{med['ours conditional, Connection'] / med['peer conditional']:.2f}; "
                f"plain / peer plain {med['ours plain, Connection'] / med['peer plain']:.2f}"
            )
        # each round's own ratio: both sides of it ran within seconds of each other
        pairs = [
            ("ours conditional, Connection", "peer conditional"),
            ("ours plain, Connection", "peer plain"),
            ("ours conditional, autocommit Connection", "peer conditional"),
            ("ours plain, autocommit Connection", "peer plain"),
            ("ours conditional, Connection", "peer conditional, generic plans"),
            ("ours conditional, autocommit Connection", "peer conditional, generic plans"),
        ]
        if args.floor:
            pairs += [
                ("floor plain, autocommit Connection", "peer plain"),
                ("floor conditional, Connection", "peer conditional"),
                ("floor conditional, Session", "INSERT+COMMIT (bare psycopg)"),
                ("INSERT+COMMIT via Session", "INSERT+COMMIT (bare psycopg)"),
                ("ours conditional, Session", "INSERT+COMMIT (bare psycopg)"),
            ]
        if args.also_revision:
            rev = args.also_revision[:4]
            pairs += [
                ("ours conditional, Connection", f"ours conditional, Connection, {rev}"),
                ("ours plain, Connection", f"ours plain, Connection, {rev}"),
            ]
        for ours, theirs in pairs:
            if (theirs, n) in samples:
                per_round = sorted(
                    a.events_per_s / b.events_per_s
                    for a, b in zip(samples[(ours, n)], samples[(theirs, n)], strict=True)
                )
                print(
                    f"  {ours} / {theirs}, per round: "
                    + ", ".join(f"{r:.2f}" for r in per_round)
                    + f" (median {statistics.median(per_round):.2f})"
                )
        print(
            f"ratios: conditional Session / INSERT+COMMIT bare "
            f"{med['ours conditional, Session'] / med['INSERT+COMMIT (bare psycopg)']:.2f}"
        )


if __name__ == "__main__":
    main()
