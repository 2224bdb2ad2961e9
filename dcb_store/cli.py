"""The ``dcb-store`` command line: upgrade, downgrade, sql, demo, locks, tail, embedded-url, bench.

The target database is ``--url``, else ``DATABASE_URL`` (``postgres://``, ``postgresql://`` and
``postgresql+<driver>://`` are all accepted; the command connects with psycopg 3). ``demo``
falls back to an embedded PostgreSQL when neither is set. ``bench``, which drops and recreates
databases of its own, needs ``--url`` or ``--embedded`` (never ``DATABASE_URL``). ``tail``
reconnects after a lost connection. Options may come before or
after the command. Errors are one line on stderr and exit status 1 (``--debug`` shows the
traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dcb_store import _cli_commands as commands

__all__ = ["build_parser", "main"]


def _common(*, suppress: bool) -> argparse.ArgumentParser:
    """``--url``, ``--schema`` and ``--debug``, accepted before and after the command."""
    common = argparse.ArgumentParser(add_help=False)
    default = argparse.SUPPRESS if suppress else None
    common.add_argument(
        "--url",
        default=default,
        help="database URL, e.g. postgresql://user@host:5432/db (default: $DATABASE_URL)",
    )
    common.add_argument(
        "--schema",
        default=argparse.SUPPRESS if suppress else "dcb",
        help="the store's schema, when several stores share the database (default: dcb)",
    )
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="show the traceback of an error",
    )
    return common


def _positive(maximum: int) -> type[int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
        if not 1 <= number <= maximum:
            raise argparse.ArgumentTypeError(f"must be between 1 and {maximum}, not {number}")
        return number

    return parse  # type: ignore[return-value]


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not 0 < number <= 3600:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 3600, not {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``dcb-store``."""
    parser = argparse.ArgumentParser(
        prog="dcb-store", description=__doc__, parents=[_common(suppress=False)]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common(suppress=True)]

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=common)

    p = command("upgrade", "migrate the database to the current dcb_store schema")
    p.add_argument("revision", nargs="?", default="heads", help="target revision (default: heads)")
    p.set_defaults(func=commands.upgrade)

    p = command("downgrade", "revert the dcb_store schema to an earlier revision")
    p.add_argument("revision", help="target revision; 'base' removes the schema")
    p.add_argument(
        "--force", action="store_true", help="let 'base' drop the schema although events are stored"
    )
    p.set_defaults(func=commands.downgrade)

    p = command("sql", "print the migration SQL for a DBA (offline, no database needed)")
    p.add_argument("revision", nargs="?", default="heads", help="target revision (default: heads)")
    p.add_argument(
        "--from",
        dest="start",
        default=None,
        help="revision the database is at (default: none, an empty database)",
    )
    p.set_defaults(func=commands.sql)

    p = command("demo", "students race for the seats of a course (embedded server if no URL)")
    p.add_argument("--students", type=_positive(50), default=12, help="racing students (1-50)")
    p.add_argument("--capacity", type=_positive(50), default=5, help="seats (1-50)")
    p.set_defaults(func=commands.demo)

    p = command("locks", "show the library's advisory locks, held and awaited")
    p.add_argument("--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("--interval", type=_seconds, default=1.0, help="seconds between refreshes")
    p.set_defaults(func=commands.locks)

    p = command("tail", "print events as they are appended (catches up first)")
    p.add_argument("--after", type=int, default=None, help="start after this position")
    p.add_argument("--type", action="append", help="only events of this type (repeatable)")
    p.add_argument("--tag", action="append", help="only events carrying this tag (repeatable)")
    p.add_argument("--count", type=int, default=0, help="stop after this many events (0: never)")
    p.add_argument("--poll", type=_seconds, default=5.0, help="polling fallback interval, seconds")
    p.add_argument(
        "--replica-url",
        default=None,
        help="read the events on this hot standby of --url (safe heads still come from --url)",
    )
    p.add_argument(
        "--replica-timeout",
        type=_seconds,
        default=30.0,
        help="how long to wait for the standby to replay up to a safe head, seconds",
    )
    p.set_defaults(func=commands.tail)

    p = command(
        "embedded-url",
        "start the embedded PostgreSQL (kept running), create a fresh database, print its URL",
    )
    p.add_argument(
        "--database", default=None, help="name of the database (default: a new, unique name)"
    )
    p.set_defaults(func=commands.embedded_url)

    p = command("bench", "run the benchmarks (table, JSON, PNG plot); needs --url or --embedded")
    from dcb_store.bench.harness import add_arguments

    add_arguments(p)
    p.set_defaults(func=commands.bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dcb-store`` command: the command's exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `dcb-store sql | head`: the reader is gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:
        if args.debug or os.environ.get("DCB_STORE_DEBUG"):
            raise
        print(f"dcb-store: error: {commands.describe(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
