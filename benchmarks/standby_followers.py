"""Followers on a hot standby (issue #15): the primary's CPU per delivered event, and latency.

Writers append one-event transactions to the primary at a fixed rate for ``--seconds``; two
runs: ``--followers`` subscriptions on the primary, and the same subscriptions reading on a
streaming standby (``replica=``). The followers' CPU is the user + system time
(``/proc/<pid>/stat``) of the server backends of the followers' own connections (their reads,
in-flight checks, heads and fences, LISTEN, flushes), taken after a warm-up and at the end of
each run, per delivered event, on the primary and on the standby. Latency
is commit (the writer's ``commit()`` returned) to delivery (the follower's ``next()``
returned), over every delivered event. ``flushes`` counts the follower-made WAL flushes (a
fence past the primary's flushed WAL). Then a catch-up: ``--history`` events appended
beforehand, the followers read all of them from position 0 (pages of 500), on the primary and
then on the standby: the primary's CPU per delivered event, and the time taken.

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

from sqlalchemy import Engine, create_engine
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dcb_store import Event, EventStore, migrations, subscribe  # noqa: E402
from dcb_store._impl import replica as _replica  # noqa: E402

_flushes = 0
_flush_past = _replica.flush_past


def _counted_flush_past(primary: Engine, fence: int) -> bool:
    global _flushes
    flushed = _flush_past(primary, fence)
    _flushes += flushed
    return flushed


_replica.flush_past = _counted_flush_past  # read_page looks it up at each call

TICKS = os.sysconf("SC_CLK_TCK")


def _tracked_engine(url: str) -> tuple[Engine, set[int]]:
    """An Engine that records the server pid of every connection it opens."""
    engine = create_engine(url, pool_size=20, max_overflow=20)
    pids: set[int] = set()

    @sa_event.listens_for(engine, "connect")
    def _record(dbapi_connection: Any, _record: Any) -> None:
        pids.add(dbapi_connection.info.backend_pid)

    return engine, pids


def _cpu(pids: set[int]) -> dict[int, float]:
    """CPU seconds (user + system) of each live process of ``pids``."""
    seconds = {}
    for pid in list(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the connection was closed
            continue
        seconds[pid] = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    return seconds


def _spent(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def _run(
    urls: tuple[str, str],
    followers: int,
    on_standby: bool,
    seconds: float,
    rate: float,
    writers: int,
) -> dict[str, Any]:
    global _flushes
    _flushes = 0
    writing = create_engine(urls[0], pool_size=20, max_overflow=20)
    primary, primary_pids = _tracked_engine(urls[0])
    standby, standby_pids = _tracked_engine(urls[1])
    with Session(writing) as s:
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
            with Session(writing) as s:
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
    cpu0, scpu0 = _cpu(primary_pids), _cpu(standby_pids)
    measuring.set()
    time.sleep(seconds)
    cpu1, scpu1 = _cpu(primary_pids), _cpu(standby_pids)
    stop.set()
    time.sleep(1)  # the last commits reach the followers
    for sub in subs:
        sub.stop()
    for t in threads:
        t.join(10)
    for engine in (writing, primary, standby):
        engine.dispose()
    in_window = sum(1 for rows in delivered for position, _ in rows if position in committed)
    latencies = [
        (at - committed[position]) * 1000
        for rows in delivered
        for position, at in rows
        if position in committed
    ]
    return {
        "events": len(committed),
        "delivered": in_window,
        "primary_cpu_s": _spent(cpu0, cpu1),
        "standby_cpu_s": _spent(scpu0, scpu1),
        "p50_ms": statistics.median(latencies) if latencies else None,
        "p99_ms": statistics.quantiles(latencies, n=100)[98] if len(latencies) > 100 else None,
        "flushes": _flushes,
    }


def _catch_up(
    urls: tuple[str, str], followers: int, on_standby: bool, until: int
) -> dict[str, Any]:
    primary, primary_pids = _tracked_engine(urls[0])
    standby, standby_pids = _tracked_engine(urls[1])
    subs = [
        subscribe(primary, after=0, replica=standby if on_standby else None)
        for _ in range(followers)
    ]
    counts = [0] * followers

    def follow(i: int) -> None:
        for event in subs[i]:
            counts[i] += 1
            if event.position >= until:
                subs[i].stop()

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(followers)]
    began = time.monotonic()
    for t in threads:
        t.start()
    last: tuple[dict[int, float], dict[int, float]] = ({}, {})
    while any(t.is_alive() for t in threads):  # sampled: a listener's backend ends at stop()
        last = (_cpu(primary_pids), _cpu(standby_pids))
        time.sleep(0.05)
    took = time.monotonic() - began
    for sub in subs:
        sub.close()
    for engine in (primary, standby):
        engine.dispose()
    return {
        "delivered": sum(counts),
        "primary_cpu_s": _spent({}, last[0]),
        "standby_cpu_s": _spent({}, last[1]),
        "seconds": took,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--primary", help="URL of the primary (default: make a pair)")
    parser.add_argument("--standby", help="URL of a streaming standby of it")
    parser.add_argument("--followers", type=int, default=4)
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rate", type=float, default=400.0, help="events per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per run")
    parser.add_argument("--history", type=int, default=100_000, help="events to catch up on")
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
        urls = (primary_url, standby_url)
        primary = create_engine(primary_url)
        with Session(primary) as s:
            for _ in range(args.history // 1000):
                EventStore(s).append([Event("Old", tags=["bench:history"])] * 1000)
                s.commit()
            until = EventStore(s).head() or 0
        if pair is not None:
            pair.wait_for_standby()
        primary.dispose()
        catch_ups = {
            "catch-up on the primary": _catch_up(urls, args.followers, False, until),
            "catch-up on the standby": _catch_up(urls, args.followers, True, until),
        }
        runs = {
            "followers on the primary": _run(
                urls, args.followers, False, args.seconds, args.rate, args.writers
            ),
            "followers on the standby": _run(
                urls, args.followers, True, args.seconds, args.rate, args.writers
            ),
        }
        print(
            f"{args.writers} writers, {args.rate:g} one-event commits/s, {args.followers} "
            f"followers (subscribe, all events), {args.seconds:g} s measured per run"
        )
        print(
            f"{'run':<26} {'events':>7} {'delivered':>9} {'primary CPU s':>13} "
            f"{'primary us/ev':>13} {'standby CPU s':>13} {'p50 ms':>7} {'p99 ms':>7} "
            f"{'flushes':>7}"
        )
        for name, r in runs.items():
            per_event = r["primary_cpu_s"] / r["delivered"] * 1e6
            p50 = f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "-"
            p99 = f"{r['p99_ms']:.1f}" if r["p99_ms"] is not None else "-"
            print(
                f"{name:<26} {r['events']:>7} {r['delivered']:>9} {r['primary_cpu_s']:>13.2f} "
                f"{per_event:>13.1f} {r['standby_cpu_s']:>13.2f} {p50:>7} {p99:>7} "
                f"{r['flushes']:>7}"
            )
        print(f"\ncatch-up: {args.followers} followers read {until:,} events each from 0")
        print(
            f"{'run':<26} {'delivered':>9} {'primary CPU s':>13} {'primary us/ev':>13} "
            f"{'standby CPU s':>13} {'seconds':>7}"
        )
        for name, c in catch_ups.items():
            print(
                f"{name:<26} {c['delivered']:>9} {c['primary_cpu_s']:>13.2f} "
                f"{c['primary_cpu_s'] / c['delivered'] * 1e6:>13.2f} "
                f"{c['standby_cpu_s']:>13.2f} {c['seconds']:>7.1f}"
            )
    finally:
        if pair is not None:
            pair.stop()


if __name__ == "__main__":
    main()
