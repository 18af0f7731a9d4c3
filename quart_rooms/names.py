"""The rules for names, free text and ids, shared by the HTTP API and Socket.IO.

Names (contract "Identities and rooms" and 1.1 "Names"): usernames are 1-32,
room names 1-64 characters of `[A-Za-z0-9_.-]`, not dots alone (`.` and `..`
cannot be used in a URL path); they keep the case they were created with and
are unique, and looked up, regardless of case.

Free text (contract 1.1): titles, messages and every other string a client
sends may not contain NUL or unpaired surrogates, which no database stores.
"""

from __future__ import annotations

import re

from quart_rooms.errors import BadRequest

MAX_ID = 2**63 - 1  # ids are 64-bit integers in storage
USERNAME_CHARS = 32
ROOM_CHARS = 64
USERNAME_RE = re.compile(r"(?!\.+\Z)[A-Za-z0-9_.-]{1,32}\Z")
ROOM_RE = re.compile(r"(?!\.+\Z)[A-Za-z0-9_.-]{1,64}\Z")
# JSON Schema (OpenAPI) form of the same rules, for documents and clients.
USERNAME_PATTERN = r"^(?!\.+$)[A-Za-z0-9_.-]{1,32}$"
ROOM_PATTERN = r"^(?!\.+$)[A-Za-z0-9_.-]{1,64}$"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def is_username(value: object) -> bool:
    """True for a string that is a valid username."""
    return isinstance(value, str) and USERNAME_RE.match(value) is not None


def is_room_name(value: object) -> bool:
    """True for a string that is a valid room name."""
    return isinstance(value, str) and ROOM_RE.match(value) is not None


def check_username(value: str) -> str:
    """The value if it is a valid username; BadRequest otherwise."""
    if not is_username(value):
        raise BadRequest("A username is 1-32 characters of A-Z a-z 0-9 _ . - and not dots alone.")
    return value


def check_room_name(value: object, field: str = "room") -> str:
    """The value if it is a valid room name; BadRequest otherwise."""
    if not is_room_name(value):
        raise BadRequest(f"{field} must be 1-64 characters of A-Z a-z 0-9 _ . - and not dots alone.")
    assert isinstance(value, str)
    return value


def storable(value: str) -> bool:
    """False when the text holds NUL or an unpaired surrogate (no database can store it)."""
    return _UNSTORABLE.search(value) is None


def is_id(value: object) -> bool:
    """True for a whole number (not a bool) from 0 to MAX_ID."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_ID
