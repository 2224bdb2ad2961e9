"""The commands behind ``dcb-store`` (the parser is in :mod:`dcb_store.cli`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from dcb_store import migrations
from dcb_store._impl.stores import check_schema, quoted
from dcb_store.errors import DcbStoreError, SchemaMissingError, UnreadableEventError


def describe(exc: BaseException) -> str:
    """One line saying what went wrong."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        message = str(exc.orig)
    elif isinstance(exc, (DcbStoreError, SQLAlchemyError, OSError)):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc} (run with --debug for the traceback)"
    return " ".join(line.strip() for line in message.splitlines() if line.strip())


def _url(args: argparse.Namespace, *, embedded_fallback: bool) -> tuple[str, Any]:
    from dcb_store import embedded

    url = args.url or os.environ.get("DATABASE_URL")
    if url:
        parsed = make_url(migrations.normalize_url(url))
        if "connect_timeout" not in parsed.query:  # an unreachable host fails in 10 s
            parsed = parsed.update_query_dict({"connect_timeout": "10"})
        return parsed.render_as_string(hide_password=False), None
    if not embedded_fallback:
        raise DcbStoreError("no database: set DATABASE_URL or pass --url")
    print("DATABASE_URL is not set: starting an embedded PostgreSQL ...", file=sys.stderr)
    return embedded.start(hint="or set DATABASE_URL / pass --url")


def _engine_with_schema(url: str, schema: str = "dcb", **options: Any) -> Engine:
    """An Engine on ``url``, after checking that the database has the store's schema."""
    table = f"{quoted(schema)}.events"
    engine = create_engine(url, **options)
    try:
        with engine.connect() as conn:
            present = conn.execute(
                text("SELECT pg_catalog.to_regclass(:t) IS NOT NULL"), {"t": table}
            ).scalar_one()
    except BaseException:
        engine.dispose()
        raise
    if not present:
        engine.dispose()
        where = "" if schema == "dcb" else f" {schema!r}"
        flag = "" if schema == "dcb" else f" --schema {schema}"
        raise SchemaMissingError(
            f"this database has no dcb_store schema{where}: run `dcb-store upgrade{flag}` first"
        )
    return engine


def _which(args: argparse.Namespace) -> str:
    """`` "billing"`` for a store other than the default (after checking its name)."""
    return "" if check_schema(args.schema) == "dcb" else f' "{args.schema}"'


def upgrade(args: argparse.Namespace) -> int:
    """``dcb-store upgrade [REVISION]``."""
    url, _server = _url(args, embedded_fallback=False)
    migrations.upgrade(url, args.revision, schema=args.schema)
    target = migrations.head() if args.revision in ("head", "heads") else args.revision
    print(f"dcb_store schema{_which(args)} is at {target}")
    return 0


def downgrade(args: argparse.Namespace) -> int:
    """``dcb-store downgrade REVISION [--force]``."""
    url, _server = _url(args, embedded_fallback=False)
    migrations.downgrade(url, args.revision, force=args.force, schema=args.schema)
    print(f"dcb_store schema{_which(args)} is at {args.revision}")
    return 0


def sql(args: argparse.Namespace) -> int:
    """``dcb-store sql [REVISION] [--from REVISION]``."""
    migrations.write_sql(sys.stdout, args.revision, start=args.start, schema=args.schema)
    return 0


def demo(args: argparse.Namespace) -> int:
    """``dcb-store demo``."""
    from dcb_store.demo import run_demo

    if args.capacity > args.students:
        raise DcbStoreError(
            f"--capacity {args.capacity} is more than --students {args.students}: "
            "nobody would have to race"
        )
    url, _server = _url(args, embedded_fallback=True)
    migrations.upgrade(url, schema=args.schema)
    engine = create_engine(url, pool_size=args.students + 2)
    try:
        counts = run_demo(
            engine, students=args.students, capacity=args.capacity, schema=args.schema
        )
    finally:
        engine.dispose()
    return 0 if counts.get("subscribed") == args.capacity else 1


def locks(args: argparse.Namespace) -> int:
    """``dcb-store locks [--watch]``."""
    from sqlalchemy.orm import Session

    from dcb_store import EventStore

    url, _server = _url(args, embedded_fallback=False)
    engine = _engine_with_schema(url, args.schema)
    try:
        while True:
            with Session(engine) as session:
                held = EventStore(session, schema=args.schema).lock_stats()
            print(f"{time.strftime('%H:%M:%S')}  {len(held)} dcb_store advisory locks")
            for lock in held:
                wait = f"waiting {lock.wait_seconds:.2f}s" if not lock.granted else "held"
                print(f"  pid {lock.pid:>7} {lock.kind:<17} {lock.mode:<14} {wait:<16} {lock.key}")
            if not args.watch:
                return 0
            time.sleep(args.interval)
    finally:
        engine.dispose()


def tail(args: argparse.Namespace) -> int:
    """``dcb-store tail``."""
    from dcb_store.following import subscribe
    from dcb_store.queries import Query

    url, _server = _url(args, embedded_fallback=False)
    engine = _engine_with_schema(url, args.schema)
    query = (
        Query.of(types=args.type or (), tags=args.tag or ()) if (args.type or args.tag) else None
    )
    replica = None
    if args.replica_url:  # events read on a hot standby; heads, fences and LISTEN on --url
        try:
            replica = _engine_with_schema(
                _url(argparse.Namespace(url=args.replica_url), embedded_fallback=False)[0],
                args.schema,
            )
        except BaseException:
            engine.dispose()
            raise
    # the subscription reconnects by itself after a lost connection (nothing skipped or repeated)
    sub = subscribe(
        engine,
        query,
        after=args.after,
        poll_interval=args.poll,
        replica=replica,
        replica_timeout=args.replica_timeout,
        schema=args.schema,
    )
    shown = 0
    try:
        while not args.count or shown < args.count:
            try:
                event = next(sub)
            except StopIteration:  # pragma: no cover - only stop() ends a subscription
                break
            except UnreadableEventError as exc:  # shown, and passed over: never silently
                print(f"{exc.position:>10}  (unreadable: {exc.reason})", flush=True)
                sub.position = exc.position
            else:
                tags = ",".join(event.tags)
                print(
                    f"{event.position:>10}  {event.type:<24} [{tags}] {json.dumps(event.data)}",
                    flush=True,
                )
            shown += 1
    finally:
        sub.close()
        engine.dispose()
        if replica is not None:
            replica.dispose()
    return 0


def embedded_url(args: argparse.Namespace) -> int:
    """``dcb-store embedded-url``: a fresh database on the embedded server, kept running."""
    from dcb_store import embedded

    url, _server = embedded.fresh_database(args.database, keep_running=True)
    print(url)
    return 0


def bench(args: argparse.Namespace) -> int:
    """``dcb-store bench``."""
    from dcb_store.bench.harness import run_from_cli

    # The benchmark drops and creates a database of its own on the server: never on a server
    # picked up from the environment, only on one named here.
    if args.url and args.embedded:
        raise DcbStoreError("bench: pass --url or --embedded, not both")
    if args.embedded:
        from dcb_store import embedded

        url, _server = embedded.start(hint="or pass --url")
    elif args.url:
        url, _server = _url(args, embedded_fallback=False)
    else:
        raise DcbStoreError(
            "bench needs an explicit target: it drops and recreates the database "
            "dcb_store_bench on that server; pass --url URL or --embedded ($DATABASE_URL is "
            "not used)"
        )
    return run_from_cli(url, args, embedded=bool(args.embedded))
