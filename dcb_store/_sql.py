"""The SQL files shipped in the package, loaded through importlib.resources."""

from __future__ import annotations

from importlib import resources

from dcb_store._impl.stores import DEFAULT, render

__all__ = ["load"]


def load(name: str, schema: str = DEFAULT) -> str:
    """The text of ``dcb_store/sql/<name>``, for the store ``schema`` (unchanged for ``dcb``).

    The migrations load it for the default store and render it for the store they migrate
    (:mod:`dcb_store._impl.stores`).
    """
    sql = resources.files("dcb_store.sql").joinpath(name).read_text(encoding="utf-8")
    return render(sql, schema)
