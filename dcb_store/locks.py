"""What the monitoring functions report about the library's advisory locks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["LockInfo"]


class LockInfo(BaseModel):
    """One advisory lock of this library, held or awaited (a row of get_advisory_lock_stats)."""

    model_config = ConfigDict(frozen=True)

    key: int
    kind: str
    mode: str
    granted: bool
    pid: int
    application_name: str | None
    wait_seconds: float | None
    query: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> LockInfo:
        """Build from a row of ``dcb.get_advisory_lock_stats()``."""
        fields = (
            "key",
            "kind",
            "mode",
            "granted",
            "pid",
            "application_name",
            "wait_seconds",
            "query",
        )
        return cls(**dict(zip(fields, row, strict=True)))
