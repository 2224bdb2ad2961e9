"""What conditions at every isolation level cost: revision 0005 (key clocks) against the
current head (write traces and the snapshot probe), side by side in one run.

Two databases on one server, one migrated to 0005_fast_paths, one to head; the scenarios take
turns in rounds so machine noise weighs on both alike. Each unit of work is a decision (read the
writer's own tag, append one event conditioned on it, commit) or a plain append, through bare
psycopg calling the SQL functions directly (the same Python cost on both sides).

    python benchmarks/conditions_cost.py --url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid

import psycopg

from dcb_store import migrations

READ = "SELECT head FROM dcb.read_v1(%s::jsonb, 0, 0, false) LIMIT 1"
APPEND = {
    "0005": "SELECT outcome, last_position FROM dcb.append_v2(%s::jsonb, '{}', %s::jsonb, 5000)",
    "head": "SELECT outcome, last_position FROM dcb.append_v3(%s::jsonb, '{}', %s::jsonb, 5000)",
}


def _database(admin: str, name: str, revision: str) -> str:
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = admin.rsplit("/", 1)[0] + "/" + name
    migrations.upgrade(url, revision)
    return url


def _worker(url: str, version: str, level: str, conditional: bool, stop: float, out: list[int]):
    tag = f"w:{uuid.uuid4().hex[:8]}"
    events = json.dumps([{"type": "E", "tags": [tag, "tenant:t"], "data": {}}])
    items = json.dumps([{"tags": [tag]}])
    n = 0
    with psycopg.connect(url) as conn:
        conn.isolation_level = {
            "RC": psycopg.IsolationLevel.READ_COMMITTED,
            "RR": psycopg.IsolationLevel.REPEATABLE_READ,
        }[level]
        while time.monotonic() < stop:
            condition = None
            if conditional:
                head = conn.execute(READ, (items,)).fetchone()[0]
                condition = json.dumps({"items": [{"tags": [tag]}], "after": head})
            outcome, _ = conn.execute(APPEND[version], (events, condition)).fetchone()
            conn.commit()
            n += outcome == "00000"
    out.append(n)


def _run(url: str, version: str, level: str, conditional: bool, clients: int, secs: float) -> float:
    out: list[int] = []
    stop = time.monotonic() + secs
    threads = [
        threading.Thread(target=_worker, args=(url, version, level, conditional, stop, out))
        for _ in range(clients)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(out) / secs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="an admin URL of the server to use")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every scenario")
    parser.add_argument("--seconds", type=float, default=1.5, help="seconds per scenario run")
    args = parser.parse_args()
    urls = {
        "0005": _database(args.url, "dcb_bench_v5", "0005_fast_paths"),
        "head": _database(args.url, "dcb_bench_head", "heads"),
    }
    scenarios = [
        (level, conditional, clients)
        for conditional in (True, False)
        for level in ("RC", "RR")
        for clients in (1, 4)
    ]
    totals: dict[tuple[str, str, bool, int], float] = {}
    for _ in range(args.rounds):
        for level, conditional, clients in scenarios:
            for version in ("0005", "head"):
                key = (version, level, conditional, clients)
                rate = _run(urls[version], version, level, conditional, clients, args.seconds)
                totals[key] = totals.get(key, 0.0) + rate / args.rounds
    print("| unit of work | level | clients | 0005 (clocks) /s | 0006 (traces) /s | ratio |")
    print("|---|---|---|---|---|---|")
    for level, conditional, clients in scenarios:
        old = totals[("0005", level, conditional, clients)]
        new = totals[("head", level, conditional, clients)]
        kind = "read + conditional append + commit" if conditional else "plain append + commit"
        print(f"| {kind} | {level} | {clients} | {old:,.0f} | {new:,.0f} | {new / old:.2f} |")


if __name__ == "__main__":
    main()
