"""Reads and conditions on a hot tag (issue #14): one tag carried by every event of 1,000,000.

Each event carries ``entity:0`` (the hot tag, as a tenant tag would be) and ``seed:<i>`` (a tag
of its own). Timed on the client over a local connection through the SQL functions, median of
``--runs`` calls; streaming is pages of 1,000 read until 200,000 events have come back.

    python benchmarks/hot_tag.py --url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import psycopg
from sqlalchemy import create_engine

from dcb_store import migrations
from dcb_store.bench.seed import seed_events

READ = "SELECT position FROM dcb.read_v1(%s::jsonb, %s, %s, %s)"
APPEND = "SELECT outcome FROM dcb.append_v5(%s::jsonb, '{}', %s::jsonb, 5000)"
HOT = json.dumps([{"tags": ["entity:0"]}])
EVENT = json.dumps([{"type": "E", "tags": ["entity:0", "seed:new"], "data": {}}])


def _median_ms(conn: psycopg.Connection, sql: str, params: tuple[object, ...], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        conn.execute(sql, params).fetchall()
        times.append((time.perf_counter() - started) * 1000)
        conn.rollback()
    return statistics.median(times)


def _stream(conn: psycopg.Connection, items: str, total: int) -> float:
    started = time.perf_counter()
    after, seen = 0, 0
    while seen < total:
        rows = conn.execute(READ, (items, after, 1000, False)).fetchall()
        if not rows or rows[0][0] is None:
            break
        seen += len(rows)
        after = rows[-1][0]
    conn.rollback()
    return seen / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="an admin URL of the server to use")
    parser.add_argument("--events", type=int, default=1_000_000, help="events to seed")
    parser.add_argument("--runs", type=int, default=20, help="calls per timing")
    parser.add_argument("--keep", action="store_true", help="reuse the seeded database if present")
    args = parser.parse_args()
    n, name = args.events, "dcb_bench_hot"
    url = args.url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(args.url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not (args.keep and exists):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
            exists = None
    if not exists:
        migrations.upgrade(url)
        engine = create_engine(str(migrations.normalize_url(url)))
        seed_events(engine, n, progress=False, per_tag=n)
        engine.dispose()
    runs = args.runs
    with psycopg.connect(url) as conn:
        head = conn.execute("SELECT max(position) FROM dcb.events").fetchone()[0]
        rare = json.dumps([{"tags": [f"seed:{n // 2}"]}])
        many = json.dumps([{"tags": [f"seed:{i * (n // 100)}"]} for i in range(100)])
        cond_hot = json.dumps({"items": [{"tags": ["entity:0"]}], "after": head})
        cond_cold = json.dumps({"items": [{"tags": ["seed:new"]}], "after": head})
        rows = {
            "page of 100 on the hot tag, after near the end": (READ, (HOT, head - 500, 100, False)),
            "page of 100 on the hot tag, after 0": (READ, (HOT, 0, 100, False)),
            "page of 100 on the hot tag, backwards": (READ, (HOT, 0, 100, True)),
            "caught-up follower's poll on the hot tag": (READ, (HOT, head, 100, False)),
            "cold tag (1 event)": (READ, (rare, 0, None, False)),
            "cold tag, page of 100 from 0 (a hot tag in the statistics)": (
                READ,
                (rare, 0, 100, False),
            ),
            "hot tag with an absent type, page of 100": (
                READ,
                (json.dumps([{"tags": ["entity:0"], "types": ["Absent"]}]), 0, 100, False),
            ),
            "100 items, one cold tag each": (READ, (many, 0, None, False)),
            "conditional append on the hot tag": (APPEND, (EVENT, cond_hot)),
            "conditional append on a cold tag": (APPEND, (EVENT, cond_cold)),
        }
        print("| measurement | median |")
        print("|---|---|")
        for label, (sql, params) in rows.items():
            print(f"| {label} | {_median_ms(conn, sql, params, runs):.2f} ms |")
        hot = _stream(conn, HOT, min(200_000, n))
        everything = _stream(conn, json.dumps([{}]), min(200_000, n))
        print(f"| stream the hot tag | {hot:,.0f} events/s |")
        print(f"| stream everything | {everything:,.0f} events/s |")
        print(f"| hot / everything | {hot / everything:.2f} |")


if __name__ == "__main__":
    main()
