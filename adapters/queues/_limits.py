"""SQS's limits on queue arguments, checked the same way by every queue adapter.

Checking them locally too means code that passes on the embedded queue does not fail on SQS.
"""

from __future__ import annotations

import re

from overcast.core.errors import InvalidValueError

MAX_DELAY_S = 900
MAX_VISIBILITY_S = 43_200
MAX_WAIT_S = 20
MAX_BATCH = 10
MAX_BODY_BYTES = 1_048_576
DEDUP_WINDOW_S = 300
_TOKEN = re.compile(r"[!-~]{1,128}")  # SQS: 1-128 printable ASCII characters, no spaces
_BAD_BODY_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def check_send(body: object, delay_s: object, group: object, dedup_id: object) -> None:
    """Check ``Queue.send``'s arguments against SQS's limits.

    Raises:
        InvalidValueError: an argument is out of range or malformed (a ``ValueError``).
    """
    if not isinstance(body, str):
        raise InvalidValueError(f"message body must be a str, got {type(body).__name__}")
    if len(body) * 4 > MAX_BODY_BYTES and len(body.encode()) > MAX_BODY_BYTES:
        raise InvalidValueError(f"message body is over {MAX_BODY_BYTES} bytes in UTF-8")
    if bad := _BAD_BODY_CHAR.search(body):
        raise InvalidValueError(f"message body contains {bad.group()!r}, which SQS does not accept")
    _check_int("delay_s", delay_s, 0, MAX_DELAY_S)
    for name, value in (("group", group), ("dedup_id", dedup_id)):
        if value is not None and not (isinstance(value, str) and _TOKEN.fullmatch(value)):
            raise InvalidValueError(f"{name} must be 1-128 printable ASCII characters, got {value!r}")


def check_max_receives(max_receives: object) -> None:
    """Check a dead-letter threshold (1-1000). Raises ``InvalidValueError`` when out of range."""
    _check_int("max_receives", max_receives, 1, 1000)


def check_visibility(visibility_s: object) -> None:
    """Check a visibility timeout. Raises ``InvalidValueError`` when out of range."""
    _check_int("visibility_s", visibility_s, 0, MAX_VISIBILITY_S)


def check_receive(max_messages: object, visibility_s: object, wait_s: object) -> None:
    """Check ``Queue.receive``'s arguments. Raises ``InvalidValueError`` when one is out of range."""
    _check_int("max_messages", max_messages, 1, MAX_BATCH)
    check_visibility(visibility_s)
    if isinstance(wait_s, bool) or not isinstance(wait_s, int | float) or not 0 <= wait_s <= MAX_WAIT_S:
        raise InvalidValueError(f"wait_s must be a number from 0 to {MAX_WAIT_S}, got {wait_s!r}")
