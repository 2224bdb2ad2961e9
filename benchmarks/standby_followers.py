"""Followers on a hot standby (issue #15): the primary's CPU per delivered event, and latency.

Writers append one-event transactions to the primary at a fixed rate for ``--seconds``; three
runs: writers alone, writers with ``--followers`` subscriptions on the primary, and the same
subscriptions reading on a streaming standby (``replica=``). The primary's CPU is the user +
system time (``/proc/<pid>/stat``) of every process of its cluster (backends, WAL writer, WAL
sender...), taken after a warm-up and at the end of each run; the followers' share is a run's
CPU minus the writers-alone run's, per delivered event. The standby's CPU is shown too. Latency
is commit (the writer's ``commit()`` returned) to delivery (the follower's ``next()``
returned), over every delivered event.

By default it makes its own primary and standby (the test suite's helper, tests/replication.py,
with default server settings); or pass both URLs, on this machine (for /proc):

    python benchmarks/standby_followers.py
    python benchmarks/standby_followers.py --primary URL --standby URL
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcb_store import Event, EventStore, migrations, subscribe  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def _cluster_cpu(engine: Engine) -> float:
    """CPU seconds (user + system) of every process of the server ``engine`` connects to."""
    with engine.connect() as conn:
        backend = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    postmaster = int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == postmaster or int(entry) == postmaster:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def _run(
    primary: Engine,
    standby: Engine,
    followers: int,
    on_standby: bool,
    seconds: float,
    rate: float,
    writers: int,
) -> dict[str, Any]:
    with Session(primary) as s:
        start = EventStore(s).head() or 0
    committed: dict[int, float] = {}
    delivered: list[list[tuple[int, float]]] = [[] for _ in range(followers)]
    subs = [
        subscribe(primary, after=start, replica=standby if on_standby else None)
        for _ in range(followers)
    ]
    stop = threading.Event()
    measuring = threading.Event()

    def write() -> None:
        interval = writers / rate
        next_at = time.monotonic()
        while not stop.is_set():
            with Session(primary) as s:
                position = EventStore(s).append(Event("Tick", tags=["bench:standby"]))
                s.commit()
            if measuring.is_set():
                committed[position] = time.monotonic()
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def follow(i: int) -> None:
        for event in subs[i]:
            delivered[i].append((event.position, time.monotonic()))

    threads = [threading.Thread(target=write) for _ in range(writers)]
    threads += [threading.Thread(target=follow, args=(i,)) for i in range(followers)]
    for t in threads:
        t.start()
    time.sleep(2)  # warm-up: connections open, followers caught up
    cpu0, scpu0 = _cluster_cpu(primary), _cluster_cpu(standby)
    measuring.set()
    time.sleep(seconds)
    cpu1, scpu1 = _cluster_cpu(primary), _cluster_cpu(standby)
    stop.set()
    time.sleep(1)  # the last commits reach the followers
    for sub in subs:
        sub.stop()
    for t in threads:
        t.join(10)
    latencies = [
        (at - committed[position]) * 1000
        for rows in delivered
        for position, at in rows
        if position in committed
    ]
    return {
        "events": len(committed),
        "delivered": len(latencies),
        "primary_cpu_s": cpu1 - cpu0,
        "standby_cpu_s": scpu1 - scpu0,
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": statistics.quantiles(latencies, n=100)[98] if len(latencies) > 100 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--primary", help="URL of the primary (default: make a pair)")
    parser.add_argument("--standby", help="URL of a streaming standby of it")
    parser.add_argument("--followers", type=int, default=4)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=400.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    args = parser.parse_args()
    pair = None
    if args.primary and args.standby:
        primary_url, standby_url = args.primary, args.standby
    else:
        from tests.replication import start_pair

        pair, why = start_pair(testing=False)
        if pair is None:
            raise SystemExit(f"cannot make a primary and a standby here: {why}")
        primary_url, standby_url = pair.primary_url, pair.standby_url
    try:
        migrations.upgrade(primary_url)
        if pair is not None:
            pair.wait_for_standby()
        primary = create_engine(primary_url, pool_size=20, max_overflow=20)
        standby = create_engine(standby_url, pool_size=20, max_overflow=20)
        base = _run(primary, standby, 0, False, args.seconds, args.rate, args.writers)
        runs = {
            "writers only": base,
            "followers on the primary": _run(
                primary, standby, args.followers, False, args.seconds, args.rate, args.writers
            ),
            "followers on the standby": _run(
                primary, standby, args.followers, True, args.seconds, args.rate, args.writers
            ),
        }
        print(
            f"{args.writers} writers, {args.rate:g} one-event commits/s, {args.followers} "
            f"followers (subscribe, all events), {args.seconds:g} s measured per run"
        )
        print(
            f"{'run':<26} {'events':>7} {'delivered':>9} {'primary CPU s':>13} "
            f"{'followers us/ev':>15} {'standby CPU s':>13} {'p50 ms':>7} {'p99 ms':>7}"
        )
        for name, r in runs.items():
            extra = r["primary_cpu_s"] - base["primary_cpu_s"] * r["events"] / base["events"]
            per_event = extra / r["delivered"] * 1e6 if r["delivered"] else float("nan")
            p50 = f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "-"
            p99 = f"{r['p99_ms']:.1f}" if r["p99_ms"] is not None else "-"
            print(
                f"{name:<26} {r['events']:>7} {r['delivered']:>9} {r['primary_cpu_s']:>13.2f} "
                f"{per_event:>15.1f} {r['standby_cpu_s']:>13.2f} {p50:>7} {p99:>7}"
            )
        primary.dispose()
        standby.dispose()
    finally:
        if pair is not None:
            pair.stop()


if __name__ == "__main__":
    main()
