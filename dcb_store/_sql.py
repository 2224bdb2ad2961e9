"""The SQL files shipped in the package, loaded through importlib.resources."""

from __future__ import annotations

from importlib import resources

from dcb_store._impl.stores import DEFAULT, render

__all__ = ["load", "replacing"]


def load(name: str, schema: str = DEFAULT) -> str:
    """The text of ``dcb_store/sql/<name>``, for the store ``schema`` (unchanged for ``dcb``).

    The migrations load it for the default store and render it for the store they migrate
    (:mod:`dcb_store._impl.stores`).
    """
    sql = resources.files("dcb_store.sql").joinpath(name).read_text(encoding="utf-8")
    return render(sql, schema)


def replacing(name: str, function: str, schema: str = DEFAULT) -> str:
    """``CREATE OR REPLACE`` of ``function`` (``"dcb.append_v5("``) as file ``name`` creates it.

    A revision that replaces a body restores the earlier one on its downgrade from the file that
    created it, rather than from a copy of it.
    """
    sql = load(name, schema)
    # the file made it with CREATE FUNCTION, or (a body replaced before) CREATE OR REPLACE
    start = sql.find(f"CREATE FUNCTION {function}")
    if start < 0:
        start = sql.index(f"CREATE OR REPLACE FUNCTION {function}") + len("OR REPLACE ")
    body = sql.index("AS $$", start)
    end = sql.index("\n$$;", body) + len("\n$$;")
    return "CREATE OR REPLACE " + sql[start + len("CREATE ") : end] + "\n"
