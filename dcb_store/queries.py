"""Queries select events by type and tag: OR over items, AND within an item."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from dcb_store._validation import check_count, check_tag, check_type, reraise_invalid
from dcb_store.errors import InvalidInputError
from dcb_store.limits import MAX_QUERY_ITEMS, MAX_TAGS_PER_ITEM, MAX_TYPES_PER_ITEM

__all__ = ["Query", "QueryItem"]


class QueryItem(BaseModel):
    """One item of a query: a type filter AND a tag filter.

    Matches an event whose type is one of ``types`` (any type if empty) and that carries every
    tag of ``tags``. An empty item matches every event. At most ``MAX_TYPES_PER_ITEM`` types and
    ``MAX_TAGS_PER_ITEM`` tags (:mod:`dcb_store.limits`), else InvalidInputError.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    def __init__(self, types: Any = (), tags: Any = (), **kwargs: Any) -> None:
        """Build an item; ``QueryItem(["Type"], ["tag:1"])`` works positionally."""
        try:
            super().__init__(types=types, tags=tags, **kwargs)
        except ValidationError as exc:
            reraise_invalid(exc)
            raise

    @field_validator("types", "tags", mode="before")
    @classmethod
    def _no_bare_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise InvalidInputError("types and tags must be sequences of strings, not one string")
        return value

    @field_validator("types", mode="before")
    @classmethod
    def _count_types(cls, value: Any) -> Any:
        return check_count(value, MAX_TYPES_PER_ITEM, "types per query item")

    @field_validator("tags", mode="before")
    @classmethod
    def _count_tags(cls, value: Any) -> Any:
        return check_count(value, MAX_TAGS_PER_ITEM, "tags per query item")

    @field_validator("types")
    @classmethod
    def _check_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(check_type(t) for t in value))

    @field_validator("tags")
    @classmethod
    def _check_tags(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(check_tag(t, allow_lock=False) for t in value))

    @property
    def matches_all(self) -> bool:
        """True for the empty item, which matches every event."""
        return not self.types and not self.tags

    def matches(self, type: str, tags: tuple[str, ...] | list[str]) -> bool:
        """Whether an event of this type with these stored tags matches the item."""
        return (not self.types or type in self.types) and set(self.tags).issubset(tags)

    def to_json(self) -> dict[str, list[str]]:
        """The item as the SQL functions take it."""
        return {"types": list(self.types), "tags": list(self.tags)}


class Query(BaseModel):
    """Matches an event when any of its items matches it. ``Query.all()`` matches every event.

    Identical items are kept once; at most ``MAX_QUERY_ITEMS`` (:mod:`dcb_store.limits`) remain,
    else InvalidInputError.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    items: tuple[QueryItem, ...]

    def __init__(self, items: Any = None, **kwargs: Any) -> None:
        """Build a query; ``Query([QueryItem(...), ...])`` works positionally."""
        try:
            super().__init__(items=items, **kwargs)
        except ValidationError as exc:
            reraise_invalid(exc)
            raise

    @field_validator("items")
    @classmethod
    def _at_least_one(cls, value: tuple[QueryItem, ...]) -> tuple[QueryItem, ...]:
        if not value:
            raise InvalidInputError(
                "a query needs at least one item; use Query.all() to match everything"
            )
        unique = tuple(dict.fromkeys(value))
        check_count(unique, MAX_QUERY_ITEMS, "items per query")
        return unique

    @classmethod
    def all(cls) -> Query:
        """The query that matches every event."""
        return cls(items=(QueryItem(),))

    @classmethod
    def of(cls, *, types: Any = (), tags: Any = ()) -> Query:
        """A one-item query: ``Query.of(types=["A"], tags=["course:c1"])``."""
        return cls(items=(QueryItem(types=types, tags=tags),))

    @property
    def matches_all(self) -> bool:
        """True when some item matches every event."""
        return any(item.matches_all for item in self.items)

    def matches(self, type: str, tags: tuple[str, ...] | list[str]) -> bool:
        """Whether an event of this type with these stored tags matches the query."""
        return any(item.matches(type, tags) for item in self.items)

    def to_json(self) -> list[dict[str, list[str]]]:
        """The items as the SQL functions take them."""
        return [item.to_json() for item in self.items]
