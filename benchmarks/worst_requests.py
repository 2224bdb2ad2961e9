"""The most expensive requests the limits allow, timed on a store of 1,000,000 events.

Issue #13 asks that no single request within dcb_store.limits costs more than 100 ms of server
time on 1M events. Each shape is sent to the SQL functions directly (as a caller bypassing
Python could) and timed on the client over a local connection (server time plus a round trip);
the median of 5 runs is reported.

    python benchmarks/worst_requests.py --url postgresql://postgres@127.0.0.1:5432/postgres
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

READ = "SELECT count(*) FROM dcb.read_v1(%s::jsonb, 0, 100, false)"
APPEND = "SELECT outcome FROM dcb.append_v5(%s::jsonb, '{}', %s::jsonb, 5000)"


def _shapes(n: int) -> dict[str, tuple[str, tuple[str, ...]]]:
    rare_types = [f"Rare{i}" for i in range(100)]
    event = json.dumps([{"type": "E", "tags": [f"x:{i}" for i in range(100)], "data": {}}])
    one = json.dumps([{"type": "E", "tags": ["x:1"], "data": {}}])
    return {
        "read: 100 tag items, one of them the hot tag": (
            READ,
            (json.dumps([{"tags": [f"entity:{i}"]} for i in range(100)]),),
        ),
        "read: 100 items x 100 absent types": (
            READ,
            (json.dumps([{"types": rare_types} for _ in range(100)]),),
        ),
        "read: 100 items x 100 tags (AND)": (
            READ,
            (
                json.dumps(
                    [
                        {"tags": [f"seed:{(i * 100 + j) * 7 % n}" for j in range(100)]}
                        for i in range(100)
                    ]
                ),
            ),
        ),
        "read: 100 items of the common type": (
            READ,
            (json.dumps([{"types": ["Seeded"], "tags": [f"seed:{i}"]} for i in range(100)]),),
        ),
        "read: all events, backwards": (
            "SELECT count(*) FROM dcb.read_v1('[{}]', 0, 100, true)",
            (),
        ),
        "append: 100 tags, condition of 100 tag items (one hot)": (
            APPEND,
            (
                event,
                json.dumps({"items": [{"tags": [f"entity:{i}"]} for i in range(100)], "after": n}),
            ),
        ),
        "append: condition of 100 items x 100 absent types": (
            APPEND,
            (one, json.dumps({"items": [{"types": rare_types} for _ in range(100)], "after": 0})),
        ),
        "read: the hot tag with an absent type": (
            READ,
            (json.dumps([{"tags": ["entity:0"], "types": ["Absent"]}]),),
        ),
        "append: condition on the hot tag with an absent type, after 0": (
            APPEND,
            (one, json.dumps({"items": [{"tags": ["entity:0"], "types": ["Absent"]}], "after": 0})),
        ),
        "append: condition on the common type, after 0": (
            APPEND,
            (one, json.dumps({"items": [{"types": ["Seeded"]}], "after": 0})),
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="an admin URL of the server to use")
    parser.add_argument("--events", type=int, default=1_000_000, help="events to seed")
    args = parser.parse_args()
    name = "dcb_bench_worst"
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = args.url.rsplit("/", 1)[0] + "/" + name
    migrations.upgrade(url)
    engine = create_engine(str(migrations.normalize_url(url)))
    # every event carries entity:0 (a hot tag, as a tenant tag would be) and a tag of its own
    seed_events(engine, args.events, progress=False, per_tag=args.events)
    engine.dispose()
    print("| request | median ms (5 runs) |")
    print("|---|---|")
    with psycopg.connect(url) as conn:
        for label, (sql, params) in _shapes(args.events).items():
            times = []
            for _ in range(5):
                started = time.perf_counter()
                conn.execute(sql, params).fetchall()
                times.append((time.perf_counter() - started) * 1000)
                conn.rollback()  # appends leave nothing behind
            print(f"| {label} | {statistics.median(times):.1f} |")
    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
