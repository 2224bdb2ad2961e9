"""Events as the application hands them in (:class:`Event`) and as the store returns them."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dcb_store._validation import (
    LOCK_PREFIX,
    check_count,
    check_json,
    check_tag,
    check_type,
    reraise_invalid,
)
from dcb_store.errors import InvalidInputError
from dcb_store.limits import MAX_DATA_BYTES, MAX_METADATA_BYTES, MAX_TAGS_PER_EVENT

__all__ = ["Event", "SequencedEvent"]


class Event(BaseModel):
    """An immutable event to append.

    ``tags`` name the facts the event touches (``"course:c1"``). A tag ``"lock:K"`` is an
    instruction: the event is stored with tag ``K`` and the append locks ``K`` exclusively.
    Input outside :mod:`dcb_store.limits` (JSON depth and size, tag count and length...) or
    that PostgreSQL cannot store raises :class:`~dcb_store.errors.InvalidInputError`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    data: Any = Field(default_factory=dict)
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] | None = None
    id: UUID | None = None

    def __init__(self, type: str, data: Any = None, tags: Any = (), **kwargs: Any) -> None:
        """Build an event; ``Event("Type", {"k": 1}, ["tag:1"])`` works positionally."""
        try:
            super().__init__(type=type, data={} if data is None else data, tags=tags, **kwargs)
        except ValidationError as exc:
            reraise_invalid(exc)
            raise

    @field_validator("type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        return check_type(value)

    @field_validator("tags", mode="before")
    @classmethod
    def _check_tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise InvalidInputError("tags must be a sequence of strings, not one string")
        return check_count(value, MAX_TAGS_PER_EVENT, "tags per event")

    @field_validator("tags")
    @classmethod
    def _check_tag_items(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        check_count(value, MAX_TAGS_PER_EVENT, "tags per event")
        for tag in value:
            check_tag(tag, allow_lock=True)
        return value

    @field_validator("data")
    @classmethod
    def _check_data(cls, value: Any) -> Any:
        return check_json(value, "event data", MAX_DATA_BYTES)

    @field_validator("metadata")
    @classmethod
    def _check_metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if value is None else check_json(value, "event metadata", MAX_METADATA_BYTES)

    @property
    def stored_tags(self) -> tuple[str, ...]:
        """The tags as stored: ``lock:`` prefixes removed, duplicates dropped, order kept."""
        seen: dict[str, None] = {}
        for tag in self.tags:
            seen.setdefault(tag[len(LOCK_PREFIX) :] if tag.startswith(LOCK_PREFIX) else tag)
        return tuple(seen)

    @property
    def lock_keys(self) -> tuple[str, ...]:
        """The keys this event asks the append to lock exclusively (from ``lock:`` tags)."""
        return tuple(t[len(LOCK_PREFIX) :] for t in self.tags if t.startswith(LOCK_PREFIX))


class SequencedEvent(BaseModel):
    """A stored event with its position in the store."""

    model_config = ConfigDict(frozen=True)

    position: int
    event: Event
    recorded_at: datetime

    # Shortcuts, so that projections read naturally.
    @property
    def type(self) -> str:
        """The event's type."""
        return self.event.type

    @property
    def tags(self) -> tuple[str, ...]:
        """The event's stored tags."""
        return self.event.tags

    @property
    def data(self) -> Any:
        """The event's data."""
        return self.event.data
