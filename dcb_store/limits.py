"""Documented limits of what one append may carry and one read may ask for."""

from __future__ import annotations

__all__ = [
    "MAX_BATCH_EVENTS",
    "MAX_READ_LIMIT",
    "MAX_TAG_LENGTH",
    "MAX_TAGS_PER_EVENT",
    "MAX_TYPE_LENGTH",
]

#: Most events one ``append`` call may carry.
MAX_BATCH_EVENTS = 20_000
#: Longest event type, in characters (the events table checks it too).
MAX_TYPE_LENGTH = 255
#: Longest tag, in characters.
MAX_TAG_LENGTH = 1024
#: Most tags one event may carry.
MAX_TAGS_PER_EVENT = 100
#: Largest ``limit`` one read may ask for (a PostgreSQL integer).
MAX_READ_LIMIT = 2**31 - 1
