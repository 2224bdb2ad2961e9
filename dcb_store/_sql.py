"""The SQL files shipped in the package, loaded through importlib.resources."""

from __future__ import annotations

from importlib import resources

__all__ = ["load"]


def load(name: str) -> str:
    """The text of ``dcb_store/sql/<name>``."""
    return resources.files("dcb_store.sql").joinpath(name).read_text(encoding="utf-8")
