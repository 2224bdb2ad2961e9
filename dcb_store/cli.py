"""The ``dcb-store`` command line: upgrade, sql, demo, locks, tail, bench.

The target database is ``--url``, else ``DATABASE_URL``; ``demo`` and ``bench`` fall back to an
embedded PostgreSQL when neither is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from sqlalchemy import create_engine

__all__ = ["main"]


def _url(args: argparse.Namespace, *, embedded_fallback: bool) -> tuple[str, object | None]:
    from dcb_store import embedded, migrations

    url = args.url or os.environ.get("DATABASE_URL")
    if url:
        return str(migrations.normalize_url(url)), None
    if not embedded_fallback:
        raise SystemExit("dcb-store: set DATABASE_URL or pass --url")
    print("DATABASE_URL is not set: starting an embedded PostgreSQL ...", file=sys.stderr)
    return embedded.start()


def _cmd_upgrade(args: argparse.Namespace) -> int:
    from dcb_store import migrations

    url, _server = _url(args, embedded_fallback=False)
    migrations.upgrade(url, args.revision)
    print(f"dcb_store schema is at {args.revision}")
    return 0


def _cmd_sql(args: argparse.Namespace) -> int:
    from alembic import command
    from dcb_store import migrations

    cfg = migrations.alembic_config()
    cfg.set_main_option("sqlalchemy.url", "postgresql+psycopg://")
    command.upgrade(cfg, f"base:{args.revision}", sql=True)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from dcb_store import migrations
    from dcb_store.demo import run_demo

    url, _server = _url(args, embedded_fallback=True)
    migrations.upgrade(url)
    engine = create_engine(url, pool_size=args.students + 2)
    counts = run_demo(engine, students=args.students, capacity=args.capacity)
    engine.dispose()
    return 0 if counts.get("subscribed") == args.capacity else 1


def _cmd_locks(args: argparse.Namespace) -> int:
    from sqlalchemy.orm import Session

    from dcb_store import EventStore

    url, _server = _url(args, embedded_fallback=False)
    engine = create_engine(url)
    try:
        while True:
            with Session(engine) as session:
                locks = EventStore(session).lock_stats()
            print(f"{time.strftime('%H:%M:%S')}  {len(locks)} dcb_store advisory locks")
            for lock in locks:
                wait = f"waiting {lock.wait_seconds:.2f}s" if not lock.granted else "held"
                print(f"  pid {lock.pid:>7} {lock.kind:<17} {lock.mode:<14} {wait:<16} {lock.key}")
            if not args.watch:
                return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        engine.dispose()


def _cmd_tail(args: argparse.Namespace) -> int:
    from dcb_store.following import subscribe
    from dcb_store.queries import Query

    url, _server = _url(args, embedded_fallback=False)
    engine = create_engine(url)
    query = (
        Query.of(types=args.type or (), tags=args.tag or ()) if (args.type or args.tag) else None
    )
    sub = subscribe(engine, query, after=args.after, poll_interval=args.poll)
    shown = 0
    try:
        for event in sub:
            tags = ",".join(event.tags)
            print(
                f"{event.position:>10}  {event.type:<24} [{tags}] {json.dumps(event.data)}",
                flush=True,
            )
            shown += 1
            if args.count and shown >= args.count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        sub.close()
        engine.dispose()
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from dcb_store.bench.harness import run_from_cli

    url, server = _url(args, embedded_fallback=True)
    return run_from_cli(url, args, embedded=server is not None)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dcb-store``."""
    parser = argparse.ArgumentParser(prog="dcb-store", description=__doc__)
    parser.add_argument("--url", help="database URL (default: $DATABASE_URL)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("upgrade", help="migrate the database to the current dcb_store schema")
    p.add_argument("revision", nargs="?", default="heads")
    p.set_defaults(func=_cmd_upgrade)

    p = sub.add_parser("sql", help="print the migration SQL for a DBA (offline, no database)")
    p.add_argument("revision", nargs="?", default="heads")
    p.set_defaults(func=_cmd_sql)

    p = sub.add_parser(
        "demo", help="students race for the seats of a course (embedded server if no URL)"
    )
    p.add_argument("--students", type=int, default=12)
    p.add_argument("--capacity", type=int, default=5)
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("locks", help="show the library's advisory locks, held and awaited")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=float, default=1.0)
    p.set_defaults(func=_cmd_locks)

    p = sub.add_parser("tail", help="print events as they are appended (catches up first)")
    p.add_argument("--after", type=int, default=None, help="start after this position")
    p.add_argument("--type", action="append", help="only events of this type (repeatable)")
    p.add_argument("--tag", action="append", help="only events carrying this tag (repeatable)")
    p.add_argument("--count", type=int, default=0, help="stop after this many events")
    p.add_argument("--poll", type=float, default=5.0, help="polling fallback interval, seconds")
    p.set_defaults(func=_cmd_tail)

    p = sub.add_parser("bench", help="run the benchmarks (table, JSON, PNG plot)")
    from dcb_store.bench.harness import add_arguments

    add_arguments(p)
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dcb-store`` command."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
