"""The condition of a conditional append."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from dcb_store._validation import check_position, reraise_invalid
from dcb_store.queries import Query

__all__ = ["AppendCondition"]


class AppendCondition(BaseModel):
    """Fail the append if an event matching ``fail_if_events_match`` is stored after ``after``.

    ``after`` is exclusive; ``None`` means "any position". Pass the ``head`` of the read the
    decision was made from. A negative ``after``, or one beyond a PostgreSQL bigint, raises
    InvalidInputError.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    fail_if_events_match: Query
    after: int | None = None

    def __init__(self, fail_if_events_match: Query, after: int | None = None, **kw: Any) -> None:
        """Build a condition; ``AppendCondition(query, head)`` works positionally."""
        try:
            super().__init__(fail_if_events_match=fail_if_events_match, after=after, **kw)
        except ValidationError as exc:
            reraise_invalid(exc)
            raise

    @field_validator("after")
    @classmethod
    def _check_after(cls, value: int | None) -> int | None:
        return check_position(value, "after")

    def to_json(self) -> dict[str, Any]:
        """The condition as the SQL append function takes it."""
        return {"items": self.fail_if_events_match.to_json(), "after": self.after}
