"""The database an example runs on: ``DATABASE_URL``, else a fresh one on the embedded server."""

from __future__ import annotations

import os
import sys

from dcb_store import embedded, migrations

_servers: list[object] = []


def database_url() -> str:
    """A migrated database for an example (the embedded server stops when the example exits)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        url = str(migrations.normalize_url(url))
    else:
        print("DATABASE_URL is not set: a fresh database, embedded PostgreSQL", file=sys.stderr)
        url, server = embedded.fresh_database(keep_running=False)
        _servers.append(server)  # stopped when the process exits
    migrations.upgrade(url)
    return url
